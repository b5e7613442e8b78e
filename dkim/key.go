// Package dkim signs the mail that relayguard reinjects into Postfix with the
// key of the sender's domain (R19; DKIM is RFC 6376, Ed25519 keys RFC 8463).
//
// A hosted domain that has a key in the directory gets a DKIM-Signature
// header on every message it sends; one that has none is passed through byte
// for byte. The content filter calls [Signer.Sign] last, on the message exactly
// as it will reinject it, and the signature is made by go-msgauth.
//
// # What is signed
//
// Header and body canonicalisation are relaxed/relaxed (RFC 6376 §3.4.2 and
// §3.4.4): they survive the refolding and trailing-space changes that relays
// make. h= lists the fields of [Signer.Headers] that the message has, once
// for each occurrence, and those of [Signer.Oversign] (From by default) once
// more (RFC 6376 §8.15): a From field added later breaks the signature.
// Other fields that the message lacks are not listed, as Postfix adds a
// missing Date or Message-ID when the filter reinjects, which must not break
// the signature. There is no x= expiry; t= is the signing time, which
// go-msgauth takes from the system clock.
//
// # Which domain signs
//
// The caller passes the domain it vouches for: the envelope sender's, which
// policyd has checked against the authenticated account (R5). DMARC
// (RFC 7489 §3.1) wants the signing domain to match the domain of the From
// header, which the customer writes as they please. Sign signs with the From
// domain's key when that domain has a key and [Signer.SameOwner] says that the
// From domain and the passed domain belong to one customer (a domain and its
// aliases); otherwise with the passed domain's key; otherwise not at all.
// Trusting the From header alone would let any customer sign as any other
// hosted domain that has a key.
//
// # Line endings and memory
//
// SMTP carries lines ended by CRLF (RFC 5321 §2.3.8) and Postfix hands the
// filter CRLF; a bare LF or CR in the input is written as CRLF, and an
// unterminated last line is terminated, as the SMTP client that reinjects
// would do. The bytes signed are the bytes written, which an SMTP client
// sends unchanged (but for dot-stuffing), so what is reinjected verifies.
// go-msgauth hashes the message in one pass but the signature goes before the
// message, so the message is read twice: from r again when r is an
// [io.ReadSeeker], or else from a spool that holds [Signer.MemoryLimit] bytes in
// memory and the rest in an unlinked temporary file. See [Signer.Sign] for the
// bound.
package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"relayguard/mailaddr"
)

// The RSA key sizes that relayguard accepts: RFC 8301 §3.2 has signers use
// at least 1024 bits and recommends 2048, and verifiers need not check keys
// over 4096 bits.
const (
	MinRSABits = 2048
	MaxRSABits = 4096
)

// The signature algorithms (RFC 8301, RFC 8463).
const (
	RSASHA256     = "rsa-sha256"
	Ed25519SHA256 = "ed25519-sha256"
)

// maxKeyFile is more than any PEM private key that DKIM uses.
const maxKeyFile = 64 << 10

// Key is one domain's signing key.
type Key struct {
	Domain    string        // ASCII, lower case: the d= tag
	Selector  string        // the s= tag: the key's TXT record is at Selector._domainkey.Domain
	Path      string        // the PEM file it was loaded from
	Signer    crypto.Signer // *rsa.PrivateKey or ed25519.PrivateKey
	Algorithm string        // RSASHA256 or Ed25519SHA256: the a= tag
}

// LoadKey reads the private key of domain from a PEM file: PKCS#8 ("PRIVATE
// KEY") for RSA and Ed25519, or PKCS#1 ("RSA PRIVATE KEY"). It refuses a file
// that its group or others may read, RSA keys under MinRSABits, encrypted keys
// and other key types. domain may be in UTF-8; Key.Domain is its ASCII form.
func LoadKey(domain, selector, path string) (*Key, error) {
	d, err := mailaddr.Domain(domain)
	if err != nil {
		return nil, fmt.Errorf("dkim: %v", err)
	}
	if err := CheckSelector(selector); err != nil {
		return nil, err
	}
	signer, err := readKey(path)
	if err != nil {
		return nil, err
	}
	k := &Key{Domain: d, Selector: selector, Path: path, Signer: signer}
	switch key := signer.(type) {
	case *rsa.PrivateKey:
		if bits := key.N.BitLen(); bits < MinRSABits {
			return nil, fmt.Errorf("dkim: key file %s: RSA key of %d bits; DKIM keys need at least %d (RFC 8301): make a new one with relayguard dkim keygen", path, bits, MinRSABits)
		}
		k.Algorithm = RSASHA256
	case ed25519.PrivateKey:
		k.Algorithm = Ed25519SHA256
	}
	return k, nil
}

// readKey opens path, checks its mode and parses the PEM key in it.
func readKey(path string) (crypto.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("dkim: key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("dkim: key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("dkim: key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("dkim: key file %s has mode %04o: a private key must be readable by its owner only: chmod 600 %s", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("dkim: key file: %w", err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("dkim: key file %s: larger than %d bytes: not a DKIM private key", path, maxKeyFile)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("dkim: key file %s: no PEM block; want \"PRIVATE KEY\" (PKCS#8) or \"RSA PRIVATE KEY\" (PKCS#1)", path)
	}
	if block.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED") {
		return nil, fmt.Errorf("dkim: key file %s: the key is encrypted; relayguard needs it in clear, readable by its user only", path)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("dkim: key file %s: PEM block %q; want \"PRIVATE KEY\" (PKCS#8) or \"RSA PRIVATE KEY\" (PKCS#1)", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("dkim: key file %s: %v", path, err)
	}
	switch key := key.(type) {
	case *rsa.PrivateKey:
		return key, nil
	case ed25519.PrivateKey:
		return key, nil
	default:
		return nil, fmt.Errorf("dkim: key file %s: %s key; DKIM signs with RSA or Ed25519 keys", path, keyKind(key))
	}
}

// keyKind names a key type that DKIM does not use, for an error.
func keyKind(key any) string {
	name := fmt.Sprintf("%T", key)
	name = strings.TrimPrefix(name, "*")
	name, _, _ = strings.Cut(name, ".")
	return strings.ToUpper(name)
}

// CheckSelector reports whether s is a valid selector: dot-separated labels
// of letters, digits and hyphens (RFC 6376 §3.1), as it forms the DNS name
// s._domainkey.domain.
func CheckSelector(s string) error {
	if s == "" {
		return errors.New("dkim: empty selector")
	}
	for label := range strings.SplitSeq(s, ".") {
		ok := label != "" && len(label) <= 63 && label[0] != '-' && label[len(label)-1] != '-'
		for _, c := range []byte(label) {
			ok = ok && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-')
		}
		if !ok {
			return fmt.Errorf("dkim: selector %q: want DNS labels of letters, digits and inner hyphens, such as \"s2026\"", s)
		}
	}
	return nil
}
