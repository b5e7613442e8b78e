package spamd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"relayguard/scan"
)

// fakeSpamd reads a SPAMC request as spamd does (the request line, headers
// up to the empty line, Content-length bytes of message) and answers
// reply(request line, headers, message).
type fakeSpamd struct {
	reply func(line string, hdr map[string]string, msg string) string

	mu   sync.Mutex
	msgs []string
	hdrs []map[string]string
	// halfClosed reports whether the client shut down its writing side
	// after the message.
	halfClosed []bool
}

func startFake(t *testing.T, network string, f *fakeSpamd) *Client {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "spamd.sock")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				f.handle(conn)
			})
		}
	})
	return &Client{Network: network, Address: ln.Addr().String(), Timeout: 5 * time.Second}
}

func (f *fakeSpamd) handle(conn net.Conn) {
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return
	}
	hdr := map[string]string{}
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		name, value, _ := strings.Cut(l, ":")
		hdr[strings.ToLower(name)] = strings.TrimSpace(value)
	}
	var msg, rest []byte
	if cl, ok := hdr["content-length"]; ok {
		n, _ := strconv.Atoi(cl)
		msg = make([]byte, n)
		if _, err := io.ReadFull(r, msg); err != nil {
			return
		}
		rest, _ = io.ReadAll(r) // up to the client's half-close
	}
	f.mu.Lock()
	f.msgs = append(f.msgs, string(msg))
	f.hdrs = append(f.hdrs, hdr)
	f.halfClosed = append(f.halfClosed, len(rest) == 0)
	f.mu.Unlock()
	io.WriteString(conn, f.reply(strings.TrimRight(line, "\r\n"), hdr, string(msg)))
}

// spamassassin answers SYMBOLS like spamd, GTUBE being spam.
func spamassassin(line string, hdr map[string]string, msg string) string {
	switch line {
	case "PING SPAMC/1.5":
		return "SPAMD/1.5 0 PONG\r\n"
	case "SYMBOLS SPAMC/1.5":
	default:
		return "SPAMD/1.0 76 Bad header line: " + line + "\r\n"
	}
	if strings.Contains(msg, "GTUBE") {
		body := "GTUBE,MISSING_DATE,NO_RECEIVED"
		return fmt.Sprintf("SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\nSpam: True ; 1000.0 / 5.0\r\n\r\n%s", len(body), body)
	}
	return "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: False ; 0.0 / 5.0\r\n\r\n"
}

func TestCheck(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			f := &fakeSpamd{reply: spamassassin}
			c := startFake(t, network, f)
			c.User = "relayguard"
			check := func(msg string, want Verdict) {
				t.Helper()
				got, err := c.Check(context.Background(), strings.NewReader(msg), int64(len(msg)))
				if err != nil {
					t.Fatalf("Check(%q): %v", msg, err)
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("Check(%q) = %+v, want %+v", msg, got, want)
				}
			}
			check("Subject: hi\r\n\r\nhello\r\n", Verdict{Threshold: 5})
			check("Subject: hi\r\n\r\nGTUBE\r\n", Verdict{Spam: true, Score: 1000, Threshold: 5,
				Symbols: []string{"GTUBE", "MISSING_DATE", "NO_RECEIVED"}})
			f.mu.Lock()
			if f.msgs[1] != "Subject: hi\r\n\r\nGTUBE\r\n" || f.hdrs[1]["user"] != "relayguard" || !f.halfClosed[1] {
				t.Errorf("spamd received %q with headers %q, half-closed %v", f.msgs[1], f.hdrs[1], f.halfClosed[1])
			}
			f.mu.Unlock()
			if err := c.Ping(context.Background()); err != nil {
				t.Errorf("Ping: %v", err)
			}
		})
	}
}

