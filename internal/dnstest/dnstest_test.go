package dnstest_test

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"relayguard/internal/dnstest"
)

func start(t *testing.T) *dnstest.Server {
	t.Helper()
	s, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func add(t *testing.T, s *dnstest.Server, rr ...string) {
	t.Helper()
	if err := s.Add(rr...); err != nil {
		t.Fatal(err)
	}
}

// query asks s for name and qtype over network ("udp" or "tcp") with EDNS0.
func query(t *testing.T, s *dnstest.Server, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.SetEdns0(1232, false)
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	r, _, err := c.Exchange(q, s.Addr())
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return r
}

// rrStrings returns the records of rrs in zone-file syntax, tabs as spaces.
func rrStrings(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		out = append(out, strings.Join(strings.Fields(rr.String()), " "))
	}
	return out
}

func TestAnswers(t *testing.T) {
	s := start(t)
	add(t, s,
		"example.test. 300 IN MX 10 mx.example.test.",
		"example.test. 300 IN MX 20 mx2.example.test.",
		"mx.example.test. 60 IN A 192.0.2.1",
		"alias.example.test. 30 IN CNAME www.example.test.",
		"www.example.test. 120 IN AAAA 2001:db8::1",
		"loop1.example.test. 30 IN CNAME loop2.example.test.",
		"loop2.example.test. 30 IN CNAME loop1.example.test.",
		"dangling.example.test. 30 IN CNAME gone.example.test.",
	)
	s.SetSOA("example.test.", 3600, 300)
	s.SetSOA("sub.example.test", 600, 60)
	s.SetSOA("test", 900, 90)
	s.SetSOA("deep.sub.example.test.", 60, 6)
	soa := "example.test. 3600 IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 300"
	subSOA := "sub.example.test. 600 IN SOA ns.sub.example.test. hostmaster.sub.example.test. 1 3600 600 86400 60"
	testSOA := "test. 900 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 90"
	deepSOA := "deep.sub.example.test. 60 IN SOA ns.deep.sub.example.test. hostmaster.deep.sub.example.test. 1 3600 600 86400 6"

	check := func(name string, qtype uint16, rcode int, answer, authority []string) {
		t.Helper()
		for _, network := range []string{"udp", "tcp"} {
			r := query(t, s, network, name, qtype)
			if r.Rcode != rcode {
				t.Errorf("%s %s %s: rcode %s, want %s", network, name, dns.TypeToString[qtype], dns.RcodeToString[r.Rcode], dns.RcodeToString[rcode])
			}
			if got := rrStrings(r.Answer); strings.Join(got, "\n") != strings.Join(answer, "\n") {
				t.Errorf("%s %s %s: answer\n%s\nwant\n%s", network, name, dns.TypeToString[qtype], strings.Join(got, "\n"), strings.Join(answer, "\n"))
			}
			if got := rrStrings(r.Ns); strings.Join(got, "\n") != strings.Join(authority, "\n") {
				t.Errorf("%s %s %s: authority\n%s\nwant\n%s", network, name, dns.TypeToString[qtype], strings.Join(got, "\n"), strings.Join(authority, "\n"))
			}
			if !r.Authoritative || r.Truncated {
				t.Errorf("%s %s %s: AA=%v TC=%v, want AA and no TC", network, name, dns.TypeToString[qtype], r.Authoritative, r.Truncated)
			}
		}
	}

	check("example.test.", dns.TypeMX, dns.RcodeSuccess, []string{
		"example.test. 300 IN MX 10 mx.example.test.",
		"example.test. 300 IN MX 20 mx2.example.test.",
	}, nil)
	check("EXAMPLE.Test.", dns.TypeMX, dns.RcodeSuccess, []string{
		"example.test. 300 IN MX 10 mx.example.test.",
		"example.test. 300 IN MX 20 mx2.example.test.",
	}, nil)
	check("mx.example.test.", dns.TypeA, dns.RcodeSuccess, []string{"mx.example.test. 60 IN A 192.0.2.1"}, nil)
	check("mx.example.test.", dns.TypeAAAA, dns.RcodeSuccess, nil, []string{soa})
	check("nx.example.test.", dns.TypeA, dns.RcodeNameError, nil, []string{soa})
	check("nx.sub.example.test.", dns.TypeA, dns.RcodeNameError, nil, []string{subSOA})
	check("example.test.", dns.TypeSOA, dns.RcodeSuccess, []string{soa}, nil)
	check("sub.example.test.", dns.TypeA, dns.RcodeSuccess, nil, []string{subSOA})
	check("nx.other.test.", dns.TypeA, dns.RcodeNameError, nil, []string{testSOA})
	check("a.b.deep.sub.example.test.", dns.TypeA, dns.RcodeNameError, nil, []string{deepSOA})
	check("nx.invalid.", dns.TypeA, dns.RcodeNameError, nil, nil)
	check("alias.example.test.", dns.TypeAAAA, dns.RcodeSuccess, []string{
		"alias.example.test. 30 IN CNAME www.example.test.",
		"www.example.test. 120 IN AAAA 2001:db8::1",
	}, nil)
	check("alias.example.test.", dns.TypeCNAME, dns.RcodeSuccess, []string{
		"alias.example.test. 30 IN CNAME www.example.test.",
	}, nil)
	check("alias.example.test.", dns.TypeMX, dns.RcodeSuccess, []string{
		"alias.example.test. 30 IN CNAME www.example.test.",
	}, []string{soa})
	check("dangling.example.test.", dns.TypeA, dns.RcodeNameError, []string{
		"dangling.example.test. 30 IN CNAME gone.example.test.",
	}, []string{soa})
	check("loop1.example.test.", dns.TypeA, dns.RcodeServerFailure, []string{
		"loop1.example.test. 30 IN CNAME loop2.example.test.",
		"loop2.example.test. 30 IN CNAME loop1.example.test.",
		"loop1.example.test. 30 IN CNAME loop2.example.test.",
		"loop2.example.test. 30 IN CNAME loop1.example.test.",
		"loop1.example.test. 30 IN CNAME loop2.example.test.",
		"loop2.example.test. 30 IN CNAME loop1.example.test.",
		"loop1.example.test. 30 IN CNAME loop2.example.test.",
		"loop2.example.test. 30 IN CNAME loop1.example.test.",
	}, nil)

	s.SetRcode("example.test", dns.RcodeRefused)
	check("example.test.", dns.TypeMX, dns.RcodeRefused, nil, nil)
	check("example.test.", dns.TypeA, dns.RcodeRefused, nil, nil)
	s.SetRcode("example.test", dns.RcodeSuccess)
	check("example.test.", dns.TypeMX, dns.RcodeSuccess, []string{
		"example.test. 300 IN MX 10 mx.example.test.",
		"example.test. 300 IN MX 20 mx2.example.test.",
	}, nil)
}

