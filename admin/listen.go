package admin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Listen creates the API's unix socket at path, with the file mode given in
// octal (mode, "" for "0660") and, when group is not empty, that group (a
// name or a number). It never listens on TCP, nor on a Linux abstract
// socket ("@name"), which has no file mode to guard it.
//
// It refuses a path where another process listens, and one that is not a
// socket; a socket that nothing listens on, left by a previous run, is
// replaced. The socket is bound with its owner's permissions only (Linux
// takes a socket file's mode from the socket at bind), then given its group
// and mode: it is never open to more users than mode and group admit. The
// listener removes it on Close.
func Listen(path, mode, group string) (net.Listener, error) {
	if path == "" || strings.HasPrefix(path, "@") {
		return nil, fmt.Errorf("admin socket %q: want the path of a socket file", path)
	}
	if mode == "" {
		mode = "0660"
	}
	perm, err := strconv.ParseUint(mode, 8, 32)
	if err != nil || perm > 0o777 {
		return nil, fmt.Errorf("admin socket %s: %q is not an octal file mode such as \"0660\"", path, mode)
	}
	gid := -1
	if group != "" {
		if gid, err = lookupGroup(group); err != nil {
			return nil, fmt.Errorf("admin socket %s: %w", path, err)
		}
	}
	if err := clearStale(path); err != nil {
		return nil, err
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) { err = syscall.Fchmod(int(fd), 0o600) }); cerr != nil {
			return cerr
		}
		return err
	}}
	ln, err := lc.Listen(context.Background(), "unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if gid >= 0 {
		if err := os.Lchown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("admin socket: %w", err)
		}
	}
	if err := os.Chmod(path, fs.FileMode(perm)); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return ln, nil
}

// lookupGroup returns the id of a group given by name or number.
func lookupGroup(group string) (int, error) {
	if g, err := user.LookupGroup(group); err == nil {
		return strconv.Atoi(g.Gid)
	}
	if gid, err := strconv.Atoi(group); err == nil && gid >= 0 {
		return gid, nil
	}
	return 0, fmt.Errorf("no group %q on this system", group)
}

// clearStale removes a socket file at path that nothing listens on, and
// refuses a live socket or a file of another kind.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("admin socket %s: the file exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("admin socket %s: another process is listening there", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("admin socket %s: cannot tell whether another process is listening there: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("admin socket: %w", err)
	}
	return nil
}
