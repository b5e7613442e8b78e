package dkim_test

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"relayguard/dkim"
)

// rsaPEM is one RSA key for the whole package's tests: making them is slow.
var rsaPEM = sync.OnceValue(func() []byte {
	_, p, err := dkim.Generate("rsa", 2048)
	if err != nil {
		panic(err)
	}
	return p
})

// writeFile writes data to name in dir with mode, and returns its path.
func writeFile(t testing.TB, dir, name string, data []byte, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func ed25519PEM(t *testing.T) []byte {
	t.Helper()
	_, p, err := dkim.Generate("ed25519", 0)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// loadKey writes a key file and loads it.
func loadKey(t testing.TB, domain, selector string, pemKey []byte) *dkim.Key {
	t.Helper()
	path := writeFile(t, t.TempDir(), domain+".key", pemKey, 0o600)
	k, err := dkim.LoadKey(domain, selector, path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// dns publishes keys as TXTRecord writes them, and answers go-msgauth's
// lookups as net.LookupTXT does: the strings of one record joined.
type dns map[string]string

func publish(t *testing.T, keys ...*dkim.Key) dns {
	t.Helper()
	d := dns{}
	for _, k := range keys {
		line := dkim.TXTRecord(k.Selector, k.Domain, k.Signer.Public())
		name, value, err := parseZoneLine(line)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		d[name] = value
	}
	return d
}

// parseZoneLine reads `NAME. IN TXT "s1" "s2"...` and checks that each
// character-string fits in 255 bytes (RFC 1035 §3.3).
func parseZoneLine(line string) (name, value string, err error) {
	name, rest, ok := strings.Cut(line, ". IN TXT ")
	if !ok {
		return "", "", errors.New("not NAME. IN TXT ...")
	}
	for rest != "" {
		q, err := strconv.QuotedPrefix(rest)
		if err != nil {
			return "", "", err
		}
		s, _ := strconv.Unquote(q)
		if len(s) > 255 {
			return "", "", fmt.Errorf("a character-string of %d bytes", len(s))
		}
		value += s
		rest = strings.TrimPrefix(rest[len(q):], " ")
	}
	return name, value, nil
}

func (d dns) lookup(name string) ([]string, error) {
	if v, ok := d[strings.TrimSuffix(name, ".")]; ok {
		return []string{v}, nil
	}
	return nil, fmt.Errorf("lookup %s: no such host", name)
}

// verify checks msg's signatures with go-msgauth, as a receiver does.
func (d dns) verify(msg io.Reader) ([]*msgauth.Verification, error) {
	return msgauth.VerifyWithOptions(msg, &msgauth.VerifyOptions{LookupTXT: d.lookup})
}

// splitSignature returns the DKIM-Signature field that starts out and the
// rest.
func splitSignature(out string) (sig, rest string) {
	if !strings.HasPrefix(out, "DKIM-Signature:") {
		return "", out
	}
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

// throughDATA returns what a receiver gets when msg is sent by an SMTP
// client's DATA writer (go-smtp's is Go's textproto.DotWriter): the bytes
// on the wire with the dot-stuffing and the final dot undone.
func throughDATA(t *testing.T, msg string) string {
	t.Helper()
	var wire bytes.Buffer
	bw := bufio.NewWriter(&wire)
	dw := textproto.NewWriter(bw).DotWriter()
	if _, err := io.WriteString(dw, msg); err != nil {
		t.Fatal(err)
	}
	if err := dw.Close(); err != nil {
		t.Fatal(err)
	}
	bw.Flush()
	got, ok := strings.CutSuffix(wire.String(), ".\r\n")
	if !ok {
		t.Fatalf("no final dot: %q", wire.String())
	}
	lines := strings.SplitAfter(got, "\r\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, ".")
	}
	return strings.Join(lines, "")
}

// readers are the kinds of input Sign handles apart: a file it reads twice,
// and a stream it spools in memory or, past MemoryLimit, to a file.
var readers = []struct {
	name  string
	limit int
	wrap  func(s string) io.Reader
}{
	{"seekable", 0, func(s string) io.Reader { return strings.NewReader(s) }},
	{"stream in memory", 0, func(s string) io.Reader { return struct{ io.Reader }{strings.NewReader(s)} }},
	{"stream spooled to a file", 16, func(s string) io.Reader { return struct{ io.Reader }{strings.NewReader(s)} }},
}

func TestSign(t *testing.T) {
	rsaKey := loadKey(t, "example.com", "s2026", rsaPEM())
	edKey := loadKey(t, "example.net", "ed1", ed25519PEM(t))
	aliasKey := loadKey(t, "example.org", "s1", ed25519PEM(t))
	otherKey := loadKey(t, "other.cz", "s1", ed25519PEM(t))
	idnKey := loadKey(t, "příklad.cz", "s1", ed25519PEM(t))
	d := publish(t, rsaKey, edKey, aliasKey, otherKey, idnKey)
	owners := map[string]string{"example.com": "example", "example.org": "example", "alias-without-key.com": "example", "other.cz": "other"}
	s := dkim.NewSigner([]*dkim.Key{rsaKey, edKey, aliasKey, otherKey, idnKey})
	s.SameOwner = func(a, b string) bool { return a == b || owners[a] != "" && owners[a] == owners[b] }
	s.TempDir = t.TempDir()

	check := func(name, domain, in string, wantDomain string, wantH []string, wantOut string) {
		t.Helper()
		for _, rd := range readers {
			s.MemoryLimit = rd.limit
			before := time.Now().Truncate(time.Second)
			var out bytes.Buffer
			signed, err := s.Sign(&out, rd.wrap(in), domain)
			after := time.Now()
			if err != nil {
				t.Errorf("%s, %s: %v", name, rd.name, err)
				continue
			}
			if wantDomain == "" {
				if signed || out.String() != in {
					t.Errorf("%s, %s: signed %v, wrote\n%q\nwant it unchanged:\n%q", name, rd.name, signed, out.String(), in)
				}
				continue
			}
			sig, rest := splitSignature(out.String())
			if !signed || sig == "" {
				t.Errorf("%s, %s: signed %v, wrote\n%q", name, rd.name, signed, out.String())
				continue
			}
			if rest != wantOut {
				t.Errorf("%s, %s: after the signature\n%q\nwant\n%q", name, rd.name, rest, wantOut)
			}
			if strings.ContainsAny(strings.ReplaceAll(out.String(), "\r\n", ""), "\r\n") {
				t.Errorf("%s, %s: a bare CR or LF in %q", name, rd.name, out.String())
			}
			if sent := throughDATA(t, out.String()); sent != out.String() {
				t.Errorf("%s, %s: an SMTP client sends\n%q\nnot what was signed\n%q", name, rd.name, sent, out.String())
			}
			vs, err := d.verify(&out)
			if err != nil || len(vs) != 1 {
				t.Errorf("%s, %s: verify: %v, %d signatures", name, rd.name, err, len(vs))
				continue
			}
			v := vs[0]
			if v.Err != nil || v.Domain != wantDomain {
				t.Errorf("%s, %s: verified d=%s: %v; want d=%s and no error\n%s", name, rd.name, v.Domain, v.Err, wantDomain, sig)
			}
			if wantH != nil && !slices.Equal(v.HeaderKeys, wantH) {
				t.Errorf("%s, %s: h=%v\nwant %v", name, rd.name, v.HeaderKeys, wantH)
			}
			if v.Time.Before(before) || v.Time.After(after) || !v.Expiration.IsZero() {
				t.Errorf("%s, %s: t=%v x=%v; want t= the signing time, no x=", name, rd.name, v.Time, v.Expiration)
			}
		}
	}

	basic := "From: Jan Novák <jan@example.com>\r\n" +
		"To: eva@example.org\r\n" +
		"Subject: =?utf-8?q?Dobr=C3=BD_den?=\r\n" +
		"Date: Mon, 4 May 2026 12:00:00 +0200\r\n" +
		"Message-ID: <1@example.com>\r\n" +
		"Received: from client by relay\r\n" +
		"\r\n" +
		"Hello,\r\n\r\n  spaced \t line \r\n\r\n\r\n"
	from := func(addr string) string { return strings.Replace(basic, "jan@example.com", addr, 1) }
	folded := "From: \"Novák, Jan\"\r\n <jan@example.com>\r\n" +
		"To: eva@example.org,\r\n\tpetr@example.org,\r\n   ivo@example.org\r\n" +
		"Subject: a subject that is long enough to be folded\r\n over two lines   \r\n" +
		"Content-Type: multipart/mixed;\r\n boundary=\"b1\"\r\n" +
		"MIME-Version: 1.0\r\n" +
		"\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nbody\r\n--b1--\r\n"
	h := []string{"From", "From", "To", "Subject", "Date", "Message-ID"}

	check("RSA key, CRLF", "example.com", basic, "example.com", h, basic)
	check("domain as the client wrote it", "Example.COM.", basic, "example.com", h, basic)
	check("Ed25519 key", "example.net", from("jan@example.net"), "example.net", h, from("jan@example.net"))
	check("LF line endings are sent as CRLF", "example.com", strings.ReplaceAll(basic, "\r\n", "\n"), "example.com", h, basic)
	check("mixed line endings", "example.com", strings.Replace(basic, "Hello,\r\n", "Hello,\n", 1), "example.com", h, basic)
	check("folded header fields", "example.com", folded, "example.com",
		[]string{"From", "From", "To", "Subject", "MIME-Version", "Content-Type"}, folded)
	check("no line ending at the end", "example.com", "From: jan@example.com\r\n\r\nHello", "example.com", nil, "From: jan@example.com\r\n\r\nHello\r\n")
	check("a lone CR at the end", "example.com", "From: jan@example.com\r\n\r\nbody\r", "example.com", nil, "From: jan@example.com\r\n\r\nbody\r\n")
	check("bare CRs", "example.com", "From: jan@example.com\r\n\r\na\rb\r\r\nc\n\rd\r\n", "example.com", nil,
		"From: jan@example.com\r\n\r\na\r\nb\r\n\r\nc\r\n\r\nd\r\n")
	check("a bare CR in the header section starts a field", "example.com", "To: eva@example.org\rFrom: jan@example.com\r\n\r\nbody\r\n", "example.com",
		[]string{"From", "From", "To"}, "To: eva@example.org\r\nFrom: jan@example.com\r\n\r\nbody\r\n")
	check("a bare CR in the header section ends it", "example.com", "Subject: x\r\rFrom: jan@example.com\r\n\r\nbody\r\n", "", nil, "")
	check("leading dots", "example.com", "From: jan@example.com\r\n\r\n.\r\n..x\r\n", "example.com", nil, "From: jan@example.com\r\n\r\n.\r\n..x\r\n")
	check("header section only", "example.com", "From: jan@example.com\nSubject: x", "example.com",
		[]string{"From", "From", "Subject"}, "From: jan@example.com\r\nSubject: x\r\n\r\n")
	check("header section and its empty line only", "example.com", "From: jan@example.com\r\n\r\n", "example.com", nil, "From: jan@example.com\r\n\r\n")

	// Which domain signs.
	check("From an alias of the envelope domain that has its own key", "example.com", from("jan@example.org"), "example.org", h, from("jan@example.org"))
	check("From another customer's domain: the envelope domain signs", "example.com", from("ceo@other.cz"), "example.com", h, from("ceo@other.cz"))
	check("From an alias without a key: the envelope domain signs", "example.com", from("jan@alias-without-key.com"), "example.com", h, from("jan@alias-without-key.com"))
	check("From an unparsable address: the envelope domain signs", "example.com", from("jan@"), "example.com", h, from("jan@"))
	check("From with two domains: the envelope domain signs", "example.com", from("jan@example.org, eva@example.com"), "example.com", h, from("jan@example.org, eva@example.com"))
	twoFroms := "From: jan@example.org\r\n" + basic
	check("two From fields: the envelope domain signs, both signed", "example.com", twoFroms, "example.com",
		[]string{"From", "From", "From", "To", "Subject", "Date", "Message-ID"}, twoFroms)
	check("internationalized From and envelope domains", "příklad.cz", from("jan@příklad.cz"), idnKey.Domain, h, from("jan@příklad.cz"))
	check("From in punycode, envelope in UTF-8", "příklad.cz", from("jan@"+idnKey.Domain), idnKey.Domain, h, from("jan@"+idnKey.Domain))

	// Unchanged.
	check("no key for the envelope domain, From another customer's", "nokey.cz", from("ceo@other.cz"), "", nil, "")
	check("no key, bytes as they came", "nokey.cz", "From: a@nokey.cz\nSubject: x\n\nbare LF\r\nand CRLF\rlone CR and no end", "", nil, "")
	check("no From field", "example.com", "To: eva@example.org\r\n\r\nbody\r\n", "", nil, "")
	check("null sender", "", basic, "", nil, "")
	check("empty message", "example.com", "", "", nil, "")
	check("no header section", "example.com", "\r\nbody\r\n", "", nil, "")
	check("a first line that starts with a space", "example.com", " From: jan@example.com\r\n\r\nbody\r\n", "", nil, "")

	if ents, _ := os.ReadDir(s.TempDir); len(ents) != 0 {
		t.Errorf("spool files left in %s: %v", s.TempDir, ents)
	}
}

// TestSignedHeaders: what a relay may add after signing, and what breaks
// the signature.
func TestSignedHeaders(t *testing.T) {
	key := loadKey(t, "example.com", "s1", ed25519PEM(t))
	d := publish(t, key)
	in := "From: jan@example.com\r\nTo: eva@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
	check := func(oversign []string, name, edit string, valid bool) {
		t.Helper()
		s := dkim.NewSigner([]*dkim.Key{key})
		s.Oversign = oversign
		var out bytes.Buffer
		if _, err := s.Sign(&out, strings.NewReader(in), "example.com"); err != nil {
			t.Fatal(err)
		}
		sig, _ := splitSignature(out.String())
		msg := strings.NewReplacer("SIG", sig, "IN", in, "OUT", out.String()).Replace(edit)
		vs, err := d.verify(strings.NewReader(msg))
		if err != nil || len(vs) != 1 {
			t.Fatalf("%s: %v, %d signatures", name, err, len(vs))
		}
		if (vs[0].Err == nil) != valid {
			t.Errorf("%v, %s: verification error %v; want valid %v\n%s", oversign, name, vs[0].Err, valid, msg)
		}
	}
	from := []string{"From"}
	check(from, "as signed", "OUT", true)
	check(from, "Received, Date and Message-ID added by Postfix", "Received: from relay\r\nSIG"+
		"From: jan@example.com\r\nTo: eva@example.org\r\nSubject: hi\r\nDate: Mon, 4 May 2026 12:00:00 +0200\r\nMessage-ID: <x@relay>\r\n\r\nbody\r\n", true)
	check(from, "header fields refolded, body spaces changed", "SIG"+
		"From: jan@example.com\r\nTo:   eva@example.org\r\nSubject:\r\n\thi\r\n\r\nbody   \r\n\r\n", true)
	check(from, "a second From", "SIGFrom: boss@example.com\r\nIN", false)
	check(from, "a second To", "SIGTo: boss@example.com\r\nIN", true)
	check(from, "a Cc added", "SIGCc: x@example.org\r\nIN", true)
	check(from, "Subject changed", "SIG"+strings.Replace(in, "Subject: hi", "Subject: hi!", 1), false)
	check(from, "body changed", "SIG"+strings.Replace(in, "body", "bodY", 1), false)
	more := []string{"To", "Cc", "Reply-To"}
	check(more, "a second From", "SIGFrom: boss@example.com\r\nIN", false)
	check(more, "a second To", "SIGTo: boss@example.com\r\nIN", false)
	check(more, "a Cc added", "SIGCc: x@example.org\r\nIN", false)
	check(more, "a Reply-To added", "SIGReply-To: x@example.org\r\nIN", false)
	check(more, "a Date added", "SIGDate: Mon, 4 May 2026 12:00:00 +0200\r\nIN", true)
}

func TestSignErrors(t *testing.T) {
	key := loadKey(t, "example.com", "s1", ed25519PEM(t))
	s := dkim.NewSigner([]*dkim.Key{key})
	s.MaxHeaderBytes = 100
	msg := "From: jan@example.com\r\n" + "Subject: " + strings.Repeat("x", 100) + "\r\n\r\nbody\r\n"
	readErr := errors.New("connection reset")
	check := func(name string, w io.Writer, r io.Reader, want error) {
		t.Helper()
		var out bytes.Buffer
		if w == nil {
			w = &out
		}
		signed, err := s.Sign(w, r, "example.com")
		if signed || !errors.Is(err, want) {
			t.Errorf("%s: signed %v, error %v; want %v", name, signed, err, want)
		}
		if out.Len() != 0 {
			t.Errorf("%s: wrote %q", name, out.String())
		}
	}
	check("header section too large", nil, strings.NewReader(msg), dkim.ErrHeaderTooLarge)
	check("read error in the header section", nil, io.MultiReader(strings.NewReader("From: jan@example.com\r\n"), errReader{readErr}), readErr)
	s.MaxHeaderBytes = 0
	for _, rd := range readers {
		s.MemoryLimit = rd.limit
		check("read error in the body, "+rd.name, nil, io.MultiReader(rd.wrap(msg), errReader{readErr}), readErr)
		writeErr := errors.New("broken pipe")
		check("write error, "+rd.name, errWriter{writeErr}, rd.wrap(msg), writeErr)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }

// TestSignConcurrent: one Signer serves the filter's connections at once.
func TestSignConcurrent(t *testing.T) {
	key := loadKey(t, "example.com", "s1", ed25519PEM(t))
	d := publish(t, key)
	s := dkim.NewSigner([]*dkim.Key{key})
	s.MemoryLimit = 64
	s.TempDir = t.TempDir()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			msg := fmt.Sprintf("From: jan@example.com\r\nSubject: %d\r\n\r\n%s\r\n", i, strings.Repeat("line\r\n", 100*i))
			var out bytes.Buffer
			if _, err := s.Sign(&out, struct{ io.Reader }{strings.NewReader(msg)}, "example.com"); err != nil {
				t.Error(err)
				return
			}
			if vs, err := d.verify(&out); err != nil || vs[0].Err != nil {
				t.Errorf("message %d: %v %v", i, err, vs[0].Err)
			}
		})
	}
	wg.Wait()
}

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := x509.ParsePKCS8PrivateKey(pemBytes(t, rsaPEM()))
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey.(*rsa.PrivateKey))})
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00"}, Bytes: []byte{1}})

	check := func(name string, data []byte, mode os.FileMode, domain, selector string, want string) {
		t.Helper()
		path := filepath.Join(dir, "missing.key")
		if data != nil {
			path = writeFile(t, dir, strings.ReplaceAll(name, " ", "_")+".key", data, mode)
		}
		want = strings.ReplaceAll(want, "PATH", path)
		k, err := dkim.LoadKey(domain, selector, path)
		if got := errString(err); got != want {
			t.Errorf("%s: error %q\nwant %q", name, got, want)
		}
		if err == nil && (k.Domain != "example.com" || k.Selector != selector || k.Path != path || k.Signer == nil) {
			t.Errorf("%s: %+v", name, k)
		}
	}
	check("RSA PKCS#8", rsaPEM(), 0o600, "Example.com", "s2026", "")
	check("RSA PKCS#1", pkcs1, 0o400, "example.com", "s2026", "")
	check("Ed25519 PKCS#8", ed25519PEM(t), 0o600, "example.com", "ed.2026", "")
	check("RSA of 1024 bits", pkcs8(small), 0o600, "example.com", "s1",
		"dkim: key file PATH: RSA key of 1024 bits; DKIM keys need at least 2048 (RFC 8301): make a new one with relayguard dkim keygen")
	check("world-readable", ed25519PEM(t), 0o644, "example.com", "s1",
		"dkim: key file PATH has mode 0644: a private key must be readable by its owner only: chmod 600 PATH")
	check("group-readable", ed25519PEM(t), 0o640, "example.com", "s1",
		"dkim: key file PATH has mode 0640: a private key must be readable by its owner only: chmod 600 PATH")
	check("missing file", nil, 0, "example.com", "s1", "dkim: key file: open PATH: no such file or directory")
	check("not PEM", []byte("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"), 0o600, "example.com", "s1",
		`dkim: key file PATH: no PEM block; want "PRIVATE KEY" (PKCS#8) or "RSA PRIVATE KEY" (PKCS#1)`)
	check("a certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), 0o600, "example.com", "s1",
		`dkim: key file PATH: PEM block "CERTIFICATE"; want "PRIVATE KEY" (PKCS#8) or "RSA PRIVATE KEY" (PKCS#1)`)
	_, x509Err := x509.ParsePKCS8PrivateKey([]byte{1, 2, 3})
	check("broken PKCS#8", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), 0o600, "example.com", "s1",
		"dkim: key file PATH: "+x509Err.Error())
	check("encrypted", encrypted, 0o600, "example.com", "s1",
		"dkim: key file PATH: the key is encrypted; relayguard needs it in clear, readable by its user only")
	check("ECDSA", pkcs8(ec), 0o600, "example.com", "s1",
		"dkim: key file PATH: ECDSA key; DKIM signs with RSA or Ed25519 keys")
	check("bad selector", ed25519PEM(t), 0o600, "example.com", "s 1",
		`dkim: selector "s 1": want DNS labels of letters, digits and inner hyphens, such as "s2026"`)
	check("empty selector", ed25519PEM(t), 0o600, "example.com", "", "dkim: empty selector")
	check("bad domain", ed25519PEM(t), 0o600, "example", "s1", `dkim: domain "example" has no dot`)
}

