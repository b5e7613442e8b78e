package admin_test

import (
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"relayguard/admin"
)

func TestListen(t *testing.T) {
	dir := t.TempDir()
	gid := os.Getgid()
	group := strconv.Itoa(gid)
	if g, err := user.LookupGroupId(group); err == nil {
		group = g.Name
	}
	check := func(mode, group string, wantMode fs.FileMode, wantGID int) {
		t.Helper()
		path := filepath.Join(dir, "admin.sock")
		ln, err := admin.Listen(path, mode, group)
		if err != nil {
			t.Fatalf("Listen(%q, %q): %v", mode, group, err)
		}
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != fs.ModeSocket|wantMode {
			t.Errorf("Listen(%q, %q): mode %v, want %v", mode, group, fi.Mode(), fs.ModeSocket|wantMode)
		}
		if got := int(fi.Sys().(*syscall.Stat_t).Gid); got != wantGID {
			t.Errorf("Listen(%q, %q): group %d, want %d", mode, group, got, wantGID)
		}
		if ln.Addr().Network() != "unix" {
			t.Errorf("listening on %s", ln.Addr().Network())
		}
		ln.Close()
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Errorf("Close left the socket: %v", err)
		}
	}
	check("0660", "", 0o660, gid)
	check("", "", 0o660, gid)
	check("0600", "", 0o600, gid)
	check("0666", "", 0o666, gid)
	check("0660", group, 0o660, gid)
	check("0660", strconv.Itoa(gid), 0o660, gid)
	if os.Geteuid() == 0 {
		check("0660", "65534", 0o660, 65534)
	}
}

func TestListenRefuses(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "live.sock")
	ln, err := admin.Listen(live, "0660", "")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}

	check := func(path, mode, group, want string) {
		t.Helper()
		ln, err := admin.Listen(path, mode, group)
		if err == nil {
			ln.Close()
			t.Errorf("Listen(%q, %q, %q) works", path, mode, group)
		} else if err.Error() != want {
			t.Errorf("Listen(%q, %q, %q):\n got %v\nwant %s", path, mode, group, err, want)
		}
	}
	check(live, "0660", "", "admin socket "+live+": another process is listening there")
	check(file, "0660", "", "admin socket "+file+": the file exists and is not a socket")
	check("", "0660", "", `admin socket "": want the path of a socket file`)
	check("@relayguard", "0660", "", `admin socket "@relayguard": want the path of a socket file`)
	check(filepath.Join(dir, "a.sock"), "rw", "", "admin socket "+filepath.Join(dir, "a.sock")+`: "rw" is not an octal file mode such as "0660"`)
	check(filepath.Join(dir, "a.sock"), "01777", "", "admin socket "+filepath.Join(dir, "a.sock")+`: "01777" is not an octal file mode such as "0660"`)
	check(filepath.Join(dir, "a.sock"), "0660", "no-such-group-here", "admin socket "+filepath.Join(dir, "a.sock")+`: no group "no-such-group-here" on this system`)

	if b, err := os.ReadFile(file); err != nil || string(b) != "keep" {
		t.Errorf("the file was touched: %q, %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "a.sock")); !os.IsNotExist(err) {
		t.Errorf("a refused Listen left a socket: %v", err)
	}
	if c, err := net.Dial("unix", live); err != nil {
		t.Errorf("the live socket was broken: %v", err)
	} else {
		c.Close()
	}
}

// TestListenStale replaces a socket that nothing listens on.
func TestListenStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	old, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	old.(*net.UnixListener).SetUnlinkOnClose(false)
	old.Close()
	ln, err := admin.Listen(path, "0660", "")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
