package geoiptest_test

import (
	"fmt"
	"log"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/oschwald/maxminddb-golang/v2"

	"relayguard/geoip"
	"relayguard/geoip/geoiptest"
)

func Example() {
	dir, err := os.MkdirTemp("", "geoiptest")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "country.mmdb")
	err = geoiptest.Write(path, geoiptest.Flat, map[string]string{
		"127.0.0.2":     "CZ",
		"2001:db8::/32": "DE",
	})
	if err != nil {
		log.Fatal(err)
	}

	r, err := geoip.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	for _, ip := range []string{"127.0.0.2", "2001:db8::1", "127.0.0.1"} {
		cc, found, err := r.Country(netip.MustParseAddr(ip))
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ip, cc, found)
	}
	// Output:
	// 127.0.0.2 CZ true
	// 2001:db8::1 DE true
	// 127.0.0.1  false
}

// TestRecords reads the written files with maxminddb directly, so that the
// record layout is checked independently of package geoip.
func TestRecords(t *testing.T) {
	type isoCode struct {
		ISOCode string `maxminddb:"iso_code"`
	}
	type rec struct {
		Country           *isoCode `maxminddb:"country"`
		RegisteredCountry *isoCode `maxminddb:"registered_country"`
		CountryCode       *string  `maxminddb:"country_code"`
	}
	str := func(p *string) string {
		if p == nil {
			return "<nil>"
		}
		return *p
	}
	iso := func(p *isoCode) string {
		if p == nil {
			return "<nil>"
		}
		return p.ISOCode
	}
	check := func(schema geoiptest.Schema, dbType, ip, want string) {
		t.Helper()
		path := geoiptest.TempFile(t, schema, map[string]string{
			"10.0.0.0/8":           "NL",
			"127.0.0.2":            "CZ",
			"::ffff:192.0.2.0/120": "PL",
			"::1":                  "US",
			"2001:db8::/32":        "DE",
		})
		db, err := maxminddb.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if db.Metadata.DatabaseType != dbType {
			t.Errorf("%v: database_type = %q, want %q", schema, db.Metadata.DatabaseType, dbType)
		}
		var r rec
		if err := db.Lookup(netip.MustParseAddr(ip)).Decode(&r); err != nil {
			t.Fatal(err)
		}
		got := fmt.Sprintf("country=%s registered_country=%s country_code=%s",
			iso(r.Country), iso(r.RegisteredCountry), str(r.CountryCode))
		if got != want {
			t.Errorf("%v: %s: got %s, want %s", schema, ip, got, want)
		}
	}
	check(geoiptest.MaxMind, "GeoLite2-Country", "127.0.0.2", "country=CZ registered_country=CZ country_code=<nil>")
	check(geoiptest.MaxMind, "GeoLite2-Country", "10.9.8.7", "country=NL registered_country=NL country_code=<nil>")
	check(geoiptest.MaxMind, "GeoLite2-Country", "192.0.2.200", "country=PL registered_country=PL country_code=<nil>")
	check(geoiptest.Flat, "country ipvAll", "::1", "country=<nil> registered_country=<nil> country_code=US")
	check(geoiptest.Flat, "country ipvAll", "2001:db8:1::1", "country=<nil> registered_country=<nil> country_code=DE")
	check(geoiptest.Flat, "country ipvAll", "127.0.0.1", "country=<nil> registered_country=<nil> country_code=<nil>")
	check(geoiptest.RegisteredOnly, "GeoLite2-Country", "127.0.0.2", "country=<nil> registered_country=CZ country_code=<nil>")
}

func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	check := func(err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error = %v, want one containing %q", err, want)
		}
	}
	path := filepath.Join(dir, "x.mmdb")
	check(geoiptest.Write(path, geoiptest.Flat, map[string]string{"localhost": "CZ"}), `"localhost" is neither`)
	check(geoiptest.Write(path, geoiptest.Flat, map[string]string{"192.0.2.0/33": "CZ"}), `"192.0.2.0/33" is neither`)
	check(geoiptest.Write(path, geoiptest.Flat, map[string]string{"::ffff:0:0/64": "CZ"}), "IPv4-mapped")
	check(geoiptest.Write(path, geoiptest.Schema(7), map[string]string{"::1": "CZ"}), "unknown schema Schema(7)")
	check(geoiptest.Write(filepath.Join(dir, "no", "such", "dir.mmdb"), geoiptest.Flat, nil), "no such file or directory")
	check(geoiptest.WriteRecords(path, "x", map[string]mmdbtype.Map{"not-an-ip": {}}), `"not-an-ip" is neither`)
}
