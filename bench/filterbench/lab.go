package main

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"relayguard/bench/internal/proc"
	"relayguard/dkim"
	"relayguard/internal/etcconf"
	"relayguard/internal/testmail"
)

// lab is what the filter runs with: the configuration of etc/ with its
// addresses and paths moved to loopback and a temporary directory, no
// external scanner, and the sender's domain with a DKIM key in the
// domain directory; and the environment of its systemd unit.
type lab struct {
	config  string
	env     []string      // Environment= of etc/systemd/relayguard-contentfilter.service
	filter  string        // the filter's address
	dkimTXT string        // the key's DNS record value, "" without signing
	key     crypto.Signer // the key, nil without signing
}

// selector is the DKIM selector of the sender's domain.
const selector = "bench"

func setupLab(etc, dir, next, keyKind string) (*lab, error) {
	l := &lab{}
	var err error
	if l.filter, err = etcconf.FreeAddr(); err != nil {
		return nil, err
	}
	directory := "[[domain]]\nname = \"" + testmail.SenderDomain + "\"\n"
	if keyKind != "off" {
		bits := 0
		if keyKind == "rsa" {
			bits = dkim.MinRSABits
		}
		key, pemKey, err := dkim.Generate(keyKind, bits)
		if err != nil {
			return nil, err
		}
		path := filepath.Join(dir, testmail.SenderDomain+"."+selector+".key")
		if err := os.WriteFile(path, pemKey, 0o600); err != nil {
			return nil, err
		}
		directory += fmt.Sprintf("dkim_selector = %q\ndkim_key = %q\n", selector, path)
		l.key = key
		if l.dkimTXT, err = txtValue(key.Public()); err != nil {
			return nil, err
		}
	}
	dirPath := filepath.Join(dir, "directory.toml")
	if err := os.WriteFile(dirPath, []byte(directory), 0o644); err != nil {
		return nil, err
	}
	edits := []etcconf.Edit{
		etcconf.Replace("policyd", `directory = "/etc/relayguard/directory.toml"`, fmt.Sprintf("directory = %q", dirPath)),
		// No policyd runs: without its admin socket the filter neither
		// reports spam (R15, off here anyway) nor asks for END-OF-MESSAGE
		// replies, which it would otherwise answer with tempfail.
		etcconf.Replace("admin", `socket = "/run/relayguard/admin.sock"`, `socket = ""`),
		etcconf.Replace("contentfilter", `listen = "127.0.0.1:10025"`, fmt.Sprintf("listen = %q", l.filter)),
		etcconf.Replace("contentfilter", `next_hop = "127.0.0.1:10026"`, fmt.Sprintf("next_hop = %q", next)),
		etcconf.Replace("contentfilter", `spool_dir = "/var/lib/relayguard/spool"`, fmt.Sprintf("spool_dir = %q", filepath.Join(dir, "spool"))),
		etcconf.Replace("contentfilter.rules.virus", `mode = "enforce"`, `mode = "off"`),
		etcconf.Replace("contentfilter.rules.spam", `mode = "enforce"`, `mode = "off"`),
	}
	l.config = filepath.Join(dir, "relayguard.toml")
	if err := etcconf.Write(filepath.Join(etc, "relayguard.toml"), l.config, edits); err != nil {
		return nil, fmt.Errorf("%w (run from the module's root, as make bench does, or set -etc)", err)
	}
	if l.env, err = etcconf.UnitEnvironment(filepath.Join(etc, "systemd", "relayguard-contentfilter.service")); err != nil {
		return nil, err
	}
	return l, nil
}

// txtValue is the DKIM key record of pub (RFC 6376 §3.6.1, RFC 8463 §4.2).
func txtValue(pub crypto.PublicKey) (string, error) {
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return "", err
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub), nil
	}
	return "", fmt.Errorf("a key of type %T", pub)
}

// verify checks the DKIM signature of a message that the sink kept.
func (l *lab) verify(msg []byte) error {
	if msg == nil {
		return errors.New("no signed message arrived")
	}
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(msg), &msgauth.VerifyOptions{
		LookupTXT: func(domain string) ([]string, error) {
			if domain != selector+"._domainkey."+testmail.SenderDomain {
				return nil, fmt.Errorf("no TXT record for %s", domain)
			}
			return []string{l.dkimTXT}, nil
		},
	})
	switch {
	case err != nil:
		return err
	case len(vs) != 1:
		return fmt.Errorf("%d signatures, want 1", len(vs))
	case vs[0].Err != nil:
		return vs[0].Err
	case vs[0].Domain != testmail.SenderDomain:
		return fmt.Errorf("signed by %s, want %s", vs[0].Domain, testmail.SenderDomain)
	}
	return nil
}

// signCost is the CPU time of one signature with the key (the private-key
// operation on a SHA-256 hash, which the filter makes once per message),
// measured in this process: the least CPU per message that signing costs.
func (l *lab) signCost() (time.Duration, error) {
	digest := sha256.Sum256([]byte("filterbench"))
	opts := crypto.Hash(crypto.SHA256)
	if _, ok := l.key.(ed25519.PrivateKey); ok {
		opts = 0
	}
	const n = 50
	cpu0 := proc.SelfCPU()
	for range n {
		if _, err := l.key.Sign(rand.Reader, digest[:], opts); err != nil {
			return 0, err
		}
	}
	return (proc.SelfCPU() - cpu0) / n, nil
}
