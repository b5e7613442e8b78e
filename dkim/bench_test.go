package dkim_test

import (
	"bytes"
	"crypto/ed25519"
	"io"
	"testing"

	"relayguard/dkim"
	"relayguard/internal/testmail"
)

// BenchmarkSign signs the filter's typical message, 50 KB with a PDF, read
// from memory twice as the filter's spool allows, with each kind of key.
func BenchmarkSign(b *testing.B) {
	msg := testmail.New(50_000, 1).Bytes(testmail.ID("b", 1))
	keys := map[string]*dkim.Key{
		"ed25519": {Domain: testmail.SenderDomain, Selector: "s1", Signer: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize)), Algorithm: dkim.Ed25519SHA256},
		"rsa":     loadKey(b, testmail.SenderDomain, "s1", rsaPEM()),
	}
	for _, kind := range []string{"ed25519", "rsa"} {
		b.Run(kind, func(b *testing.B) {
			s := dkim.NewSigner([]*dkim.Key{keys[kind]})
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				if signed, err := s.Sign(io.Discard, bytes.NewReader(msg), testmail.SenderDomain); !signed || err != nil {
					b.Fatal(signed, err)
				}
			}
		})
	}
}
