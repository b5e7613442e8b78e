package policyd

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"relayguard/config"
	"relayguard/decisions"
	"relayguard/dnscheck"
	"relayguard/geoip"
	"relayguard/geoip/geoiptest"
	"relayguard/internal/dnstest"
	"relayguard/internal/fakeclock"
	"relayguard/limits"
)

const testDirectory = `
webmail_networks = ["127.0.0.60"]

[[domain]]
name = "example.cz"
aliases = ["example.com", "příklad.cz"]
geoip_countries = ["US"]

[[account]]
address = "off@example.cz"
disabled = true

[[account]]
address = "jan@example.cz"
alternative_sender = "jan.novak@foreign.test"
external_accounts = ["jan@other.test"]
`

// testEngine is an engine over a real DNS server, a real GeoIP database, a
// store in memory and a clock moved by hand.
type testEngine struct {
	*Engine
	dns       *dnstest.Server
	log       *bytes.Buffer
	store     *limits.Memory
	decisions *decisions.Memory
	clock     *fakeclock.Clock
}

func newTestEngine(t testing.TB, edit func(*config.Config)) *testEngine {
	t.Helper()
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	for _, rr := range []string{
		"example.cz. 300 IN MX 10 mx.example.cz.",
		"example.com. 300 IN MX 10 mx.example.cz.",
		"xn--pklad-zsa96e.cz. 300 IN MX 10 mx.example.cz.",
		"mail.example.cz. 300 IN A 192.0.2.1",
		"foreign.test. 300 IN MX 10 mx.foreign.test.",
		"other.test. 300 IN AAAA 2001:db8::1",
		"nomx.test. 300 IN TXT \"no mail here\"",
		"nullmx.test. 300 IN MX 0 .",
		"2.0.0.127.sbl.test. 300 IN A 127.0.0.2",
		"3.0.0.127.sbl.test. 300 IN A 127.0.0.10",
		"4.0.0.127.sbl.test. 300 IN A 127.255.255.254",
		"5.0.0.127.sbl.test. 300 IN A 127.0.0.4",
	} {
		if err := srv.Add(rr); err != nil {
			t.Fatal(err)
		}
	}
	srv.SetSOA("test.", 300, 60)
	srv.SetRcode("servfail.test", dns.RcodeServerFailure)
	srv.SetRcode("6.0.0.127.sbl.test", dns.RcodeServerFailure)

	resolver, err := dnscheck.New(dnscheck.Config{Servers: []string{srv.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	db := geoiptest.TempFile(t, geoiptest.Flat, map[string]string{
		"127.0.0.0/26": "CZ", // .1-.63, SBL test points included
		"127.0.0.50":   "CN",
		"127.0.0.51":   "US",
		"127.0.0.60":   "CN", // webmail
	})
	geo, err := geoip.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { geo.Close() })

	cfg := config.Default()
	cfg.Rules.GeoIP.Database = db
	cfg.Rules.SBL.Zone = "sbl.test"
	if edit != nil {
		edit(&cfg)
	}
	dir, err := config.ParseDirectory("directory.toml", []byte(testDirectory))
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	clk := fakeclock.New(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))
	store := limits.NewMemory()
	decided := &decisions.Memory{Retention: 7 * 24 * time.Hour, Max: 1000, Now: clk.Now}
	e, err := NewEngine(&cfg, dir, Deps{
		DNS:       resolver,
		GeoIP:     geo,
		Store:     store,
		Decisions: decided,
		Log:       slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:       clk.Now,
		NewID:     func() string { return "ID" },
	})
	if err != nil {
		t.Fatal(err)
	}
	return &testEngine{Engine: e, dns: srv, log: &logs, store: store, decisions: decided, clock: clk}
}

// request builds a policy request as Postfix 3.7 sends it at stage.
func request(stage, client, login, sender, recipient string) *Request {
	r := &Request{}
	r.Set("request", "smtpd_access_policy")
	r.Set("protocol_state", stage)
	r.Set("protocol_name", "ESMTP")
	r.Set("client_address", client)
	r.Set("client_name", "unknown")
	r.Set("sasl_username", login)
	r.Set("sender", sender)
	r.Set("recipient", recipient)
	return r
}

func TestRules(t *testing.T) {
	e := newTestEngine(t, nil)
	check := func(stage, client, login, sender, recipient, want string) {
		t.Helper()
		got := e.Decide(context.Background(), request(stage, client, login, sender, recipient))
		if got != want {
			t.Errorf("%s %s login=%q sender=%q rcpt=%q:\n got %q\nwant %q", stage, client, login, sender, recipient, got, want)
		}
	}
	const ok = "DUNNO"
	// R1: authentication required.
	check("MAIL", "127.0.0.1", "", "jan@example.cz", "", "530 5.7.0 ID authentication required")
	check("CONNECT", "127.0.0.1", "", "", "", ok)
	// R2: the login is a full address.
	check("MAIL", "127.0.0.1", "jan", "jan@example.cz", "", "535 5.7.8 ID authentication rejected")
	check("MAIL", "127.0.0.1", "jan@", "jan@example.cz", "", "535 5.7.8 ID authentication rejected")
	// R3: disabled account, whatever the case of the login.
	check("MAIL", "127.0.0.1", "off@example.cz", "off@example.cz", "", "535 5.7.8 ID authentication rejected access disabled")
	check("MAIL", "127.0.0.1", "OFF@Example.CZ", "off@example.cz", "", "535 5.7.8 ID authentication rejected access disabled")
	// R5: the sender's domain is the account's or an alias.
	check("MAIL", "127.0.0.1", "jan@example.cz", "jan@example.cz", "", ok)
	check("MAIL", "127.0.0.1", "jan@example.cz", "Jan@EXAMPLE.CZ", "", ok)
	check("MAIL", "127.0.0.1", "jan@example.cz", "jan@example.com", "", ok)
	check("MAIL", "127.0.0.1", "jan@example.com", "jan@example.cz", "", ok)
	check("MAIL", "127.0.0.1", "jan@example.cz", "jan@příklad.cz", "", ok)
	check("MAIL", "127.0.0.1", "jan@example.cz", "jan@xn--pklad-zsa96e.cz", "", ok)
	check("MAIL", "127.0.0.1", "jan@example.cz", "jan@foreign.test", "", "550 5.1.0 <jan@foreign.test> sender rejected")
	check("MAIL", "127.0.0.1", "jan@example.cz", "jan@mail.example.cz", "", "550 5.1.0 <jan@mail.example.cz> sender rejected")
	check("MAIL", "127.0.0.1", "jan@mail.example.cz", "jan@example.cz", "", "550 5.1.0 <jan@example.cz> sender rejected")
	check("MAIL", "127.0.0.1", "jan@unlisted.test", "jan@unlisted.test", "", "550 5.1.0 ID invalid domain") // R5 passes, R7 refuses
	check("MAIL", "127.0.0.1", "jan@example.cz", "", "", ok)                                                // null sender accepted
	// R6: webmail may use the alternative sender and external accounts.
	check("MAIL", "127.0.0.60", "jan@example.cz", "jan.novak@foreign.test", "", ok)
	check("MAIL", "127.0.0.60", "jan@example.cz", "JAN@other.test", "", ok)
	check("MAIL", "127.0.0.1", "jan@example.cz", "jan.novak@foreign.test", "", "550 5.1.0 <jan.novak@foreign.test> sender rejected")
	check("MAIL", "127.0.0.60", "jan@example.cz", "eve@foreign.test", "", "550 5.1.0 <eve@foreign.test> sender rejected")
	// R7: the sender's domain has MX, A or AAAA.
	check("MAIL", "127.0.0.1", "x@nomx.test", "x@nomx.test", "", "550 5.1.0 ID invalid domain")
	check("MAIL", "127.0.0.1", "x@nullmx.test", "x@nullmx.test", "", "550 5.1.0 ID invalid domain")
	check("MAIL", "127.0.0.1", "x@servfail.test", "x@servfail.test", "", "451 4.4.3 ID temporary DNS failure, try again later")
	check("MAIL", "127.0.0.1", "x@other.test", "x@other.test", "", ok)
	// R8: the recipient's domain too.
	check("RCPT", "127.0.0.1", "jan@example.cz", "jan@example.cz", "a@foreign.test", ok)
	check("RCPT", "127.0.0.1", "jan@example.cz", "jan@example.cz", "a@mail.example.cz", ok)
	check("RCPT", "127.0.0.1", "jan@example.cz", "jan@example.cz", "petr@nomx.test", "550 5.1.1 ID invalid destination domain <petr@nomx.test>")
	check("RCPT", "127.0.0.1", "jan@example.cz", "jan@example.cz", "petr@nxdomain.test", "550 5.1.1 ID invalid destination domain <petr@nxdomain.test>")
	check("RCPT", "127.0.0.1", "jan@example.cz", "jan@example.cz", "petr@nullmx.test", "550 5.1.1 ID invalid destination domain <petr@nullmx.test>")
	check("RCPT", "127.0.0.1", "jan@example.cz", "jan@example.cz", "petr@servfail.test", "451 4.4.3 ID temporary DNS failure, try again later")
	// R9: GeoIP, with the domain's grants; webmail exempt.
	check("MAIL", "127.0.0.50", "jan@example.cz", "jan@example.cz", "", "550 5.1.0 <jan@example.cz> sender rejected GeoIP example.cz:127.0.0.50:CN")
	check("MAIL", "127.0.0.51", "jan@example.cz", "jan@example.com", "", ok) // US granted to the group
	check("MAIL", "127.0.0.51", "x@foreign.test", "x@foreign.test", "", "550 5.1.0 <x@foreign.test> sender rejected GeoIP foreign.test:127.0.0.51:US")
	check("MAIL", "127.0.0.60", "jan@example.cz", "jan@example.cz", "", ok)
	check("MAIL", "127.0.0.99", "jan@example.cz", "jan@example.cz", "", ok) // unknown = allow
	// R18: SBL at connect; PBL never refuses an authenticated client;
	// error answers and foreign answers are not listings; fail open.
	check("CONNECT", "127.0.0.2", "", "", "", "554 5.7.1 ID Service unavailable; client [127.0.0.2] blocked using sbl.spamhaus.org")
	check("MAIL", "127.0.0.2", "jan@example.cz", "jan@example.cz", "", "554 5.7.1 ID Service unavailable; client [127.0.0.2] blocked using sbl.spamhaus.org")
	check("CONNECT", "127.0.0.3", "", "", "", ok)
	check("MAIL", "127.0.0.3", "jan@example.cz", "jan@example.cz", "", ok)
	check("CONNECT", "127.0.0.4", "", "", "", ok)
	check("CONNECT", "127.0.0.5", "", "", "", ok)
	check("CONNECT", "127.0.0.6", "", "", "", ok)
	if !strings.Contains(e.log.String(), "DNSBL answered an error code") {
		t.Errorf("no error logged for the 127.255.255.254 answer:\n%s", e.log)
	}
	if !strings.Contains(e.log.String(), "DNSBL lookup failed") {
		t.Errorf("no warning logged for the failed DNSBL lookup:\n%s", e.log)
	}
}

func TestRuleOptions(t *testing.T) {
	check := func(name string, edit func(*config.Config), req *Request, want string) {
		t.Helper()
		e := newTestEngine(t, edit)
		if got := e.Decide(context.Background(), req); got != want {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}
	foreign := request("MAIL", "127.0.0.1", "jan@example.cz", "jan@foreign.test", "")
	check("enforce", nil, foreign, "550 5.1.0 <jan@foreign.test> sender rejected")
	check("log-only", func(c *config.Config) { c.Rules.SenderDomain.Mode = config.LogOnly }, foreign, "DUNNO")
	check("off", func(c *config.Config) { c.Rules.SenderDomain.Mode = config.Off }, foreign, "DUNNO")
	check("exempt", func(c *config.Config) {
		c.Rules.SenderDomain.Exempt = config.Networks{config.Network(mustPrefix("127.0.0.0/30"))}
	}, foreign, "DUNNO")
	check("null sender rejected", func(c *config.Config) { c.Rules.SenderDomain.NullSender = "reject" },
		request("MAIL", "127.0.0.1", "jan@example.cz", "", ""), "550 5.1.0 <> sender rejected")
	check("unknown country rejected", func(c *config.Config) { c.Rules.GeoIP.Unknown = "reject" },
		request("MAIL", "127.0.0.99", "jan@example.cz", "jan@example.cz", ""), "550 5.1.0 <jan@example.cz> sender rejected GeoIP example.cz:127.0.0.99:--")
	check("DNSBL fail closed", func(c *config.Config) { c.Rules.SBL.Fail = "closed" },
		request("CONNECT", "127.0.0.6", "", "", ""), "451 4.4.3 ID temporary DNS failure, try again later")
	check("PBL refuses an unauthenticated client at MAIL", func(c *config.Config) { c.Rules.AuthRequired.Mode = config.Off },
		request("MAIL", "127.0.0.3", "", "x@example.cz", ""), "554 5.7.1 ID Service unavailable; client [127.0.0.3] blocked using sbl.spamhaus.org")
	check("custom reply", func(c *config.Config) {
		c.Rules.AuthRequired.Reply.UnmarshalText([]byte("530 5.7.0 {id} log in first, {ip}"))
	}, request("MAIL", "127.0.0.1", "", "x@example.cz", ""), "530 5.7.0 ID log in first, 127.0.0.1")
	other := request("MAIL", "127.0.0.1", "", "x@example.cz", "")
	other.Set("request", "junk_policy")
	check("other request type", nil, other, "DUNNO")
}

func TestLogOnlyLogs(t *testing.T) {
	e := newTestEngine(t, func(c *config.Config) { c.Rules.SenderDomain.Mode = config.LogOnly })
	e.Decide(context.Background(), request("MAIL", "127.0.0.1", "jan@example.cz", "jan@foreign.test", ""))
	for _, want := range []string{"would reject (log-only)", "rule=R5", "id=ID", "login=jan@example.cz", "stage=MAIL"} {
		if !strings.Contains(e.log.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, e.log)
		}
	}
}

func TestRejectLogLine(t *testing.T) {
	e := newTestEngine(t, nil)
	e.Decide(context.Background(), request("RCPT", "127.0.0.1", "jan@example.cz", "jan@example.cz", "petr@nomx.test"))
	line := e.log.String()
	for _, want := range []string{"msg=reject", "id=ID", "stage=RCPT", "client=127.0.0.1", "rule=R8", "recipient=petr@nomx.test", `reply="550 5.1.1 ID invalid destination domain <petr@nomx.test>"`} {
		if !strings.Contains(line, want) {
			t.Errorf("log lacks %q:\n%s", want, line)
		}
	}
}

func TestDirectoryReload(t *testing.T) {
	e := newTestEngine(t, nil)
	req := request("MAIL", "127.0.0.1", "jan@example.cz", "jan@foreign.test", "")
	if got := e.Decide(context.Background(), req); got == "DUNNO" {
		t.Fatal("foreign sender accepted before the reload")
	}
	dir, err := config.ParseDirectory("new.toml", []byte("[[domain]]\nname = \"example.cz\"\naliases = [\"foreign.test\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	e.SetDirectory(dir)
	if got := e.Decide(context.Background(), req); got != "DUNNO" {
		t.Errorf("after the reload made foreign.test an alias: %q", got)
	}
}

func TestNewID(t *testing.T) {
	re := regexp.MustCompile(`^[0-9A-Za-z]{22}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		if !re.MatchString(id) {
			t.Fatalf("id %q is not 22 alphanumerics", id)
		}
		if seen[id] {
			t.Fatalf("id %q repeated", id)
		}
		seen[id] = true
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
