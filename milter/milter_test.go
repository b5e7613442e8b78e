package milter

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// mta is the MTA side of a milter connection, as Postfix 3.7 speaks it.
type mta struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func (m *mta) send(cmd byte, data ...string) {
	m.t.Helper()
	if err := writePacket(m.c, cmd, []byte(strings.Join(data, ""))); err != nil {
		m.t.Fatal(err)
	}
}

func (m *mta) reply() (byte, string) {
	m.t.Helper()
	m.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	cmd, data, err := readPacket(m.r)
	if err != nil {
		m.t.Fatal(err)
	}
	return cmd, string(data)
}

// event sends an event and returns the reply: "" for continue, else the text.
func (m *mta) event(cmd byte, data ...string) string {
	m.t.Helper()
	m.send(cmd, data...)
	code, text := m.reply()
	switch code {
	case replyContinue:
		return ""
	case replyReplyCode:
		return strings.TrimSuffix(text, "\x00")
	}
	m.t.Fatalf("reply %q", code)
	return ""
}

func start(t *testing.T, h Handler) *mta {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Handler: h, Timeout: time.Minute, Log: slog.New(slog.DiscardHandler)}
	go srv.Serve(l)
	t.Cleanup(srv.Close)
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &mta{t: t, c: c, r: bufio.NewReader(c)}
}

func u32(v uint32) string { return string(binary.BigEndian.AppendUint32(nil, v)) }

func TestSession(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	closed := make(chan struct{}, 2)
	m := start(t, func(s *Session, stage string) string {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, stage+" "+s.Client.String()+" "+s.Server.String()+" "+s.HeloName+" "+s.Sender+" "+s.Recipient+" "+s.Macro("auth_authen")+" "+s.Macro("i"))
		if stage == Connect {
			s.OnClose(func() { closed <- struct{}{} })
		}
		switch {
		case stage == Rcpt && s.Recipient == "bad@example.net":
			return "550 5.1.1 ID invalid destination domain <bad@example.net>"
		case stage == EndOfMessage:
			return "450 4.7.1 ID too many big messages to Seznam.cz"
		}
		return ""
	})
	// Negotiation: Postfix offers version 6, every action, every protocol flag.
	m.send(cmdOptneg, u32(6), u32(0x1ff), u32(0x1fffff))
	code, data := m.reply()
	if code != cmdOptneg || len(data) < 12 {
		t.Fatalf("negotiation reply %q %q", code, data)
	}
	if v, act, proto := binary.BigEndian.Uint32([]byte(data[0:])), binary.BigEndian.Uint32([]byte(data[4:])), binary.BigEndian.Uint32([]byte(data[8:])); v != 6 || act != 0 || proto != noBody|noHeaders|noEOH|noUnknown {
		t.Errorf("negotiated version %d, actions %#x, protocol %#x", v, act, proto)
	}
	if !strings.Contains(data, "{daemon_addr} {daemon_port}\x00") || !strings.Contains(data, "i {auth_authen}\x00") {
		t.Errorf("macros not asked for: %q", data)
	}
	m.send(cmdMacro, "C", "{daemon_addr}\x00127.0.0.1\x00{daemon_port}\x00587\x00")
	if r := m.event(cmdConnect, "unknown\x00", "4", string([]byte{0xd2, 0x04}), "127.0.0.9\x00"); r != "" {
		t.Errorf("connect: %q", r)
	}
	if r := m.event(cmdHelo, "client.example\x00"); r != "" {
		t.Errorf("helo: %q", r)
	}
	m.send(cmdMacro, "M", "i\x00ABC123\x00{auth_authen}\x00jan@example.cz\x00")
	if r := m.event(cmdMail, "<jan@example.cz>\x00SIZE=100\x00"); r != "" {
		t.Errorf("mail: %q", r)
	}
	if r := m.event(cmdRcpt, "<bad@example.net>\x00"); r != "550 5.1.1 ID invalid destination domain <bad@example.net>" {
		t.Errorf("rcpt: %q", r)
	}
	if r := m.event(cmdRcpt, "<ok@example.net>\x00NOTIFY=NEVER\x00"); r != "" {
		t.Errorf("rcpt: %q", r)
	}
	if r := m.event(cmdData); r != "" {
		t.Errorf("data: %q", r)
	}
	if r := m.event(cmdEOB); r != "450 4.7.1 ID too many big messages to Seznam.cz" {
		t.Errorf("eom: %q", r)
	}
	m.send(cmdAbort) // no reply expected
	m.send(cmdQuitNC)
	m.send(cmdMacro, "C", "{daemon_addr}\x00::1\x00{daemon_port}\x0025\x00")
	if r := m.event(cmdConnect, "h\x00", "6", string([]byte{0, 25}), "IPv6:2001:db8::7\x00"); r != "" {
		t.Errorf("second connect: %q", r)
	}
	m.send(cmdQuit)
	for i := range 2 {
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatalf("OnClose hook %d not run (QUIT_NC, then QUIT)", i+1)
		}
	}
	want := []string{
		"CONNECT 127.0.0.9:53764 127.0.0.1:587     ",
		"EHLO 127.0.0.9:53764 127.0.0.1:587 client.example    ",
		"MAIL 127.0.0.9:53764 127.0.0.1:587 client.example jan@example.cz  jan@example.cz ABC123",
		"RCPT 127.0.0.9:53764 127.0.0.1:587 client.example jan@example.cz bad@example.net jan@example.cz ABC123",
		"RCPT 127.0.0.9:53764 127.0.0.1:587 client.example jan@example.cz ok@example.net jan@example.cz ABC123",
		"DATA 127.0.0.9:53764 127.0.0.1:587 client.example jan@example.cz ok@example.net jan@example.cz ABC123",
		"END-OF-MESSAGE 127.0.0.9:53764 127.0.0.1:587 client.example jan@example.cz ok@example.net jan@example.cz ABC123",
		"CONNECT [2001:db8::7]:25 [::1]:25     ",
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
}

