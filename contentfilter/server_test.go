package contentfilter

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeHop is a next hop that records what it is sent and answers from a script.
type fakeHop struct {
	l        net.Listener
	mu       sync.Mutex
	commands []string
	messages [][]byte
	answer   func(cmd string) string // "" for the default
	dropData bool                    // close the connection in the middle of DATA
	// closeAfter, if not nil, closes the connection after each message
	// queued, as an idle timeout would before the next one, first saying
	// *closeAfter if it is not empty.
	closeAfter *string
}

func startHop(t *testing.T) *fakeHop {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &fakeHop{l: l}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go h.serve(c)
		}
	}()
	return h
}

func (h *fakeHop) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	say := func(s string) { fmt.Fprintf(c, "%s\r\n", s) }
	say("220 hop ESMTP")
	for {
		line, err := readLine(r)
		if err != nil {
			return
		}
		h.mu.Lock()
		h.commands = append(h.commands, line)
		answer := h.answer
		h.mu.Unlock()
		if answer != nil {
			if a := answer(line); a != "" {
				say(a)
				continue
			}
		}
		switch verb, _, _ := strings.Cut(strings.ToUpper(line), " "); verb {
		case "EHLO":
			say("250-hop\r\n250-PIPELINING\r\n250 XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT")
		case "DATA":
			say("354 go ahead")
			var buf bytes.Buffer
			if h.dropData {
				r.ReadString('\n')
				return
			}
			if err := readData(r, &buf, 1<<30); err != nil {
				return
			}
			h.mu.Lock()
			h.messages = append(h.messages, buf.Bytes())
			h.mu.Unlock()
			say("250 2.0.0 Ok: queued as 4F2A1B")
			if h.closeAfter != nil {
				if *h.closeAfter != "" {
					say(*h.closeAfter)
				}
				return
			}
		case "QUIT":
			say("221 bye")
			return
		default:
			say("250 2.0.0 Ok")
		}
	}
}

func (h *fakeHop) seen() ([]string, [][]byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.commands...), append([][]byte(nil), h.messages...)
}

type checkFunc func(ctx context.Context, m *Message) Verdict

func (f checkFunc) Check(ctx context.Context, m *Message) Verdict { return f(ctx, m) }

func startFilter(t *testing.T, hop string, c Checker, edit func(*Server)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Hostname: "filter.test", NextHop: hop, Checker: c, MaxSize: 10 << 20, SpoolDir: t.TempDir(),
		SpoolThreshold: 1 << 20, Timeout: 5 * time.Second, Log: slog.New(slog.DiscardHandler)}
	if edit != nil {
		edit(s)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.Close(context.Background()) })
	return l.Addr().String()
}

// postfix is the client side as Postfix's smtp client or smtpd proxy speaks it.
type postfix struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialFilter(t *testing.T, addr string) *postfix {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	p := &postfix{t: t, c: c, r: bufio.NewReader(c)}
	if rep := p.read(); rep.code != 220 {
		t.Fatalf("greeting %v", rep)
	}
	return p
}

func (p *postfix) read() reply {
	p.t.Helper()
	p.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	rep, err := readReply(p.r)
	if err != nil {
		p.t.Fatalf("reading a reply: %v", err)
	}
	return rep
}

// cmd sends a command and returns the last line of the reply.
func (p *postfix) cmd(line string) string {
	p.t.Helper()
	fmt.Fprintf(p.c, "%s\r\n", line)
	return p.read().last()
}

func (p *postfix) data(msg string) string {
	p.t.Helper()
	if r := p.cmd("DATA"); !strings.HasPrefix(r, "354") {
		return r
	}
	w := bufio.NewWriter(p.c)
	if err := writeData(w, strings.NewReader(msg)); err != nil {
		p.t.Fatal(err)
	}
	return p.read().last()
}

const testMessage = "From: <jan@example.cz>\r\nTo: <a@example.net>\r\nSubject: test\r\n\r\nHello.\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n"

