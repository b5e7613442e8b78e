//go:build unix && !linux

package scantest

import "syscall"

// procAttr puts a daemon in a process group of its own, so that stop
// reaches its children.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
