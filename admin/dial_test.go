package admin

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
)

func TestDescribeDialError(t *testing.T) {
	dial := func(errno syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", errno)}
	}
	const how = `(check "systemctl status relayguard-policyd", or the admin.socket setting)`
	check := func(group string, err error, want string) {
		t.Helper()
		if got := describeDialError("/run/relayguard/admin.sock", group, err); got.Error() != want {
			t.Errorf("%v:\n got %s\nwant %s", err, got, want)
		}
	}
	check("", dial(syscall.ENOENT), "policyd is not running: there is no socket /run/relayguard/admin.sock "+how)
	check("", dial(syscall.ECONNREFUSED), "policyd is not listening on /run/relayguard/admin.sock "+how)
	check("support", dial(syscall.EACCES), `permission denied on /run/relayguard/admin.sock: you must be in the socket's group "support"`)
	check("", dial(syscall.EACCES), "permission denied on /run/relayguard/admin.sock: you must be in the socket's group")
	check("support", dial(syscall.EPERM), `permission denied on /run/relayguard/admin.sock: you must be in the socket's group "support"`)
	check("", context.DeadlineExceeded, "talking to policyd on /run/relayguard/admin.sock: context deadline exceeded")
	if err := describeDialError("s", "", context.DeadlineExceeded); !errors.Is(err, context.DeadlineExceeded) {
		t.Error("the cause is lost")
	}
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{
		"7HqT2mK9xLp4Rb8ZsN3wVa":  true,
		"0000000000000000000000":  true,
		"7HqT2mK9xLp4Rb8ZsN3wV":   false, // 21
		"7HqT2mK9xLp4Rb8ZsN3wVab": false, // 23
		"7HqT2mK9xLp4Rb8ZsN3wV_":  false,
		"7HqT2mK9xLp4Rb8ZsN3wVá":  false, // 23 bytes
		"7HqT2mK9xLp4Rb8ZsN3w%2F": false,
	} {
		if validID(id) != want {
			t.Errorf("validID(%q) = %v", id, !want)
		}
	}
}
