package clamd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"relayguard/scan"
)

// fakeClamd speaks clamd's side of INSTREAM and PING, exactly: it reads the
// command up to its NUL, then the length-prefixed chunks, refusing a chunk
// that would take the stream past its quota as clamd does, and answers
// reply(stream) when the stream ends.
type fakeClamd struct {
	ln    net.Listener
	quota int64
	reply func(stream []byte) string
	// serve, when set, replaces the protocol: the connection is the test's.
	serve func(conn net.Conn)

	mu       sync.Mutex
	commands []string
	chunks   []int
	streams  [][]byte
}

func startFake(t *testing.T, network string, f *fakeClamd) *Client {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "clamd.sock")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	f.ln = ln
	if f.quota == 0 {
		f.quota = DefaultMaxStream
	}
	if f.reply == nil {
		f.reply = func([]byte) string { return "stream: OK" }
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				if f.serve != nil {
					f.serve(conn)
					return
				}
				f.handle(conn)
			}()
		}
	}()
	return &Client{Network: network, Address: ln.Addr().String(), Timeout: 5 * time.Second}
}

func (f *fakeClamd) handle(conn net.Conn) {
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var cmd []byte
	for {
		var b [1]byte
		if _, err := io.ReadFull(conn, b[:]); err != nil {
			return
		}
		if b[0] == 0 {
			break
		}
		cmd = append(cmd, b[0])
	}
	f.mu.Lock()
	f.commands = append(f.commands, string(cmd))
	f.mu.Unlock()
	switch string(cmd) {
	case "zPING":
		conn.Write([]byte("PONG\x00"))
		return
	case "zINSTREAM":
	default:
		conn.Write([]byte("UNKNOWN COMMAND\x00"))
		return
	}
	var stream []byte
	quota := f.quota
	for {
		var size [4]byte
		if _, err := io.ReadFull(conn, size[:]); err != nil {
			return
		}
		n := int64(binary.BigEndian.Uint32(size[:]))
		if n == 0 {
			break
		}
		if n > quota {
			conn.Write([]byte("INSTREAM size limit exceeded. ERROR\x00"))
			return
		}
		quota -= n
		chunk := make([]byte, n)
		if _, err := io.ReadFull(conn, chunk); err != nil {
			return
		}
		f.mu.Lock()
		f.chunks = append(f.chunks, int(n))
		f.mu.Unlock()
		stream = append(stream, chunk...)
	}
	f.mu.Lock()
	f.streams = append(f.streams, stream)
	f.mu.Unlock()
	conn.Write([]byte(f.reply(stream) + "\x00"))
}

func (f *fakeClamd) stream(t *testing.T, i int) []byte {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if i >= len(f.streams) {
		t.Fatalf("fake clamd received %d streams, want at least %d", len(f.streams), i+1)
	}
	return f.streams[i]
}

// signature replies FOUND when the stream holds "VIRUS".
func signature(stream []byte) string {
	if bytes.Contains(stream, []byte("VIRUS")) {
		return "stream: Test.Virus FOUND"
	}
	return "stream: OK"
}

func TestScanVerdicts(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			f := &fakeClamd{reply: signature}
			c := startFake(t, network, f)
			check := func(msg string, want Result) {
				t.Helper()
				got, err := c.Scan(context.Background(), strings.NewReader(msg))
				if err != nil {
					t.Fatalf("Scan(%q): %v", msg, err)
				}
				if got != want {
					t.Errorf("Scan(%q) = %+v, want %+v", msg, got, want)
				}
			}
			check("Subject: hello\r\n\r\nclean\r\n", Result{})
			check("Subject: hello\r\n\r\na VIRUS here\r\n", Result{Infected: true, Signature: "Test.Virus"})
			check("", Result{})
			if got := string(f.stream(t, 1)); got != "Subject: hello\r\n\r\na VIRUS here\r\n" {
				t.Errorf("clamd received %q", got)
			}
			if err := c.Ping(context.Background()); err != nil {
				t.Errorf("Ping: %v", err)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			want := []string{"zINSTREAM", "zINSTREAM", "zINSTREAM", "zPING"}
			if !slices.Equal(f.commands, want) {
				t.Errorf("commands %q, want %q", f.commands, want)
			}
		})
	}
}

