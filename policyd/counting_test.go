package policyd

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"relayguard/config"
)

// transaction plays one mail transaction as Postfix 3.7 reports it with the
// etc/ fragments (one request per stage) and returns the stage and reply of
// the first refusal, or "" and "DUNNO".
type transaction struct {
	client, port string
	login, from  string
	rcpts        []string
	size         int
	instance     string
	conn         *Conn // nil: outside any connection (Engine.Decide)
	repeat       bool  // each request twice, as with two restriction lists
}

var instances int

func (x transaction) run(e *testEngine) (stage, action string) {
	if x.instance == "" {
		instances++
		x.instance = fmt.Sprintf("%x.test.%d", instances, instances)
	}
	req := func(stage, rcpt string, count int) *Request {
		r := request(stage, x.client, x.login, x.from, rcpt)
		r.Set("client_port", x.port)
		r.Set("server_address", "127.0.0.1")
		r.Set("server_port", "587")
		r.Set("instance", x.instance)
		r.Set("recipient_count", strconv.Itoa(count))
		if stage == "END-OF-MESSAGE" {
			r.Set("size", strconv.Itoa(x.size))
		}
		if stage == "MAIL" {
			r.Set("instance", "")
		}
		return r
	}
	ctx := context.Background()
	decide := func(r *Request) string {
		n := 1
		if x.repeat {
			n = 2
		}
		var a string
		for range n {
			if x.conn != nil {
				a = x.conn.Decide(ctx, r)
			} else {
				a = e.Decide(ctx, r)
			}
		}
		return a
	}
	if a := decide(req("MAIL", "", 0)); a != "DUNNO" {
		return "MAIL", a
	}
	accepted := 0
	for _, rcpt := range x.rcpts {
		if a := decide(req("RCPT", rcpt, 0)); a != "DUNNO" {
			return "RCPT", a
		}
		accepted++
	}
	last := ""
	if accepted == 1 {
		last = x.rcpts[0]
	}
	for _, stage := range []string{"DATA", "END-OF-MESSAGE"} {
		if a := decide(req(stage, last, accepted)); a != "DUNNO" {
			return stage, a
		}
	}
	return "", "DUNNO"
}

func rcpts(n int, domain string) []string {
	r := make([]string, n)
	for i := range r {
		r[i] = fmt.Sprintf("r%d@%s", i, domain)
	}
	return r
}

func TestRateLimits(t *testing.T) {
	e := newTestEngine(t, func(c *config.Config) {
		c.Rules.Rate.Windows = []config.RateWindow{{Window: time.Minute, Max: 10}, {Window: time.Hour, Max: 25}}
	})
	check := func(x transaction, wantStage, want string) {
		t.Helper()
		stage, got := x.run(e)
		if stage != wantStage || got != want {
			t.Errorf("%s from %s: got %s %q, want %s %q", x.login, x.client, stage, got, wantStage, want)
		}
	}
	const violation = "450 4.7.1 ID policy violation"
	jan := transaction{client: "127.0.0.1", port: "1000", login: "jan@example.cz", from: "jan@example.cz"}

	// 10 recipients a minute: 6 + 4 pass; the 11th is refused at RCPT.
	jan.rcpts = rcpts(6, "foreign.test")
	check(jan, "", "DUNNO")
	jan.rcpts = rcpts(4, "foreign.test")
	check(jan, "", "DUNNO")
	jan.rcpts = rcpts(1, "foreign.test")
	check(jan, "RCPT", violation)
	// A refused transaction cost nothing: a minute later 10 pass again.
	e.clock.Advance(time.Minute + time.Second)
	jan.rcpts = rcpts(10, "foreign.test")
	check(jan, "", "DUNNO")
	// The hour's 25: 20 used, 5 more pass, then the hour refuses.
	e.clock.Advance(time.Minute + time.Second)
	jan.rcpts = rcpts(5, "foreign.test")
	check(jan, "", "DUNNO")
	e.clock.Advance(time.Minute + time.Second)
	jan.rcpts = rcpts(1, "foreign.test")
	check(jan, "RCPT", violation)
	// Per IP too: another account from the same address is refused...
	petr := transaction{client: "127.0.0.1", port: "1001", login: "petr@example.cz", from: "petr@example.cz", rcpts: rcpts(1, "foreign.test")}
	check(petr, "RCPT", violation)
	// ...and the same account from another address as well.
	jan.client = "127.0.0.5"
	check(jan, "RCPT", violation)
	// Repeated identical RCPT requests count once: the same recipient twice.
	e.clock.Advance(2 * time.Hour)
	same := transaction{client: "127.0.0.6", port: "1", login: "eva@example.cz", from: "eva@example.cz", rcpts: append(rcpts(10, "foreign.test"), "r0@foreign.test")}
	check(same, "", "DUNNO")

	rec, ok, err := e.decisions.Get(context.Background(), "ID")
	if err != nil || !ok || rec.Rule != "R10" || len(rec.Counters) == 0 {
		t.Errorf("decision record: %+v %v %v", rec, ok, err)
	}
}

