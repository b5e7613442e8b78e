package harness

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// packages are the Debian packages that provide the binaries the lab runs: the mail system, and
// the scanners relayguard's content filter asks (clamav-testfiles has the harmless test binaries).
var packages = []string{"postfix", "dovecot-core", "clamav-daemon", "clamav-testfiles", "rspamd"}

// binaries the lab runs; script (util-linux, essential on Debian) gives `postfix check` a tty so
// that it prints its errors.
var binaries = []string{"postfix", "dovecot", "script", "clamd", "rspamd"}

// policyRCD keeps package scripts from starting the daemons they install (Debian's invoke-rc.d
// asks it; exit 101 means "action forbidden").
const policyRCD = "/usr/sbin/policy-rc.d"

// installer holds what EnsureInstalled depends on, so that its decisions can be tested without apt.
type installer struct {
	lookPath func(name string) (string, error)
	euid     int
	run      func(env []string, name string, args ...string) error
	lockFile string
	rcd      string
}

var system = installer{
	lookPath: lookPath,
	euid:     os.Geteuid(),
	run:      runLogged,
	lockFile: filepath.Join(os.TempDir(), "relayguard-harness-install.lock"),
	rcd:      policyRCD,
}

// EnsureInstalled makes sure Postfix and Dovecot are installed. When a binary is missing and the
// process runs as root, it installs the Debian packages with apt-get (no recommends, no
// questions, no daemon started by the packages); otherwise it returns an error that names the
// packages to install. It never skips: the end-to-end tests need the real daemons.
func EnsureInstalled() error {
	return system.ensure()
}

func (in installer) ensure() error {
	if len(in.missing()) == 0 {
		return nil
	}
	if in.euid != 0 {
		return fmt.Errorf("harness: %v not found and not running as root: install them with "+
			"`apt-get install -y --no-install-recommends %s` (as root)", in.missing(), strings.Join(packages, " "))
	}
	// Test packages run in parallel; one installs, the others wait and find the binaries.
	lock, err := os.OpenFile(in.lockFile, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("harness: install lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("harness: install lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if len(in.missing()) == 0 {
		return nil
	}
	if _, err := os.Stat(in.rcd); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(in.rcd, []byte("#!/bin/sh\nexit 101\n"), 0o755); err != nil {
			return fmt.Errorf("harness: %s: %w", in.rcd, err)
		}
		defer os.Remove(in.rcd)
	}
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if err := in.run(env, "apt-get", "update"); err != nil {
		return err
	}
	args := append([]string{"-o", "DPkg::Lock::Timeout=600", "install", "-y", "--no-install-recommends"}, packages...)
	if err := in.run(env, "apt-get", args...); err != nil {
		return err
	}
	if m := in.missing(); len(m) > 0 {
		return fmt.Errorf("harness: %v still missing after installing %v", m, packages)
	}
	return nil
}

func (in installer) missing() []string {
	var m []string
	for _, b := range binaries {
		if _, err := in.lookPath(b); err != nil {
			m = append(m, b)
		}
	}
	return m
}

// lookPath finds a binary in PATH or in the sbin directories, which a non-login PATH may lack.
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("harness: %s not found", name)
}

func runLogged(env []string, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("harness: %s %v: %w\n%s", name, args, err, out.Bytes())
	}
	return nil
}