func TestQueriesCounted(t *testing.T) {
	s := start(t)
	add(t, s, "example.test. 300 IN A 192.0.2.1")
	query(t, s, "udp", "example.test.", dns.TypeA)
	query(t, s, "tcp", "Example.Test.", dns.TypeA)
	query(t, s, "udp", "example.test.", dns.TypeMX)
	query(t, s, "udp", "nx.test.", dns.TypeMX)
	for _, c := range []struct {
		name  string
		qtype uint16
		want  int
	}{
		{"example.test", dns.TypeA, 2},
		{"EXAMPLE.TEST.", dns.TypeA, 2},
		{"example.test.", dns.TypeMX, 1},
		{"example.test.", dns.TypeAAAA, 0},
		{"nx.test.", dns.TypeMX, 1},
	} {
		if got := s.Queries(c.name, c.qtype); got != c.want {
			t.Errorf("Queries(%q, %s) = %d, want %d", c.name, dns.TypeToString[c.qtype], got, c.want)
		}
	}
}

func TestTruncation(t *testing.T) {
	s := start(t)
	var rrs []string
	for i := range 200 {
		rrs = append(rrs, "big.test. 300 IN A 10.0.0."+strconv.Itoa(i))
	}
	add(t, s, rrs...)
	r := query(t, s, "udp", "big.test.", dns.TypeA)
	if !r.Truncated {
		t.Errorf("UDP answer of %d records not truncated", len(r.Answer))
	}
	r.Compress = true
	if r.Len() > 1232 {
		t.Errorf("UDP answer is %d bytes, more than the advertised 1232", r.Len())
	}
	r = query(t, s, "tcp", "big.test.", dns.TypeA)
	if r.Truncated || len(r.Answer) != 200 {
		t.Errorf("TCP answer: TC=%v, %d records, want all 200", r.Truncated, len(r.Answer))
	}
}

