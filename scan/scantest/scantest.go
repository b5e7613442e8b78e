// Package scantest starts real scanners on the loopback interface for tests:
// clamd with a signature database of its own (no freshclam, no official
// databases) and rspamd with Debian's stock rules, as the lab notes
// (../shared/lab/LAB.md, section 6) found them to work without a network.
//
// Each daemon runs in the foreground as a child process in its own process
// group, with its configuration, sockets, state and log under the directory
// the caller gives (a t.TempDir()), and Close stops it. It needs the
// clamav-daemon and rspamd packages. Run as root, clamd stays root (it
// drops nothing without a User line) and rspamd runs with --insecure, so
// that neither needs a directory tree owned by its system user.
//
// The test strings EICAR and GTUBE are built from parts at run time, so
// that no source file of this repository is itself a virus or spam test
// file to the scanners that might look at it.
package scantest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// EICAR returns the 68-byte EICAR anti-virus test file.
func EICAR() []byte {
	return []byte(`X5O!P%@AP[4\PZX54(P^)7CC)7}$` + "EICAR-STANDARD-" + "ANTIVIRUS-TEST-FILE!$H+H*")
}

// GTUBE returns the Generic Test for Unsolicited Bulk Email, which
// SpamAssassin and rspamd score as spam.
func GTUBE() []byte {
	return []byte("XJS*C4JDBQADN1.NSBN3*2IDNEN*" + "GTUBE-STANDARD-" + "ANTI-UBE-TEST-EMAIL*C.34X")
}

// process is a daemon started by this package.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string        // the daemon's log file
	done chan struct{} // closed when the process has exited
}

// startProcess starts a daemon in its own process group, with its standard
// output and error in dir/<name>.stdout.
func startProcess(name, dir, log string, args ...string) (*process, error) {
	bin, err := exec.LookPath(name)
	if err != nil {
		return nil, fmt.Errorf("scantest: %s is not installed: %w", name, err)
	}
	out, err := os.Create(filepath.Join(dir, name+".stdout"))
	if err != nil {
		return nil, fmt.Errorf("scantest: %w", err)
	}
	defer out.Close()
	reapOrphans()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("scantest: %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	if err := register(cmd.Process.Pid); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// waitReady calls ready until it succeeds, the process exits or timeout
// passes.
func (p *process) waitReady(timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("scantest: %s exited (%v) before it was ready:\n%s", p.name, p.cmd.ProcessState, p.tail())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("scantest: %s not ready after %v: %w\n%s", p.name, timeout, err, p.tail())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// stop asks the daemon to stop (SIGTERM), kills its process group if it
// has not stopped after a while, and then what is left of the group (the
// workers of a main process that did not stop them).
func (p *process) stop() error {
	pgid := p.cmd.Process.Pid
	select {
	case <-p.done:
	default:
		syscall.Kill(pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
	}
	for _, pid := range daemonsOf(pgid) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	unregister(pgid)
	if st := p.cmd.ProcessState; !st.Success() && !signaled(st, syscall.SIGTERM) {
		return fmt.Errorf("scantest: %s exited: %v\n%s", p.name, st, p.tail())
	}
	return nil
}

func signaled(st *os.ProcessState, sig syscall.Signal) bool {
	ws, ok := st.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// Log returns the daemon's log and what it wrote to its standard output
// and error.
func (p *process) Log() string {
	var b bytes.Buffer
	for _, f := range []string{p.log, filepath.Join(p.cmd.Dir, p.name+".stdout")} {
		data, err := os.ReadFile(f)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(&b, "%s: %v\n", f, err)
		}
		b.Write(data)
	}
	return b.String()
}

// tail returns the end of Log, for error messages.
func (p *process) tail() string {
	const limit = 4000
	s := p.Log()
	if len(s) > limit {
		s = "..." + s[len(s)-limit:]
	}
	return s
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("scantest: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
