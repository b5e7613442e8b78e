package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"strconv"
	"strings"
)

// Generate makes a key of kind "rsa" (of bits bits, MinRSABits to
// MaxRSABits) or "ed25519" (one size: bits must be 0), and returns it with
// its PEM PKCS#8 ("PRIVATE KEY") encoding, the form that LoadKey reads.
//
// Not every receiver verifies Ed25519 signatures (RFC 8463, 2018): where one
// does not, a message signed with an Ed25519 key only counts as unsigned for
// DMARC. RSA is the safe choice for a domain's one key.
func Generate(kind string, bits int) (crypto.Signer, []byte, error) {
	var key crypto.Signer
	switch kind {
	case "rsa":
		if bits < MinRSABits || bits > MaxRSABits {
			return nil, nil, fmt.Errorf("dkim: an RSA key of %d bits; want %d to %d (RFC 8301)", bits, MinRSABits, MaxRSABits)
		}
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			return nil, nil, fmt.Errorf("dkim: %w", err)
		}
		key = k
	case "ed25519":
		if bits != 0 {
			return nil, nil, fmt.Errorf("dkim: Ed25519 keys have one size; %d bits asked", bits)
		}
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, nil, fmt.Errorf("dkim: %w", err)
		}
		key = k
	default:
		return nil, nil, fmt.Errorf("dkim: key type %q; want rsa or ed25519", kind)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("dkim: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// maxCharString is the length limit of one DNS character-string (RFC 1035
// §3.3): a longer TXT value is several strings, which receivers join
// (RFC 6376 §3.6.2.2).
const maxCharString = 255

// TXTRecord returns the zone file line that publishes pub for selector and
// the ASCII domain:
//
//	S._domainkey.DOMAIN. IN TXT "v=DKIM1; k=rsa; p=MIIBIjANBgkqh..." "...IDAQAB"
//
// The value is split into 255-byte character-strings. An RSA key is
// published as a SubjectPublicKeyInfo, as OpenDKIM and the large mailbox
// providers do; an Ed25519 key as its 32 bytes (RFC 8463 §4.2). The result is
// empty for any other key type.
func TXTRecord(selector, domain string, pub crypto.PublicKey) string {
	var kind string
	var der []byte
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		b, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return ""
		}
		kind, der = "rsa", b
	case ed25519.PublicKey:
		kind, der = "ed25519", pub
	default:
		return ""
	}
	value := "v=DKIM1; k=" + kind + "; p=" + base64.StdEncoding.EncodeToString(der)
	var strs []string
	for len(value) > maxCharString {
		strs = append(strs, strconv.Quote(value[:maxCharString]))
		value = value[maxCharString:]
	}
	strs = append(strs, strconv.Quote(value))
	return selector + "._domainkey." + strings.TrimSuffix(domain, ".") + ". IN TXT " + strings.Join(strs, " ")
}