func TestScanChunks(t *testing.T) {
	f := &fakeClamd{reply: signature}
	c := startFake(t, "tcp", f)
	c.ChunkSize = 1000
	msg := bytes.Repeat([]byte("0123456789"), 1050) // 10500 bytes
	copy(msg[995:], "VIRUS")                        // across the first two chunks
	got, err := c.Scan(context.Background(), bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Infected || got.TooLarge {
		t.Errorf("got %+v, want infected", got)
	}
	if !bytes.Equal(f.stream(t, 0), msg) {
		t.Error("clamd did not receive the message as sent")
	}
	want := []int{1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 500}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Equal(f.chunks, want) {
		t.Errorf("chunks %v, want %v", f.chunks, want)
	}
}

// trickle yields its data a few bytes per Read, as a pipe may.
type trickle struct{ data []byte }

func (t *trickle) Read(p []byte) (int, error) {
	if len(t.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 7)], t.data)
	t.data = t.data[n:]
	return n, nil
}

func TestScanFillsChunks(t *testing.T) {
	f := &fakeClamd{}
	c := startFake(t, "tcp", f)
	c.ChunkSize = 100
	if _, err := c.Scan(context.Background(), &trickle{bytes.Repeat([]byte("x"), 250)}); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if want := []int{100, 100, 50}; !slices.Equal(f.chunks, want) {
		t.Errorf("chunks %v, want %v", f.chunks, want)
	}
}

func TestScanMaxStream(t *testing.T) {
	f := &fakeClamd{reply: signature}
	c := startFake(t, "tcp", f)
	c.ChunkSize = 128
	c.MaxStream = 300
	check := func(name string, msg []byte, want Result, wantSent int) {
		t.Helper()
		f.mu.Lock()
		f.streams, f.chunks = nil, nil
		f.mu.Unlock()
		got, err := c.Scan(context.Background(), bytes.NewReader(msg))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got != want {
			t.Errorf("%s: got %+v, want %+v", name, got, want)
		}
		if sent := len(f.stream(t, 0)); sent != wantSent {
			t.Errorf("%s: clamd received %d bytes, want %d", name, sent, wantSent)
		}
	}
	check("exactly MaxStream", bytes.Repeat([]byte("a"), 300), Result{}, 300)
	check("one byte more", bytes.Repeat([]byte("a"), 301), Result{TooLarge: true}, 300)
	virus := append([]byte("VIRUS"), bytes.Repeat([]byte("a"), 1000)...)
	check("virus in the part scanned", virus, Result{Infected: true, Signature: "Test.Virus", TooLarge: true}, 300)
	f.mu.Lock()
	defer f.mu.Unlock()
	if want := []int{128, 128, 44}; !slices.Equal(f.chunks, want) {
		t.Errorf("chunks %v, want %v", f.chunks, want)
	}
}

// endless yields zeros forever and counts them.
type endless struct{ n int64 }

func (e *endless) Read(p []byte) (int, error) {
	clear(p)
	e.n += int64(len(p))
	return len(p), nil
}

