package dnscheck

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"relayguard/internal/dnstest"
	"relayguard/internal/fakeclock"
)

// testTimeout is the per-attempt timeout of the checkers under test: short,
// so that timeout tests are fast, and long enough for the loopback.
const testTimeout = 150 * time.Millisecond

// fakeClock is a clock that moves only when told to.
type fakeClock = fakeclock.Clock

func newFakeClock() *fakeClock {
	return fakeclock.New(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
}

func startServer(t *testing.T, rrs ...string) *dnstest.Server {
	t.Helper()
	s, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Add(rrs...); err != nil {
		t.Fatal(err)
	}
	return s
}

// newChecker returns a Checker for cfg with the given servers, the test
// timeout and, unless cfg sets one, a fake clock.
func newChecker(t *testing.T, cfg Config, servers ...string) *Checker {
	t.Helper()
	cfg.Servers = servers
	if cfg.Timeout == 0 {
		cfg.Timeout = testTimeout
	}
	if cfg.Now == nil {
		cfg.Now = newFakeClock().Now
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startHandler serves h over UDP on 127.0.0.1, for answers that
// internal/dnstest does not give, and returns its address.
func startHandler(t *testing.T, h dns.HandlerFunc) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(started) }}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

func mustRR(t *testing.T, s string) dns.RR {
	t.Helper()
	rr, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return rr
}

func TestDomain(t *testing.T) {
	var big []string
	for i := range 100 {
		big = append(big, fmt.Sprintf("big.test. 300 IN MX %d mx%d.big.test.", i+1, i))
	}
	s := startServer(t, append(big,
		"mx.test. 300 IN MX 10 mx.mx.test.",
		"prefs.test. 300 IN MX 20 b.prefs.test.",
		"prefs.test. 300 IN MX 10 c.prefs.test.",
		"prefs.test. 300 IN MX 10 a.prefs.test.",
		"a-only.test. 300 IN A 192.0.2.1",
		"aaaa-only.test. 300 IN AAAA 2001:db8::25",
		"both.test. 300 IN A 192.0.2.2",
		"both.test. 300 IN AAAA 2001:db8::2",
		"nullmx.test. 300 IN MX 0 .",
		"nullmx.test. 300 IN A 192.0.2.3",
		"dotmx.test. 300 IN MX 10 .",
		"mixed.test. 300 IN MX 0 .",
		"mixed.test. 300 IN MX 10 mx.mixed.test.",
		"nodata.test. 300 IN TXT \"v=spf1 -all\"",
		"cname.test. 300 IN CNAME mx.test.",
		"cname-a.test. 300 IN CNAME a-only.test.",
		"cname-nx.test. 300 IN CNAME nx.test.",
		"servfail.test. 300 IN MX 10 mx.test.",
		"refused.test. 300 IN MX 10 mx.test.",
		"timeout.test. 300 IN MX 10 mx.test.",
		"cname-servfail.test. 300 IN CNAME servfail.test.",
	)...)
	s.SetSOA("test.", 3600, 300)
	s.SetRcode("servfail.test", dns.RcodeServerFailure)
	s.SetRcode("refused.test", dns.RcodeRefused)
	s.SetRcode("notimp.test", dns.RcodeNotImplemented)
	s.SetTimeout("timeout.test")
	c := newChecker(t, Config{}, s.Addr())
	from := " from " + s.Addr()

	check := func(domain string, want Verdict) {
		t.Helper()
		if got := c.Domain(context.Background(), domain); got != want {
			t.Errorf("Domain(%q) = %v, want %v", domain, got, want)
		}
	}
	check("mx.test", Verdict{Valid, "MX mx.mx.test"})
	check("MX.Test.", Verdict{Valid, "MX mx.mx.test"})
	check("prefs.test", Verdict{Valid, "MX a.prefs.test"})
	check("a-only.test", Verdict{Valid, "A 192.0.2.1"})
	check("aaaa-only.test", Verdict{Valid, "AAAA 2001:db8::25"})
	check("both.test", Verdict{Valid, "A 192.0.2.2"})
	check("nullmx.test", Verdict{Invalid, "null MX (RFC 7505)"})
	check("dotmx.test", Verdict{Invalid, "null MX (RFC 7505)"})
	check("mixed.test", Verdict{Valid, "MX mx.mixed.test"})
	check("nx.test", Verdict{Invalid, "NXDOMAIN"})
	check("nx.other", Verdict{Invalid, "NXDOMAIN"})
	check("nodata.test", Verdict{Invalid, "no MX, A or AAAA records"})
	check("cname.test", Verdict{Valid, "MX mx.mx.test"})
	check("cname-a.test", Verdict{Valid, "A 192.0.2.1"})
	check("cname-nx.test", Verdict{Invalid, "NXDOMAIN"})
	check("servfail.test", Verdict{TempFail, "SERVFAIL" + from})
	check("cname-servfail.test", Verdict{TempFail, "SERVFAIL" + from})
	check("refused.test", Verdict{TempFail, "REFUSED" + from})
	check("notimp.test", Verdict{TempFail, "NOTIMP" + from})
	check("timeout.test", Verdict{TempFail, "timeout" + from})
	check("big.test", Verdict{Valid, "MX mx0.big.test"})

	// The 100 MX records do not fit in 1232 bytes: UDP, then TCP.
	if got := s.Queries("big.test", dns.TypeMX); got != 2 {
		t.Errorf("big.test MX: %d queries, want 2 (UDP truncated, then TCP)", got)
	}
	// The MX targets are not resolved, and there is no A fallback once an
	// MX set exists.
	for _, name := range []string{"mx.mx.test", "nullmx.test", "mx.test"} {
		for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
			if got := s.Queries(name, qtype); got != 0 {
				t.Errorf("%s %s: %d queries, want none", name, dns.TypeToString[qtype], got)
			}
		}
	}
	// The second check of mx.test, in other case, came from the cache.
	if got := s.Queries("mx.test", dns.TypeMX); got != 1 {
		t.Errorf("mx.test MX: %d queries, want 1", got)
	}
}