func pemBytes(t *testing.T, p []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(p)
	if b == nil {
		t.Fatal("no PEM")
	}
	return b.Bytes
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestCheckSelector(t *testing.T) {
	check := func(s string, ok bool) {
		t.Helper()
		if err := dkim.CheckSelector(s); (err == nil) != ok {
			t.Errorf("%q: %v; want valid %v", s, err, ok)
		}
	}
	for _, s := range []string{"s1", "S2026", "mail-2026", "eu.s1", strings.Repeat("a", 63)} {
		check(s, true)
	}
	for _, s := range []string{"", "-s1", "s1-", "s_1", "s1.", ".s1", "a..b", "s1._domainkey", "výběr", strings.Repeat("a", 64)} {
		check(s, false)
	}
}

// TestGenerate: a generated key, loaded back from its PEM and published with
// TXTRecord, verifies through a DNS lookup.
func TestGenerate(t *testing.T) {
	check := func(kind string, bits int, wantAlg, wantK string) {
		t.Helper()
		signer, p, err := dkim.Generate(kind, bits)
		if err != nil {
			t.Fatal(err)
		}
		key := loadKey(t, "example.com", "sel", p)
		if key.Algorithm != wantAlg || !key.Signer.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(signer.Public()) {
			t.Errorf("%s: loaded %s, a different key", kind, key.Algorithm)
		}
		line := dkim.TXTRecord("sel", "example.com.", signer.Public())
		name, value, err := parseZoneLine(line)
		if err != nil || name != "sel._domainkey.example.com" || !strings.HasPrefix(value, "v=DKIM1; k="+wantK+"; p=") {
			t.Errorf("%s: %s: %s, %q, %v", kind, line, name, value, err)
		}
		var out bytes.Buffer
		if _, err := dkim.NewSigner([]*dkim.Key{key}).Sign(&out, strings.NewReader("From: a@example.com\r\n\r\nx\r\n"), "example.com"); err != nil {
			t.Fatal(err)
		}
		vs, err := dns{name: value}.verify(&out)
		if err != nil || len(vs) != 1 || vs[0].Err != nil {
			t.Errorf("%s: verify: %v %v", kind, err, vs)
		}
	}
	check("rsa", 2048, dkim.RSASHA256, "rsa")
	check("rsa", 3072, dkim.RSASHA256, "rsa")
	check("ed25519", 0, dkim.Ed25519SHA256, "ed25519")

	for _, c := range []struct {
		kind string
		bits int
		want string
	}{
		{"rsa", 1024, "dkim: an RSA key of 1024 bits; want 2048 to 4096 (RFC 8301)"},
		{"rsa", 8192, "dkim: an RSA key of 8192 bits; want 2048 to 4096 (RFC 8301)"},
		{"ed25519", 256, "dkim: Ed25519 keys have one size; 256 bits asked"},
		{"ecdsa", 256, `dkim: key type "ecdsa"; want rsa or ed25519`},
	} {
		if _, _, err := dkim.Generate(c.kind, c.bits); errString(err) != c.want {
			t.Errorf("Generate(%q, %d): %v; want %s", c.kind, c.bits, err, c.want)
		}
	}
}

func TestTXTRecordSplit(t *testing.T) {
	check := func(bits int, wantStrings int) {
		t.Helper()
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		line := dkim.TXTRecord("s1", "example.com", &k.PublicKey)
		if n := strings.Count(line, `" "`) + 1; n != wantStrings {
			t.Errorf("%d bits: %d character-strings; want %d: %s", bits, n, wantStrings, line)
		}
		if _, _, err := parseZoneLine(line); err != nil {
			t.Errorf("%d bits: %v: %s", bits, err, line)
		}
	}
	check(1024, 1) // 216 base64 bytes: one string
	check(2048, 2)
	if got := dkim.TXTRecord("s1", "example.com", struct{}{}); got != "" {
		t.Errorf("an unknown key type: %q", got)
	}
}
