package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A test binary that dies without Close (a panic, go test's -timeout, SIGKILL) leaves its Postfix
// and Dovecot running. Start therefore marks each temporary lab with its owner process and first
// stops the temporary labs whose owner is gone.

const (
	tempLabPattern = "rglab"
	ownerFile      = "owner"
)

// procStart returns the start time of pid (clock ticks since boot, /proc/PID/stat field 22),
// which tells a process from a later one that reuses its pid.
func procStart(pid int) (string, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", false
	}
	return f[19], true
}

func writeOwner(dir string) error {
	start, ok := procStart(os.Getpid())
	if !ok {
		return errors.New("harness: cannot read this process's start time")
	}
	return os.WriteFile(filepath.Join(dir, ownerFile), []byte(fmt.Sprintf("%d %s\n", os.Getpid(), start)), 0o644)
}

// orphaned reports whether dir is a temporary lab whose owner process has exited.
func orphaned(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return false
	}
	start, ok := procStart(pid)
	return !ok || start != f[1] || !alive(pid)
}

// reapOrphans stops the daemons of orphaned temporary labs and removes them.
func reapOrphans() error {
	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), tempLabPattern+"*"))
	if err != nil {
		return err
	}
	var errs []error
	for _, dir := range dirs {
		if orphaned(dir) {
			errs = append(errs, reap(dir))
		}
	}
	return errors.Join(errs...)
}

// reap stops the Postfix master and the Dovecot of the lab in dir, each only if the running
// process is that lab's (by its working directory or its command line), then removes dir.
func reap(dir string) error {
	spool := filepath.Join(dir, "postfix/spool")
	if pid := readPID(filepath.Join(spool, "pid/master.pid")); pid != 0 && alive(pid) {
		if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); cwd == spool {
			postfix, err := lookPath("postfix")
			if err != nil {
				return err
			}
			exec.Command(postfix, "-c", filepath.Join(dir, "postfix/etc"), "stop").Run()
			if err := waitGroupGone(pid, 10*time.Second); err != nil {
				return err
			}
		}
	}
	conf := filepath.Join(dir, "dovecot/dovecot.conf")
	if pid := readPID(filepath.Join(dir, "dovecot/run/master.pid")); pid != 0 && alive(pid) {
		if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(cmd), conf) {
			syscall.Kill(pid, syscall.SIGTERM)
			if err := waitGroupGone(pid, 10*time.Second); err != nil {
				return err
			}
		}
	}
	return os.RemoveAll(dir)
}

func readPID(file string) int {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}
