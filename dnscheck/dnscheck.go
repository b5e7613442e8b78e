// Package dnscheck implements the DNS look-ups of relayguard's rules R7/R8
// (the sender's and the recipients' domains must be able to receive mail) and
// R18 (DNS blocklists).
//
// # Domain checks (R7/R8)
//
// A domain can receive mail when it publishes MX records, or, when it has no
// MX records at all, an address record: RFC 5321 §5.1 then treats the domain
// as its own "implicit MX". Checker.Domain therefore asks, in this order:
//
//  1. MX. NXDOMAIN: Invalid, the domain does not exist. A record set with at
//     least one MX whose target is not the root ".": Valid. A set whose only
//     targets are "." is a null MX (RFC 7505): the domain declares that it
//     accepts no mail, Invalid. No MX records (NODATA): go on.
//  2. A. Any record: Valid. NODATA: go on.
//  3. AAAA. Any record: Valid. NODATA: Invalid, "no MX, A or AAAA records".
//
// The targets of a usable MX set are not resolved in turn. Whether they have
// addresses is a question of delivery to that domain, which the MTA answers
// when it delivers; the rules only ask whether the domain is a real mail
// domain, and skipping those look-ups keeps a check to at most three queries.
//
// Only a definite answer from a resolver gives Valid or Invalid. SERVFAIL,
// REFUSED and every other error rcode, timeouts, network errors, referrals
// from a server that does not recurse and canceled contexts give TempFail,
// which the caller answers with a 4xx: a DNS outage delays mail, it never
// bounces it.
//
// # DNS blocklists (R18)
//
// Checker.DNSBL looks an IP address up in a blocklist zone as RFC 5782
// describes: the A records of the address's octets (IPv4, §2.1) or nibbles
// (IPv6, §2.4) in reverse order, under the zone, so 192.0.2.1 in zone
// bl.example is 1.2.0.192.bl.example. A listed address has A records
// (127.0.0.2, ...) whose meaning depends on the list and is left to the
// caller; NXDOMAIN or NODATA means not listed.
//
// # Queries
//
// Queries are made with github.com/miekg/dns to the configured recursive
// resolvers, tried in order until one gives a definite answer. Each query has
// RD=1 (recursion desired) and an EDNS0 OPT record advertising a UDP payload
// of 1232 bytes (RFC 6891); a truncated UDP answer (TC=1) is asked again over
// TCP. The records of the asked type are taken from the answer section
// whatever their owner name, so a CNAME chain that the resolver followed is
// followed here too (RFC 1034 §3.6.2).
//
// # Cache
//
// Answers are cached per (name, type) in a cache bounded to Config.CacheSize
// entries, the least recently used entry being evicted first. A positive
// answer lives for the smallest TTL of its answer section; a negative one
// (NXDOMAIN or NODATA) for the smaller of the TTL and the MINIMUM field of
// the SOA in its authority section (RFC 2308 §5), or Config.NegativeTTL when
// it carries no SOA. Both are capped at Config.MaxTTL; a TTL of zero is not
// cached. Temporary failures are not cached, so a resolver that recovers is
// used at once. Concurrent look-ups of the same name and type are merged into
// one query whose answer they all get; a caller whose context ends stops
// waiting, while the merged query goes on for the others and for the cache.
//
// Domain names are taken in ASCII: internationalized names must be converted
// to their A-label (punycode) form by the caller.
package dnscheck

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sync/singleflight"
)

// Defaults for the zero values of Config's fields.
const (
	DefaultTimeout     = 2 * time.Second
	DefaultCacheSize   = 10000
	DefaultMaxTTL      = time.Hour
	DefaultNegativeTTL = time.Minute
)

// Config configures a Checker.
type Config struct {
	// Servers are the recursive resolvers to query, as "IP:port"
	// ("127.0.0.1:53", "[::1]:53"), tried in order. At least one is needed.
	Servers []string
	// Timeout bounds one attempt at one server, including the retry over
	// TCP after a truncated UDP answer. Zero means DefaultTimeout.
	Timeout time.Duration
	// CacheSize is the largest number of answers kept. Zero means
	// DefaultCacheSize.
	CacheSize int
	// MaxTTL caps how long an answer, positive or negative, is cached. Zero
	// means DefaultMaxTTL.
	MaxTTL time.Duration
	// NegativeTTL is how long a negative answer that carries no SOA record
	// is cached. Zero means DefaultNegativeTTL.
	NegativeTTL time.Duration
	// Now is the clock used for cache expiry. Nil means time.Now.
	Now func() time.Time
}

