package contentfilter

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"relayguard/config"
)

// fakeReplies is policyd's END-OF-MESSAGE side: it leaves reply for the
// transactions announced to it, or fails with err.
type fakeReplies struct {
	mu      sync.Mutex
	reply   string
	err     error
	began   []netip.AddrPort
	pending map[netip.AddrPort]bool
}

func (f *fakeReplies) Filtering(_ context.Context, client netip.AddrPort) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.began = append(f.began, client)
	if f.pending == nil {
		f.pending = map[netip.AddrPort]bool{}
	}
	f.pending[client] = true
	return f.err
}

func (f *fakeReplies) EndOfMessage(_ context.Context, client netip.AddrPort) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return "", f.err
	}
	if !f.pending[client] {
		return "", nil
	}
	delete(f.pending, client)
	return f.reply, nil
}

// Before the queue, the filter announces each transaction to policyd before
// it accepts MAIL, and speaks policyd's END-OF-MESSAGE reply word for word;
// after the queue policyd speaks for itself.
func TestEndOfMessageReplies(t *testing.T) {
	const big = "450 4.7.1 ID too many big messages to Seznam.cz"
	tests := []struct {
		name      string
		mode      string
		reply     string
		err       error
		want      string // the reply to the end of data
		delivered int
		announced bool
	}{
		{"policyd refuses", config.BeforeQueue, big, nil, big, 0, true},
		{"policyd lets it pass", config.BeforeQueue, "", nil, "250 2.0.0 Ok: queued as 4F2A1B", 1, true},
		{"policyd unreachable", config.BeforeQueue, big, errors.New("connection refused"), "451 4.7.1 ID temporary failure, try again later", 0, true},
		{"after the queue", config.AfterQueue, big, nil, "250 2.0.0 Ok: queued as 4F2A1B", 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := config.Default().ContentFilter
			c.Mode = tt.mode
			for _, r := range []*config.Rule{&c.Rules.Virus.Rule, &c.Rules.Spam.Rule} {
				r.Mode = config.Off
			}
			k, err := NewChecks(&c, func() string { return "ID" }, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			f := &fakeReplies{reply: tt.reply, err: tt.err}
			k.Replies = f
			hop := startHop(t)
			p := dialFilter(t, startFilter(t, hop.l.Addr().String(), k, func(s *Server) { s.AfterQueue = tt.mode == config.AfterQueue }))
			p.cmd("EHLO mx.example.test")
			ident := "[UNAVAILABLE]"
			if tt.mode == config.AfterQueue {
				ident = "50D2C9847F1"
			}
			p.cmd("XFORWARD ADDR=127.0.0.9 PORT=35692 IDENT=" + ident)
			if r := p.cmd("MAIL FROM:<jan@example.cz>"); r != "250 2.0.0 Ok" {
				t.Fatalf("MAIL: %s", r)
			}
			f.mu.Lock()
			began := fmtAddrs(f.began)
			f.mu.Unlock()
			if want := map[bool]string{true: "127.0.0.9:35692", false: ""}[tt.announced]; began != want {
				t.Errorf("announced before MAIL was accepted: %q, want %q", began, want)
			}
			p.cmd("RCPT TO:<a@seznam.cz>")
			if got := p.data(testMessage); got != tt.want {
				t.Errorf("end of data: %q, want %q", got, tt.want)
			}
			// The filter answers the end of data once the next hop has
			// answered it, so what it delivered is known by now.
			if _, msgs := hop.seen(); len(msgs) != tt.delivered {
				t.Errorf("%d messages delivered, want %d", len(msgs), tt.delivered)
			}
		})
	}
}

func fmtAddrs(as []netip.AddrPort) string {
	var s []string
	for _, a := range as {
		s = append(s, a.String())
	}
	return strings.Join(s, " ")
}
