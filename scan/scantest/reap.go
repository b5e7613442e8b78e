package scantest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// A test binary that dies without Close (a panic, go test's -timeout,
// SIGKILL) takes the daemon's main process with it (Pdeathsig), but not
// rspamd's workers, which keep running with their ports. So each daemon's
// process group is registered in a file that names the test process owning
// it, and every start first stops the registered daemons whose owner is
// gone: their processes, found by process group and name, one by one.

// registry is the directory of the registrations, one file per process
// group, named by its id and holding "<owner pid> <owner start time>".
var registry = filepath.Join(os.TempDir(), fmt.Sprintf("relayguard-scantest-%d", os.Geteuid()))

// procStat returns the name, the state, the process group and the start
// time (clock ticks since boot) of pid, from /proc/PID/stat.
func procStat(pid int) (name string, state byte, pgrp int, start string, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, 0, "", false
	}
	// "pid (name) state ppid pgrp ... starttime(22) ...": the name may hold
	// spaces and parentheses, the fields after the last ")" do not.
	s := string(b)
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < i {
		return "", 0, 0, "", false
	}
	f := strings.Fields(s[j+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return "", 0, 0, "", false
	}
	pgrp, err = strconv.Atoi(f[2])
	if err != nil {
		return "", 0, 0, "", false
	}
	return s[i+1 : j], f[0][0], pgrp, f[19], true
}

// register records that this process owns the daemon whose process group
// is pgid. Without /proc, there is nothing to record nor to reap.
func register(pgid int) error {
	_, _, _, start, ok := procStat(os.Getpid())
	if !ok {
		return nil
	}
	if err := os.MkdirAll(registry, 0o700); err != nil {
		return fmt.Errorf("scantest: %w", err)
	}
	owner := fmt.Sprintf("%d %s\n", os.Getpid(), start)
	if err := os.WriteFile(filepath.Join(registry, strconv.Itoa(pgid)), []byte(owner), 0o600); err != nil {
		return fmt.Errorf("scantest: %w", err)
	}
	return nil
}

func unregister(pgid int) {
	os.Remove(filepath.Join(registry, strconv.Itoa(pgid)))
}

// reapOrphans kills the processes of the registered daemons whose owner
// has exited, and removes their registrations.
func reapOrphans() {
	ents, err := os.ReadDir(registry)
	if err != nil {
		return
	}
	for _, e := range ents {
		pgid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(registry, e.Name()))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) != 2 {
			continue
		}
		owner, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		if _, state, _, start, ok := procStat(owner); ok && start == f[1] && state != 'Z' {
			continue
		}
		for _, pid := range daemonsOf(pgid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		unregister(pgid)
	}
}

// daemonsOf returns the live clamd and rspamd processes of process group
// pgrp.
func daemonsOf(pgrp int) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		name, state, g, _, ok := procStat(pid)
		if ok && g == pgrp && state != 'Z' && (name == "clamd" || strings.HasPrefix(name, "rspamd")) {
			pids = append(pids, pid)
		}
	}
	return pids
}