func TestRateLimitMessagesUnit(t *testing.T) {
	e := newTestEngine(t, func(c *config.Config) {
		c.Rules.Rate.Unit = "messages"
		c.Rules.Rate.Windows = []config.RateWindow{{Window: time.Minute, Max: 2}}
	})
	x := transaction{client: "127.0.0.1", port: "1", login: "jan@example.cz", from: "jan@example.cz", rcpts: rcpts(50, "foreign.test")}
	for i := range 2 {
		if stage, a := x.run(e); a != "DUNNO" {
			t.Fatalf("message %d: %s %q", i+1, stage, a)
		}
	}
	if stage, a := x.run(e); stage != "RCPT" || a != "450 4.7.1 ID policy violation" {
		t.Errorf("third message: %s %q", stage, a)
	}
}

func TestRecipientsPerMessage(t *testing.T) {
	e := newTestEngine(t, func(c *config.Config) { c.Rules.Rate.Mode = config.Off })
	x := transaction{client: "127.0.0.1", port: "1", login: "jan@example.cz", from: "jan@example.cz", rcpts: rcpts(250, "foreign.test")}
	if stage, a := x.run(e); a != "DUNNO" {
		t.Fatalf("250 recipients: %s %q", stage, a)
	}
	x.rcpts = append(rcpts(250, "foreign.test"), rcpts(250, "foreign.test")...) // repeats count once
	if stage, a := x.run(e); a != "DUNNO" {
		t.Fatalf("250 recipients named twice: %s %q", stage, a)
	}
	x.rcpts = rcpts(251, "foreign.test")
	if stage, a := x.run(e); stage != "RCPT" || a != "452 4.5.3 ID too many recipients" {
		t.Errorf("251st recipient: %s %q", stage, a)
	}
}

func TestMessagesPerSession(t *testing.T) {
	e := newTestEngine(t, func(c *config.Config) { c.Rules.MessagesPerSession.Max = 3 })
	x := transaction{client: "127.0.0.1", port: "4000", login: "jan@example.cz", from: "jan@example.cz", rcpts: rcpts(1, "foreign.test")}
	for i := range 3 {
		if stage, a := x.run(e); a != "DUNNO" {
			t.Fatalf("message %d: %s %q", i+1, stage, a)
		}
	}
	if stage, a := x.run(e); stage != "MAIL" || a != "421 4.7.0 ID too many messages per session, try again later" {
		t.Errorf("4th message: %s %q", stage, a)
	}
	x.port = "4001" // a new session may go on
	if stage, a := x.run(e); a != "DUNNO" {
		t.Errorf("new session: %s %q", stage, a)
	}
	// A refused message (R8) does not count.
	x.port = "4002"
	bad := x
	bad.rcpts = []string{"a@nomx.test"}
	for range 5 {
		bad.run(e)
	}
	if stage, a := x.run(e); a != "DUNNO" {
		t.Errorf("after refused transactions: %s %q", stage, a)
	}
}

