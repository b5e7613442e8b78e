package config

import (
	"fmt"
	"net/netip"
	"strings"
)

// Mode says what a rule does with its decision.
type Mode string

const (
	Enforce Mode = "enforce"  // refuse with the rule's reply
	LogOnly Mode = "log-only" // decide and log, answer DUNNO
	Off     Mode = "off"      // do not evaluate
)

// UnmarshalText accepts the three modes.
func (m *Mode) UnmarshalText(b []byte) error {
	switch Mode(b) {
	case Enforce, LogOnly, Off:
		*m = Mode(b)
		return nil
	}
	return fmt.Errorf("mode %q: must be \"enforce\", \"log-only\" or \"off\"", b)
}

// Network is an address or a CIDR prefix, as written in exempt lists.
type Network netip.Prefix

// UnmarshalText accepts "192.0.2.0/24", "2001:db8::/32" and single addresses.
func (n *Network) UnmarshalText(b []byte) error {
	s := string(b)
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("%q is not an IP address or a CIDR prefix", s)
		}
		*n = Network(netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		return nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return fmt.Errorf("%q is not an IP address or a CIDR prefix", s)
	}
	if p.Masked() != p {
		return fmt.Errorf("%q has host bits set; write %s", s, p.Masked())
	}
	*n = Network(p)
	return nil
}

func (n Network) String() string { return netip.Prefix(n).String() }

// Networks is a set of prefixes.
type Networks []Network

// Contains reports whether ip (IPv4-mapped IPv6 unmapped first) is in the set.
func (ns Networks) Contains(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, n := range ns {
		if netip.Prefix(n).Contains(ip) {
			return true
		}
	}
	return false
}
