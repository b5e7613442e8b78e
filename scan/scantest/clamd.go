package scantest

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"relayguard/scan/clamd"
)

// Signatures of the test database. clamd adds ".UNOFFICIAL" to the names
// of signatures that are not ClamAV's own.
const (
	EICARSignature   = "RelayGuard.Test.EICAR.UNOFFICIAL"
	ClamExeSignature = "RelayGuard.Test.ClamExe.UNOFFICIAL"
)

// ClamAVTestFiles is where the clamav-testfiles package puts its harmless
// clam.exe, in many formats: clam.zip, clam.7z, clam.tar.gz, clam.mail...
const ClamAVTestFiles = "/usr/share/clamav-testfiles"

// StreamMaxLength is the StreamMaxLength of the clamd that StartClamd
// starts: clamd's default, 25 MiB.
const StreamMaxLength = 25 << 20

// maxSocketPath is the longest path a unix socket can have on Linux.
const maxSocketPath = 107

// Clamd is a clamd started by StartClamd.
type Clamd struct {
	Addr   string // its TCP address, 127.0.0.1:port
	Socket string // the path of its unix socket
	Dir    string
	p      *process
}

// StartClamd starts clamd with its files in dir and returns once it
// answers PING on both its sockets. Its database holds EICARSignature (an
// .ndb body signature: EICAR anywhere in a file, a mail attachment
// included) and, when clamav-testfiles is installed, ClamExeSignature (an
// .hdb hash of clam.exe, which clamd then finds inside the archives and
// mails of that package too). Nothing else: an empty database directory
// makes clamd refuse to start.
func StartClamd(dir string) (*Clamd, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("scantest: %w", err)
	}
	socket := filepath.Join(dir, "clamd.sock")
	if len(socket) > maxSocketPath {
		return nil, fmt.Errorf("scantest: unix socket path %s is longer than %d bytes", socket, maxSocketPath)
	}
	for _, d := range []string{"db", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("scantest: %w", err)
		}
	}
	if err := writeClamDB(filepath.Join(dir, "db")); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "clamd.conf")
	log := filepath.Join(dir, "clamd.log")
	text := strings.Join([]string{
		"Foreground yes",
		"LogFile " + log,
		"LogTime yes",
		"TemporaryDirectory " + filepath.Join(dir, "tmp"),
		"DatabaseDirectory " + filepath.Join(dir, "db"),
		"LocalSocket " + socket,
		"LocalSocketMode 660",
		fmt.Sprintf("TCPSocket %d", port),
		"TCPAddr 127.0.0.1",
		fmt.Sprintf("StreamMaxLength %dM", StreamMaxLength>>20),
		"SelfCheck 0",
		"ConcurrentDatabaseReload no",
		"",
	}, "\n")
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, fmt.Errorf("scantest: %w", err)
	}
	c := &Clamd{Addr: loopback(port), Socket: socket, Dir: dir}
	if err := c.Start(); err != nil {
		return nil, err
	}
	return c, nil
}

// Start starts clamd again after Stop, with the same configuration,
// database and addresses, and returns once it answers PING on both its
// sockets.
func (c *Clamd) Start() error {
	p, err := startProcess("clamd", c.Dir, filepath.Join(c.Dir, "clamd.log"), "--config-file="+filepath.Join(c.Dir, "clamd.conf"))
	if err != nil {
		return err
	}
	tcp, unix := c.Client(), c.UnixClient()
	err = p.waitReady(60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return errors.Join(tcp.Ping(ctx), unix.Ping(ctx))
	})
	if err != nil {
		p.stop()
		return err
	}
	c.p = p
	return nil
}

// Pause freezes clamd (SIGSTOP): the kernel still accepts connections on
// its sockets and buffers what clients send, and nothing answers, as when a
// scanner hangs, until Resume.
func (c *Clamd) Pause() error { return c.p.cmd.Process.Signal(syscall.SIGSTOP) }

// Resume lets a paused clamd run on.
func (c *Clamd) Resume() error { return c.p.cmd.Process.Signal(syscall.SIGCONT) }

// Stop stops clamd and keeps its files, so that Start brings it back where
// its clients expect it: a test of what a scanner's outage does.
func (c *Clamd) Stop() error { return c.p.stop() }

// writeClamDB writes the test signatures into dir.
func writeClamDB(dir string) error {
	// Body signature, any file type, any offset (signatures.md, .ndb).
	ndb := fmt.Sprintf("%s:0:*:%s\n", strings.TrimSuffix(EICARSignature, ".UNOFFICIAL"), hex.EncodeToString(EICAR()))
	if err := os.WriteFile(filepath.Join(dir, "relayguard-test.ndb"), []byte(ndb), 0o644); err != nil {
		return fmt.Errorf("scantest: %w", err)
	}
	exe, err := os.ReadFile(filepath.Join(ClamAVTestFiles, "clam.exe"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("scantest: %w", err)
	}
	// File hash signature, MD5:size:name (.hdb).
	sum := md5.Sum(exe)
	hdb := fmt.Sprintf("%x:%d:%s\n", sum, len(exe), strings.TrimSuffix(ClamExeSignature, ".UNOFFICIAL"))
	if err := os.WriteFile(filepath.Join(dir, "relayguard-test.hdb"), []byte(hdb), 0o644); err != nil {
		return fmt.Errorf("scantest: %w", err)
	}
	return nil
}

// Client returns a client of the clamd over TCP.
func (c *Clamd) Client() *clamd.Client {
	return &clamd.Client{Network: "tcp", Address: c.Addr, MaxStream: StreamMaxLength}
}

// UnixClient returns a client of the clamd over its unix socket.
func (c *Clamd) UnixClient() *clamd.Client {
	return &clamd.Client{Network: "unix", Address: c.Socket, MaxStream: StreamMaxLength}
}

// Log returns clamd's log.
func (c *Clamd) Log() string { return c.p.Log() }

// Close stops clamd (nothing happens if Stop already did).
func (c *Clamd) Close() error { return c.p.stop() }
