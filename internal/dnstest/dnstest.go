// Package dnstest runs an in-process DNS server on the loopback interface for
// tests.
//
// A Server answers queries over UDP and TCP on the same port from a table of
// resource records that the test fills with Add, the way an authoritative
// server (or a recursive resolver that has everything cached) would:
//
//   - a name that owns records of the asked type: NOERROR, those records;
//   - a name that owns a CNAME and no records of the asked type: the CNAME is
//     followed inside the table, and the answer section holds the CNAME
//     records followed by the records of the final target;
//   - a name that owns records, none of the asked type: NOERROR with an empty
//     answer (NODATA, RFC 2308 §2.2);
//   - a name that owns no records at all: NXDOMAIN (RFC 2308 §2.1).
//
// Negative answers carry the SOA of the closest zone set with SetSOA in their
// authority section, which is how resolvers learn how long to cache them
// (RFC 2308 §3). Names can be made to fail with an rcode (SetRcode), to never
// be answered (SetTimeout) or to be answered late (SetDelay), and the server
// counts the queries it receives (Queries) so that tests can observe caching
// and the merging of concurrent look-ups.
//
// UDP answers larger than the client's advertised EDNS0 buffer size (512
// bytes without EDNS0) are truncated with the TC bit set, so clients must
// retry over TCP as a real server would make them.
//
// Names are compared case-insensitively, with or without a trailing dot. All
// methods are safe for concurrent use, including while queries are served.
package dnstest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// maxChain bounds how many CNAME records are followed for one query, so that
// a CNAME loop in the table ends.
const maxChain = 8

// ednsSize is the EDNS0 UDP payload size the server advertises (the value of
// DNS Flag Day 2020).
const ednsSize = 1232

type queryKey struct {
	name  string
	qtype uint16
}

// Server answers DNS on a loopback address, over UDP and TCP on the same
// port, from a table the test sets. The zero value is not usable: call Start
// or Listen.
type Server struct {
	addr string
	udp  *dns.Server
	tcp  *dns.Server
	done chan struct{} // closed by Close, releases delayed and unanswered queries

	closeOnce sync.Once
	closeErr  error

	mu       sync.Mutex
	records  map[string][]dns.RR
	rcodes   map[string]int
	timeouts map[string]bool
	delays   map[string]time.Duration
	soas     map[string]*dns.SOA
	queries  map[queryKey]int
}

// Start starts a server on 127.0.0.1 with a port chosen by the system, the
// same for UDP and TCP. It is Listen("127.0.0.1:0").
func Start() (*Server, error) {
	return Listen("127.0.0.1:0")
}

// Listen starts a server on addr, which must be a loopback address with a
// port ("127.0.0.1:5353", "[::1]:0"). With port 0 a free port is chosen that
// is open for both UDP and TCP.
func Listen(addr string) (*Server, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dnstest: address %q: %w", addr, err)
	}
	if !ap.Addr().IsLoopback() {
		return nil, fmt.Errorf("dnstest: address %q is not a loopback address", addr)
	}
	// With port 0 the TCP port is chosen first, by the kernel among those
	// free for TCP, where a busy machine has thousands of connections; the
	// same port may still be taken for UDP: try a few times.
	const attempts = 10
	for i := 0; ; i++ {
		pc, ln, err := listenBoth(ap)
		if err == nil {
			return serve(pc, ln)
		}
		if ap.Port() != 0 || i == attempts-1 {
			return nil, fmt.Errorf("dnstest: listen on %s: %w", addr, err)
		}
	}
}

// listenBoth opens a TCP listener and a UDP socket on the same address and
// port.
func listenBoth(ap netip.AddrPort) (net.PacketConn, net.Listener, error) {
	ln, err := net.Listen("tcp", ap.String())
	if err != nil {
		return nil, nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	pc, err := net.ListenPacket("udp", net.JoinHostPort(ap.Addr().String(), strconv.Itoa(port)))
	if err != nil {
		ln.Close()
		return nil, nil, err
	}
	return pc, ln, nil
}

func serve(pc net.PacketConn, ln net.Listener) (*Server, error) {
	s := &Server{
		addr:     ln.Addr().String(),
		done:     make(chan struct{}),
		records:  make(map[string][]dns.RR),
		rcodes:   make(map[string]int),
		timeouts: make(map[string]bool),
		delays:   make(map[string]time.Duration),
		soas:     make(map[string]*dns.SOA),
		queries:  make(map[queryKey]int),
	}
	s.udp = &dns.Server{PacketConn: pc, Handler: s}
	s.tcp = &dns.Server{Listener: ln, Handler: s}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		if err := activate(srv); err != nil {
			s.Close()
			pc.Close()
			ln.Close()
			return nil, fmt.Errorf("dnstest: %w", err)
		}
	}
	return s, nil
}

// activate starts srv in a goroutine and returns once it serves, so that
// Shutdown cannot race with the start.
func activate(srv *dns.Server) error {
	started := make(chan struct{})
	failed := make(chan error, 1)
	srv.NotifyStartedFunc = func() { close(started) }
	go func() {
		if err := srv.ActivateAndServe(); err != nil {
			failed <- err
		}
	}()
	select {
	case <-started:
		return nil
	case err := <-failed:
		return err
	}
}

// Addr returns the address the server listens on, "127.0.0.1:PORT" for a
// server from Start.
func (s *Server) Addr() string { return s.addr }

