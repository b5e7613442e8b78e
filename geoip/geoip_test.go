package geoip_test

import (
	"bytes"
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"

	"relayguard/geoip"
	"relayguard/geoip/geoiptest"
)

// open opens path and closes the Reader when the test ends.
func open(t *testing.T, path string) *geoip.Reader {
	t.Helper()
	r, err := geoip.Open(path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

// checker returns a function asserting what r reports for one address.
func checker(t *testing.T, r *geoip.Reader) func(ip, wantCC string, wantFound bool) {
	return func(ip, wantCC string, wantFound bool) {
		t.Helper()
		cc, found, err := r.Country(netip.MustParseAddr(ip))
		if err != nil {
			t.Errorf("Country(%s): unexpected error %v", ip, err)
			return
		}
		if cc != wantCC || found != wantFound {
			t.Errorf("Country(%s) = %q, %v; want %q, %v", ip, cc, found, wantCC, wantFound)
		}
	}
}

func TestCountryBothSchemas(t *testing.T) {
	networks := map[string]string{
		"192.0.2.0/24":       "CZ",
		"198.51.100.0/24":    "FR",
		"198.51.100.128/25":  "IT",
		"2001:db8::/32":      "DE",
		"2001:db8:ff::/48":   "AT",
		"127.0.0.2":          "RU",
		"127.0.0.3":          "cz",
		"10.0.0.0/8":         "NL",
		"::1":                "US",
		"fe80::/10":          "SK",
		"::ffff:203.0.113.9": "PL",
	}
	for _, tc := range []struct {
		schema geoiptest.Schema
		dbType string
	}{
		{geoiptest.MaxMind, "GeoLite2-Country"},
		{geoiptest.Flat, "country ipvAll"},
	} {
		t.Run(tc.schema.String(), func(t *testing.T) {
			r := open(t, geoiptest.TempFile(t, tc.schema, networks))
			if got := r.DatabaseType(); got != tc.dbType {
				t.Errorf("DatabaseType() = %q, want %q", got, tc.dbType)
			}
			check := checker(t, r)
			for _, c := range []struct {
				ip    string
				cc    string
				found bool
			}{
				{"192.0.2.0", "CZ", true},
				{"192.0.2.255", "CZ", true},
				{"2001:db8::1", "DE", true},
				{"2001:db8:ff::25", "AT", true},
				{"2001:db8:fe::25", "DE", true},
				{"::ffff:192.0.2.7", "CZ", true},
				{"::ffff:127.0.0.2", "RU", true},
				{"198.51.100.5", "FR", true},
				{"198.51.100.200", "IT", true},
				{"127.0.0.2", "RU", true},
				{"127.0.0.3", "CZ", true},
				{"10.1.2.3", "NL", true},
				{"::1", "US", true},
				{"fe80::1%eth0", "SK", true},
				{"203.0.113.9", "PL", true},
				{"203.0.113.10", "", false},
				{"127.0.0.1", "", false},
				{"127.0.0.4", "", false},
				{"192.0.3.1", "", false},
				{"8.8.8.8", "", false},
				{"2001:db9::1", "", false},
				{"::2", "", false},
			} {
				check(c.ip, c.cc, c.found)
			}
		})
	}
}

func TestCountryRecordShapes(t *testing.T) {
	iso := func(cc string) mmdbtype.Map { return mmdbtype.Map{"iso_code": mmdbtype.String(cc)} }
	path := filepath.Join(t.TempDir(), "shapes.mmdb")
	err := geoiptest.WriteRecords(path, "GeoIP2-City", map[string]mmdbtype.Map{
		"192.0.2.1": {"country": iso("CZ"), "registered_country": iso("US")},
		"192.0.2.2": {"registered_country": iso("JP")},
		"192.0.2.3": {"country": mmdbtype.Map{"names": mmdbtype.Map{"en": mmdbtype.String("Czechia")}}, "registered_country": iso("SE")},
		"192.0.2.4": {"continent": mmdbtype.Map{"code": mmdbtype.String("EU")}},
		"192.0.2.5": {"country": iso(""), "registered_country": iso("")},
		"192.0.2.6": {"country_code": mmdbtype.String("")},
		"192.0.2.7": {"country": iso("gb"), "city": mmdbtype.Map{"geoname_id": mmdbtype.Uint32(2643743)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := open(t, path)
	if got := r.DatabaseType(); got != "GeoIP2-City" {
		t.Errorf("DatabaseType() = %q, want GeoIP2-City", got)
	}
	check := checker(t, r)
	check("192.0.2.1", "CZ", true)
	check("192.0.2.2", "JP", true)
	check("192.0.2.3", "SE", true)
	check("192.0.2.4", "", false)
	check("192.0.2.5", "", false)
	check("192.0.2.6", "", false)
	check("192.0.2.7", "GB", true)
}

func TestRegisteredOnlySchema(t *testing.T) {
	r := open(t, geoiptest.TempFile(t, geoiptest.RegisteredOnly, map[string]string{
		"192.0.2.0/24":  "JP",
		"2001:db8::/32": "KR",
	}))
	check := checker(t, r)
	check("192.0.2.1", "JP", true)
	check("::ffff:192.0.2.1", "JP", true)
	check("2001:db8::1", "KR", true)
	check("198.51.100.1", "", false)
}

func TestCountryErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad-values.mmdb")
	err := geoiptest.WriteRecords(path, "country ipvAll", map[string]mmdbtype.Map{
		"192.0.2.1": {"country_code": mmdbtype.String("CZ")},
		"192.0.2.2": {"country_code": mmdbtype.String("CZE")},
		"192.0.2.3": {"country_code": mmdbtype.String("1A")},
		"192.0.2.4": {"country_code": mmdbtype.Uint32(203)},
		"192.0.2.5": {"country": mmdbtype.String("CZ")},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := open(t, path)
	checkErr := func(ip netip.Addr, want string) {
		t.Helper()
		cc, found, err := r.Country(ip)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Country(%s) = %q, %v, %v; want an error containing %q", ip, cc, found, err, want)
			return
		}
		if cc != "" || found {
			t.Errorf("Country(%s) = %q, %v with error %v; want \"\", false", ip, cc, found, err)
		}
	}
	checkErr(netip.MustParseAddr("192.0.2.2"), `"CZE" is not an ISO 3166-1 alpha-2 code`)
	checkErr(netip.MustParseAddr("192.0.2.3"), `"1A" is not an ISO 3166-1 alpha-2 code`)
	checkErr(netip.MustParseAddr("192.0.2.4"), path)
	checkErr(netip.MustParseAddr("192.0.2.5"), path)
	checkErr(netip.Addr{}, "invalid IP address")
	checker(t, r)("192.0.2.1", "CZ", true)

	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	checkErr(netip.MustParseAddr("192.0.2.1"), "closed")
	if got := r.DatabaseType(); got != "country ipvAll" {
		t.Errorf("DatabaseType() after Close = %q, want %q", got, "country ipvAll")
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	valid := geoiptest.TempFile(t, geoiptest.Flat, map[string]string{"192.0.2.0/24": "CZ"})
	data, err := os.ReadFile(valid)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Renaming the only key hides the country; breaking its control byte
	// (0x4c: UTF-8 string of 12 bytes) makes the record undecodable.
	key := []byte("\x4ccountry_code")
	if n := bytes.Count(data, key); n != 1 {
		t.Fatalf("test database holds %d copies of %q, want 1", n, key)
	}
	asnPath := filepath.Join(dir, "asn.mmdb")
	if err := geoiptest.WriteRecords(asnPath, "GeoLite2-ASN", map[string]mmdbtype.Map{
		"192.0.2.0/24": {"autonomous_system_number": mmdbtype.Uint32(64496)},
	}); err != nil {
		t.Fatal(err)
	}

	check := func(path string, wantNotExist bool, want ...string) {
		t.Helper()
		r, err := geoip.Open(path)
		if err == nil {
			r.Close()
			t.Errorf("Open(%s) succeeded, want an error", path)
			return
		}
		for _, w := range append([]string{path}, want...) {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Open(%s) error %q does not contain %q", path, err, w)
			}
		}
		if errors.Is(err, fs.ErrNotExist) != wantNotExist {
			t.Errorf("Open(%s) error %q: errors.Is(fs.ErrNotExist) = %v, want %v", path, err, !wantNotExist, wantNotExist)
		}
	}
	check(filepath.Join(dir, "missing.mmdb"), true)
	check(dir, false)
	check(write("empty.mmdb", nil), false)
	check(write("garbage.mmdb", bytes.Repeat([]byte("not a database\n"), 100)), false)
	check(write("truncated.mmdb", data[:len(data)/2]), false)
	check(write("damaged.mmdb", bytes.Replace(data, key, []byte("\x1fcountry_code"), 1)), false, "damaged")
	check(write("renamed.mmdb", bytes.Replace(data, key, []byte("\x4ccountry_kode"), 1)), false, "not a country database")
	check(asnPath, false, "not a country database", "GeoLite2-ASN")
}

func TestEmptyDatabase(t *testing.T) {
	r := open(t, geoiptest.TempFile(t, geoiptest.MaxMind, nil))
	check := checker(t, r)
	check("127.0.0.1", "", false)
	check("::1", "", false)
}

func TestIPv4OnlyDatabase(t *testing.T) {
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            "country ipv4",
		IPVersion:               4,
		IncludeReservedNetworks: true,
		RecordSize:              24,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, network, err := net.ParseCIDR("127.0.0.0/8")
	if err != nil {
		t.Fatal(err)
	}
	if err := tree.Insert(network, mmdbtype.Map{"country_code": mmdbtype.String("CZ")}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := tree.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ipv4.mmdb")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	check := checker(t, open(t, path))
	check("127.0.0.1", "CZ", true)
	check("::ffff:127.0.0.1", "CZ", true)
	check("192.0.2.1", "", false)
	check("::1", "", false)
	check("2001:db8::1", "", false)
}

func TestConcurrentLookups(t *testing.T) {
	r := open(t, geoiptest.TempFile(t, geoiptest.MaxMind, map[string]string{
		"127.0.0.0/8": "CZ",
		"::1":         "DE",
	}))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			ip, want := netip.MustParseAddr("127.0.0.1"), "CZ"
			if g%2 == 1 {
				ip, want = netip.IPv6Loopback(), "DE"
			}
			for range 200 {
				cc, found, err := r.Country(ip)
				if err != nil || !found || cc != want {
					t.Errorf("Country(%s) = %q, %v, %v; want %q, true, nil", ip, cc, found, err, want)
					return
				}
			}
		})
	}
	wg.Wait()
}
