// Package geoiptest builds small MaxMind DB (.mmdb) files for tests.
//
// The files it writes are read by package relayguard/geoip exactly like a
// production database, in either of the two record layouts that package
// understands:
//
//	MaxMind: {"country": {"iso_code": "CZ"}, "registered_country": {"iso_code": "CZ"}}
//	Flat:    {"country_code": "CZ"}
//
// Networks are given as a map from a CIDR prefix ("192.0.2.0/24",
// "2001:db8::/32") or a single address ("127.0.0.2", "::1") to a country
// code. Reserved ranges such as loopback (127.0.0.0/8, ::1) and the
// documentation prefixes are allowed, so a test can make 127.0.0.x look like
// a client from any country. When prefixes overlap, the more specific one
// wins, whatever the map's iteration order.
//
// The package depends only on the standard library and mmdbwriter, so unit
// tests of any package and the end-to-end suite can use it freely:
//
//	path := geoiptest.TempFile(t, geoiptest.Flat, map[string]string{
//		"127.0.0.2": "CZ",
//		"127.0.0.3": "RU",
//	})
package geoiptest

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// Schema selects the record layout of a test database.
type Schema int

const (
	// MaxMind is the layout of GeoIP2/GeoLite2 Country and City and of
	// DB-IP: a "country" and a "registered_country" map, each with an
	// "iso_code" string. Both carry the given code.
	MaxMind Schema = iota
	// Flat is the layout of the @ip-location-db country databases: a single
	// top-level "country_code" string.
	Flat
	// RegisteredOnly is the MaxMind layout with only "registered_country",
	// as GeoIP2 writes it for networks whose location is unknown but whose
	// registrant's country is known.
	RegisteredOnly
)

// String returns the name of the schema.
func (s Schema) String() string {
	switch s {
	case MaxMind:
		return "MaxMind"
	case Flat:
		return "Flat"
	case RegisteredOnly:
		return "RegisteredOnly"
	default:
		return fmt.Sprintf("Schema(%d)", int(s))
	}
}

// DatabaseType returns the database_type metadata that Write stores for the
// schema. The values mimic the real databases of each kind.
func (s Schema) DatabaseType() string {
	if s == Flat {
		return "country ipvAll"
	}
	return "GeoLite2-Country"
}

// Record returns the record that Write stores for a network mapped to cc.
func (s Schema) Record(cc string) (mmdbtype.Map, error) {
	iso := mmdbtype.Map{"iso_code": mmdbtype.String(cc)}
	switch s {
	case MaxMind:
		return mmdbtype.Map{"country": iso, "registered_country": iso}, nil
	case Flat:
		return mmdbtype.Map{"country_code": mmdbtype.String(cc)}, nil
	case RegisteredOnly:
		return mmdbtype.Map{"registered_country": iso}, nil
	default:
		return nil, fmt.Errorf("geoiptest: unknown schema %v", s)
	}
}

// Write creates the database file at path (replacing any file there) with
// the given networks in the given schema. Keys of networks are CIDR prefixes
// or single IPv4/IPv6 addresses; values are country codes, stored as given
// so that tests can also exercise lower-case or malformed codes.
func Write(path string, schema Schema, networks map[string]string) error {
	records := make(map[string]mmdbtype.Map, len(networks))
	for network, cc := range networks {
		rec, err := schema.Record(cc)
		if err != nil {
			return err
		}
		records[network] = rec
	}
	return WriteRecords(path, schema.DatabaseType(), records)
}

// WriteRecords creates the database file at path with arbitrary records, for
// tests that need a record shape Write does not produce (for example
// different "country" and "registered_country" codes, or no country at all).
// Keys are parsed as in Write.
func WriteRecords(path, databaseType string, records map[string]mmdbtype.Map) error {
	type entry struct {
		prefix netip.Prefix
		record mmdbtype.Map
	}
	entries := make([]entry, 0, len(records))
	for network, rec := range records {
		prefix, err := parseNetwork(network)
		if err != nil {
			return err
		}
		entries = append(entries, entry{prefix, rec})
	}
	// Inserting less specific prefixes first lets more specific ones
	// override them, independent of map order.
	slices.SortFunc(entries, func(a, b entry) int {
		return cmp.Or(
			cmp.Compare(depth(a.prefix), depth(b.prefix)),
			a.prefix.Addr().Compare(b.prefix.Addr()),
		)
	})

	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            databaseType,
		Description:             map[string]string{"en": "relayguard test database"},
		IncludeReservedNetworks: true,
		IPVersion:               6,
		RecordSize:              24,
	})
	if err != nil {
		return fmt.Errorf("geoiptest: %w", err)
	}
	for _, e := range entries {
		ipnet := &net.IPNet{
			IP:   e.prefix.Addr().AsSlice(),
			Mask: net.CIDRMask(e.prefix.Bits(), e.prefix.Addr().BitLen()),
		}
		if err := tree.Insert(ipnet, e.record); err != nil {
			return fmt.Errorf("geoiptest: insert %s: %w", e.prefix, err)
		}
	}

	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("geoiptest: %w", err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("geoiptest: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("geoiptest: write %s: %w", path, err)
	}
	return nil
}

// TempFile writes a database with Write into a fresh file under tb.TempDir
// and returns its path. It stops the test on error.
func TempFile(tb testing.TB, schema Schema, networks map[string]string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "country.mmdb")
	if err := Write(path, schema, networks); err != nil {
		tb.Fatal(err)
	}
	return path
}

// parseNetwork accepts "addr/bits" or a single address. IPv4-mapped IPv6
// input is unmapped so that it lands in the IPv4 part of the tree.
func parseNetwork(s string) (netip.Prefix, error) {
	if addr, err := netip.ParseAddr(s); err == nil {
		addr = addr.Unmap().WithZone("")
		return netip.PrefixFrom(addr, addr.BitLen()), nil
	}
	prefix, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("geoiptest: %q is neither an IP address nor a CIDR prefix", s)
	}
	if prefix.Addr().Is4In6() {
		if prefix.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("geoiptest: %q is shorter than the IPv4-mapped /96", s)
		}
		prefix = netip.PrefixFrom(prefix.Addr().Unmap(), prefix.Bits()-96)
	}
	return prefix.Masked(), nil
}

// depth is the prefix length in the IPv6 tree, where an IPv4 /n sits at
// depth 96+n, so that IPv4 and IPv6 prefixes compare by specificity.
func depth(p netip.Prefix) int {
	if p.Addr().Is4() {
		return p.Bits() + 96
	}
	return p.Bits()
}
