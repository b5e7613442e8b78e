package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// child is a server under test, run as a process of its own so that its
// memory and CPU are its own.
type child struct {
	name  string
	cmd   *exec.Cmd
	log   string   // its stdout and stderr
	stdin *os.File // its standard input, which closes when this process ends
	done  chan struct{}
}

// startChild starts argv with extra environment variables, its output to
// logPath. The child gets SIGTERM if this process dies first (and its
// standard input closes), and the caller's stop ends it otherwise.
func startChild(name, logPath string, env []string, argv ...string) (*child, error) {
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
	c := &child{name: name, cmd: cmd, log: logPath, stdin: stdinW, done: make(chan struct{})}
	go func() { cmd.Wait(); logFile.Close(); close(c.done) }()
	return c, nil
}

// waitListening waits until every address accepts connections, and fails
// with the end of the child's log if it exits or takes too long.
func (c *child) waitListening(addrs ...string) error {
	deadline := time.Now().Add(30 * time.Second)
	for _, addr := range addrs {
		for {
			select {
			case <-c.done:
				return fmt.Errorf("%s did not start: it exited (%v); its log:\n%s", c.name, c.cmd.ProcessState, c.logTail(40))
			default:
			}
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				conn.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s did not start: nothing listens on %s after 30s; its log:\n%s", c.name, addr, c.logTail(40))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// stop ends the child as systemd would: SIGTERM, then SIGKILL after 15s.
func (c *child) stop() error {
	defer c.stdin.Close()
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("%s did not stop within 15s of SIGTERM: killed", c.name)
	}
	if ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus); !c.cmd.ProcessState.Success() && !(ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM) {
		return fmt.Errorf("%s stopped with %v; its log:\n%s", c.name, c.cmd.ProcessState, c.logTail(20))
	}
	return nil
}

func (c *child) logTail(lines int) string {
	data, _ := os.ReadFile(c.log)
	l := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(l[max(0, len(l)-lines):], "\n")
}

// memory is a process's resident set from /proc/PID/status: now and at its
// peak (the high-water mark), in bytes.
type memory struct{ rss, peak int64 }

func readMemory(pid int) (memory, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return memory{}, err
	}
	var m memory
	for line := range strings.Lines(string(data)) {
		name, value, _ := strings.Cut(line, ":")
		var dst *int64
		switch name {
		case "VmRSS":
			dst = &m.rss
		case "VmHWM":
			dst = &m.peak
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return memory{}, fmt.Errorf("/proc/%d/status: %s: %v", pid, name, err)
		}
		*dst = kb << 10
	}
	return m, nil
}

// userHZ is the unit of the CPU times of /proc/PID/stat, 100 on Linux
// whatever the kernel's own tick.
const userHZ = 100

// readCPU returns the CPU time (user and system, all threads) a process has
// used so far.
func readCPU(pid int) (time.Duration, error) {
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

// machineCPU is the CPU time all processes of the machine have used so far
// (/proc/stat: user, nice, system, irq, softirq and steal of all CPUs), so
// that the work of other processes during a measurement shows.
func machineCPU() (time.Duration, error) {
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

// selfCPU is this process's CPU time: the load generator's.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