func TestDomainInvalidNames(t *testing.T) {
	s := startServer(t)
	c := newChecker(t, Config{}, s.Addr())
	label63 := strings.Repeat("a", 63)
	for _, domain := range []string{
		"",
		".",
		"..",
		"a..test",
		".test",
		"-a.test",
		"a-.test",
		"under_score.test",
		"exa mple.test",
		"[192.0.2.1]",
		"user@example.test",
		"bücher.test",
		strings.Repeat("a", 64) + ".test",
		strings.Join([]string{label63, label63, label63, label63}, "."),
	} {
		if got, want := c.Domain(context.Background(), domain), (Verdict{Invalid, "invalid domain name"}); got != want {
			t.Errorf("Domain(%q) = %v, want %v", domain, got, want)
		}
	}
	for _, domain := range []string{
		"test",
		"1.test",
		"xn--bcher-kva.test",
		"a-b--c.test.",
		label63 + ".test",
		strings.Join([]string{label63, label63, label63, strings.Repeat("a", 61)}, "."),
	} {
		name, ok := hostName(domain)
		if want := strings.TrimSuffix(domain, ".") + "."; !ok || name != want {
			t.Errorf("hostName(%q) = %q, %v, want %q, true", domain, name, ok, want)
		}
	}
}

// TestDomainSteps covers answers that differ by query type and answers that
// are neither positive nor negative.
func TestDomainSteps(t *testing.T) {
	soa := mustRR(t, "test. 300 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300")
	addr := startHandler(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		nodata := func() { m.Ns = []dns.RR{soa} }
		switch q.Name {
		case "a-servfail.test.":
			if q.Qtype == dns.TypeA {
				m.Rcode = dns.RcodeServerFailure
			} else {
				nodata()
			}
		case "aaaa-timeout.test.":
			if q.Qtype == dns.TypeAAAA {
				return
			}
			nodata()
		case "a-nx.test.":
			if q.Qtype == dns.TypeA {
				m.Rcode = dns.RcodeNameError
			}
			nodata()
		case "referral.test.":
			m.Ns = []dns.RR{mustRR(t, "test. 3600 IN NS ns.test.")}
		case "root-referral.test.":
			m.Ns = []dns.RR{mustRR(t, ". 3600 IN NS a.root-servers.net.")}
		case "other-question.test.":
			m.Question[0].Name = "other.test."
			m.Answer = []dns.RR{mustRR(t, "other.test. 300 IN MX 10 mx.other.test.")}
		case "other-type.test.":
			m.Question[0].Qtype = dns.TypeTXT
			nodata()
		case "no-soa.test.":
		default:
			m.Rcode = dns.RcodeRefused
		}
		w.WriteMsg(m)
	})
	c := newChecker(t, Config{}, addr)
	check := func(domain string, want Verdict) {
		t.Helper()
		if got := c.Domain(context.Background(), domain); got != want {
			t.Errorf("Domain(%q) = %v, want %v", domain, got, want)
		}
	}
	check("a-servfail.test", Verdict{TempFail, "SERVFAIL from " + addr})
	check("aaaa-timeout.test", Verdict{TempFail, "timeout from " + addr})
	check("a-nx.test", Verdict{Invalid, "NXDOMAIN"})
	check("referral.test", Verdict{TempFail, "referral from " + addr + " (not a recursive resolver)"})
	check("root-referral.test", Verdict{TempFail, "referral from " + addr + " (not a recursive resolver)"})
	check("other-question.test", Verdict{TempFail, "answer to another question from " + addr})
	check("other-type.test", Verdict{TempFail, "answer to another question from " + addr})
	check("no-soa.test", Verdict{Invalid, "no MX, A or AAAA records"})
}

