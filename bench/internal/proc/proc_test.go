package proc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// spin runs until this process has used d more CPU, or 10 s have passed.
func spin(d time.Duration) {
	start, deadline := SelfCPU(), time.Now().Add(10*time.Second)
	for SelfCPU()-start < d && time.Now().Before(deadline) {
	}
}

// TestProc reads this process's figures as the benchmarks read the
// servers'.
func TestProc(t *testing.T) {
	spin(50 * time.Millisecond) // some CPU time to see
	m, err := ReadMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.Peak < m.RSS {
		t.Errorf("RSS %d, peak %d: want 0 < RSS <= peak", m.RSS, m.Peak)
	}
	cpu, err := ReadCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	all, err := MachineCPU()
	if err != nil {
		t.Fatal(err)
	}
	if cpu <= 0 || all < cpu {
		t.Errorf("this process used %v, the machine %v: want 0 < process <= machine", cpu, all)
	}
}

// TestSampleCPU measures this process as both server and load generator:
// /proc and getrusage agree on what it used, and nothing is counted twice
// as other CPU. It spins until it has used 200 ms of CPU, however busy the
// machine.
func TestSampleCPU(t *testing.T) {
	a, err := SampleCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	spin(200 * time.Millisecond)
	b, err := SampleCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	u := b.Since(a)
	if u.Load < 200*time.Millisecond {
		t.Skipf("the machine gave this process %v of CPU in 10 s", u.Load)
	}
	if d := u.Server - u.Load; d < -5*Tick || d > 5*Tick || u.Other < 0 || u.Wall < u.Load/2 {
		t.Errorf("%+v: want server = load (within 5 ticks), other >= 0, wall >= load/2", u)
	}
	if c := u.Cores(u.Load); c <= 0 || c > 2 {
		t.Errorf("one spinning goroutine kept %.2f cores busy", c)
	}
}

// TestChild runs a shell as a server that never listens: its exit and its
// log are reported.
func TestChild(t *testing.T) {
	sh, err := os.Stat("/bin/sh")
	if err != nil || sh.IsDir() {
		t.Skip("no /bin/sh")
	}
	log := filepath.Join(t.TempDir(), "child.log")
	c, err := Start("child", log, []string{"GREETING=hello"}, "/bin/sh", "-c", `echo "$GREETING from the child"; exit 3`)
	if err != nil {
		t.Fatal(err)
	}
	err = c.WaitListening("127.0.0.1:1")
	if err == nil || !strings.Contains(err.Error(), "hello from the child") {
		t.Errorf("WaitListening: %v; want the exit with the log", err)
	}
	if err := c.Stop(); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("Stop: %v; want the exit status", err)
	}

	c, err = Start("sleeper", log, nil, "/bin/sh", "-c", "exec sleep 60")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("Stop of a child that ends on SIGTERM: %v", err)
	}
}
