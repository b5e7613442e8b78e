package dkim

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"relayguard/internal/testmail"
)

// sameAsGoMsgauth signs msg with s and with go-msgauth's Signer at the same
// time, with the same key and header fields, and fails unless the two
// DKIM-Signature fields are the same, byte for byte.
func sameAsGoMsgauth(t testing.TB, s *Signer, key *Key, msg string) {
	t.Helper()
	s.now = func() time.Time { return time.Unix(1770000000, 0) }
	var out bytes.Buffer
	signed, err := s.Sign(&out, strings.NewReader(msg), key.Domain)
	if err != nil {
		t.Fatal(err)
	}
	if !signed {
		return
	}
	sig, rest := cutSignature(out.String())
	h := tag(sig, "h")
	var theirs bytes.Buffer
	err = msgauth.Sign(&theirs, strings.NewReader(rest), &msgauth.SignOptions{
		Domain: key.Domain, Selector: key.Selector, Signer: key.Signer, Hash: crypto.SHA256,
		HeaderCanonicalization: msgauth.CanonicalizationRelaxed, BodyCanonicalization: msgauth.CanonicalizationRelaxed,
		HeaderKeys: strings.Split(h, ":"),
	})
	if err != nil {
		t.Fatalf("go-msgauth: %v", err)
	}
	want, theirRest := cutSignature(theirs.String())
	if theirRest != rest {
		t.Fatalf("go-msgauth wrote another message: %q", theirRest)
	}
	ts, err := strconv.ParseInt(tag(want, "t"), 10, 64)
	if err != nil {
		t.Fatalf("go-msgauth's t=: %v in %q", err, want)
	}
	s.now = func() time.Time { return time.Unix(ts, 0) }
	out.Reset()
	if _, err := s.Sign(&out, strings.NewReader(msg), key.Domain); err != nil {
		t.Fatal(err)
	}
	if got, _ := cutSignature(out.String()); got != want {
		t.Fatalf("message %q:\nsigned\n%s\ngo-msgauth signs\n%s", msg, got, want)
	}
}

// cutSignature returns the DKIM-Signature field that starts out, and the
// rest.
func cutSignature(out string) (sig, rest string) {
	i := 0
	for {
		j := strings.Index(out[i:], "\r\n")
		if j < 0 {
			return out, ""
		}
		i += j + 2
		if i == len(out) || out[i] != ' ' && out[i] != '\t' {
			return out[:i], out[i:]
		}
	}
}

// tag returns the value of a tag of a DKIM-Signature field.
func tag(sig, name string) string {
	_, v, _ := strings.Cut(sig, ":")
	v = strings.NewReplacer("\r\n", "", " ", "", "\t", "").Replace(v)
	for t := range strings.SplitSeq(v, ";") {
		if k, val, ok := strings.Cut(t, "="); ok && k == name {
			return val
		}
	}
	return ""
}