func TestServersInOrder(t *testing.T) {
	rrs := []string{"mx.test. 300 IN MX 10 mx.mx.test.", "fails.test. 300 IN MX 10 mx.mx.test."}
	first := startServer(t, rrs...)
	second := startServer(t, rrs...)
	first.SetRcode("fails.test", dns.RcodeServerFailure)
	dead := startServer(t)
	deadAddr := dead.Addr()
	dead.Close()

	check := func(c *Checker, domain string, want Verdict, firstQueries, secondQueries int) {
		t.Helper()
		if got := c.Domain(context.Background(), domain); got != want {
			t.Errorf("Domain(%q) = %v, want %v", domain, got, want)
		}
		if got := first.Queries(domain, dns.TypeMX); got != firstQueries {
			t.Errorf("%s: first server got %d queries, want %d", domain, got, firstQueries)
		}
		if got := second.Queries(domain, dns.TypeMX); got != secondQueries {
			t.Errorf("%s: second server got %d queries, want %d", domain, got, secondQueries)
		}
	}
	c := newChecker(t, Config{}, first.Addr(), second.Addr())
	check(c, "mx.test", Verdict{Valid, "MX mx.mx.test"}, 1, 0)
	check(c, "fails.test", Verdict{Valid, "MX mx.mx.test"}, 1, 1)

	first.SetRcode("both-fail.test", dns.RcodeServerFailure)
	second.SetRcode("both-fail.test", dns.RcodeRefused)
	check(c, "both-fail.test", Verdict{TempFail, "REFUSED from " + second.Addr()}, 1, 1)

	c = newChecker(t, Config{}, deadAddr, first.Addr())
	check(c, "mx.test", Verdict{Valid, "MX mx.mx.test"}, 2, 0)

	c = newChecker(t, Config{}, deadAddr)
	got := c.Domain(context.Background(), "mx.test")
	if want := "network error from " + deadAddr + ": "; got.Result != TempFail || !strings.HasPrefix(got.Reason, want) {
		t.Errorf("Domain with a dead server = %v, want TempFail: %s...", got, want)
	}
}