func TestScanStreamsWithoutReadingAll(t *testing.T) {
	f := &fakeClamd{}
	c := startFake(t, "tcp", f)
	c.MaxStream = 4 << 20
	r := &endless{}
	got, err := c.Scan(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if !got.TooLarge {
		t.Errorf("got %+v, want TooLarge", got)
	}
	if r.n != c.MaxStream+1 {
		t.Errorf("read %d bytes of the message, want MaxStream+1 = %d", r.n, c.MaxStream+1)
	}
}

func TestScanClamdSizeLimit(t *testing.T) {
	// clamd's StreamMaxLength is lower than the client's MaxStream: clamd
	// refuses the stream and closes the connection, maybe while the client
	// is still writing.
	for _, size := range []int{150, 8 << 20} {
		f := &fakeClamd{quota: 100}
		c := startFake(t, "tcp", f)
		c.ChunkSize = 64
		got, err := c.Scan(context.Background(), bytes.NewReader(make([]byte, size)))
		if err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		if want := (Result{TooLarge: true}); got != want {
			t.Errorf("%d bytes: got %+v, want %+v", size, got, want)
		}
	}
}

func TestScanUnavailable(t *testing.T) {
	check := func(name string, serve func(net.Conn), wantTimeout bool, wantText string) {
		t.Helper()
		c := startFake(t, "tcp", &fakeClamd{serve: serve})
		c.Timeout = 200 * time.Millisecond
		start := time.Now()
		_, err := c.Scan(context.Background(), strings.NewReader("Subject: x\r\n\r\nbody\r\n"))
		if !errors.Is(err, scan.ErrUnavailable) {
			t.Fatalf("%s: got %v, want scan.ErrUnavailable", name, err)
		}
		if errors.Is(err, scan.ErrTimeout) != wantTimeout {
			t.Errorf("%s: errors.Is(%v, ErrTimeout) = %v, want %v", name, err, !wantTimeout, wantTimeout)
		}
		if !strings.Contains(err.Error(), wantText) {
			t.Errorf("%s: error %q does not say %q", name, err, wantText)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: took %v", name, d)
		}
	}
	readAll := func(conn net.Conn) {
		// The command and the chunks, up to the terminator (the test
		// message fits in one chunk).
		buf := make([]byte, 0, 4096)
		tmp := make([]byte, 4096)
		for !bytes.HasSuffix(buf, []byte{0, 0, 0, 0}) {
			n, err := conn.Read(tmp)
			if err != nil {
				return
			}
			buf = append(buf, tmp[:n]...)
		}
	}
	reply := func(s string) func(net.Conn) {
		return func(conn net.Conn) {
			readAll(conn)
			conn.Write([]byte(s))
		}
	}
	check("closed at once", func(conn net.Conn) {}, false, "")
	check("closed in the middle of the stream", func(conn net.Conn) {
		conn.Read(make([]byte, 12))
	}, false, "")
	check("closed without a reply", readAll, false, "closed without a reply")
	check("never answers", func(conn net.Conn) {
		readAll(conn)
		io.Copy(io.Discard, conn)
	}, true, "deadline")
	check("error reply", reply("stream: Can't allocate memory ERROR\x00"), false, `"stream: Can't allocate memory ERROR"`)
	check("unknown command", reply("UNKNOWN COMMAND\x00"), false, `unexpected reply "UNKNOWN COMMAND"`)
	check("garbage", reply("HTTP/1.1 400 Bad Request\r\n\r\n\x00"), false, "unexpected reply")
	check("FOUND without a name", reply("stream: FOUND\x00"), false, "unexpected reply")
	check("reply without its NUL", reply("stream: OK"), false, "in the middle of the reply")
	check("endless reply", func(conn net.Conn) {
		readAll(conn)
		conn.Write(bytes.Repeat([]byte("x"), 10000))
	}, false, "no end to a reply")
}

func TestScanWriteTimeout(t *testing.T) {
	// clamd accepts the connection and reads nothing: the client's writes
	// block once the socket buffers are full, until the deadline.
	release := make(chan struct{})
	c := startFake(t, "tcp", &fakeClamd{serve: func(net.Conn) { <-release }})
	t.Cleanup(func() { close(release) })
	c.Timeout = 200 * time.Millisecond
	_, err := c.Scan(context.Background(), bytes.NewReader(make([]byte, 64<<20)))
	if !errors.Is(err, scan.ErrTimeout) {
		t.Errorf("got %v, want scan.ErrTimeout", err)
	}
}

func TestScanRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := &Client{Address: addr}
	_, err = c.Scan(context.Background(), strings.NewReader("x"))
	if !errors.Is(err, scan.ErrUnavailable) || errors.Is(err, scan.ErrTimeout) {
		t.Errorf("got %v, want scan.ErrUnavailable and not a timeout", err)
	}
	if err := c.Ping(context.Background()); !errors.Is(err, scan.ErrUnavailable) {
		t.Errorf("Ping: got %v, want scan.ErrUnavailable", err)
	}
	var se *scan.Error
	if !errors.As(err, &se) || se.Op != "connect" {
		t.Errorf("got %#v, want a *scan.Error of connect", err)
	}
}

