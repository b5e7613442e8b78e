package dnscheck

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// ednsSize is the UDP payload size advertised in queries (RFC 6891 §6.2.5),
// the value agreed on for DNS Flag Day 2020 to avoid IP fragmentation.
const ednsSize = 1232

// answer is a definite answer to a query: records of the asked type, or a
// negative answer. It keeps of the records only what the checks use, so
// that a cache of tens of thousands of answers stays small.
type answer struct {
	nxdomain bool          // RFC 2308 §2.1: the name does not exist
	records  int           // records of the asked type; none and !nxdomain is NODATA
	addrs    []netip.Addr  // for A and AAAA, their addresses, in the answer's order
	ttl      time.Duration // how long the answer may be cached
	// mx is, for an MX answer with a usable record, the reason Domain
	// gives ("MX target"), made once for every look-up the cache answers.
	mx string
}

// failure is a temporary failure. Its text is the reason given in verdicts.
type failure struct {
	reason string
	err    error
}

func (f *failure) Error() string        { return f.reason }
func (f *failure) Unwrap() error        { return f.err }
func (f *failure) Is(target error) bool { return target == ErrTemporary }

// contextFailure is the failure of a look-up whose context ended.
func contextFailure(ctx context.Context) *failure {
	return &failure{reason: ctx.Err().Error(), err: ctx.Err()}
}

// lookup answers a query for name (lower case, fully qualified) and qtype
// from the cache or, merged with concurrent look-ups of the same name and
// type, from the resolvers. The error is a *failure.
func (c *Checker) lookup(ctx context.Context, name string, qtype uint16) (*answer, error) {
	if ctx.Err() != nil {
		return nil, contextFailure(ctx)
	}
	key := cacheKey{name: name, qtype: qtype}
	if a, ok := c.cache.get(key, c.now()); ok {
		return a, nil
	}
	ch := c.flight.DoChan(name+"/"+strconv.Itoa(int(qtype)), func() (any, error) {
		// A flight that ended just before this one started may have filled
		// the cache.
		if a, ok := c.cache.get(key, c.now()); ok {
			return a, nil
		}
		// The query serves every merged caller, so one caller's
		// cancellation must not end it; it is bounded by the timeouts.
		a, err := c.resolve(context.WithoutCancel(ctx), name, qtype)
		if err != nil {
			return nil, err
		}
		if a.ttl > 0 {
			c.cache.put(key, a, c.now().Add(a.ttl))
		}
		return a, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*answer), nil
	case <-ctx.Done():
		return nil, contextFailure(ctx)
	}
}

// resolve asks the servers in order until one gives a definite answer. The
// error is the *failure of the last server.
func (c *Checker) resolve(ctx context.Context, name string, qtype uint16) (*answer, error) {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype) // sets RD=1: the servers are recursive resolvers
	q.SetEdns0(ednsSize, false)

	var last *failure
	for _, server := range c.servers {
		q.Id = dns.Id()
		r, err := c.exchange(ctx, server, q)
		if err != nil {
			last = exchangeFailure(server, err)
			continue
		}
		a, f := c.classify(server, q, r)
		if f != nil {
			last = f
			continue
		}
		return a, nil
	}
	return nil, last
}

// exchange sends q to server over UDP and, if the answer is truncated, again
// over TCP, all within the timeout of one attempt.
func (c *Checker) exchange(ctx context.Context, server string, q *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	r, _, err := c.udp.ExchangeContext(ctx, q, server)
	if err == nil && r.Truncated {
		// RFC 2181 §9: a client that receives TC=1 ignores the answer and
		// asks again over a transport that permits larger replies.
		r, _, err = c.tcp.ExchangeContext(ctx, q, server)
	}
	return r, err
}

func exchangeFailure(server string, err error) *failure {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		return &failure{reason: "timeout from " + server, err: err}
	}
	return &failure{reason: "network error from " + server + ": " + err.Error(), err: err}
}

// classify turns the answer r to q from server into a definite answer or a
// failure.
func (c *Checker) classify(server string, q, r *dns.Msg) (*answer, *failure) {
	switch r.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	default:
		// SERVFAIL, REFUSED and the rest say nothing about the name.
		return nil, &failure{reason: rcodeName(r.Rcode) + " from " + server}
	}
	qq := q.Question[0]
	if len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, qq.Name) ||
		r.Question[0].Qtype != qq.Qtype || r.Question[0].Qclass != qq.Qclass {
		return nil, &failure{reason: "answer to another question from " + server}
	}
	if r.Rcode == dns.RcodeNameError {
		// RFC 6604 §3: after a CNAME chain, NXDOMAIN is about the last
		// name of the chain, which is the one whose records were asked.
		return &answer{nxdomain: true, ttl: c.negativeTTLOf(r)}, nil
	}

	var rrs []dns.RR
	ttl := uint32(0)
	for i, rr := range r.Answer {
		// Records of the asked type, whatever their owner: the other
		// records of the answer are the CNAME chain leading to them
		// (RFC 1034 §3.6.2, §4.3.2).
		if rr.Header().Rrtype == qq.Qtype {
			rrs = append(rrs, rr)
		}
		if i == 0 || rr.Header().Ttl < ttl {
			ttl = rr.Header().Ttl
		}
	}
	if len(rrs) > 0 {
		a := &answer{records: len(rrs), ttl: min(time.Duration(ttl)*time.Second, c.maxTTL)}
		if target, ok := usableMX(rrs); ok && qq.Qtype == dns.TypeMX {
			a.mx = "MX " + target
		}
		for _, rr := range rrs {
			if addr, ok := address(rr); ok {
				a.addrs = append(a.addrs, addr)
			}
		}
		return a, nil
	}
	if isReferral(r) {
		// A server that does not recurse points elsewhere instead of
		// answering; taking this for NODATA would reject valid domains.
		return nil, &failure{reason: "referral from " + server + " (not a recursive resolver)"}
	}
	return &answer{ttl: c.negativeTTLOf(r)}, nil
}

// negativeTTLOf returns how long the negative answer r may be cached.
func (c *Checker) negativeTTLOf(r *dns.Msg) time.Duration {
	for _, rr := range r.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			// RFC 2308 §5: the TTL of a negative answer is the smaller of
			// the SOA record's TTL and its MINIMUM field.
			ttl := time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
			return min(ttl, c.maxTTL)
		}
	}
	return min(c.negativeTTL, c.maxTTL)
}

// isReferral reports whether r, an answer without records of the asked
// type, delegates to other servers (NS records in the authority section, no
// SOA) rather than saying that the records do not exist.
func isReferral(r *dns.Msg) bool {
	hasNS := false
	for _, rr := range r.Ns {
		switch rr.Header().Rrtype {
		case dns.TypeSOA:
			return false
		case dns.TypeNS:
			hasNS = true
		}
	}
	return hasNS
}

func rcodeName(rcode int) string {
	if s, ok := dns.RcodeToString[rcode]; ok {
		return s
	}
	return "RCODE" + strconv.Itoa(rcode)
}