func TestCachePositive(t *testing.T) {
	s := startServer(t,
		"mx.test. 60 IN MX 10 mx.mx.test.",
		"long.test. 86400 IN MX 10 mx.long.test.",
		"alias.test. 5 IN CNAME mx.test.",
		"zero.test. 0 IN MX 10 mx.zero.test.",
	)
	clock := newFakeClock()
	c := newChecker(t, Config{MaxTTL: 10 * time.Minute, Now: clock.Now}, s.Addr())

	// check checks domain, which must be Valid, and that the server has
	// received queries MX queries for name so far.
	check := func(domain, name string, queries int) {
		t.Helper()
		if v := c.Domain(context.Background(), domain); v.Result != Valid {
			t.Errorf("Domain(%q) = %v, want Valid", domain, v)
		}
		if got := s.Queries(name, dns.TypeMX); got != queries {
			t.Errorf("after Domain(%q): %d MX queries for %s, want %d", domain, got, name, queries)
		}
	}
	check("mx.test", "mx.test", 1)
	check("mx.test", "mx.test", 1)
	clock.Advance(59 * time.Second)
	check("mx.test", "mx.test", 1)
	clock.Advance(time.Second)
	check("mx.test", "mx.test", 2)
	check("mx.test", "mx.test", 2)

	// MaxTTL caps a long TTL.
	check("long.test", "long.test", 1)
	clock.Advance(10*time.Minute - time.Second)
	check("long.test", "long.test", 1)
	clock.Advance(time.Second)
	check("long.test", "long.test", 2)

	// The smallest TTL of the answer, the CNAME's, rules.
	check("alias.test", "alias.test", 1)
	clock.Advance(4 * time.Second)
	check("alias.test", "alias.test", 1)
	clock.Advance(time.Second)
	check("alias.test", "alias.test", 2)

	// A TTL of zero is not cached.
	check("zero.test", "zero.test", 1)
	check("zero.test", "zero.test", 2)
}

func TestCacheNegative(t *testing.T) {
	s := startServer(t,
		"nodata.min.test. 300 IN TXT \"x\"",
		"nodata.nosoa. 300 IN TXT \"x\"",
	)
	s.SetSOA("min.test.", 3600, 30)    // MINIMUM rules
	s.SetSOA("ttl.test.", 20, 600)     // the SOA's TTL rules
	s.SetSOA("long.test.", 7200, 7200) // capped by MaxTTL
	clock := newFakeClock()
	c := newChecker(t, Config{NegativeTTL: 45 * time.Second, MaxTTL: time.Hour, Now: clock.Now}, s.Addr())

	for _, tc := range []struct {
		domain string
		want   Verdict
		ttl    time.Duration
	}{
		{"nx.min.test", Verdict{Invalid, "NXDOMAIN"}, 30 * time.Second},
		{"nodata.min.test", Verdict{Invalid, "no MX, A or AAAA records"}, 30 * time.Second},
		{"nx.ttl.test", Verdict{Invalid, "NXDOMAIN"}, 20 * time.Second},
		{"nx.long.test", Verdict{Invalid, "NXDOMAIN"}, time.Hour},
		{"nx.nosoa", Verdict{Invalid, "NXDOMAIN"}, 45 * time.Second},
		{"nodata.nosoa", Verdict{Invalid, "no MX, A or AAAA records"}, 45 * time.Second},
	} {
		check := func(queries int) {
			t.Helper()
			if got := c.Domain(context.Background(), tc.domain); got != tc.want {
				t.Errorf("Domain(%q) = %v, want %v", tc.domain, got, tc.want)
			}
			if got := s.Queries(tc.domain, dns.TypeMX); got != queries {
				t.Errorf("%s: %d MX queries, want %d", tc.domain, got, queries)
			}
		}
		check(1)
		clock.Advance(tc.ttl - time.Second)
		check(1)
		clock.Advance(time.Second)
		check(2)
	}
}

