package scantest

import "syscall"

// procAttr puts a daemon in a process group of its own, so that stop
// reaches its children, and has the kernel kill it if the test binary dies
// without stopping it.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
