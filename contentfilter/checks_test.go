package contentfilter

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"testing"

	"relayguard/config"
)

func spoolOf(t *testing.T, msg string) *Spool {
	t.Helper()
	s := newSpool(t.TempDir(), 1<<20)
	if _, err := s.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// deadAddr is an address where nothing listens.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestChecksFailModes(t *testing.T) {
	const clean = "From: <jan@example.cz>\r\nSubject: hi\r\n\r\nHello.\r\n"
	const exe = "From: <jan@example.cz>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b\r\nContent-Type: application/octet-stream\r\n" +
		"Content-Disposition: attachment; filename=\"run.exe\"\r\n\r\nMZ\r\n--b--\r\n"
	check := func(name string, edit func(*config.ContentFilter), msg, wantReply string, wantHeaders int) {
		t.Helper()
		c := config.Default().ContentFilter
		c.Rules.Virus.Clamd = deadAddr(t)
		c.Rules.Spam.Rspamd = "http://" + deadAddr(t)
		if edit != nil {
			edit(&c)
		}
		var logs bytes.Buffer
		k, err := NewChecks(&c, func() string { return "ID" }, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		v := k.Check(context.Background(), &Message{ClientAddr: "192.0.2.7", Sender: "jan@example.cz", Spool: spoolOf(t, msg)})
		if v.Reply != wantReply || len(v.Headers) != wantHeaders {
			t.Errorf("%s: %+v, want reply %q and %d headers\n%s", name, v, wantReply, wantHeaders, logs.String())
		}
	}
	tempfail := "451 4.7.1 ID temporary failure, try again later"
	check("clamd down, fail = tempfail", nil, clean, tempfail, 0)
	check("clamd down, fail = accept; rspamd down, fail = accept", func(c *config.ContentFilter) { c.Rules.Virus.Fail = "accept" }, clean, "", 0)
	check("rspamd down, fail = tempfail", func(c *config.ContentFilter) {
		c.Rules.Virus.Mode = config.Off
		c.Rules.Spam.Fail = "tempfail"
	}, clean, tempfail, 0)
	check("banned attachment before any scanner", nil, exe, "554 5.7.1 ID Bad attachment", 0)
	check("banned attachment, log-only", func(c *config.ContentFilter) {
		c.Rules.Attachments.Mode = config.LogOnly
		c.Rules.Virus.Mode = config.Off
		c.Rules.Spam.Mode = config.Off
	}, exe, "", 0)
	check("exempt client", func(c *config.ContentFilter) {
		c.Rules.Attachments.Exempt = config.Networks{mustNetwork(t, "192.0.2.0/24")}
		c.Rules.Virus.Mode = config.Off
		c.Rules.Spam.Mode = config.Off
	}, exe, "", 0)
	check("everything off", func(c *config.ContentFilter) {
		c.Rules.Attachments.Mode, c.Rules.Virus.Mode, c.Rules.Spam.Mode = config.Off, config.Off, config.Off
	}, exe, "", 0)
}

func mustNetwork(t *testing.T, s string) config.Network {
	var n config.Network
	if err := n.UnmarshalText([]byte(s)); err != nil {
		t.Fatal(err)
	}
	return n
}