func TestBigMessages(t *testing.T) {
	e := newTestEngine(t, func(c *config.Config) {
		c.Rules.BigMessages.Groups[0].Max = 3
		c.DNS.Servers = c.DNS.Servers[:1]
	})
	for _, rr := range []string{"seznam.cz. 300 IN MX 10 mx.seznam.cz.", "email.cz. 300 IN MX 10 mx.seznam.cz."} {
		if err := e.dns.Add(rr); err != nil {
			t.Fatal(err)
		}
	}
	big := transaction{client: "127.0.0.1", port: "1", login: "jan@example.cz", from: "jan@example.cz", size: 1000001,
		rcpts: []string{"a@seznam.cz", "b@foreign.test"}}
	for i := range 3 {
		big.port = strconv.Itoa(10 + i)
		if stage, a := big.run(e); a != "DUNNO" {
			t.Fatalf("big message %d: %s %q", i+1, stage, a)
		}
	}
	small := big
	small.size = 1000000
	if stage, a := small.run(e); a != "DUNNO" {
		t.Errorf("a message of exactly 1 MB is not big: %s %q", stage, a)
	}
	elsewhere := big
	elsewhere.rcpts = []string{"b@foreign.test"}
	if stage, a := elsewhere.run(e); a != "DUNNO" {
		t.Errorf("a big message elsewhere: %s %q", stage, a)
	}
	one := big
	one.rcpts = []string{"c@email.cz"} // single recipient: named at END-OF-MESSAGE too
	if stage, a := one.run(e); stage != "END-OF-MESSAGE" || a != "450 4.7.1 ID too many big messages to Seznam.cz" {
		t.Errorf("4th big message: %s %q", stage, a)
	}
	e.clock.Advance(3*time.Minute + 10*time.Second)
	if stage, a := one.run(e); a != "DUNNO" {
		t.Errorf("after the window: %s %q", stage, a)
	}
}

func TestRepeatedEndOfMessageCountsOnce(t *testing.T) {
	e := newTestEngine(t, func(c *config.Config) {
		c.Rules.Rate.Windows = []config.RateWindow{{Window: time.Minute, Max: 2}}
	})
	x := transaction{client: "127.0.0.1", port: "1", login: "jan@example.cz", from: "jan@example.cz", rcpts: rcpts(2, "foreign.test"), instance: "abc.1"}
	if _, a := x.run(e); a != "DUNNO" {
		t.Fatal(a)
	}
	// Postfix asks again at END-OF-MESSAGE (another restriction list).
	r := request("END-OF-MESSAGE", "127.0.0.1", "jan@example.cz", "jan@example.cz", "")
	r.Set("instance", "abc.1")
	r.Set("recipient_count", "2")
	if a := e.Decide(context.Background(), r); a != "DUNNO" {
		t.Errorf("repeated END-OF-MESSAGE: %q", a)
	}
}

func TestAuthFailureBlockAtConnect(t *testing.T) {
	e := newTestEngine(t, nil)
	ctx := context.Background()
	if err := e.store.Block(ctx, "r4|ip|127.0.0.9", e.clock.Now().Add(time.Hour), "11 failed authentications within 1h0m0s", 11); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Block(ctx, "r4|ip|2001:db8:1:2::/64", e.clock.Now().Add(time.Hour), "x", 11); err != nil {
		t.Fatal(err)
	}
	check := func(client, want string) {
		t.Helper()
		if got := e.Decide(ctx, request("CONNECT", client, "", "", "")); got != want {
			t.Errorf("CONNECT from %s: %q, want %q", client, got, want)
		}
	}
	check("127.0.0.9", "421 4.7.0 ID Connection refused from 127.0.0.9. Too many authorization failures from this IP, try again later.")
	check("127.0.0.10", "DUNNO")
	check("2001:db8:1:2::99", "421 4.7.0 ID Connection refused from 2001:db8:1:2::99. Too many authorization failures from this IP, try again later.")
	check("2001:db8:1:3::1", "DUNNO")
	e.clock.Advance(time.Hour + time.Second)
	check("127.0.0.9", "DUNNO")
	if !strings.Contains(e.log.String(), "rule=R4") {
		t.Error("R4 refusal not logged")
	}
}