func TestProxy(t *testing.T) {
	hop := startHop(t)
	hop.answer = func(cmd string) string {
		if strings.HasPrefix(cmd, "RCPT TO:<nobody@") {
			return "550 5.1.1 <nobody@example.net>: Recipient address rejected: unknown"
		}
		return ""
	}
	var seen *Message
	filter := startFilter(t, hop.l.Addr().String(), checkFunc(func(_ context.Context, m *Message) Verdict {
		seen = m
		return Verdict{Headers: []string{"X-Relayguard: checked"}}
	}), nil)
	p := dialFilter(t, filter)
	check := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s: %q, want %q", what, got, want)
		}
	}
	fmt.Fprintf(p.c, "EHLO mx.example.test\r\n")
	if ehlo := p.read(); !strings.Contains(ehlo.String(), "XFORWARD NAME ADDR PORT") || !strings.Contains(ehlo.String(), "PIPELINING") {
		t.Errorf("EHLO: %s", ehlo)
	}
	// After-queue: two XFORWARD commands; values are xtext.
	check("XFORWARD", p.cmd("XFORWARD NAME=localhost ADDR=127.0.0.9 PORT=54526"), "250 2.0.0 Ok")
	check("XFORWARD", p.cmd("XFORWARD PROTO=ESMTP HELO=client+2Eexample.test IDENT=50D2C9847F1 SOURCE=LOCAL"), "250 2.0.0 Ok")
	check("bad XFORWARD", p.cmd("XFORWARD COLOR=blue"), "501 5.5.4 Bad XFORWARD attribute COLOR")
	check("MAIL", p.cmd("MAIL FROM:<jan@example.cz> SIZE=300 BODY=8BITMIME RET=HDRS ENVID=abc+2B1"), "250 2.0.0 Ok")
	check("RCPT", p.cmd("RCPT TO:<a@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@example.net"), "250 2.0.0 Ok")
	check("RCPT refused by the next hop", p.cmd("RCPT TO:<nobody@example.net>"), "550 5.1.1 <nobody@example.net>: Recipient address rejected: unknown")
	check("DATA", p.data(testMessage), "250 2.0.0 Ok: queued as 4F2A1B")
	check("QUIT", p.cmd("QUIT"), "221 2.0.0 Bye")

	if seen == nil || seen.ClientAddr != "127.0.0.9" || seen.ClientPort != "54526" || seen.Helo != "client.example.test" ||
		seen.Ident != "50D2C9847F1" || seen.Sender != "jan@example.cz" || strings.Join(seen.Recipients, ",") != "a@example.net" {
		t.Errorf("message seen by the checks: %+v", seen)
	}
	time.Sleep(50 * time.Millisecond)
	cmds, msgs := hop.seen()
	want := []string{
		"EHLO filter.test",
		"XFORWARD ADDR=127.0.0.9 HELO=client+2Eexample.test IDENT=50D2C9847F1 NAME=localhost PORT=54526 PROTO=ESMTP SOURCE=LOCAL",
		"MAIL FROM:<jan@example.cz> SIZE=300 BODY=8BITMIME RET=HDRS ENVID=abc+2B1",
		"RCPT TO:<a@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@example.net",
		"RCPT TO:<nobody@example.net>",
		"DATA",
		"QUIT",
	}
	if strings.Join(cmds, "\n") != strings.Join(want, "\n") {
		t.Errorf("next hop got:\n%s\nwant:\n%s", strings.Join(cmds, "\n"), strings.Join(want, "\n"))
	}
	if len(msgs) != 1 || string(msgs[0]) != "X-Relayguard: checked\r\n"+testMessage {
		t.Errorf("next hop message: %q", msgs)
	}
}

