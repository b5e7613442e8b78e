package authpolicy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"relayguard/config"
	"relayguard/decisions"
	"relayguard/internal/fakeclock"
	"relayguard/limits"
)

const testDirectory = `
[[domain]]
name = "example.cz"

[[account]]
address = "off@example.cz"
disabled = true
`

// r4Text is R4's default text for an address; ids are "ID" and a number.
func r4Text(id int, ip string) string {
	return fmt.Sprintf("%s Connection refused from %s. Too many authorization failures from this IP, try again later.", testID(id), ip)
}

func testID(n int) string { return fmt.Sprintf("ID%020d", n) }

// syncBuffer is a log that the server's goroutines and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// harness is a Server over a store in memory, a clock moved by hand,
// numbered ids, and a log and decisions the test reads.
type harness struct {
	*Server
	t         testing.TB
	store     *limits.Memory
	clock     *fakeclock.Clock
	log       *syncBuffer
	decisions *decisions.Memory
}

func newHarness(t testing.TB, edit func(*config.Config)) *harness {
	t.Helper()
	c := config.Default()
	if edit != nil {
		edit(&c)
	}
	dir, err := config.ParseDirectory("directory.toml", []byte(testDirectory))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{
		t:     t,
		store: limits.NewMemory(),
		clock: fakeclock.New(time.Date(2025, 6, 2, 9, 0, 0, 0, time.UTC)),
		log:   &syncBuffer{},
	}
	t.Cleanup(func() { h.store.Close() })
	h.decisions = &decisions.Memory{Retention: time.Hour, Max: 1000, Now: h.clock.Now}
	var ids atomic.Int64
	h.Server = &Server{
		Config:          c.AuthPolicy,
		Failures:        &c.Rules.AuthFailures,
		LoginFormat:     &c.Rules.LoginFormat,
		AccountDisabled: &c.Rules.AccountDisabled,
		Store:           h.store,
		Directory:       func() *config.Directory { return dir },
		Disabled: func(_ context.Context, account string) (bool, error) {
			switch account {
			case "flagged@example.cz":
				return true, nil
			case "broken@example.cz":
				return false, errors.New("support flags unavailable")
			}
			return false, nil
		},
		Decisions: h.decisions,
		Now:       h.clock.Now,
		NewID:     func() string { return testID(int(ids.Add(1))) },
		Log:       slog.New(slog.NewTextHandler(h.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	return h
}

// body is a request body as Dovecot 2.3.19 writes it; report adds the
// result.
func body(remote, login, pwhash, report string) string {
	q := func(s string) string {
		b, _ := json.Marshal(s)
		return string(b)
	}
	return `{"device_id":"","login":` + q(login) + `,"protocol":"smtp","pwhash":` + q(pwhash) +
		`,"remote":` + q(remote) + `,"session_id":"","tls":false` + report + `}`
}

const (
	failed   = `,"success":false,"policy_reject":false`
	accepted = `,"success":true,"policy_reject":false`
	rejected = `,"success":false,"policy_reject":true`
)

// post sends one request and returns the status and the answer.
func (h *harness) post(target, contentType, reqBody string, header ...string) (int, string) {
	h.t.Helper()
	req := httptest.NewRequest(http.MethodPost, target, strings.NewReader(reqBody))
	req.Header.Set("Content-Type", contentType)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, strings.TrimSuffix(rec.Body.String(), "\n")
}

// allow asks for a login from an address and returns the answer.
func (h *harness) allow(remote, login string) string {
	h.t.Helper()
	code, got := h.post("/?command=allow", "application/json", body(remote, login, "02b3", ""))
	if code != http.StatusOK {
		h.t.Fatalf("allow %s from %s: HTTP %d %s", login, remote, code, got)
	}
	return got
}

// report reports a login's result.
func (h *harness) report(remote, pwhash, result string) {
	h.t.Helper()
	code, got := h.post("/?command=report", "application/json", body(remote, "user@example.test", pwhash, result))
	if code != http.StatusOK || got != `{"status":0}` {
		h.t.Fatalf("report from %s: HTTP %d %s", remote, code, got)
	}
}

// fail reports n wrong passwords from an address, a minute apart, each
// with its own pwhash.
func (h *harness) fail(remote string, n int) {
	h.t.Helper()
	for i := range n {
		h.report(remote, fmt.Sprintf("%04x", i), failed)
		h.clock.Advance(time.Minute)
	}
}

func refused(msg string) string { return `{"status":-1,"msg":"` + msg + `"}` }

const ok = `{"status":0}`

func TestAuthFailuresBlock(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	check := func(remote, want string) {
		t.Helper()
		if got := h.allow(remote, "user@example.test"); got != want {
			t.Errorf("allow from %s: %s, want %s", remote, got, want)
		}
	}

	h.fail("192.0.2.7", 10)
	check("192.0.2.7", ok)
	h.fail("192.0.2.7", 1) // the 11th within the hour
	blockedAt := h.clock.Now().Add(-time.Minute)
	check("192.0.2.7", refused(r4Text(1, "192.0.2.7")))
	check("192.0.2.8", ok)

	b, blocked, err := h.store.Blocked(ctx, "r4|ip|192.0.2.7", h.clock.Now())
	if err != nil || !blocked {
		t.Fatalf("not blocked: %v", err)
	}
	if b.Reason != "11 failed authentications within 1h0m0s" || b.Count != 11 || !b.Until.Equal(blockedAt.Add(time.Hour)) {
		t.Errorf("block %+v", b)
	}
	rec, found, _ := h.decisions.Get(ctx, testID(1))
	want := decisions.Record{ID: testID(1), Time: h.clock.Now(), Stage: "AUTH", Rule: "R4", Name: "auth_failures", Mode: "enforce",
		Client: "192.0.2.7", Login: "user@example.test", Reason: "blocked until 2025-06-02 10:10:00Z: 11 failed authentications within 1h0m0s",
		Reply: r4Text(1, "192.0.2.7"), Counters: map[string]int64{"failures": 11}}
	if !found || fmt.Sprint(rec) != fmt.Sprint(want) {
		t.Errorf("decision\n%+v, want\n%+v", rec, want)
	}
	for _, line := range []string{
		`level=WARN msg=block rule=R4 name=auth_failures client=192.0.2.7 subject=192.0.2.7 login=user@example.test until=2025-06-02T10:10:00.000Z reason="11 failed authentications within 1h0m0s"`,
		`level=INFO msg=reject id=ID00000000000000000001 stage=AUTH rule=R4 name=auth_failures client=192.0.2.7 login=user@example.test protocol=smtp reason="blocked until`,
	} {
		if !strings.Contains(h.log.String(), line) {
			t.Errorf("log lacks %s\nlog:\n%s", line, h.log)
		}
	}

	// Refused attempts do not prolong the block; it lasts block_for.
	h.report("192.0.2.7", "0001", rejected)
	h.clock.Advance(blockedAt.Add(time.Hour).Sub(h.clock.Now()) - time.Second)
	check("192.0.2.7", refused(r4Text(2, "192.0.2.7")))
	h.clock.Advance(time.Second)
	check("192.0.2.7", ok)
	// The block reset the counter: the address starts afresh.
	h.fail("192.0.2.7", 10)
	check("192.0.2.7", ok)
}

func TestAuthFailuresWindow(t *testing.T) {
	check := func(name string, edit func(*config.Config), steps func(h *harness), want string) {
		t.Helper()
		h := newHarness(t, edit)
		steps(h)
		if got := h.allow("192.0.2.7", "user@example.test"); got != want {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
	}
	check("10 in an hour", nil, func(h *harness) { h.fail("192.0.2.7", 10) }, ok)
	check("11 in an hour", nil, func(h *harness) { h.fail("192.0.2.7", 11) }, refused(r4Text(1, "192.0.2.7")))
	check("6, half an hour, 5", nil, func(h *harness) {
		h.fail("192.0.2.7", 6)
		h.clock.Advance(30 * time.Minute)
		h.fail("192.0.2.7", 5)
	}, refused(r4Text(1, "192.0.2.7")))
	check("10, the window and a bucket, 1", nil, func(h *harness) {
		h.fail("192.0.2.7", 10)
		h.clock.Advance(time.Hour + time.Minute)
		h.fail("192.0.2.7", 1)
	}, ok)
	check("threshold 3", func(c *config.Config) { c.Rules.AuthFailures.Threshold = 3 },
		func(h *harness) { h.fail("192.0.2.7", 4) }, refused(r4Text(1, "192.0.2.7")))
	check("window 7s, 4 at once", func(c *config.Config) {
		c.Rules.AuthFailures.Threshold = 3
		c.Rules.AuthFailures.Window = 7 * time.Second
	}, func(h *harness) {
		for range 4 {
			h.report("192.0.2.7", "", failed)
		}
	}, refused(r4Text(1, "192.0.2.7")))
	check("window 7s, 4 over 30s", func(c *config.Config) {
		c.Rules.AuthFailures.Threshold = 3
		c.Rules.AuthFailures.Window = 7 * time.Second
	}, func(h *harness) {
		for range 4 {
			h.report("192.0.2.7", "", failed)
			h.clock.Advance(10 * time.Second)
		}
	}, ok)
	// fail leaves the clock a minute after the last failure.
	check("block_for 10m, 10 minutes after", func(c *config.Config) { c.Rules.AuthFailures.BlockFor = 10 * time.Minute },
		func(h *harness) {
			h.fail("192.0.2.7", 11)
			h.clock.Advance(9 * time.Minute)
		}, ok)
	check("block_for 10m, 9 minutes after", func(c *config.Config) { c.Rules.AuthFailures.BlockFor = 10 * time.Minute },
		func(h *harness) {
			h.fail("192.0.2.7", 11)
			h.clock.Advance(8 * time.Minute)
		}, refused(r4Text(1, "192.0.2.7")))
}

func TestUnblock(t *testing.T) {
	h := newHarness(t, nil)
	h.fail("192.0.2.7", 11)
	if got := h.allow("192.0.2.7", "user@example.test"); got != refused(r4Text(1, "192.0.2.7")) {
		t.Fatalf("not blocked: %s", got)
	}
	if lifted, err := h.store.Unblock(context.Background(), BlockKey(netip.MustParseAddr("192.0.2.7"), 64)); !lifted || err != nil {
		t.Fatalf("Unblock: %v %v", lifted, err)
	}
	if got := h.allow("192.0.2.7", "user@example.test"); got != ok {
		t.Errorf("after unblock: %s", got)
	}
	// One more typo does not block again: the block reset the counter.
	h.fail("192.0.2.7", 1)
	if got := h.allow("192.0.2.7", "user@example.test"); got != ok {
		t.Errorf("after unblock and one failure: %s", got)
	}
}

func TestIPv6Prefix(t *testing.T) {
	check := func(prefix int, probe, want string) {
		t.Helper()
		h := newHarness(t, func(c *config.Config) { c.Rules.AuthFailures.IPv6Prefix = prefix })
		for i := range 11 {
			h.report(fmt.Sprintf("2001:db8:1:2::%x", i+1), fmt.Sprintf("%04x", i), failed)
		}
		if got := h.allow(probe, "user@example.test"); got != want {
			t.Errorf("/%d, allow from %s: %s, want %s", prefix, probe, got, want)
		}
	}
	check(64, "2001:db8:1:2::ffff", refused(r4Text(1, "2001:db8:1:2::ffff")))
	check(64, "2001:db8:1:2:aaaa:bbbb:cccc:dddd", refused(r4Text(1, "2001:db8:1:2:aaaa:bbbb:cccc:dddd")))
	check(64, "2001:db8:1:3::1", ok)
	check(48, "2001:db8:1:3::1", refused(r4Text(1, "2001:db8:1:3::1")))
	check(128, "2001:db8:1:2::1", ok)
	check(128, "2001:db8:1:2::ffff", ok)

	// An IPv4-mapped address is its IPv4 address.
	h := newHarness(t, nil)
	h.fail("::ffff:192.0.2.7", 11)
	if got := h.allow("192.0.2.7", "user@example.test"); got != refused(r4Text(1, "192.0.2.7")) {
		t.Errorf("IPv4-mapped failures: %s", got)
	}
}

func TestExempt(t *testing.T) {
	h := newHarness(t, func(c *config.Config) {
		var n config.Network
		if err := n.UnmarshalText([]byte("192.0.2.0/24")); err != nil {
			t.Fatal(err)
		}
		c.Rules.AuthFailures.Exempt = config.Networks{n}
	})
	ctx := context.Background()
	h.fail("192.0.2.7", 20)
	h.fail("198.51.100.7", 11)
	check := func(remote, want string) {
		t.Helper()
		if got := h.allow(remote, "user@example.test"); got != want {
			t.Errorf("allow from %s: %s, want %s", remote, got, want)
		}
	}
	check("192.0.2.7", ok)
	check("198.51.100.7", refused(r4Text(1, "198.51.100.7")))
	if u, _ := h.store.List(ctx, h.clock.Now(), "r4|ip|192.0.2."); len(u) != 0 {
		t.Errorf("exempt address counted: %v", u)
	}
	// A block made before the network was exempted does not refuse it.
	if err := h.store.Block(ctx, "r4|ip|192.0.2.9", h.clock.Now().Add(time.Hour), "old", 11); err != nil {
		t.Fatal(err)
	}
	check("192.0.2.9", ok)
}

func TestDistinctPasswords(t *testing.T) {
	distinct := func(c *config.Config) { c.Rules.AuthFailures.Counting = "distinct-passwords" }
	check := func(name string, edit func(*config.Config), steps func(h *harness), want string) {
		t.Helper()
		h := newHarness(t, edit)
		steps(h)
		if got := h.allow("192.0.2.7", "user@example.test"); got != want {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
	}
	same := func(n int, every time.Duration) func(h *harness) {
		return func(h *harness) {
			for range n {
				h.report("192.0.2.7", "08fa", failed)
				h.clock.Advance(every)
			}
		}
	}
	check("one stale password 20 times", distinct, same(20, time.Second), ok)
	check("one stale password every 5 minutes for 12 hours", distinct, same(144, 5*time.Minute), ok)
	check("11 distinct passwords", distinct, func(h *harness) { h.fail("192.0.2.7", 11) }, refused(r4Text(1, "192.0.2.7")))
	check("10 distinct, then one of them again", distinct, func(h *harness) {
		h.fail("192.0.2.7", 10)
		h.report("192.0.2.7", "0003", failed)
	}, ok)
	check("no pwhash counts every attempt", distinct, func(h *harness) {
		for range 11 {
			h.report("192.0.2.7", "", failed)
		}
	}, refused(r4Text(1, "192.0.2.7")))
	check("attempts: one password 11 times", nil, same(11, time.Second), refused(r4Text(1, "192.0.2.7")))

	// No password hash is kept longer than the window.
	h := newHarness(t, distinct)
	ctx := context.Background()
	h.clock.Advance(17 * time.Second) // not on a bucket boundary
	h.report("192.0.2.7", "08fa", failed)
	start := h.clock.Now()
	check2 := func(at time.Duration, want int) {
		t.Helper()
		u, err := h.store.List(ctx, start.Add(at), "r4|password|")
		if err != nil || len(u) != want {
			t.Errorf("hash keys %v after the failure: %v %v, want %d", at, u, err, want)
		}
	}
	check2(0, 1)
	check2(58*time.Minute, 1)
	check2(time.Hour, 0)
	if u, _ := h.store.List(ctx, start, "r4|password|"); len(u) == 1 && u[0].Key != "r4|password|192.0.2.7|08fa" {
		t.Errorf("hash key %s", u[0].Key)
	}
}

func TestReportsThatCountNothing(t *testing.T) {
	h := newHarness(t, nil)
	for range 20 {
		// Dovecot asks twice for a good password, then reports success.
		h.allow("192.0.2.7", "user@example.test")
		h.allow("192.0.2.7", "user@example.test")
		h.report("192.0.2.7", "02b3", accepted)
		h.report("192.0.2.7", "02b3", rejected)
	}
	if got := h.allow("192.0.2.7", "user@example.test"); got != ok {
		t.Errorf("after successes and policy rejects: %s", got)
	}
	if u, _ := h.store.List(context.Background(), h.clock.Now(), ""); len(u) != 0 {
		t.Errorf("counted: %v", u)
	}
}

func TestLoginRules(t *testing.T) {
	h := newHarness(t, nil)
	check := func(login, want string) {
		t.Helper()
		if got := h.allow("192.0.2.7", login); got != want {
			t.Errorf("allow %q: %s, want %s", login, got, want)
		}
	}
	check("user@example.test", ok)
	check("user", refused(testID(1)+" authentication rejected"))
	check("", refused(testID(2)+" authentication rejected"))
	check("user@", refused(testID(3)+" authentication rejected"))
	check("off@example.cz", refused(testID(4)+" authentication rejected access disabled"))
	check("OFF@Example.CZ", refused(testID(5)+" authentication rejected access disabled"))
	check("flagged@example.cz", refused(testID(6)+" authentication rejected access disabled"))
	check("jan@example.cz", ok)

	ctx := context.Background()
	for id, want := range map[int]string{
		1: `R2 login_format "user" is not a full address (local@domain)`,
		4: "R3 account_disabled account disabled in the directory",
		6: "R3 account_disabled account disabled by support",
	} {
		rec, found, _ := h.decisions.Get(ctx, testID(id))
		if got := rec.Rule + " " + rec.Name + " " + rec.Reason; !found || got != want || rec.Stage != "AUTH" {
			t.Errorf("decision %d: %+v, want %s", id, rec, want)
		}
	}
	if !strings.Contains(h.log.String(), `msg=reject id=ID00000000000000000001 stage=AUTH rule=R2 name=login_format client=192.0.2.7 login=user protocol=smtp reason="\"user\" is not a full address (local@domain)" reply="ID00000000000000000001 authentication rejected"`) {
		t.Errorf("R2 log line missing:\n%s", h.log)
	}

	// Support's flag cannot be read: no answer; Dovecot decides.
	code, _ := h.post("/?command=allow", "application/json", body("192.0.2.7", "broken@example.cz", "02b3", ""))
	if code != http.StatusInternalServerError || !strings.Contains(h.log.String(), "support flags unavailable") {
		t.Errorf("Disabled failing: HTTP %d\n%s", code, h.log)
	}
}

func TestModes(t *testing.T) {
	network := func(s string) config.Networks {
		var n config.Network
		if err := n.UnmarshalText([]byte(s)); err != nil {
			t.Fatal(err)
		}
		return config.Networks{n}
	}
	check := func(name string, edit func(*config.Config), remote, login, want, wantLog string) {
		t.Helper()
		h := newHarness(t, edit)
		h.fail("192.0.2.66", 11)
		if got := h.allow(remote, login); got != want {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
		if wantLog != "" && !strings.Contains(h.log.String(), wantLog) {
			t.Errorf("%s: log lacks %q:\n%s", name, wantLog, h.log)
		}
		if wantLog == "" && strings.Contains(h.log.String(), "reject") {
			t.Errorf("%s: logged a refusal:\n%s", name, h.log)
		}
	}
	blocked := refused(r4Text(1, "192.0.2.66"))
	check("R4 enforce", nil, "192.0.2.66", "user@example.test", blocked, "msg=reject id=ID00000000000000000001 stage=AUTH rule=R4")
	check("R4 before R2", nil, "192.0.2.66", "user", blocked, "rule=R4")
	check("R4 log-only", func(c *config.Config) { c.Rules.AuthFailures.Mode = config.LogOnly },
		"192.0.2.66", "user@example.test", ok, "msg=\"would reject (log-only)\" id=ID00000000000000000001 stage=AUTH rule=R4")
	check("R4 log-only blocks in the store", func(c *config.Config) { c.Rules.AuthFailures.Mode = config.LogOnly },
		"192.0.2.66", "user@example.test", ok, "msg=\"would block (log-only)\" rule=R4")
	check("R4 log-only, then R2", func(c *config.Config) { c.Rules.AuthFailures.Mode = config.LogOnly },
		"192.0.2.66", "user", refused(testID(2)+" authentication rejected"), "rule=R2")
	check("R4 off", func(c *config.Config) { c.Rules.AuthFailures.Mode = config.Off }, "192.0.2.66", "user@example.test", ok, "")
	check("R2 log-only", func(c *config.Config) { c.Rules.LoginFormat.Mode = config.LogOnly },
		"192.0.2.7", "user", ok, "msg=\"would reject (log-only)\" id=ID00000000000000000001 stage=AUTH rule=R2")
	check("R2 off", func(c *config.Config) { c.Rules.LoginFormat.Mode = config.Off }, "192.0.2.7", "user", ok, "")
	check("R2 exempt", func(c *config.Config) { c.Rules.LoginFormat.Exempt = network("192.0.2.0/24") }, "192.0.2.7", "user", ok, "")
	check("R3 log-only", func(c *config.Config) { c.Rules.AccountDisabled.Mode = config.LogOnly },
		"192.0.2.7", "off@example.cz", ok, "msg=\"would reject (log-only)\" id=ID00000000000000000001 stage=AUTH rule=R3")
	check("R3 off", func(c *config.Config) { c.Rules.AccountDisabled.Mode = config.Off }, "192.0.2.7", "off@example.cz", ok, "")
	check("R3 exempt", func(c *config.Config) { c.Rules.AccountDisabled.Exempt = network("192.0.2.7") }, "192.0.2.7", "off@example.cz", ok, "")
	check("R3 not exempt", func(c *config.Config) { c.Rules.AccountDisabled.Exempt = network("192.0.2.8") },
		"192.0.2.7", "off@example.cz", refused(testID(1)+" authentication rejected access disabled"), "rule=R3")
	check("reply configured", func(c *config.Config) {
		if err := c.Rules.LoginFormat.Reply.UnmarshalText([]byte("535 5.7.8 {id} use your whole address, not {login}")); err != nil {
			t.Fatal(err)
		}
	}, "192.0.2.7", "user", refused(testID(1)+" use your whole address, not user"), "rule=R2")

	// Off counts nothing.
	h := newHarness(t, func(c *config.Config) { c.Rules.AuthFailures.Mode = config.Off })
	h.fail("192.0.2.7", 11)
	if u, _ := h.store.List(context.Background(), h.clock.Now(), ""); len(u) != 0 {
		t.Errorf("R4 off counted: %v", u)
	}
}

func TestAPIKey(t *testing.T) {
	check := func(name, key, header, value string, want int) {
		t.Helper()
		h := newHarness(t, func(c *config.Config) {
			c.AuthPolicy.APIKey = key
			c.AuthPolicy.APIHeader = "X-Policy-Key"
		})
		var hdr []string
		if header != "" {
			hdr = []string{header, value}
		}
		code, got := h.post("/?command=allow", "application/json", body("192.0.2.7", "user@example.test", "02b3", ""), hdr...)
		if code != want {
			t.Errorf("%s: HTTP %d %s, want %d", name, code, got, want)
		}
		if want == http.StatusUnauthorized && !strings.Contains(h.log.String(), `status=401`) {
			t.Errorf("%s: no log line:\n%s", name, h.log)
		}
		if strings.Contains(h.log.String(), "s3cret") {
			t.Errorf("%s: the key is in the log:\n%s", name, h.log)
		}
	}
	check("no key configured", "", "", "", http.StatusOK)
	check("key configured, none sent", "s3cret", "", "", http.StatusUnauthorized)
	check("wrong key", "s3cret", "X-Policy-Key", "s3cre", http.StatusUnauthorized)
	check("key in another header", "s3cret", "X-API-Key", "s3cret", http.StatusUnauthorized)
	check("right key", "s3cret", "X-Policy-Key", "s3cret", http.StatusOK)
	check("header name in another case", "s3cret", "x-policy-key", "s3cret", http.StatusOK)
}

func TestMalformed(t *testing.T) {
	good := body("192.0.2.7", "user@example.test", "02b3", "")
	check := func(name, method, target, contentType, reqBody string, want int) {
		t.Helper()
		h := newHarness(t, nil)
		req := httptest.NewRequest(method, target, strings.NewReader(reqBody))
		req.Header.Set("Content-Type", contentType)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("%s: HTTP %d %s, want %d", name, rec.Code, rec.Body, want)
		}
		logged := strings.Contains(h.log.String(), fmt.Sprintf("level=WARN msg=\"auth policy: request refused\" status=%d", want))
		if want != http.StatusOK && !logged {
			t.Errorf("%s: no log line:\n%s", name, h.log)
		}
	}
	const js = "application/json"
	check("Dovecot's request", "POST", "/?command=allow", js, good, http.StatusOK)
	check("another path", "POST", "/policy?command=allow", js, good, http.StatusOK)
	check("charset", "POST", "/?command=allow", "application/json; charset=utf-8", good, http.StatusOK)
	check("zone", "POST", "/?command=allow", js, body("fe80::1%eth0", "user@example.test", "02b3", ""), http.StatusOK)
	check("no pwhash", "POST", "/?command=allow", js, `{"login":"user@example.test","remote":"192.0.2.7"}`, http.StatusOK)
	check("extra attributes", "POST", "/?command=allow", js, `{"login":"user@example.test","remote":"192.0.2.7","fields":{"a":[1,2]}}`, http.StatusOK)
	check("GET", "GET", "/?command=allow", js, "", http.StatusMethodNotAllowed)
	check("no command", "POST", "/", js, good, http.StatusBadRequest)
	check("unknown command", "POST", "/?command=deny", js, good, http.StatusBadRequest)
	check("text/plain", "POST", "/?command=allow", "text/plain", good, http.StatusUnsupportedMediaType)
	check("no content type", "POST", "/?command=allow", "", good, http.StatusUnsupportedMediaType)
	check("empty body", "POST", "/?command=allow", js, "", http.StatusBadRequest)
	check("cut short", "POST", "/?command=allow", js, good[:40], http.StatusBadRequest)
	check("trailing data", "POST", "/?command=allow", js, good+"{}", http.StatusBadRequest)
	check("array", "POST", "/?command=allow", js, "["+good+"]", http.StatusBadRequest)
	check("null", "POST", "/?command=allow", js, "null", http.StatusBadRequest)
	check("login a number", "POST", "/?command=allow", js, `{"login":5,"remote":"192.0.2.7"}`, http.StatusBadRequest)
	check("no remote", "POST", "/?command=allow", js, `{"login":"user@example.test"}`, http.StatusBadRequest)
	check("remote a name", "POST", "/?command=allow", js, body("mail.example.test", "u@example.test", "02b3", ""), http.StatusBadRequest)
	check("remote out of range", "POST", "/?command=allow", js, body("192.0.2.256", "u@example.test", "02b3", ""), http.StatusBadRequest)
	check("remote with port", "POST", "/?command=allow", js, body("192.0.2.7:25", "u@example.test", "02b3", ""), http.StatusBadRequest)
	check("pwhash not hex", "POST", "/?command=allow", js, body("192.0.2.7", "u@example.test", "02g3", ""), http.StatusBadRequest)
	check("pwhash too long", "POST", "/?command=allow", js, body("192.0.2.7", "u@example.test", strings.Repeat("0", 129), ""), http.StatusBadRequest)
	check("report without success", "POST", "/?command=report", js, good, http.StatusBadRequest)
	check("report success a string", "POST", "/?command=report", js, body("192.0.2.7", "u@example.test", "02b3", `,"success":"no"`), http.StatusBadRequest)
	check("report", "POST", "/?command=report", js, body("192.0.2.7", "u@example.test", "02b3", failed), http.StatusOK)
	check("body over 64 KiB", "POST", "/?command=allow", js, body("192.0.2.7", strings.Repeat("a", 64<<10)+"@example.test", "02b3", ""), http.StatusRequestEntityTooLarge)
}

func TestStoreFailure(t *testing.T) {
	h := newHarness(t, nil)
	h.store.Close()
	for _, c := range []struct{ command, result string }{{"allow", ""}, {"report", failed}} {
		code, _ := h.post("/?command="+c.command, "application/json", body("192.0.2.7", "user@example.test", "02b3", c.result))
		if code != http.StatusInternalServerError {
			t.Errorf("%s with the store closed: HTTP %d", c.command, code)
		}
	}
	if !strings.Contains(h.log.String(), `level=ERROR msg="auth policy: no answer, Dovecot's auth_policy_reject_on_fail decides"`) {
		t.Errorf("no log line:\n%s", h.log)
	}
}

// TestDovecotRoundTrip speaks to the server over HTTP as Dovecot 2.3.19 does
// (lab/LAB.md §5): one keep-alive connection, the same headers and bodies.
func TestDovecotRoundTrip(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.AuthPolicy.APIKey = "s3cret" })
	srv := httptest.NewUnstartedServer(h.Server)
	var conns atomic.Int32
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	client := srv.Client()
	send := func(command, reqBody string) (int, string, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/?command="+command, strings.NewReader(reqBody))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "dovecot/auth-policy-client")
		req.Header.Set("Connection", "Keep-Alive")
		// auth_policy_server_api_header = X-API-Key: s3cret sends what
		// follows the colon, its space included.
		req.Header.Set("X-API-Key", " s3cret")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	check := func(command, reqBody, want string) {
		t.Helper()
		code, ct, got := send(command, reqBody)
		if code != http.StatusOK || ct != "application/json" || got != want {
			t.Errorf("%s %s: HTTP %d %s %q, want %s", command, reqBody, code, ct, got, want)
		}
	}

	// A good password: allow, allow again after the passdb, report.
	const good = `{"device_id":"","login":"user@example.test","protocol":"smtp","pwhash":"02b3","remote":"127.0.0.1","session_id":"","tls":false}`
	check("allow", good, ok)
	check("allow", good, ok)
	check("report", `{"device_id":"","login":"user@example.test","protocol":"smtp","pwhash":"02b3","remote":"127.0.0.1","session_id":"","tls":false,"success":true,"policy_reject":false}`, ok)

	// Bad passwords: allow, then a failed report; the 11th blocks.
	for i := range 11 {
		pw := fmt.Sprintf("%04x", 0x08fa+i)
		check("allow", `{"device_id":"","login":"user@example.test","protocol":"smtp","pwhash":"`+pw+`","remote":"127.0.0.1","session_id":"","tls":false}`, ok)
		check("report", `{"device_id":"","login":"user@example.test","protocol":"smtp","pwhash":"`+pw+`","remote":"127.0.0.1","session_id":"","tls":false,"success":false,"policy_reject":false}`, ok)
	}
	check("allow", good, `{"status":-1,"msg":"ID00000000000000000001 Connection refused from 127.0.0.1. Too many authorization failures from this IP, try again later."}`)
	check("report", `{"device_id":"","login":"user@example.test","protocol":"smtp","pwhash":"02b3","remote":"127.0.0.1","session_id":"","tls":false,"success":false,"policy_reject":true}`, ok)
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1 (keep-alive)", n)
	}
}

func TestValidate(t *testing.T) {
	check := func(name string, edit func(*Server), wantErr string) {
		t.Helper()
		h := newHarness(t, nil)
		edit(h.Server)
		err := h.Validate()
		if (err == nil) != (wantErr == "") || (err != nil && !strings.Contains(err.Error(), wantErr)) {
			t.Errorf("%s: %v, want %q", name, err, wantErr)
		}
	}
	check("defaults", func(*Server) {}, "")
	check("window 7s", func(s *Server) { s.Failures.Window = 7 * time.Second }, "")
	check("window 1ns", func(s *Server) { s.Failures.Window = 1 }, "does not split into equal buckets")
	check("no R2", func(s *Server) { s.LoginFormat = nil }, "configuration of R2, R3 or R4 is missing")
	check("no ids", func(s *Server) { s.NewID = nil }, "no transaction id generator")
	check("no store", func(s *Server) { s.Store = nil }, "R4 auth_failures is enforce, but no store")
	check("no store, R4 off", func(s *Server) { s.Store = nil; s.Failures.Mode = config.Off }, "")
}

func TestBuckets(t *testing.T) {
	for w, want := range map[time.Duration]int{time.Hour: 60, 90 * time.Second: 60, 7 * time.Second: 56, 1: 1, 3: 3} {
		if got := buckets(w); got != want {
			t.Errorf("buckets(%v) = %d, want %d", w, got, want)
		}
	}
}

func TestBlockKey(t *testing.T) {
	check := func(ip string, bits int, want string) {
		t.Helper()
		if got := BlockKey(netip.MustParseAddr(ip), bits); got != want {
			t.Errorf("BlockKey(%s, %d) = %s, want %s", ip, bits, got, want)
		}
	}
	check("192.0.2.7", 64, "r4|ip|192.0.2.7")
	check("::ffff:192.0.2.7", 64, "r4|ip|192.0.2.7")
	check("2001:db8:1:2:3:4:5:6", 64, "r4|ip|2001:db8:1:2::/64")
	check("2001:db8:1:2:3:4:5:6", 56, "r4|ip|2001:db8:1::/56")
	check("2001:db8:1:2:3:4:5:6", 128, "r4|ip|2001:db8:1:2:3:4:5:6/128")
}