func TestSpamAllowance(t *testing.T) {
	e := newTestEngine(t, func(c *config.Config) { c.Rules.SpamAllowance.Allowance = 2 })
	ctx := context.Background()
	x := transaction{client: "127.0.0.7", port: "2500", login: "jan@example.cz", from: "jan@example.cz", rcpts: rcpts(1, "foreign.test")}
	if _, a := x.run(e); a != "DUNNO" {
		t.Fatal(a)
	}
	client := netip.MustParseAddrPort("127.0.0.7:2500")
	for i, want := range []bool{false, false, true} {
		r, err := e.Spam(ctx, client, "")
		if err != nil || r.Spent != want || r.Login != "jan@example.cz" {
			t.Fatalf("report %d: %+v %v, want spent=%v", i+1, r, err, want)
		}
	}
	const violation = "550 5.7.1 ID policy violation"
	if stage, a := x.run(e); stage != "MAIL" || a != violation {
		t.Errorf("the account after its allowance: %s %q", stage, a)
	}
	other := transaction{client: "127.0.0.7", port: "2501", login: "petr@example.cz", from: "petr@example.cz", rcpts: rcpts(1, "foreign.test")}
	if stage, a := other.run(e); stage != "MAIL" || a != violation {
		t.Errorf("the address after its allowance: %s %q", stage, a)
	}
	e.clock.Advance(24*time.Hour + time.Minute)
	if _, a := x.run(e); a != "DUNNO" {
		t.Errorf("after the block: %q", a)
	}
	// An unknown client is counted by its address alone.
	if r, err := e.Spam(ctx, netip.MustParseAddrPort("127.0.0.8:1"), "QID"); err != nil || r.Login != "" || r.Spent {
		t.Errorf("unknown client: %+v %v", r, err)
	}
}

// Each subject spends its own allowance: the spam that spends an account's
// allowance does not block the address it came from, whose own count is
// below it (an office NAT, a webmail), and the other way round.
func TestSpamAllowancePerSubject(t *testing.T) {
	e := newTestEngine(t, func(c *config.Config) { c.Rules.SpamAllowance.Allowance = 2 })
	ctx := context.Background()
	report := func(login, ip string) bool {
		t.Helper()
		spent, err := ReportSpam(ctx, e.store, &e.cfg.Rules.SpamAllowance, login, netip.MustParseAddr(ip), e.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		return spent
	}
	blocked := func(key string) bool {
		t.Helper()
		_, b, err := e.store.Blocked(ctx, key, e.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for i, s := range []struct {
		login, ip string
		spent     bool
	}{
		{"jan@example.cz", "127.0.0.21", false},
		{"jan@example.cz", "127.0.0.21", false},
		{"jan@example.cz", "127.0.0.22", true}, // jan's third: jan blocked, .22 has one
		{"eva@example.cz", "127.0.0.21", true}, // .21's third: .21 blocked, eva has one
	} {
		if got := report(s.login, s.ip); got != s.spent {
			t.Errorf("report %d (%s from %s): spent %v, want %v", i+1, s.login, s.ip, got, s.spent)
		}
	}
	for key, want := range map[string]bool{
		"r15|account|jan@example.cz": true, "r15|ip|127.0.0.21": true,
		"r15|ip|127.0.0.22": false, "r15|account|eva@example.cz": false,
	} {
		if got := blocked(key); got != want {
			t.Errorf("%s blocked: %v, want %v", key, got, want)
		}
	}
}