func TestCheckErrors(t *testing.T) {
	check := func(name, reply string, unavailable bool, wantText string) {
		t.Helper()
		c := startFake(t, "tcp", &fakeSpamd{reply: func(string, map[string]string, string) string { return reply }})
		_, err := c.Check(context.Background(), strings.NewReader("x"), 1)
		if err == nil {
			t.Fatalf("%s: no error", name)
		}
		if errors.Is(err, scan.ErrUnavailable) != unavailable {
			t.Errorf("%s: errors.Is(%v, scan.ErrUnavailable) = %v, want %v", name, err, !unavailable, unavailable)
		}
		if !strings.Contains(err.Error(), wantText) {
			t.Errorf("%s: error %q does not say %q", name, err, wantText)
		}
	}
	check("EX_TEMPFAIL", "SPAMD/1.0 75 EX_TEMPFAIL\r\n", true, "75 EX_TEMPFAIL")
	check("EX_PROTOCOL", "SPAMD/1.0 76 Bad header line: x\r\n", false, "76 Bad header line")
	check("nothing", "", true, "closed without a reply")
	check("not spamd", "HTTP/1.1 400 Bad Request\r\n\r\n", true, "malformed status line")
	check("no Spam header", "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n", true, "no Spam header")
	check("bad Spam header", "SPAMD/1.1 0 EX_OK\r\nSpam: Maybe ; 1 / 5\r\n\r\n", true, "malformed Spam header")
	check("bad score", "SPAMD/1.1 0 EX_OK\r\nSpam: True ; x / 5\r\n\r\n", true, "malformed Spam header")
	check("short body", "SPAMD/1.1 0 EX_OK\r\nContent-length: 10\r\nSpam: True ; 6 / 5\r\n\r\nGTUBE", true, "body")
	check("headers cut", "SPAMD/1.1 0 EX_OK\r\nSpam: True", true, "headers")
}

func TestCheckTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err == nil {
			defer conn.Close()
			io.Copy(io.Discard, conn)
			time.Sleep(time.Second)
		}
	}()
	c := &Client{Address: ln.Addr().String(), Timeout: 100 * time.Millisecond}
	_, err = c.Check(context.Background(), strings.NewReader("x"), 1)
	if !errors.Is(err, scan.ErrTimeout) {
		t.Errorf("got %v, want scan.ErrTimeout", err)
	}
}

func TestCheckMessageFaults(t *testing.T) {
	c := startFake(t, "tcp", &fakeSpamd{reply: spamassassin})
	_, err := c.Check(context.Background(), strings.NewReader("short"), 100)
	if err == nil || errors.Is(err, scan.ErrUnavailable) || !strings.Contains(err.Error(), "ended after 5 of its 100 bytes") {
		t.Errorf("short message: got %v", err)
	}
	if _, err := c.Check(context.Background(), strings.NewReader("x"), -1); err == nil || errors.Is(err, scan.ErrUnavailable) {
		t.Errorf("unknown size: got %v", err)
	}
	c.User = "a\r\nb"
	if _, err := c.Check(context.Background(), strings.NewReader("x"), 1); err == nil || errors.Is(err, scan.ErrUnavailable) {
		t.Errorf("CRLF in User: got %v", err)
	}
}

func TestRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &Client{Address: ln.Addr().String()}
	ln.Close()
	if _, err := c.Check(context.Background(), strings.NewReader("x"), 1); !errors.Is(err, scan.ErrUnavailable) {
		t.Errorf("Check: got %v, want scan.ErrUnavailable", err)
	}
	if err := c.Ping(context.Background()); !errors.Is(err, scan.ErrUnavailable) {
		t.Errorf("Ping: got %v, want scan.ErrUnavailable", err)
	}
}

func FuzzParseVerdict(f *testing.F) {
	f.Add("True ; 1000.0 / 5.0", "GTUBE,MISSING_DATE")
	f.Add("False ; 0.0 / 5.0", "")
	f.Add("Yes ; 6 / 5", " A , B ,")
	f.Add(";/", ",,,")
	f.Fuzz(func(t *testing.T, spam, body string) {
		v, err := parseVerdict(map[string]string{"spam": spam}, body)
		if err != nil {
			return
		}
		for _, s := range v.Symbols {
			if s == "" || strings.Contains(s, ",") {
				t.Errorf("symbol %q from %q", s, body)
			}
		}
	})
}