func TestScanContext(t *testing.T) {
	stall := func(conn net.Conn) { io.Copy(io.Discard, conn) }

	c := startFake(t, "tcp", &fakeClamd{serve: stall})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Scan(ctx, strings.NewReader("x"))
	if !errors.Is(err, scan.ErrTimeout) {
		t.Errorf("context deadline: got %v, want scan.ErrTimeout", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err = c.Scan(ctx, strings.NewReader("x"))
	if !errors.Is(err, context.Canceled) || errors.Is(err, scan.ErrUnavailable) {
		t.Errorf("canceled: got %v, want context.Canceled and not scan.ErrUnavailable", err)
	}
}

// failing yields some bytes and then an error.
type failing struct {
	data []byte
	err  error
}

func (f *failing) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

func TestScanReaderError(t *testing.T) {
	c := startFake(t, "tcp", &fakeClamd{})
	c.ChunkSize = 4
	errDisk := errors.New("disk on fire")
	_, err := c.Scan(context.Background(), &failing{data: []byte("0123456789"), err: errDisk})
	if !errors.Is(err, errDisk) || errors.Is(err, scan.ErrUnavailable) {
		t.Errorf("got %v, want the reader's error and not scan.ErrUnavailable", err)
	}
}

func TestPing(t *testing.T) {
	check := func(name, reply string, ok bool) {
		t.Helper()
		c := startFake(t, "tcp", &fakeClamd{serve: func(conn net.Conn) {
			conn.Read(make([]byte, 6))
			conn.Write([]byte(reply))
		}})
		err := c.Ping(context.Background())
		if ok && err != nil || !ok && !errors.Is(err, scan.ErrUnavailable) {
			t.Errorf("%s: Ping = %v, want ok=%v", name, err, ok)
		}
	}
	check("pong", "PONG\x00", true)
	check("other", "PANG\x00", false)
	check("nothing", "", false)
}

func TestConcurrentScans(t *testing.T) {
	c := startFake(t, "tcp", &fakeClamd{reply: signature})
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			msg := "clean"
			if i%2 == 1 {
				msg = "VIRUS"
			}
			got, err := c.Scan(context.Background(), strings.NewReader(msg))
			if err != nil || got.Infected != (i%2 == 1) {
				t.Errorf("scan %d: %+v, %v", i, got, err)
			}
		})
	}
	wg.Wait()
}

func FuzzParseScanReply(f *testing.F) {
	for _, s := range []string{"stream: OK", "stream: Eicar-Signature FOUND", "stream: FOUND", "INSTREAM size limit exceeded. ERROR",
		"stream: x(44d88612fea8a8f36de82e1278abb02f:68) FOUND", "stream:  FOUND", "ERROR", ""} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, reply string, tooLarge bool) {
		r, err := parseScanReply(context.Background(), reply, tooLarge)
		if err != nil {
			if !errors.Is(err, scan.ErrUnavailable) {
				t.Errorf("%q: error %v is not scan.ErrUnavailable", reply, err)
			}
			return
		}
		if r.Infected != (r.Signature != "") {
			t.Errorf("%q: %+v", reply, r)
		}
		if tooLarge && !r.TooLarge {
			t.Errorf("%q: TooLarge lost", reply)
		}
	})
}

func TestScanEarlyVerdictIsNone(t *testing.T) {
	// A clamd that answers OK before the stream ends and closes the
	// connection has not scanned the message.
	c := startFake(t, "tcp", &fakeClamd{serve: func(conn net.Conn) {
		conn.Read(make([]byte, 64))
		conn.Write([]byte("stream: OK\x00"))
	}})
	_, err := c.Scan(context.Background(), bytes.NewReader(make([]byte, 64<<20)))
	if !errors.Is(err, scan.ErrUnavailable) {
		t.Errorf("got %v, want scan.ErrUnavailable", err)
	}
}
