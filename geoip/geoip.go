// Package geoip maps an SMTP client's IP address to its country for rule R9
// (the client's country must be allowed).
//
// It reads MaxMind DB (.mmdb) files through maxminddb-golang and accepts the
// two record layouts that country databases use:
//
//  1. The MaxMind schema, used by GeoIP2 and GeoLite2 Country and City and by
//     DB-IP's databases:
//
//     {"country": {"iso_code": "CZ", ...}, "registered_country": {"iso_code": "CZ", ...}, ...}
//
//     "country" is where the network is; "registered_country" is where its
//     registrant is, and is used only when a record has no "country" (GeoIP2
//     omits it for some anycast and satellite networks).
//
//  2. The flat schema of the @ip-location-db country databases, such as
//     @ip-location-db/geo-whois-asn-country-mmdb:
//
//     {"country_code": "CZ"}
//
// Both are decoded in one pass into a struct holding all three fields, so a
// Reader needs no configuration to tell them apart. Country returns the code
// in upper case. An address the database has no record for (or whose record
// has no country) is reported with found=false and no error; what that means
// for the policy is the caller's decision. The database is authoritative:
// if it has an entry for a loopback or private address, that entry is
// returned like any other, which is what test databases rely on.
//
// Open checks the first records of the file, so a database of another kind
// (an ASN database, say) fails at startup rather than answering found=false
// for every client. The file is memory-mapped: replace it by renaming a new
// file over it, as scripts/fetch-geoip.sh does, never by rewriting it in
// place, and Open it again to use the new data.
//
// Package geoiptest builds small databases in either schema for tests.
package geoip

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/oschwald/maxminddb-golang/v2"
)

// sampleRecords is how many records Open decodes to check that the file is a
// country database in one of the supported schemas.
const sampleRecords = 32

// Reader looks up countries in one .mmdb file. Country is safe for
// concurrent use; Close must not run concurrently with it.
type Reader struct {
	db        *maxminddb.Reader
	path      string
	dbType    string
	ipVersion uint
}

// record holds the fields of both schemas; a lookup decodes into it once.
type record struct {
	Country           isoCode `maxminddb:"country"`
	RegisteredCountry isoCode `maxminddb:"registered_country"`
	CountryCode       string  `maxminddb:"country_code"`
}

// recordPool recycles the decode target: Decode takes an interface, so a
// fresh record per lookup would be a heap allocation.
var recordPool = sync.Pool{New: func() any { return new(record) }}

type isoCode struct {
	ISOCode string `maxminddb:"iso_code"`
}

// code returns the record's country in order of precedence: the flat
// country_code, the MaxMind country, then the MaxMind registered_country.
func (r *record) code() string {
	switch {
	case r.CountryCode != "":
		return r.CountryCode
	case r.Country.ISOCode != "":
		return r.Country.ISOCode
	default:
		return r.RegisteredCountry.ISOCode
	}
}

// Open opens the database at path. It fails with an error naming the file
// when the file is missing, is not a MaxMind DB file, is damaged, or holds
// records without any of the supported country fields (for example an ASN
// database).
func Open(path string) (*Reader, error) {
	db, err := maxminddb.Open(path)
	if err != nil {
		return nil, fmt.Errorf("geoip: open country database %s: %w", path, err)
	}
	r := &Reader{
		db:        db,
		path:      path,
		dbType:    db.Metadata.DatabaseType,
		ipVersion: db.Metadata.IPVersion,
	}
	if err := r.check(); err != nil {
		db.Close()
		return nil, err
	}
	return r, nil
}

// check decodes the first records of the database and requires at least
// one of them to carry a country in a supported schema. An empty database
// passes: every lookup in it is simply not found.
func (r *Reader) check() error {
	var seen int
	for res := range r.db.Networks() {
		var rec record
		if err := res.Decode(&rec); err != nil {
			return fmt.Errorf("geoip: country database %s (type %q) is damaged or has an unsupported record format: %w",
				r.path, r.DatabaseType(), err)
		}
		if rec.code() != "" {
			return nil
		}
		seen++
		if seen == sampleRecords {
			break
		}
	}
	if seen == 0 {
		return nil
	}
	return fmt.Errorf("geoip: %s (type %q) is not a country database: none of its first %d records has country_code, country.iso_code or registered_country.iso_code",
		r.path, r.DatabaseType(), seen)
}

// Country returns the upper-case ISO 3166-1 alpha-2 code of the country the
// database maps ip to. IPv4-mapped IPv6 addresses (::ffff:192.0.2.1) are
// looked up as IPv4, and zones are ignored. found is false when the database
// has no country for ip, including an IPv6 address in an IPv4-only database.
// err reports an invalid address, a closed Reader, a damaged database or a
// value that is not a two-letter code.
func (r *Reader) Country(ip netip.Addr) (cc string, found bool, err error) {
	if !ip.IsValid() {
		return "", false, errors.New("geoip: lookup of an invalid IP address")
	}
	if r.db == nil {
		return "", false, fmt.Errorf("geoip: lookup %s in %s: reader is closed", ip, r.path)
	}
	ip = ip.Unmap()
	if ip.Is6() && r.ipVersion == 4 {
		return "", false, nil
	}
	rec := recordPool.Get().(*record)
	*rec = record{}
	err = r.db.Lookup(ip).Decode(rec)
	cc = rec.code()
	recordPool.Put(rec)
	if err != nil {
		return "", false, fmt.Errorf("geoip: lookup %s in %s: %w", ip, r.path, err)
	}
	if cc == "" {
		return "", false, nil
	}
	if !isAlpha2(cc) {
		return "", false, fmt.Errorf("geoip: lookup %s in %s: country %q is not an ISO 3166-1 alpha-2 code", ip, r.path, cc)
	}
	return strings.ToUpper(cc), true, nil
}

// isAlpha2 reports whether s is two ASCII letters.
func isAlpha2(s string) bool {
	return len(s) == 2 && isLetter(s[0]) && isLetter(s[1])
}

func isLetter(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z'
}

// DatabaseType returns the database_type from the file's metadata, such as
// "GeoLite2-Country", "GeoIP2-City", "DBIP-Country-Lite" or, for the
// @ip-location-db databases, "country ipvAll".
func (r *Reader) DatabaseType() string {
	return r.dbType
}

// Close releases the database. Further lookups return an error.
func (r *Reader) Close() error {
	if r.db == nil {
		return nil
	}
	err := r.db.Close()
	r.db = nil
	if err != nil {
		return fmt.Errorf("geoip: close %s: %w", r.path, err)
	}
	return nil
}
