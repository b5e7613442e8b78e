package harness

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// procStat returns the state letter and the process group of pid from /proc/PID/stat.
func procStat(pid int) (state byte, pgrp int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	// The command name, in parentheses, may contain spaces; the fields after it do not.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 3 || len(f[0]) != 1 {
		return 0, 0, false
	}
	pgrp, err = strconv.Atoi(f[2])
	if err != nil {
		return 0, 0, false
	}
	return f[0][0], pgrp, true
}

// alive reports whether pid exists and is not a zombie. Daemons that were reparented stay zombies
// until their new parent reaps them, which can take seconds, so kill(pid, 0) is not a test of
// life (see ../shared/lab/lib.sh).
func alive(pid int) bool {
	st, _, ok := procStat(pid)
	return ok && st != 'Z'
}

// groupAlive returns the live (non-zombie) processes of process group pgrp.
func groupAlive(pgrp int) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, g, ok := procStat(pid); ok && g == pgrp && st != 'Z' {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitGroupGone waits until no live process of group pgrp remains.
func waitGroupGone(pgrp int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		left := groupAlive(pgrp)
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("harness: processes %v of group %d still running after %v", left, pgrp, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// listening reports whether pid holds a listening TCP socket on 127.0.0.1:port. Postfix's master
// opens the listeners itself, so this tells when the services accept connections without
// connecting to them (a probe connection would start an smtpd and a CONNECT policy request).
func listening(pid, port int) bool {
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return false
	}
	for _, fd := range fds {
		l, err := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return false
	}
	defer f.Close()
	// "  0: 0100007F:1F90 00000000:0000 0A ... inode": local address in hex, state 0A is LISTEN.
	local := fmt.Sprintf("0100007F:%04X", port)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) >= 10 && fl[1] == local && fl[3] == "0A" && inodes[fl[9]] {
			return true
		}
	}
	return false
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("harness: free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
