// Package subject names what relayguard's limits count and block: an
// authenticated account, or a client address. IPv6 clients are counted per
// prefix (a /64 by default), since one customer or one attacker holds a
// whole prefix and could otherwise rotate addresses within it.
package subject

import (
	"net/netip"
	"strings"

	"relayguard/mailaddr"
)

// IP returns the subject of a client address: an IPv4 address as it is
// ("192.0.2.7"), an IPv6 address as its prefix of v6bits bits
// ("2001:db8:1:2::/64"). IPv4-mapped IPv6 addresses are IPv4.
func IP(a netip.Addr, v6bits int) string {
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, err := a.Prefix(v6bits)
	if err != nil {
		return a.String()
	}
	return p.String()
}

// Account returns the subject of a SASL login: the normalised address, or
// the login lower-cased when it is not a full address.
func Account(login string) string {
	if n, err := mailaddr.Normalize(login); err == nil {
		return n
	}
	return strings.ToLower(login)
}

// Key is the store key of a rule's counter or block for a subject:
// "r4|ip|192.0.2.7", "r10|account|jan@example.cz".
func Key(rule, kind, subject string) string {
	return rule + "|" + kind + "|" + subject
}
