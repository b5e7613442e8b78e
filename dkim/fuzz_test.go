package dkim_test

import (
	"bytes"
	"crypto/ed25519"
	"io"
	"strings"
	"testing"

	"relayguard/dkim"
)

// FuzzSign: whatever the message, Sign copies it unchanged or writes a
// message that an SMTP client sends as it is and go-msgauth verifies, whether
// Sign reads r twice or spools it.
func FuzzSign(f *testing.F) {
	for _, seed := range []string{
		"From: jan@example.com\r\nSubject: x\r\n\r\nbody\r\n",
		"From: jan@example.com\nSubject: x\n\nbody",
		"From: \"Novák, Jan\"\r\n <jan@example.com>\r\nTo: a@b.c,\r\n\td@e.f\r\n\r\n\r\n \t\r\nx\r",
		"From: jan@example.org\r\nFrom: jan@example.com\r\n\r\n",
		"From: =?koi8-r?b?8NLJ18XU?= <jan@example.org>\r\n\r\nbody\r\n",
		"From: jan@example.com\r\nX: a\rb\r\n\r\nbody\rwith\r\r\nCRs",
		" From: jan@example.com\r\nno colon\r\n\r\n.\r\n..\r\n",
		"To: nobody\r\n\r\n",
		"",
	} {
		f.Add(seed)
	}
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize))
	keys := []*dkim.Key{
		{Domain: "example.com", Selector: "s1", Signer: priv, Algorithm: dkim.Ed25519SHA256},
		{Domain: "example.org", Selector: "s1", Signer: priv, Algorithm: dkim.Ed25519SHA256},
	}
	d := dns{}
	for _, k := range keys {
		name, value, err := parseZoneLine(dkim.TXTRecord(k.Selector, k.Domain, priv.Public()))
		if err != nil {
			f.Fatal(err)
		}
		d[name] = value
	}
	s := dkim.NewSigner(keys)
	s.SameOwner = func(a, b string) bool { return true }
	s.MemoryLimit = 64
	s.TempDir = f.TempDir()
	f.Fuzz(func(t *testing.T, msg string) {
		var outs [2]string
		for i, r := range []io.Reader{strings.NewReader(msg), struct{ io.Reader }{strings.NewReader(msg)}} {
			var out bytes.Buffer
			signed, err := s.Sign(&out, r, "example.com")
			if err != nil {
				t.Fatal(err)
			}
			outs[i] = out.String()
			if !signed {
				if out.String() != msg {
					t.Fatalf("unsigned, and changed:\n%q\n%q", msg, out.String())
				}
				continue
			}
			sig, rest := splitSignature(out.String())
			if strings.ContainsAny(strings.ReplaceAll(rest, "\r\n", ""), "\r\n") {
				t.Fatalf("a bare CR or LF in %q", rest)
			}
			if sent := throughDATA(t, out.String()); sent != out.String() {
				t.Fatalf("an SMTP client sends %q, not %q", sent, out.String())
			}
			vs, err := d.verify(&out)
			if err != nil || len(vs) == 0 || vs[0].Err != nil {
				t.Fatalf("%q\n%s%q: %v %v", msg, sig, rest, err, vs)
			}
		}
		if _, a := splitSignature(outs[0]); !strings.HasSuffix(outs[1], a) {
			t.Fatalf("the two passes and the spool differ: %q %q", outs[0], outs[1])
		}
	})
}
