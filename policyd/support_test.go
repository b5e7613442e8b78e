package policyd

import (
	"context"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"relayguard/admin"
	"relayguard/authpolicy"
	"relayguard/config"
	"relayguard/limits"
)

func TestSupport(t *testing.T) {
	e := newTestEngine(t, func(c *config.Config) {
		c.Rules.Rate.Windows = []config.RateWindow{{Window: time.Minute, Max: 3}}
	})
	s := &Support{Config: e.cfg, Store: e.store, Decisions: e.decisions, Now: e.clock.Now}
	ctx := context.Background()
	ip := netip.MustParseAddr("127.0.0.9")

	// Usage: R10 per account and per address, R13, R15, R4.
	x := transaction{client: "127.0.0.9", port: "1", login: "jan@example.cz", from: "jan@example.cz", rcpts: rcpts(3, "foreign.test")}
	if _, a := x.run(e); a != "DUNNO" {
		t.Fatal(a)
	}
	if _, err := ReportSpam(ctx, e.store, &e.cfg.Rules.SpamAllowance, "jan@example.cz", ip, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	lines, err := s.Usage(ctx, "Jan@Example.CZ")
	if err != nil || len(lines) != 3 || lines[0].Rule != "R10" || lines[0].Used != 3 || lines[0].Limit != 3 ||
		lines[0].Window != "1m" || lines[0].FreesAt.IsZero() || lines[1].Rule != "R13" || lines[1].Subject != "jan@example.cz to Seznam.cz" ||
		lines[2].Rule != "R15" || lines[2].Used != 1 || lines[2].Limit != 10 || lines[2].Window != "24h" {
		t.Errorf("account usage: %+v %v", lines, err)
	}
	lines, err = s.Usage(ctx, "127.0.0.9")
	if err != nil || len(lines) != 4 || lines[0].Used != 3 || lines[2].Rule != "R15" || lines[2].Used != 1 ||
		lines[3].Rule != "R4" || lines[3].Limit != 10 {
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
	if lifted, disabled, err := s.Unblock(ctx, admin.Subject{IP: ip}); len(lifted) != 1 || lifted[0].Reason != "phishing run" || disabled || err != nil {
		t.Errorf("unblock: %+v %v %v", lifted, disabled, err)
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

// TestSupportUnblock: unblock lifts an address's R4 and R15 blocks and an
// account's R15 block, forgets their counts, and leaves R3 alone; each
// case is checked by the answers of the rules afterwards.
func TestSupportUnblock(t *testing.T) {
	const (
		violation = "550 5.7.1 ID policy violation"
		disabled  = "535 5.7.8 ID authentication rejected access disabled"
		wall      = "421 4.7.0 ID Connection refused from 127.0.0.9. Too many authorization failures from this IP, try again later."
	)
	ip := netip.MustParseAddr("127.0.0.9")
	v6 := netip.MustParseAddr("2001:db8:1:2::5")
	jan := admin.Subject{Account: "jan@example.cz"}
	// spam reports the allowance (1) and one more spam message of jan from
	// an address: both are blocked.
	spam := func(from netip.Addr) func(*testing.T, *testEngine, *Support) {
		return func(t *testing.T, e *testEngine, _ *Support) {
			for range 2 {
				if _, err := ReportSpam(context.Background(), e.store, &e.cfg.Rules.SpamAllowance, "jan@example.cz", from, e.clock.Now()); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	both := func(fs ...func(*testing.T, *testEngine, *Support)) func(*testing.T, *testEngine, *Support) {
		return func(t *testing.T, e *testEngine, s *Support) {
			for _, f := range fs {
				f(t, e, s)
			}
		}
	}
	block := func(t *testing.T, e *testEngine, s *Support) {
		// R4 as authpolicy blocks: a count of failures, then the block.
		key := s.r4Key(ip)
		if _, err := e.store.CheckAdd(context.Background(), e.clock.Now(), 5, limits.KeyLimit{Key: key, Limit: authpolicy.FailureLimit(&e.cfg.Rules.AuthFailures)}); err != nil {
			t.Fatal(err)
		}
		if err := e.store.Block(context.Background(), key, e.clock.Now().Add(time.Hour), "11 failed authentications within 1h0m0s", 11); err != nil {
			t.Fatal(err)
		}
	}
	disable := func(t *testing.T, _ *testEngine, s *Support) {
		if err := s.SetAccountDisabled(context.Background(), "jan@example.cz", true); err != nil {
			t.Fatal(err)
		}
	}
	expire := func(t *testing.T, e *testEngine, _ *Support) { e.clock.Advance(25 * time.Hour) }

	// A request and the answer wanted after the unblock.
	type answer struct{ stage, client, login, want string }
	tests := []struct {
		name     string
		setup    func(*testing.T, *testEngine, *Support)
		subject  admin.Subject
		before   []answer
		lifted   []string // keys
		disabled bool
		after    []answer
		blocks   []string // keys left
	}{
		{
			name: "address: R4 and R15", setup: both(spam(ip), block), subject: admin.Subject{IP: ip},
			before: []answer{{"CONNECT", "127.0.0.9", "", wall}, {"MAIL", "127.0.0.9", "petr@example.cz", violation}},
			lifted: []string{"r4|ip|127.0.0.9", "r15|ip|127.0.0.9"},
			after: []answer{
				{"CONNECT", "127.0.0.9", "", "DUNNO"},
				{"MAIL", "127.0.0.9", "petr@example.cz", "DUNNO"},
				{"MAIL", "127.0.0.10", "jan@example.cz", violation}, // the account stays blocked
			},
			blocks: []string{"r15|account|jan@example.cz"},
		},
		{
			name: "address as Blocks shows an IPv6 prefix", setup: spam(v6), subject: admin.Subject{IP: netip.MustParseAddr("2001:db8:1:2::")},
			before: []answer{{"MAIL", "2001:db8:1:2::77", "petr@example.cz", violation}},
			lifted: []string{"r15|ip|2001:db8:1:2::/64"},
			after:  []answer{{"MAIL", "2001:db8:1:2::77", "petr@example.cz", "DUNNO"}},
			blocks: []string{"r15|account|jan@example.cz"},
		},
		{
			name: "account: R15", setup: spam(ip), subject: jan,
			before: []answer{{"MAIL", "127.0.0.10", "jan@example.cz", violation}},
			lifted: []string{"r15|account|jan@example.cz"},
			after: []answer{
				{"MAIL", "127.0.0.10", "jan@example.cz", "DUNNO"},
				{"MAIL", "127.0.0.9", "petr@example.cz", violation}, // the address stays blocked
			},
			blocks: []string{"r15|ip|127.0.0.9"},
		},
		{
			name: "account: R15 lifted, R3 kept", setup: both(spam(ip), disable), subject: jan,
			lifted: []string{"r15|account|jan@example.cz"}, disabled: true,
			after:  []answer{{"MAIL", "127.0.0.10", "jan@example.cz", disabled}},
			blocks: []string{"r15|ip|127.0.0.9", "r3|account|jan@example.cz"},
		},
		{
			name: "account: R3 only", setup: disable, subject: jan,
			before: []answer{{"MAIL", "127.0.0.10", "jan@example.cz", disabled}}, disabled: true,
			after:  []answer{{"MAIL", "127.0.0.10", "jan@example.cz", disabled}},
			blocks: []string{"r3|account|jan@example.cz"},
		},
		{
			name: "account not blocked", subject: jan,
			after: []answer{{"MAIL", "127.0.0.10", "jan@example.cz", "DUNNO"}},
		},
		{
			name: "address not blocked", subject: admin.Subject{IP: ip},
			after: []answer{{"CONNECT", "127.0.0.9", "", "DUNNO"}},
		},
		{
			name: "blocks expired", setup: both(spam(ip), block, expire), subject: admin.Subject{IP: ip},
			after: []answer{{"CONNECT", "127.0.0.9", "", "DUNNO"}, {"MAIL", "127.0.0.9", "petr@example.cz", "DUNNO"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEngine(t, func(c *config.Config) { c.Rules.SpamAllowance.Allowance = 1 })
			s := &Support{Engine: e.Engine, Config: e.cfg, Store: e.store, Decisions: e.decisions, Now: e.clock.Now}
			ctx := context.Background()
			if tt.setup != nil {
				tt.setup(t, e, s)
			}
			check := func(when string, as []answer) {
				t.Helper()
				for _, a := range as {
					if got := e.Decide(ctx, request(a.stage, a.client, a.login, a.login, "")); got != a.want {
						t.Errorf("%s: %s from %s as %q: %q, want %q", when, a.stage, a.client, a.login, got, a.want)
					}
				}
			}
			check("before", tt.before)
			lifted, disabled, err := s.Unblock(ctx, tt.subject)
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, b := range lifted {
				keys = append(keys, b.Key)
				if b.Reason == "" || !b.Until.After(e.clock.Now()) {
					t.Errorf("lifted %+v: want its reason and its end", b)
				}
			}
			if !reflect.DeepEqual(keys, tt.lifted) || disabled != tt.disabled {
				t.Errorf("Unblock(%s): lifted %q, disabled %v; want %q, %v", tt.subject, keys, disabled, tt.lifted, tt.disabled)
			}
			check("after", tt.after)
			bs, err := s.Blocks(ctx)
			if err != nil {
				t.Fatal(err)
			}
			left := map[string]bool{}
			for _, b := range bs {
				left[b.Key] = true
			}
			want := map[string]bool{}
			for _, k := range tt.blocks {
				want[k] = true
			}
			if !reflect.DeepEqual(left, want) {
				t.Errorf("blocks left: %v, want %v", left, want)
			}
			// The counts behind the lifted blocks are forgotten: the
			// allowance (R15) and the failures (R4) start afresh.
			for _, k := range tt.lifted {
				l := limits.Limit{Window: limits.Window{Length: e.cfg.Rules.SpamAllowance.Window, Buckets: 24}, Max: 1}
				if strings.HasPrefix(k, "r4|") {
					l = authpolicy.FailureLimit(&e.cfg.Rules.AuthFailures)
				}
				if n, _, err := e.store.Get(ctx, e.clock.Now(), k, l); n != 0 || err != nil {
					t.Errorf("%s still counts %d after the unblock (%v)", k, n, err)
				}
			}
			if tt.subject.Account != "" && len(tt.lifted) > 0 {
				spent, err := ReportSpam(ctx, e.store, &e.cfg.Rules.SpamAllowance, "jan@example.cz", netip.MustParseAddr("127.0.0.20"), e.clock.Now())
				if spent || err != nil {
					t.Errorf("the first spam message after the unblock: spent %v (%v), want the allowance afresh", spent, err)
				}
			}
		})
	}
}
