package geoip_test

import (
	"net/netip"
	"testing"

	"relayguard/geoip"
	"relayguard/geoip/geoiptest"
)

func BenchmarkCountry(b *testing.B) {
	for _, schema := range []geoiptest.Schema{geoiptest.MaxMind, geoiptest.Flat} {
		b.Run(schema.String(), func(b *testing.B) {
			r, err := geoip.Open(geoiptest.TempFile(b, schema, map[string]string{
				"192.0.2.0/24":  "CZ",
				"2001:db8::/32": "DE",
			}))
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			ips := []netip.Addr{
				netip.MustParseAddr("192.0.2.7"),
				netip.MustParseAddr("::ffff:192.0.2.8"),
				netip.MustParseAddr("2001:db8::25"),
			}
			b.ReportAllocs()
			var i int
			for b.Loop() {
				if _, found, err := r.Country(ips[i%len(ips)]); err != nil || !found {
					b.Fatal(found, err)
				}
				i++
			}
		})
	}
}