func TestRefusals(t *testing.T) {
	check := func(name string, c Checker, edit func(*Server), hopEdit func(*fakeHop), msg, want string, delivered int) {
		t.Helper()
		hop := startHop(t)
		if hopEdit != nil {
			hopEdit(hop)
		}
		p := dialFilter(t, startFilter(t, hop.l.Addr().String(), c, edit))
		p.cmd("EHLO mx.example.test")
		p.cmd("MAIL FROM:<jan@example.cz>")
		p.cmd("RCPT TO:<a@example.net>")
		if got := p.data(msg); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
		// The session goes on.
		if got := p.cmd("MAIL FROM:<jan@example.cz>"); !strings.HasPrefix(got, "250") && !strings.HasPrefix(got, "451") {
			t.Errorf("%s: next MAIL: %q", name, got)
		}
		time.Sleep(50 * time.Millisecond)
		if _, msgs := hop.seen(); len(msgs) != delivered {
			t.Errorf("%s: %d messages delivered, want %d", name, len(msgs), delivered)
		}
	}
	virus := checkFunc(func(context.Context, *Message) Verdict {
		return Verdict{Reply: "554 5.7.1 ID virus detected"}
	})
	tempfail := checkFunc(func(context.Context, *Message) Verdict {
		return Verdict{Reply: "451 4.7.1 ID scanner unavailable, try again later"}
	})
	check("virus", virus, nil, nil, testMessage, "554 5.7.1 ID virus detected", 0)
	check("scanner down", tempfail, nil, nil, testMessage, "451 4.7.1 ID scanner unavailable, try again later", 0)
	check("too big", nil, func(s *Server) { s.MaxSize = 100 }, nil, testMessage+strings.Repeat("x", 200)+"\r\n", "552 5.3.4 Error: message larger than 100 bytes", 0)
	check("next hop refuses the message", nil, nil, func(h *fakeHop) {
		h.answer = func(cmd string) string {
			if cmd == "DATA" {
				return "554 5.7.1 no thanks"
			}
			return ""
		}
	}, testMessage, "554 5.7.1 no thanks", 0)
	check("next hop dies during DATA", nil, nil, func(h *fakeHop) { h.dropData = true }, testMessage, nextHopDown, 0)
}

// TestNextHopRedial: a next hop that closed the connection kept from the
// previous message is dialled again at the next MAIL, once.
func TestNextHopRedial(t *testing.T) {
	for _, tt := range []struct {
		name    string
		closing string // what the next hop says before closing
		down    bool   // the next hop stops listening after the first message
		want    string // the reply to the second MAIL
	}{
		{"closed silently", "", false, "250 2.0.0 Ok"},
		{"closed with 421", "421 4.4.2 hop Error: timeout exceeded", false, "250 2.0.0 Ok"},
		{"closed, then down", "", true, nextHopDown},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hop := startHop(t)
			hop.closeAfter = &tt.closing
			p := dialFilter(t, startFilter(t, hop.l.Addr().String(), nil, nil))
			p.cmd("EHLO mx.example.test")
			p.cmd("MAIL FROM:<jan@example.cz>")
			p.cmd("RCPT TO:<a@example.net>")
			if got := p.data(testMessage); !strings.HasPrefix(got, "250") {
				t.Fatalf("first message: %q", got)
			}
			if tt.down {
				hop.l.Close()
			}
			time.Sleep(50 * time.Millisecond) // the next hop closes its side
			if got := p.cmd("MAIL FROM:<jan@example.cz>"); got != tt.want {
				t.Fatalf("second MAIL: %q, want %q", got, tt.want)
			}
			if tt.down {
				return
			}
			p.cmd("RCPT TO:<b@example.net>")
			if got := p.data(testMessage); !strings.HasPrefix(got, "250") {
				t.Fatalf("second message: %q", got)
			}
			if _, msgs := hop.seen(); len(msgs) != 2 {
				t.Errorf("%d messages delivered, want 2", len(msgs))
			}
		})
	}
}

func TestNextHopDown(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	p := dialFilter(t, startFilter(t, addr, nil, nil))
	p.cmd("EHLO mx.example.test")
	if got := p.cmd("MAIL FROM:<jan@example.cz>"); got != nextHopDown {
		t.Errorf("MAIL with the next hop down: %q", got)
	}
	if got := p.cmd("RCPT TO:<a@example.net>"); got != "503 5.5.1 Error: need MAIL command" {
		t.Errorf("RCPT: %q", got)
	}
}