func TestTempFailNotCached(t *testing.T) {
	s := startServer(t)
	s.SetRcode("servfail.test", dns.RcodeServerFailure)
	c := newChecker(t, Config{}, s.Addr())
	for i := 1; i <= 3; i++ {
		if v := c.Domain(context.Background(), "servfail.test"); v.Result != TempFail {
			t.Errorf("Domain = %v, want TempFail", v)
		}
		if got := s.Queries("servfail.test", dns.TypeMX); got != i {
			t.Errorf("after %d checks: %d queries, want %d", i, got, i)
		}
	}
}

func TestCacheBound(t *testing.T) {
	s := startServer(t,
		"a.test. 300 IN MX 10 mx.test.",
		"b.test. 300 IN MX 10 mx.test.",
		"c.test. 300 IN MX 10 mx.test.",
	)
	c := newChecker(t, Config{CacheSize: 2}, s.Addr())
	queries := func(domain string, want int) {
		t.Helper()
		if v := c.Domain(context.Background(), domain); v.Result != Valid {
			t.Errorf("Domain(%q) = %v, want Valid", domain, v)
		}
		if got := s.Queries(domain, dns.TypeMX); got != want {
			t.Errorf("after Domain(%q): %d MX queries, want %d", domain, got, want)
		}
		if n := c.cache.len(); n > 2 {
			t.Errorf("cache holds %d entries, more than its size 2", n)
		}
	}
	queries("a.test", 1)
	queries("b.test", 1)
	queries("a.test", 1) // a is now the most recently used
	queries("c.test", 1) // evicts b
	queries("a.test", 1)
	queries("c.test", 1)
	queries("b.test", 2) // evicts a
	queries("a.test", 2)
}

func TestConcurrentLookupsMerged(t *testing.T) {
	// TTL 0: the answer is not cached, so one query means merged look-ups.
	s := startServer(t, "slow.test. 0 IN MX 10 mx.slow.test.")
	s.SetDelay("slow.test", 500*time.Millisecond)
	c := newChecker(t, Config{Timeout: 2 * time.Second}, s.Addr())

	const n = 20
	var ready, done sync.WaitGroup
	ready.Add(n)
	verdicts := make([]Verdict, n)
	for i := range n {
		done.Go(func() {
			ready.Done()
			verdicts[i] = c.Domain(context.Background(), "slow.test")
		})
	}
	ready.Wait()
	done.Wait()
	for i, v := range verdicts {
		if want := (Verdict{Valid, "MX mx.slow.test"}); v != want {
			t.Errorf("look-up %d: %v, want %v", i, v, want)
		}
	}
	if got := s.Queries("slow.test", dns.TypeMX); got != 1 {
		t.Errorf("%d concurrent look-ups sent %d queries, want 1", n, got)
	}
	if got := c.cache.len(); got != 0 {
		t.Errorf("cache holds %d entries, want 0 for a TTL of 0", got)
	}
}