func TestTimeoutAndDelay(t *testing.T) {
	s := start(t)
	add(t, s, "slow.test. 300 IN A 192.0.2.1", "dead.test. 300 IN A 192.0.2.2")
	s.SetTimeout("dead.test")
	s.SetDelay("slow.test", 150*time.Millisecond)

	q := new(dns.Msg)
	q.SetQuestion("dead.test.", dns.TypeA)
	for _, network := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: network, Timeout: 100 * time.Millisecond}
		_, _, err := c.Exchange(q, s.Addr())
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("%s query for a name set to time out: err = %v, want a timeout", network, err)
		}
	}
	if got := s.Queries("dead.test.", dns.TypeA); got != 2 {
		t.Errorf("Queries(dead.test, A) = %d, want 2", got)
	}

	begin := time.Now()
	r := query(t, s, "udp", "slow.test.", dns.TypeA)
	if elapsed := time.Since(begin); elapsed < 150*time.Millisecond {
		t.Errorf("delayed answer came after %v, want at least 150ms", elapsed)
	}
	if len(r.Answer) != 1 {
		t.Errorf("delayed answer has %d records, want 1", len(r.Answer))
	}
	s.SetDelay("slow.test", 0)
	begin = time.Now()
	query(t, s, "udp", "slow.test.", dns.TypeA)
	if elapsed := time.Since(begin); elapsed >= 150*time.Millisecond {
		t.Errorf("answer after removing the delay came after %v", elapsed)
	}
}

func TestConcurrentUse(t *testing.T) {
	s := start(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			name := "n" + strconv.Itoa(i) + ".test."
			if err := s.Add(name + " 60 IN A 192.0.2.1"); err != nil {
				t.Error(err)
				return
			}
			q := new(dns.Msg)
			q.SetQuestion(name, dns.TypeA)
			r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(q, s.Addr())
			if err != nil {
				t.Error(err)
				return
			}
			if len(r.Answer) != 1 {
				t.Errorf("%s: %d records, want 1", name, len(r.Answer))
			}
		})
	}
	wg.Wait()
}

func TestAddErrors(t *testing.T) {
	s := start(t)
	for _, bad := range []string{"", "example.test. 300 IN MX ten mx.example.test.", "example.test. 300 IN A 999.1.1.1", "example.test. 300 IN BOGUS 1"} {
		if err := s.Add("ok.test. 300 IN A 192.0.2.1", bad); err == nil {
			t.Errorf("Add(%q) succeeded", bad)
		}
	}
	r := query(t, s, "udp", "ok.test.", dns.TypeA)
	if r.Rcode != dns.RcodeNameError {
		t.Errorf("a failed Add added records: rcode %s", dns.RcodeToString[r.Rcode])
	}
}

func TestListen(t *testing.T) {
	for _, bad := range []string{"192.0.2.1:0", "0.0.0.0:0", "localhost:0", "127.0.0.1"} {
		if s, err := dnstest.Listen(bad); err == nil {
			s.Close()
			t.Errorf("Listen(%q) succeeded", bad)
		}
	}
	s := start(t)
	host, port, err := net.SplitHostPort(s.Addr())
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Errorf("Addr() = %q, want 127.0.0.1:PORT", s.Addr())
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