func TestSpoolAndSign(t *testing.T) {
	hop := startHop(t)
	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("y", 998)+"\r\n", 3000) // 3 MB
	var onDisk bool
	filter := startFilter(t, hop.l.Addr().String(), checkFunc(func(_ context.Context, m *Message) Verdict {
		onDisk = m.Spool.OnDisk()
		return Verdict{}
	}), func(s *Server) {
		s.Sign = func(w io.Writer, r io.Reader, m *Message) error {
			io.WriteString(w, "DKIM-Signature: v=1; d=example.cz\r\n")
			_, err := io.Copy(w, r)
			return err
		}
	})
	p := dialFilter(t, filter)
	p.cmd("EHLO mx.example.test")
	p.cmd("MAIL FROM:<jan@example.cz>")
	p.cmd("RCPT TO:<a@example.net>")
	if got := p.data(big); got != "250 2.0.0 Ok: queued as 4F2A1B" {
		t.Fatalf("DATA: %q", got)
	}
	if !onDisk {
		t.Error("a 3 MB message was kept in memory (threshold 1 MB)")
	}
	time.Sleep(50 * time.Millisecond)
	if _, msgs := hop.seen(); len(msgs) != 1 || string(msgs[0]) != "DKIM-Signature: v=1; d=example.cz\r\n"+big {
		t.Errorf("signed message not delivered intact (%d messages)", len(msgs))
	}
}

// writeData writes the message read from r as DATA, as Postfix does.
func writeData(w *bufio.Writer, r io.Reader) error {
	d := newDataWriter(w)
	if _, err := io.Copy(d, r); err != nil {
		return err
	}
	return d.Close()
}