var differential = []string{
	"From: Jan Novák <jan@example.com>\r\nTo: eva@example.org\r\nSubject: =?utf-8?q?Dobr=C3=BD_den?=\r\n" +
		"Date: Mon, 4 May 2026 12:00:00 +0200\r\nMessage-ID: <1@example.com>\r\nReceived: from client by relay\r\n\r\n" +
		"Hello,\r\n\r\n  spaced \t line \r\n\r\n\r\n",
	"From: \"Novák, Jan\"\r\n <jan@example.com>\r\nTo: eva@example.org,\r\n\tpetr@example.org,\r\n   ivo@example.org\r\n" +
		"Subject: a subject that is long enough to be folded\r\n over two lines   \r\nContent-Type: multipart/mixed;\r\n boundary=\"b1\"\r\n" +
		"MIME-Version: 1.0\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nbody\r\n--b1--\r\n",
	"From: jan@example.com\r\n\r\nHello",
	"From: jan@example.com\r\n\r\nbody\r",
	"From: jan@example.com\r\n\r\na\rb\r\r\nc\n\rd\r\n",
	"To: eva@example.org\rFrom: jan@example.com\r\n\r\nbody\r\n",
	"From: jan@example.com\r\n\r\n.\r\n..x\r\n",
	"From: jan@example.com\nSubject: x",
	"From: jan@example.com\r\n\r\n",
	"From: jan@example.com\r\n\r\n\r\n\r\n \t \r\n",
	"From: jan@example.com\r\n\r\n \t x\t\t y \r\n\r\n \r\nz",
	"From: jan@example.com\r\nFrom: jan@example.com\r\nTo: a\r\nTO: b\r\nto : c\r\nX: \xff\xfe\r\n\r\nbody\r\n",
	"From: jan@example.com\r\nSubject: \xc5\x99 \u00a0 x\u0085\r\n\r\n\u00a0body\u0085 \r\n",
	"From: jan@example.com\r\n" + strings.Repeat("Cc: x@example.org\r\n", 40) + "\r\n" + strings.Repeat("a", 5000) + "\r\n",
	"From: jan@example.com\r\n\r\n" + strings.Repeat(" ", 3000) + "x" + strings.Repeat("\t", 3000) + "\r\n",
	string(testmail.New(50_000, 1).Bytes("x")),
}

// TestSameAsGoMsgauth: the signatures of Sign are go-msgauth's.
func TestSameAsGoMsgauth(t *testing.T) {
	keys := []*Key{
		{Domain: "example.com", Selector: "ed", Signer: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, ed25519.SeedSize)), Algorithm: Ed25519SHA256},
		rsaKey(t),
	}
	for _, key := range keys {
		s := NewSigner([]*Key{key})
		for _, msg := range differential {
			msg = strings.ReplaceAll(msg, "example.cz", "example.com")
			sameAsGoMsgauth(t, s, key, msg)
		}
	}
}

// FuzzSameAsGoMsgauth: whatever the message, the signature of Sign is
// go-msgauth's.
func FuzzSameAsGoMsgauth(f *testing.F) {
	for _, msg := range differential[:len(differential)-1] {
		f.Add(msg)
	}
	key := &Key{Domain: "example.com", Selector: "ed", Signer: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, ed25519.SeedSize)), Algorithm: Ed25519SHA256}
	s := NewSigner([]*Key{key})
	f.Fuzz(func(t *testing.T, msg string) {
		sameAsGoMsgauth(t, s, key, msg)
	})
}

// TestRelaxedBody: the body hash of a body that ends in many empty lines,
// written in pieces, is that of the body without them.
func TestRelaxedBody(t *testing.T) {
	hashOf := func(chunks ...string) []byte {
		c := &relaxedBody{h: sha256.New()}
		for _, ch := range chunks {
			io.WriteString(c, ch)
		}
		return c.sum()
	}
	want := sha256.Sum256([]byte("a b\r\n c\r\n"))
	empty := strings.Repeat("\r\n", 1<<20)
	for _, chunks := range [][]string{
		{"a b\r\n c\r\n"},
		{"a  \t b \r\n\t c", "\r", "\n", empty},
		{"a", " ", "b", "\r\n", " ", " c", " ", "\r\n", empty, "  \r\n", empty},
	} {
		if got := hashOf(chunks...); !bytes.Equal(got, want[:]) {
			t.Errorf("%q: hash differs", chunks)
		}
	}
	if got, want := hashOf(empty, " \t "), sha256.Sum256(nil); !bytes.Equal(got, want[:]) {
		t.Error("a body of empty and blank lines is not empty")
	}
}

var rsaSigner = sync.OnceValue(func() crypto.Signer {
	k, _, err := Generate("rsa", MinRSABits)
	if err != nil {
		panic(err)
	}
	return k
})

func rsaKey(testing.TB) *Key {
	return &Key{Domain: "example.com", Selector: "rsa", Signer: rsaSigner(), Algorithm: RSASHA256}
}