func TestContext(t *testing.T) {
	s := startServer(t, "slow.test. 300 IN MX 10 mx.slow.test.")
	s.SetDelay("slow.test", 300*time.Millisecond)
	c := newChecker(t, Config{Timeout: 2 * time.Second}, s.Addr())

	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	if got, want := c.Domain(canceled, "slow.test"), (Verdict{TempFail, "context canceled"}); got != want {
		t.Errorf("Domain with a canceled context = %v, want %v", got, want)
	}
	if _, err := c.DNSBL(canceled, "bl.test", netip.MustParseAddr("192.0.2.1")); !errors.Is(err, ErrTemporary) || !errors.Is(err, context.Canceled) {
		t.Errorf("DNSBL with a canceled context: err = %v, want ErrTemporary and context.Canceled", err)
	}
	if got := s.Queries("slow.test", dns.TypeMX); got != 0 {
		t.Errorf("a canceled look-up sent %d queries", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	begin := time.Now()
	if got, want := c.Domain(ctx, "slow.test"), (Verdict{TempFail, "context deadline exceeded"}); got != want {
		t.Errorf("Domain with an expiring context = %v, want %v", got, want)
	}
	if elapsed := time.Since(begin); elapsed > 250*time.Millisecond {
		t.Errorf("Domain returned %v after its context expired, want at once", elapsed-50*time.Millisecond)
	}
	// The query goes on for the cache: a later look-up joins it.
	if got, want := c.Domain(context.Background(), "slow.test"), (Verdict{Valid, "MX mx.slow.test"}); got != want {
		t.Errorf("Domain = %v, want %v", got, want)
	}
	if got := s.Queries("slow.test", dns.TypeMX); got != 1 {
		t.Errorf("%d queries, want 1", got)
	}
}

func TestDNSBL(t *testing.T) {
	const v6name = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test."
	var big []string
	for i := range 100 {
		big = append(big, "3.0.0.127.bl.test. 300 IN A 127.0.1."+strconv.Itoa(i))
	}
	s := startServer(t, append(big,
		"2.0.0.127.bl.test. 300 IN A 127.0.0.2",
		"2.0.0.127.bl.test. 300 IN A 127.0.0.4",
		"2.0.0.127.bl.test. 300 IN TXT \"listed\"",
		"4.0.0.127.bl.test. 300 IN TXT \"no A record\"",
		v6name+" 300 IN A 127.0.0.3",
	)...)
	s.SetSOA("bl.test.", 300, 60)
	s.SetRcode("1.0.0.127.bl.test", dns.RcodeServerFailure)
	s.SetRcode("1.0.0.127.refused.test", dns.RcodeRefused)
	s.SetTimeout("1.0.0.127.timeout.test")
	c := newChecker(t, Config{}, s.Addr())

	check := func(zone, ip, qname string, want []netip.Addr) {
		t.Helper()
		got, err := c.DNSBL(context.Background(), zone, netip.MustParseAddr(ip))
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("DNSBL(%q, %s) = %v, %v, want %v, nil", zone, ip, got, err, want)
		}
		if n := s.Queries(qname, dns.TypeA); n != 1 {
			t.Errorf("DNSBL(%q, %s): %d A queries for %s, want 1", zone, ip, n, qname)
		}
	}
	addrs := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}
	check("bl.test", "127.0.0.2", "2.0.0.127.bl.test.", addrs("127.0.0.2", "127.0.0.4"))
	check("BL.Test.", "::ffff:127.0.0.2", "2.0.0.127.bl.test.", addrs("127.0.0.2", "127.0.0.4"))
	check("bl.test", "192.0.2.1", "1.2.0.192.bl.test.", nil)
	check("bl.test", "127.0.0.4", "4.0.0.127.bl.test.", nil)
	check("bl.test", "2001:db8::1", v6name, addrs("127.0.0.3"))
	check("bl.test", "2001:db8::2", "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test.", nil)

	var want []netip.Addr
	for i := range 100 {
		want = append(want, netip.MustParseAddr("127.0.1."+strconv.Itoa(i)))
	}
	got, err := c.DNSBL(context.Background(), "bl.test", netip.MustParseAddr("127.0.0.3"))
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("DNSBL of an address with 100 A records = %d addresses, %v; want all 100", len(got), err)
	}

	for _, tc := range []struct{ zone, reason string }{
		{"bl.test", "SERVFAIL from " + s.Addr()},
		{"refused.test", "REFUSED from " + s.Addr()},
		{"timeout.test", "timeout from " + s.Addr()},
	} {
		got, err := c.DNSBL(context.Background(), tc.zone, netip.MustParseAddr("127.0.0.1"))
		if !errors.Is(err, ErrTemporary) || got != nil {
			t.Errorf("DNSBL(%q, 127.0.0.1) = %v, %v, want an ErrTemporary", tc.zone, got, err)
		}
		if err != nil && !strings.HasSuffix(err.Error(), tc.reason) {
			t.Errorf("DNSBL(%q, 127.0.0.1): error %q does not end with %q", tc.zone, err, tc.reason)
		}
	}

	for _, tc := range []struct {
		zone string
		ip   netip.Addr
	}{
		{"bl.test", netip.Addr{}},
		{"", netip.MustParseAddr("127.0.0.2")},
		{".", netip.MustParseAddr("127.0.0.2")},
		{"bl..test", netip.MustParseAddr("127.0.0.2")},
	} {
		if _, err := c.DNSBL(context.Background(), tc.zone, tc.ip); err == nil || errors.Is(err, ErrTemporary) {
			t.Errorf("DNSBL(%q, %v): err = %v, want a non-temporary error", tc.zone, tc.ip, err)
		}
	}
}