func TestProtocolErrors(t *testing.T) {
	check := func(name string, packet []byte) {
		t.Helper()
		if err := serveBytes(packet); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	check("zero length", []byte{0, 0, 0, 0})
	check("huge length", []byte{0x7f, 0, 0, 0, 'C'})
	check("truncated", []byte{0, 0, 0, 10, 'C', 'x'})
	check("unknown command", append(u32b(1), 'Z'))
	check("old protocol", append(u32b(13), append([]byte{'O'}, []byte(u32(1)+u32(0)+u32(0))...)...))
	check("short connect", append(u32b(2), 'C', 'x'))
	check("bad connect address", append(u32b(12), append([]byte{'C'}, []byte("h\x004\x00\x19bogus\x00")...)...))
}

func u32b(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// serveBytes runs a server session over packets and returns its error.
func serveBytes(packets []byte) error {
	srv := &Server{Handler: func(*Session, string) string { return "" }, Log: slog.New(slog.DiscardHandler)}
	server, client := net.Pipe()
	go func() {
		client.Write(packets)
		client.Close()
	}()
	go func() {
		var sink bytes.Buffer
		sink.ReadFrom(client)
	}()
	return srv.serve(server)
}

// FuzzServe feeds arbitrary bytes to a milter session: never a panic, and
// every error is the end of the input or a protocol error.
func FuzzServe(f *testing.F) {
	var seed bytes.Buffer
	for _, p := range []struct {
		cmd  byte
		data string
	}{
		{cmdOptneg, u32(6) + u32(0x1ff) + u32(0x1fffff)},
		{cmdMacro, "C{daemon_addr}\x00127.0.0.1\x00{daemon_port}\x00587\x00"},
		{cmdConnect, "unknown\x004\x00\x19127.0.0.1\x00"},
		{cmdHelo, "h\x00"},
		{cmdMail, "<a@b>\x00"},
		{cmdRcpt, "<c@d>\x00"},
		{cmdData, ""},
		{cmdEOB, ""},
		{cmdQuit, ""},
	} {
		writePacket(&seed, p.cmd, []byte(p.data))
	}
	f.Add(seed.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := serveBytes(data); err != nil && !errors.Is(err, ErrProtocol) && !errors.Is(err, io.EOF) &&
			!errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.ErrClosedPipe) {
			t.Fatalf("unexpected error: %v", err)
		}
	})
}

func TestParseAddr(t *testing.T) {
	for in, want := range map[string]string{"127.0.0.1": "127.0.0.1", "IPv6:2001:db8::1": "2001:db8::1", "::ffff:192.0.2.1": "192.0.2.1"} {
		a, err := parseAddr(in)
		if err != nil || a != netip.MustParseAddr(want) {
			t.Errorf("parseAddr(%q) = %v, %v", in, a, err)
		}
	}
}