// Checker runs the DNS checks. It is safe for concurrent use.
type Checker struct {
	servers     []string
	timeout     time.Duration
	maxTTL      time.Duration
	negativeTTL time.Duration
	now         func() time.Time
	udp         *dns.Client
	tcp         *dns.Client
	cache       *cache
	flight      singleflight.Group
}

// New returns a Checker for cfg, or an error that names every invalid field.
func New(cfg Config) (*Checker, error) {
	var errs []error
	if len(cfg.Servers) == 0 {
		errs = append(errs, errors.New("dnscheck: Config.Servers is empty"))
	}
	servers := make([]string, 0, len(cfg.Servers))
	for i, s := range cfg.Servers {
		ap, err := netip.ParseAddrPort(s)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("dnscheck: Config.Servers[%d] = %q: want IP:port: %w", i, s, err))
		case ap.Port() == 0 || ap.Addr().IsUnspecified():
			errs = append(errs, fmt.Errorf("dnscheck: Config.Servers[%d] = %q: want a specific IP and a non-zero port", i, s))
		default:
			servers = append(servers, ap.String())
		}
	}
	for _, f := range []struct {
		name  string
		value time.Duration
	}{{"Timeout", cfg.Timeout}, {"MaxTTL", cfg.MaxTTL}, {"NegativeTTL", cfg.NegativeTTL}} {
		if f.value < 0 {
			errs = append(errs, fmt.Errorf("dnscheck: Config.%s = %v: must not be negative", f.name, f.value))
		}
	}
	if cfg.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("dnscheck: Config.CacheSize = %d: must not be negative", cfg.CacheSize))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	c := &Checker{
		servers:     servers,
		timeout:     orDefault(cfg.Timeout, DefaultTimeout),
		maxTTL:      orDefault(cfg.MaxTTL, DefaultMaxTTL),
		negativeTTL: orDefault(cfg.NegativeTTL, DefaultNegativeTTL),
		now:         cfg.Now,
		cache:       newCache(orDefault(cfg.CacheSize, DefaultCacheSize)),
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.udp = &dns.Client{Net: "udp", Timeout: c.timeout}
	c.tcp = &dns.Client{Net: "tcp", Timeout: c.timeout}
	return c, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Result is the outcome of a domain check.
type Result int

// The results of a domain check. The zero Result is none of them.
const (
	// Valid: the domain can receive mail.
	Valid Result = iota + 1
	// Invalid: the DNS says for sure that the domain cannot receive mail
	// (a permanent failure, 5xx).
	Invalid
	// TempFail: the DNS gave no definite answer (a temporary failure, 4xx).
	TempFail
)

func (r Result) String() string {
	switch r {
	case Valid:
		return "Valid"
	case Invalid:
		return "Invalid"
	case TempFail:
		return "TempFail"
	}
	return "Result(" + strconv.Itoa(int(r)) + ")"
}

// Verdict is the outcome of a domain check and the reason for it, meant for
// the log line: "MX mx.example.com", "A 192.0.2.1", "NXDOMAIN",
// "null MX (RFC 7505)", "no MX, A or AAAA records",
// "SERVFAIL from 127.0.0.1:53", "timeout from 127.0.0.1:53", ...
type Verdict struct {
	Result Result
	Reason string
}

func (v Verdict) String() string {
	return v.Result.String() + ": " + v.Reason
}

// ErrTemporary is matched by errors.Is for every error of a temporary DNS
// failure: SERVFAIL, REFUSED and other error rcodes, timeouts, network
// errors, referrals, and canceled or expired contexts.
var ErrTemporary = errors.New("temporary DNS failure")

// Domain checks that domain can receive mail: that it has a usable MX record
// set, or no MX records and an A or AAAA record (see the package
// documentation). The domain must be in ASCII (A-labels for internationalized
// names); case and a trailing dot do not matter. A domain that is not a
// syntactically valid host name (RFC 5321 §4.1.2) is Invalid without a query.
func (c *Checker) Domain(ctx context.Context, domain string) Verdict {
	name, ok := hostName(domain)
	if !ok {
		return Verdict{Invalid, "invalid domain name"}
	}

	mx, err := c.lookup(ctx, name, dns.TypeMX)
	if err != nil {
		return Verdict{TempFail, err.Error()}
	}
	if mx.nxdomain {
		return Verdict{Invalid, "NXDOMAIN"}
	}
	if mx.records > 0 {
		if mx.mx != "" {
			return Verdict{Valid, mx.mx}
		}
		// RFC 7505 §3: a null MX, the single record "0 .", says the domain
		// accepts no mail. RFC 5321 §5.1: with MX records present but none
		// usable there is no fallback to address records.
		return Verdict{Invalid, "null MX (RFC 7505)"}
	}

	// RFC 5321 §5.1: no MX records, so the domain is its own implicit MX if
	// it has an address record.
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		a, err := c.lookup(ctx, name, qtype)
		if err != nil {
			return Verdict{TempFail, err.Error()}
		}
		if a.nxdomain {
			return Verdict{Invalid, "NXDOMAIN"}
		}
		if len(a.addrs) > 0 {
			return Verdict{Valid, dns.TypeToString[qtype] + " " + a.addrs[0].String()}
		}
	}
	return Verdict{Invalid, "no MX, A or AAAA records"}
}

