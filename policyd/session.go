package policyd

import (
	"net/netip"
	"strconv"
)

// session identifies one SMTP session: client and server address and port.
type session struct{ client, server addrKey }

// addrKey is an address and port as a map key without pointers: netip's
// Addr holds one (for an IPv6 zone), and a table of many such keys is one
// the garbage collector must scan. IPv4 addresses are kept in their
// IPv4-mapped IPv6 form; the zero addrKey is no address.
type addrKey struct {
	ip   [16]byte
	port uint16
}

func keyOf(ap netip.AddrPort) addrKey {
	if !ap.IsValid() {
		return addrKey{}
	}
	return addrKey{ap.Addr().As16(), ap.Port()}
}

func (k addrKey) valid() bool { return k != addrKey{} }

func (k addrKey) String() string {
	return netip.AddrPortFrom(netip.AddrFrom16(k.ip).Unmap(), k.port).String()
}

// addrPort parses a request's address and port attributes; the zero addrKey
// if either is not one.
func addrPort(addr, port string) addrKey {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return addrKey{}
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return addrKey{}
	}
	return keyOf(netip.AddrPortFrom(a.Unmap(), uint16(p)))
}