func TestDNSBLName(t *testing.T) {
	for _, tc := range []struct {
		zone, ip, want string
	}{
		{"bl.test", "127.0.0.2", "2.0.0.127.bl.test."},
		{"bl.test.", "192.0.2.1", "1.2.0.192.bl.test."},
		{"Zen.Example.", "10.20.30.40", "40.30.20.10.zen.example."},
		{"bl.test", "0.0.0.0", "0.0.0.0.bl.test."},
		{"bl.test", "255.255.255.255", "255.255.255.255.bl.test."},
		{"bl.test", "::ffff:192.0.2.1", "1.2.0.192.bl.test."},
		{"bl.test", "2001:db8::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test."},
		{"bl.test", "2001:DB8:1234:5678:9abc:def0:fedc:ba98", "8.9.a.b.c.d.e.f.0.f.e.d.c.b.a.9.8.7.6.5.4.3.2.1.8.b.d.0.1.0.0.2.bl.test."},
		{"bl.test", "fe80::1%eth0", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.e.f.bl.test."},
		{"bl.test", "::", strings.Repeat("0.", 32) + "bl.test."},
		{"bl.test", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", strings.Repeat("f.", 32) + "bl.test."},
	} {
		got, err := dnsblName(tc.zone, netip.MustParseAddr(tc.ip))
		if err != nil || got != tc.want {
			t.Errorf("dnsblName(%q, %s) = %q, %v, want %q", tc.zone, tc.ip, got, err, tc.want)
		}
	}

	// Every address survives a round trip through its query name.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		var b [16]byte
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		for _, ip := range []netip.Addr{netip.AddrFrom16(b), netip.AddrFrom4([4]byte(b[:4]))} {
			if ip.Is4In6() {
				continue
			}
			name, err := dnsblName("bl.test", ip)
			if err != nil {
				t.Fatalf("dnsblName(%s): %v", ip, err)
			}
			if back := parseDNSBLName(t, name, "bl.test."); back != ip {
				t.Fatalf("dnsblName(%s) = %q, which reads back as %s", ip, name, back)
			}
		}
	}

	long := strings.Repeat(strings.Repeat("a", 50)+".", 4)
	if _, err := dnsblName(long, netip.MustParseAddr("2001:db8::1")); err == nil {
		t.Errorf("dnsblName with a %d-octet zone and an IPv6 address succeeded", len(long))
	}
	if _, err := dnsblName(long, netip.MustParseAddr("192.0.2.1")); err != nil {
		t.Errorf("dnsblName with a %d-octet zone and an IPv4 address: %v", len(long), err)
	}
}

// parseDNSBLName reads the address back from a DNSBL query name, as a DNSBL
// server would, independently of dnsblName's code.
func parseDNSBLName(t *testing.T, name, zone string) netip.Addr {
	t.Helper()
	labels := strings.Split(strings.TrimSuffix(name, "."+zone), ".")
	slices.Reverse(labels)
	switch len(labels) {
	case 4:
		return netip.MustParseAddr(strings.Join(labels, "."))
	case 32:
		var groups []string
		for i := 0; i < 32; i += 4 {
			groups = append(groups, strings.Join(labels[i:i+4], ""))
		}
		return netip.MustParseAddr(strings.Join(groups, ":"))
	}
	t.Fatalf("%q has %d labels before the zone, want 4 or 32", name, len(labels))
	return netip.Addr{}
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string // "" for no error, else a part of the error
	}{
		{Config{Servers: []string{"127.0.0.1:53"}}, ""},
		{Config{Servers: []string{"[::1]:5353", "127.0.0.1:53"}, Timeout: time.Second, CacheSize: 1, MaxTTL: time.Minute, NegativeTTL: time.Second}, ""},
		{Config{}, "Config.Servers is empty"},
		{Config{Servers: []string{"127.0.0.1"}}, `Config.Servers[0] = "127.0.0.1"`},
		{Config{Servers: []string{"127.0.0.1:53", "localhost:53"}}, `Config.Servers[1] = "localhost:53"`},
		{Config{Servers: []string{"127.0.0.1:0"}}, "non-zero port"},
		{Config{Servers: []string{"0.0.0.0:53"}}, "specific IP"},
		{Config{Servers: []string{"127.0.0.1:53"}, Timeout: -1}, "Config.Timeout"},
		{Config{Servers: []string{"127.0.0.1:53"}, MaxTTL: -time.Second}, "Config.MaxTTL"},
		{Config{Servers: []string{"127.0.0.1:53"}, NegativeTTL: -time.Second}, "Config.NegativeTTL"},
		{Config{Servers: []string{"127.0.0.1:53"}, CacheSize: -1}, "Config.CacheSize"},
	} {
		c, err := New(tc.cfg)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("New(%+v): %v", tc.cfg, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("New(%+v): err = %v, want one containing %q", tc.cfg, err, tc.want)
		case tc.want != "" && c != nil:
			t.Errorf("New(%+v) returned a Checker with an error", tc.cfg)
		}
	}

	// Every invalid field is named at once.
	_, err := New(Config{Servers: []string{"x"}, Timeout: -1, CacheSize: -1})
	for _, part := range []string{"Servers[0]", "Timeout", "CacheSize"} {
		if err == nil || !strings.Contains(err.Error(), part) {
			t.Errorf("New with three invalid fields: err = %v, want it to name %s", err, part)
		}
	}

	c, err := New(Config{Servers: []string{"127.0.0.1:53"}})
	if err != nil {
		t.Fatal(err)
	}
	if c.timeout != DefaultTimeout || c.maxTTL != DefaultMaxTTL || c.negativeTTL != DefaultNegativeTTL || c.cache.size != DefaultCacheSize || c.now == nil {
		t.Errorf("New with zero values: timeout %v, maxTTL %v, negativeTTL %v, cache size %d; want the defaults", c.timeout, c.maxTTL, c.negativeTTL, c.cache.size)
	}
}

func TestResultString(t *testing.T) {
	for r, want := range map[Result]string{
		Valid:    "Valid",
		Invalid:  "Invalid",
		TempFail: "TempFail",
		0:        "Result(0)",
		42:       "Result(42)",
	} {
		if got := r.String(); got != want {
			t.Errorf("Result(%d).String() = %q, want %q", int(r), got, want)
		}
	}
	if got, want := (Verdict{Invalid, "NXDOMAIN"}).String(), "Invalid: NXDOMAIN"; got != want {
		t.Errorf("Verdict.String() = %q, want %q", got, want)
	}
}