// usableMX returns the target of the most preferred MX record whose target
// is not the root, if there is one.
func usableMX(rrs []dns.RR) (string, bool) {
	var best *dns.MX
	for _, rr := range rrs {
		mx, ok := rr.(*dns.MX)
		if !ok || mx.Mx == "." {
			continue
		}
		if best == nil || mx.Preference < best.Preference ||
			mx.Preference == best.Preference && mx.Mx < best.Mx {
			best = mx
		}
	}
	if best == nil {
		return "", false
	}
	return strings.TrimSuffix(best.Mx, "."), true
}

// address returns the address of an A or AAAA record.
func address(rr dns.RR) (netip.Addr, bool) {
	switch rr := rr.(type) {
	case *dns.A:
		return netip.AddrFromSlice(rr.A.To4())
	case *dns.AAAA:
		return netip.AddrFromSlice(rr.AAAA.To16())
	}
	return netip.Addr{}, false
}

// DNSBL looks ip up in the blocklist zone (RFC 5782) and returns the
// addresses of the A records found, in the order of the answer, or nil when
// ip is not listed (NXDOMAIN or NODATA). What the addresses mean is up to the
// caller. An IPv4-mapped IPv6 address is looked up as the IPv4 address.
//
// The error is nil or, for a temporary failure, matches ErrTemporary; it
// matches neither for an invalid ip or zone.
func (c *Checker) DNSBL(ctx context.Context, zone string, ip netip.Addr) ([]netip.Addr, error) {
	name, err := dnsblName(zone, ip)
	if err != nil {
		return nil, err
	}
	a, err := c.lookup(ctx, name, dns.TypeA)
	if err != nil {
		return nil, fmt.Errorf("dnscheck: DNSBL query %s: %w", name, err)
	}
	return slices.Clone(a.addrs), nil
}

// dnsblName returns the name to query for ip in a DNSBL zone: the address's
// octets (IPv4) or nibbles (IPv6) in reverse order, under zone, in lower case
// and fully qualified.
func dnsblName(zone string, ip netip.Addr) (string, error) {
	if !ip.IsValid() {
		return "", errors.New("dnscheck: DNSBL: invalid IP address")
	}
	zone = dns.CanonicalName(zone)
	if _, ok := dns.IsDomainName(zone); !ok || zone == "." || strings.Contains(zone, "..") {
		return "", fmt.Errorf("dnscheck: DNSBL: invalid zone %q", zone)
	}
	ip = ip.WithZone("").Unmap()

	var b strings.Builder
	if ip.Is4() {
		// RFC 5782 §2.1: the four octets in reverse order, in decimal.
		o := ip.As4()
		for i := len(o) - 1; i >= 0; i-- {
			b.WriteString(strconv.Itoa(int(o[i])))
			b.WriteByte('.')
		}
	} else {
		// RFC 5782 §2.4: the 32 nibbles in reverse order, in hexadecimal,
		// as in ip6.arpa (RFC 3596 §2.5).
		const hex = "0123456789abcdef"
		o := ip.As16()
		for i := len(o) - 1; i >= 0; i-- {
			b.WriteByte(hex[o[i]&0x0f])
			b.WriteByte('.')
			b.WriteByte(hex[o[i]>>4])
			b.WriteByte('.')
		}
	}
	b.WriteString(zone)
	name := b.String()
	if _, ok := dns.IsDomainName(name); !ok {
		return "", fmt.Errorf("dnscheck: DNSBL: zone %q is too long", zone)
	}
	return name, nil
}

// hostName returns domain in lower case and fully qualified if it is a
// syntactically valid host name: RFC 5321 §4.1.2 labels (letters, digits and
// inner hyphens) of 1 to 63 octets, at most 253 octets in all (RFC 1035
// §2.3.4).
func hostName(domain string) (string, bool) {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	if domain == "" || len(domain) > 253 {
		return "", false
	}
	for label := range strings.SplitSeq(domain, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", false
		}
		if slices.ContainsFunc([]byte(label), func(ch byte) bool {
			return !('a' <= ch && ch <= 'z' || '0' <= ch && ch <= '9' || ch == '-')
		}) {
			return "", false
		}
	}
	return domain + ".", true
}