// Close stops the server. Queries being delayed or held unanswered are
// dropped. Close may be called more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		var errs []error
		for _, srv := range []*dns.Server{s.udp, s.tcp} {
			if srv != nil {
				if err := srv.Shutdown(); err != nil {
					errs = append(errs, err)
				}
			}
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// Add parses each string as one resource record in zone-file syntax
// ("example.test. 300 IN MX 10 mx.example.test.") and adds it to the table.
// Owner names without a trailing dot are taken as fully qualified. Nothing is
// added if one of the records does not parse. Note that dns.NewRR accepts a
// record without RDATA ("example.test. 300 IN A"), as used in dynamic
// updates, and so does Add.
func (s *Server) Add(rr ...string) error {
	parsed := make([]dns.RR, 0, len(rr))
	for _, text := range rr {
		r, err := dns.NewRR(text)
		if err != nil {
			return fmt.Errorf("dnstest: record %q: %w", text, err)
		}
		if r == nil {
			return fmt.Errorf("dnstest: record %q: no record", text)
		}
		parsed = append(parsed, r)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range parsed {
		name := dns.CanonicalName(r.Header().Name)
		s.records[name] = append(s.records[name], r)
	}
	return nil
}

// SetRcode makes every query for name, of any type, be answered with rcode
// and nothing else (for example dns.RcodeServerFailure or dns.RcodeRefused).
// dns.RcodeSuccess removes the override.
func (s *Server) SetRcode(name string, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rcode == dns.RcodeSuccess {
		delete(s.rcodes, dns.CanonicalName(name))
		return
	}
	s.rcodes[dns.CanonicalName(name)] = rcode
}

// SetTimeout makes the server never answer queries for name, so that
// clients time out. The queries are still counted.
func (s *Server) SetTimeout(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.timeouts[dns.CanonicalName(name)] = true
}

// SetDelay makes the server wait d before answering each query for name. A
// d of zero or less removes the delay.
func (s *Server) SetDelay(name string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d <= 0 {
		delete(s.delays, dns.CanonicalName(name))
		return
	}
	s.delays[dns.CanonicalName(name)] = d
}

// SetSOA declares zone, with an SOA record of the given TTL and MINIMUM
// field. Negative answers (NXDOMAIN, NODATA) for names at or under the zone
// carry this SOA in their authority section; when zones nest, the closest
// one is used. The zone apex then owns the SOA record: queries for it are not
// NXDOMAIN.
func (s *Server) SetSOA(zone string, ttl, minttl uint32) {
	zone = dns.CanonicalName(zone)
	soa := &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns:      "ns." + strings.TrimPrefix(zone, "."),
		Mbox:    "hostmaster." + strings.TrimPrefix(zone, "."),
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  minttl,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.soas[zone] = soa
}

// Queries returns how many queries for name and qtype the server has
// received so far, over UDP and TCP, whether or not they were answered.
func (s *Server) Queries(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[queryKey{dns.CanonicalName(name), qtype}]
}

// ServeDNS implements dns.Handler. It is called by the listeners started by
// Start and Listen.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	// dns.DefaultMsgAcceptFunc has answered FORMERR to queries without
	// exactly one question.
	q := req.Question[0]
	name := dns.CanonicalName(q.Name)

	s.mu.Lock()
	s.queries[queryKey{name, q.Qtype}]++
	hold := s.timeouts[name]
	delay := s.delays[name]
	s.mu.Unlock()

	if hold {
		return
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.done:
			return
		}
	}

	m := s.answer(req, name, q.Qtype)
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(ednsSize, false)
	}
	if _, udp := w.LocalAddr().(*net.UDPAddr); udp {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// answer builds the reply to a query for name (canonical) and qtype from the
// table.
func (s *Server) answer(req *dns.Msg, name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true

	s.mu.Lock()
	defer s.mu.Unlock()
	for range maxChain {
		if rcode, ok := s.rcodes[name]; ok {
			m.Rcode = rcode
			return m
		}
		owned := s.owned(name)
		if len(owned) == 0 {
			m.Rcode = dns.RcodeNameError
			s.addSOA(m, name)
			return m
		}
		var match []dns.RR
		var cname *dns.CNAME
		for _, rr := range owned {
			switch {
			case rr.Header().Rrtype == qtype || qtype == dns.TypeANY:
				match = append(match, dns.Copy(rr))
			case rr.Header().Rrtype == dns.TypeCNAME:
				cname = rr.(*dns.CNAME)
			}
		}
		if len(match) > 0 {
			m.Answer = append(m.Answer, match...)
			return m
		}
		if cname == nil {
			s.addSOA(m, name)
			return m
		}
		m.Answer = append(m.Answer, dns.Copy(cname))
		name = dns.CanonicalName(cname.Target)
	}
	m.Rcode = dns.RcodeServerFailure
	return m
}

// owned returns the records that name owns, including the SOA of a zone
// whose apex it is. s.mu must be held.
func (s *Server) owned(name string) []dns.RR {
	owned := s.records[name]
	if soa, ok := s.soas[name]; ok {
		owned = append(owned[:len(owned):len(owned)], soa)
	}
	return owned
}

// addSOA puts the SOA of the closest zone that contains name, if any, in the
// authority section of m. s.mu must be held.
func (s *Server) addSOA(m *dns.Msg, name string) {
	var best *dns.SOA
	for zone, soa := range s.soas {
		if dns.IsSubDomain(zone, name) && (best == nil || dns.CountLabel(zone) > dns.CountLabel(best.Hdr.Name)) {
			best = soa
		}
	}
	if best != nil {
		m.Ns = append(m.Ns, dns.Copy(best))
	}
}
