// Package proc runs a benchmark's server under test as a process of its own,
// so that its memory and CPU are its own, and reads what it used from /proc
// (Linux): its resident set now and at its peak, its CPU time, the CPU time of
// this process (the load generator) and of the whole machine, so that a
// measurement shows when other processes took CPU from it.
package proc

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Child is a server under test.
type Child struct {
	Name  string
	Cmd   *exec.Cmd
	log   string   // its stdout and stderr
	stdin *os.File // its standard input, which closes when this process ends
	done  chan struct{}
}

// Start starts argv with extra environment variables, its output to
// logPath. The child gets SIGTERM if this process dies first (and its
// standard input closes), and Stop ends it otherwise.
func Start(name, logPath string, env []string, argv ...string) (*Child, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	stdin, stdinW, err := os.Pipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	err = cmd.Start()
	stdin.Close()
	if err != nil {
		logFile.Close()
		stdinW.Close()
		return nil, fmt.Errorf("%s did not start: %w", name, err)
	}
	c := &Child{Name: name, Cmd: cmd, log: logPath, stdin: stdinW, done: make(chan struct{})}
	go func() { cmd.Wait(); logFile.Close(); close(c.done) }()
	return c, nil
}

// ExitWhenStdinCloses is the child's side of Start: the process exits when
// its standard input closes, which it does when the benchmark that started
// it ends, however that ends.
func ExitWhenStdinCloses() {
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
}

// Pid is the child's process id.
func (c *Child) Pid() int { return c.Cmd.Process.Pid }

// WaitListening waits until every address accepts connections, and fails
// with the end of the child's log if it exits or takes too long.
func (c *Child) WaitListening(addrs ...string) error {
	deadline := time.Now().Add(30 * time.Second)
	for _, addr := range addrs {
		for {
			select {
			case <-c.done:
				return fmt.Errorf("%s did not start: it exited (%v); its log:\n%s", c.Name, c.Cmd.ProcessState, c.LogTail(40))
			default:
			}
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				conn.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s did not start: nothing listens on %s after 30s; its log:\n%s", c.Name, addr, c.LogTail(40))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// Stop ends the child as systemd would: SIGTERM, then SIGKILL after 15s.
// It fails if the child did not stop in time or stopped with an error.
func (c *Child) Stop() error {
	defer c.stdin.Close()
	c.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		c.Cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("%s did not stop within 15s of SIGTERM: killed", c.Name)
	}
	if ws, ok := c.Cmd.ProcessState.Sys().(syscall.WaitStatus); !c.Cmd.ProcessState.Success() && !(ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM) {
		return fmt.Errorf("%s stopped with %v; its log:\n%s", c.Name, c.Cmd.ProcessState, c.LogTail(20))
	}
	return nil
}

// LogTail returns the last lines of the child's output.
func (c *Child) LogTail(lines int) string {
	data, _ := os.ReadFile(c.log)
	l := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(l[max(0, len(l)-lines):], "\n")
}

// Memory is a process's resident set from /proc/PID/status: now and at its
// peak (the high-water mark since it started), in bytes.
type Memory struct{ RSS, Peak int64 }

// ReadMemory reads the resident set of process pid.
func ReadMemory(pid int) (Memory, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return Memory{}, err
	}
	var m Memory
	for line := range strings.Lines(string(data)) {
		name, value, _ := strings.Cut(line, ":")
		var dst *int64
		switch name {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.Peak
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("/proc/%d/status: %s: %v", pid, name, err)
		}
		*dst = kb << 10
	}
	return m, nil
}

// userHZ is the unit of the CPU times of /proc/PID/stat, 100 on Linux
// whatever the kernel's own tick.
const userHZ = 100

// Tick is the resolution of the CPU times read from /proc: a measurement of
// a few ticks says little.
const Tick = time.Second / userHZ

// ReadCPU returns the CPU time (user and system, all threads) that process
// pid has used so far.
func ReadCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields start after it.
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	var ticks int64
	for _, f := range fields[11:13] { // utime, stime: fields 14 and 15 of proc(5)
		t, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %v", pid, err)
		}
		ticks += t
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// MachineCPU is the CPU time all processes of the machine have used so far
// (/proc/stat: user, nice, system, irq, softirq and steal of all CPUs), so
// that the work of other processes during a measurement shows.
func MachineCPU() (time.Duration, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		t, err := strconv.ParseInt(fields[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %v", err)
		}
		ticks += t
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// SelfCPU is this process's CPU time: the load generator's.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// CPUSample is the CPU time used so far by a server, by this process and by
// the machine; two samples give what each used in between.
type CPUSample struct {
	at                    time.Time
	server, self, machine time.Duration
}

// SampleCPU samples the CPU times, the server's being process pid's.
func SampleCPU(pid int) (CPUSample, error) {
	s := CPUSample{at: time.Now(), self: SelfCPU()}
	var err error
	if s.server, err = ReadCPU(pid); err != nil {
		return s, err
	}
	s.machine, err = MachineCPU()
	return s, err
}

// CPUUse is the CPU time used over an interval.
type CPUUse struct {
	Wall   time.Duration
	Server time.Duration // the process under test
	Load   time.Duration // this process: the load generator
	Other  time.Duration // every other process of the machine
}

// Since returns what was used from an earlier sample a to s.
func (s CPUSample) Since(a CPUSample) CPUUse {
	u := CPUUse{Wall: s.at.Sub(a.at), Server: s.server - a.server, Load: s.self - a.self}
	u.Other = max(0, s.machine-a.machine-u.Server-u.Load)
	return u
}

// Cores is a CPU time as the number of cores it kept busy over the
// interval.
func (u CPUUse) Cores(d time.Duration) float64 {
	if u.Wall <= 0 {
		return 0
	}
	return d.Seconds() / u.Wall.Seconds()
}
