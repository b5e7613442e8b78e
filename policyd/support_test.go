package policyd

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"relayguard/config"
)

func TestSupport(t *testing.T) {
	e := newTestEngine(t, func(c *config.Config) {
		c.Rules.Rate.Windows = []config.RateWindow{{Window: time.Minute, Max: 3}}
	})
	s := &Support{Config: e.cfg, Store: e.store, Decisions: e.decisions, Now: e.clock.Now}
	ctx := context.Background()
	ip := netip.MustParseAddr("127.0.0.9")

	// Usage: R10 per account and per address, R13, R4.
	x := transaction{client: "127.0.0.9", port: "1", login: "jan@example.cz", from: "jan@example.cz", rcpts: rcpts(3, "foreign.test")}
	if _, a := x.run(e); a != "DUNNO" {
		t.Fatal(a)
	}
	lines, err := s.Usage(ctx, "Jan@Example.CZ")
	if err != nil || len(lines) != 2 || lines[0].Rule != "R10" || lines[0].Used != 3 || lines[0].Limit != 3 ||
		lines[0].Window != "1m" || lines[0].FreesAt.IsZero() || lines[1].Rule != "R13" || lines[1].Subject != "jan@example.cz to Seznam.cz" {
		t.Errorf("account usage: %+v %v", lines, err)
	}
	lines, err = s.Usage(ctx, "127.0.0.9")
	if err != nil || len(lines) != 3 || lines[0].Used != 3 || lines[2].Rule != "R4" || lines[2].Limit != 10 {
		t.Errorf("address usage: %+v %v", lines, err)
	}
	if _, err := s.Usage(ctx, "not an address"); err == nil {
		t.Error("usage of garbage accepted")
	}

	// Block and unblock an address: R4's reply at connect.
	if _, err := s.Block(ctx, ip, time.Hour, "phishing run"); err != nil {
		t.Fatal(err)
	}
	if a := e.Decide(ctx, request("CONNECT", "127.0.0.9", "", "", "")); a == "DUNNO" {
		t.Error("blocked address accepted at connect")
	}
	if bs, err := s.Blocks(ctx); err != nil || len(bs) != 1 || bs[0].Reason != "phishing run" {
		t.Errorf("blocks: %+v %v", bs, err)
	}
	if was, err := s.Unblock(ctx, ip); !was || err != nil {
		t.Errorf("unblock: %v %v", was, err)
	}
	if a := e.Decide(ctx, request("CONNECT", "127.0.0.9", "", "", "")); a != "DUNNO" {
		t.Errorf("after unblock: %q", a)
	}

	// Disable and enable an account: R3 at MAIL.
	mail := request("MAIL", "127.0.0.1", "petr@example.cz", "petr@example.cz", "")
	if err := s.SetAccountDisabled(ctx, "petr@example.cz", true); err != nil {
		t.Fatal(err)
	}
	if a := e.Decide(ctx, mail); a != "535 5.7.8 ID authentication rejected access disabled" {
		t.Errorf("disabled account: %q", a)
	}
	rec, ok, err := s.Explain(ctx, "ID")
	if !ok || err != nil || rec.Rule != "R3" || rec.Reason != "account disabled by support" {
		t.Errorf("explain: %+v %v %v", rec, ok, err)
	}
	if err := s.SetAccountDisabled(ctx, "petr@example.cz", false); err != nil {
		t.Fatal(err)
	}
	if a := e.Decide(ctx, mail); a != "DUNNO" {
		t.Errorf("enabled account: %q", a)
	}
}