// A message that the signer refuses (a *Refusal: its header section is too
// large to hold) gets the refusal, nothing reaches the next hop, and the
// session goes on: the next message is delivered. Any other error of the
// signer is temporary.
func TestSignRefusal(t *testing.T) {
	hop := startHop(t)
	filter := startFilter(t, hop.l.Addr().String(), nil, func(s *Server) {
		s.Sign = func(w io.Writer, r io.Reader, m *Message) error {
			switch m.Sender {
			case "huge@example.cz":
				return &Refusal{Reply: "552 5.3.4 Error: message header too large"}
			case "broken@example.cz":
				io.WriteString(w, "Subject: half\r\n")
				return errors.New("signing failed")
			}
			_, err := io.Copy(w, r)
			return err
		}
	})
	p := dialFilter(t, filter)
	p.cmd("EHLO mx.example.test")
	for _, c := range []struct{ sender, reply string }{
		{"huge@example.cz", "552 5.3.4 Error: message header too large"},
		{"broken@example.cz", nextHopDown},
		{"jan@example.cz", "250 2.0.0 Ok: queued as 4F2A1B"},
	} {
		p.cmd("MAIL FROM:<" + c.sender + ">")
		p.cmd("RCPT TO:<a@example.net>")
		if got := p.data(testMessage); got != c.reply {
			t.Errorf("%s: %q, want %q", c.sender, got, c.reply)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if _, msgs := hop.seen(); len(msgs) != 1 || !strings.HasPrefix(string(msgs[0]), "From: <jan@example.cz>") {
		t.Errorf("the next hop got %d messages, want jan's alone: %q", len(msgs), msgs)
	}
}

func TestDataCodec(t *testing.T) {
	check := func(in string) {
		t.Helper()
		var wire bytes.Buffer
		w := bufio.NewWriter(&wire)
		if err := writeData(w, strings.NewReader(in)); err != nil {
			t.Fatal(err)
		}
		// The signer writes in pieces of any length: every cut gives the
		// same data, and so do single bytes.
		for cut := 0; cut <= len(in); cut++ {
			var split bytes.Buffer
			d := newDataWriter(bufio.NewWriter(&split))
			d.Write([]byte(in[:cut]))
			d.Write([]byte(in[cut:]))
			if err := d.Close(); err != nil || split.String() != wire.String() {
				t.Errorf("%q written as %q and %q: %q, want %q (%v)", in, in[:cut], in[cut:], split.String(), wire.String(), err)
			}
		}
		var bytewise bytes.Buffer
		d := newDataWriter(bufio.NewWriter(&bytewise))
		for i := range len(in) {
			d.Write([]byte{in[i]})
		}
		if d.Close(); bytewise.String() != wire.String() {
			t.Errorf("%q written a byte at a time: %q, want %q", in, bytewise.String(), wire.String())
		}
		var out bytes.Buffer
		if err := readData(bufio.NewReader(&wire), &out, 1<<20); err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		want := strings.ReplaceAll(strings.ReplaceAll(in, "\r\n", "\n"), "\n", "\r\n")
		if in != "" && !strings.HasSuffix(want, "\r\n") {
			want += "\r\n"
		}
		if out.String() != want {
			t.Errorf("%q came back as %q", in, out.String())
		}
	}
	check("a\r\nb\r\n")
	check(".\r\n")
	check("..\r\n.x\r\n")
	check("bare\nlf\n")
	check("no final newline")
	check("")
	check("\n.\n\r\n.")
	check("bare\rcr\r\n.a\rb\nc\r")
	if xtext("client+2Eexample+2Btest") != "client.example+test" || xtext("a+zz") != "a+zz" {
		t.Error("xtext")
	}
}

// FuzzSession feeds arbitrary bytes to a filter session as Postfix's side:
// it must never panic nor hang.
func FuzzSession(f *testing.F) {
	f.Add([]byte("EHLO x\r\nXFORWARD ADDR=1.2.3.4 PORT=5\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n"))
	f.Add([]byte("MAIL\r\nRCPT\r\nXFORWARD =\r\nDATA\r\n" + strings.Repeat("A", 5000) + "\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &Server{Hostname: "f", NextHop: "127.0.0.1:1", MaxSize: 1 << 20, SpoolDir: t.TempDir(), SpoolThreshold: 1 << 10,
			Timeout: time.Second, Log: slog.New(slog.DiscardHandler)}
		server, client := net.Pipe()
		go func() {
			client.Write(data)
			client.Close()
		}()
		go io.Copy(io.Discard, client)
		sess := &session{srv: s, conn: server}
		sess.serve()
	})
}

// A filter configured for one mode logs an error for each message that
// Postfix hands over in the other, and nothing when they agree.
func TestModeMismatch(t *testing.T) {
	tests := []struct {
		name       string
		afterQueue bool
		xforward   string
		want       string // in the log; "" for nothing logged
	}{
		{"before-queue as configured", false, "XFORWARD ADDR=127.0.0.9 PORT=35692 IDENT=[UNAVAILABLE]", ""},
		{"after-queue as configured", true, "XFORWARD ADDR=127.0.0.9 PORT=35692 IDENT=50D2C9847F1", ""},
		{"after-queue configured before", false, "XFORWARD ADDR=127.0.0.9 PORT=35692 IDENT=50D2C9847F1",
			`level=ERROR msg="contentfilter.mode is before-queue but Postfix's XFORWARD IDENT has a queue id: set the mode that etc/postfix/main.cf uses" client=127.0.0.9 ident=50D2C9847F1`},
		{"before-queue configured after", true, "XFORWARD ADDR=127.0.0.9 PORT=35692 IDENT=[UNAVAILABLE]",
			`level=ERROR msg="contentfilter.mode is after-queue but Postfix's XFORWARD IDENT has no queue id: set the mode that etc/postfix/main.cf uses" client=127.0.0.9 ident=[UNAVAILABLE]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs syncBuffer
			hop := startHop(t)
			filter := startFilter(t, hop.l.Addr().String(), nil, func(s *Server) {
				s.AfterQueue = tt.afterQueue
				s.Log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{
					Level: slog.LevelWarn,
					ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
						if a.Key == slog.TimeKey {
							return slog.Attr{}
						}
						return a
					}}))
			})
			p := dialFilter(t, filter)
			p.cmd("EHLO mx.example.test")
			for _, c := range []string{tt.xforward, "MAIL FROM:<jan@example.cz>", "RCPT TO:<a@example.net>"} {
				if r := p.cmd(c); r != "250 2.0.0 Ok" {
					t.Fatalf("%s: %s", c, r)
				}
			}
			if r := p.data(testMessage); !strings.HasPrefix(r, "250 ") {
				t.Fatalf("DATA: %s", r)
			}
			got := strings.TrimSpace(logs.String())
			if got != tt.want {
				t.Errorf("log:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// syncBuffer is a log's destination that the test reads while the server
// writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
