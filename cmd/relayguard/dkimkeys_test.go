package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"relayguard/contentfilter"
	"relayguard/dkim"
)

// keyFile writes a new Ed25519 key, as `relayguard dkim keygen` does, to
// dir/name with mode, and returns its path and the value of its TXT
// record.
func keyFile(t *testing.T, dir, name string, mode os.FileMode) (path, txt string) {
	t.Helper()
	signer, pemKey, err := dkim.Generate("ed25519", 0)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, name)
	if err := os.WriteFile(path, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path, "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(signer.Public().(ed25519.PublicKey))
}

// domainEntry is a [[domain]] of the directory with a key when selector
// is not empty.
func domainEntry(name, selector, key string) string {
	s := fmt.Sprintf("\n[[domain]]\nname = %q\n", name)
	if selector != "" {
		s += fmt.Sprintf("dkim_selector = %q\ndkim_key = %q\n", selector, key)
	}
	return s
}

func writeDirectory(t *testing.T, path string, entries ...string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(entries, "")), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadDKIMKeys(t *testing.T) {
	dir := t.TempDir()
	directory := filepath.Join(dir, "directory.toml")
	good, _ := keyFile(t, dir, "good.key", 0o600)
	other, _ := keyFile(t, dir, "other.key", 0o400)
	open, _ := keyFile(t, dir, "open.key", 0o644)
	_, rsaKey, err := dkim.Generate("rsa", dkim.MinRSABits)
	if err != nil {
		t.Fatal(err)
	}
	rsaPath := filepath.Join(dir, "rsa.key")
	if err := os.WriteFile(rsaPath, rsaKey, 0o600); err != nil {
		t.Fatal(err)
	}
	notKey := filepath.Join(dir, "not.key")
	if err := os.WriteFile(notKey, []byte("selector s1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.key")

	tests := []struct {
		name    string
		content []string // the directory's entries; none: no file
		domains []string // the domains signed
		errs    []string
	}{
		{"no key", []string{domainEntry("example.cz", "", "")}, nil, nil},
		{"keys", []string{
			domainEntry("example.cz", "s1", good),
			domainEntry("granted.test", "", ""),
			domainEntry("příklad.cz", "s2", other),
			domainEntry("rsa.test", "r1", rsaPath),
		}, []string{"example.cz", "rsa.test", "xn--pklad-zsa96e.cz"}, nil},
		{"missing key file", []string{domainEntry("example.cz", "s1", missing)}, nil, []string{
			directory + ":5: domain example.cz: dkim: key file: open " + missing + ": no such file or directory",
		}},
		{"every bad key, with its line", []string{
			domainEntry("example.cz", "s1", open),
			domainEntry("good.test", "s1", good),
			domainEntry("other.test", "s1", notKey),
		}, nil, []string{
			directory + ":5: domain example.cz: dkim: key file " + open + " has mode 0644: a private key must be readable by its owner only: chmod 600 " + open,
			directory + `:15: domain other.test: dkim: key file ` + notKey + `: no PEM block; want "PRIVATE KEY" (PKCS#8) or "RSA PRIVATE KEY" (PKCS#1)`,
		}},
		{"directory errors", []string{
			domainEntry("example.cz", "s1", "good.key"),
			"\n[[domain]]\nname = \"other.test\"\ndkim_selector = \"s_1\"\n",
		}, nil, []string{
			directory + `:5: domain[0].dkim_key: "good.key": give the key file's absolute path`,
			directory + `:7: domain[1].dkim_key: dkim_selector and dkim_key go together`,
		}},
		{"not TOML", []string{domainEntry("example.cz", "s1", good), "[[domain]\n"}, nil, []string{
			directory + ":6: TOML syntax: expected ']]' to close array table name",
		}},
		{"no directory", nil, nil, []string{"open " + directory + ": no such file or directory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(directory)
			if tt.content != nil {
				writeDirectory(t, directory, tt.content...)
			}
			k, errs := loadDKIMKeys(directory)
			var got []string
			for _, err := range errs {
				got = append(got, err.Error())
			}
			if !reflect.DeepEqual(got, tt.errs) {
				t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.errs, "\n"))
			}
			if tt.errs != nil {
				if k != nil {
					t.Errorf("keys %v along with errors", k.domains())
				}
				return
			}
			if d := k.domains(); !reflect.DeepEqual(d, tt.domains) && len(d)+len(tt.domains) > 0 {
				t.Errorf("domains signed: %q, want %q", d, tt.domains)
			}
			if (k.signer != nil) != (len(tt.domains) > 0) {
				t.Errorf("signer %v with %d domains", k.signer, len(tt.domains))
			}
		})
	}
}

// signing is a dkimSigning whose log is kept.
type signing struct {
	*dkimSigning
	log bytes.Buffer
}

func newSigning(t *testing.T, directory string) *signing {
	t.Helper()
	s := &signing{}
	log := slog.New(slog.NewTextHandler(&s.log, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
	d, err := newDKIMSigning(directory, log)
	if err != nil {
		t.Fatal(err)
	}
	s.dkimSigning = d
	return s
}

// logged returns the log since the last call.
func (s *signing) logged() string {
	defer s.log.Reset()
	return s.log.String()
}

// message is a message from sender, as the filter reinjects it.
func message(sender string) string {
	return "From: <" + sender + ">\r\nTo: <someone@dest.test>\r\nSubject: hello\r\nDate: Mon, 04 May 2026 12:00:00 +0200\r\n" +
		"Message-ID: <1@example.test>\r\n\r\nHello.\r\n"
}

// signedBy signs a message of sender with s and returns the d= and s= of
// its verified signature ("" when it is not signed), the message otherwise
// unchanged; txt are the TXT records of the keys, by selector._domainkey.domain.
func signedBy(t *testing.T, s *dkimSigning, sender string, txt map[string]string) string {
	t.Helper()
	var out bytes.Buffer
	if err := s.sign(&out, strings.NewReader(message(sender)), &contentfilter.Message{Sender: sender}); err != nil {
		t.Fatal(err)
	}
	return verified(t, out.Bytes(), message(sender), txt)
}

func verified(t *testing.T, signed []byte, msg string, txt map[string]string) string {
	t.Helper()
	if !bytes.HasSuffix(signed, []byte(msg)) {
		t.Fatalf("the message changed:\n%s", signed)
	}
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(signed), &msgauth.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if v, ok := txt[name]; ok {
				return []string{v}, nil
			}
			return nil, fmt.Errorf("no TXT record %s", name)
		},
	})
	switch {
	case err != nil:
		t.Fatal(err)
	case len(vs) == 0:
		return ""
	case len(vs) > 1 || vs[0].Err != nil:
		t.Fatalf("verification: %+v %v\n%s", vs, vs[0].Err, signed)
	}
	return vs[0].Domain + " " + selectorOf(string(signed))
}

// selectorOf returns the s= tag of the first DKIM-Signature.
func selectorOf(msg string) string {
	_, after, _ := strings.Cut(msg, " s=")
	sel, _, _ := strings.Cut(after, ";")
	return sel
}

// A message whose header section the signer cannot hold is refused for
// good (552), not left to Postfix to try again for days.
func TestDKIMHeaderTooLarge(t *testing.T) {
	dir := t.TempDir()
	directory := filepath.Join(dir, "directory.toml")
	key, _ := keyFile(t, dir, "a.key", 0o600)
	writeDirectory(t, directory, domainEntry("example.cz", "a", key))
	s := newSigning(t, directory)
	huge := "From: <jan@example.cz>\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("a", 990)+"\r\n", 1100) + "\r\nHello.\r\n"
	var out bytes.Buffer
	err := s.sign(&out, strings.NewReader(huge), &contentfilter.Message{Sender: "jan@example.cz"})
	var r *contentfilter.Refusal
	if !errors.As(err, &r) || r.Reply != "552 5.3.4 Error: message header too large" || out.Len() != 0 {
		t.Errorf("%d bytes written, error %v; want nothing written and the refusal", out.Len(), err)
	}
}

// TestDKIMReload: SIGHUP's reload puts keys added, replaced or removed in
// force for the next message, and a broken reload keeps the keys in force
// and logs each error.
func TestDKIMReload(t *testing.T) {
	dir := t.TempDir()
	directory := filepath.Join(dir, "directory.toml")
	a, txtA := keyFile(t, dir, "a.key", 0o600)
	b, txtB := keyFile(t, dir, "b.key", 0o600)
	c, txtC := keyFile(t, dir, "c.key", 0o600)
	open, _ := keyFile(t, dir, "open.key", 0o644)
	txt := map[string]string{"a._domainkey.example.cz": txtA, "b._domainkey.granted.test": txtB, "c._domainkey.example.cz": txtC}

	writeDirectory(t, directory, domainEntry("example.cz", "a", a), domainEntry("granted.test", "", ""))
	s := newSigning(t, directory)
	if want := `level=INFO msg="DKIM key loaded" domain=example.cz selector=a algorithm=ed25519-sha256 key=` + a + "\n"; s.logged() != want {
		t.Errorf("log at start:\n%s\nwant:\n%s", s.log.String(), want)
	}
	type signs struct{ sender, by string }
	steps := []struct {
		name    string
		entries []string // the directory
		ok      bool
		log     string
		after   []signs
	}{
		{
			name:    "a key added, one replaced",
			entries: []string{domainEntry("example.cz", "c", c), domainEntry("granted.test", "b", b)},
			ok:      true,
			log: `level=INFO msg="DKIM key replaced" domain=example.cz selector=c algorithm=ed25519-sha256 key=` + c + ` old_selector=a old_key=` + a + `
level=INFO msg="DKIM key added" domain=granted.test selector=b algorithm=ed25519-sha256 key=` + b + `
level=INFO msg="DKIM keys reloaded" directory=` + directory + ` signed="example.cz granted.test" added=granted.test removed="" replaced=example.cz
`,
			after: []signs{{"jan@example.cz", "example.cz c"}, {"x@granted.test", "granted.test b"}, {"x@foreign.test", ""}},
		},
		{
			name: "broken: every error logged, the keys kept",
			entries: []string{
				domainEntry("example.cz", "a", filepath.Join(dir, "missing.key")),
				domainEntry("other.test", "o", open),
			},
			log: `level=ERROR msg="DKIM key reload failed, keeping the previous keys" directory=` + directory + ` error="` + directory +
				`:5: domain example.cz: dkim: key file: open ` + filepath.Join(dir, "missing.key") + `: no such file or directory"
level=ERROR msg="DKIM key reload failed, keeping the previous keys" directory=` + directory + ` error="` + directory +
				`:10: domain other.test: dkim: key file ` + open + ` has mode 0644: a private key must be readable by its owner only: chmod 600 ` + open + `"
`,
			after: []signs{{"jan@example.cz", "example.cz c"}, {"x@granted.test", "granted.test b"}},
		},
		{
			name:    "broken directory",
			entries: []string{"[[domain]\n"},
			log: `level=ERROR msg="DKIM key reload failed, keeping the previous keys" directory=` + directory + ` error="` + directory +
				`:1: TOML syntax: expected ']]' to close array table name"
`,
			after: []signs{{"jan@example.cz", "example.cz c"}},
		},
		{
			name:    "nothing changed",
			entries: []string{domainEntry("granted.test", "b", b), domainEntry("example.cz", "c", c)},
			ok:      true,
			log: `level=INFO msg="DKIM keys reloaded" directory=` + directory + ` signed="example.cz granted.test" added="" removed="" replaced=""
`,
			after: []signs{{"jan@example.cz", "example.cz c"}, {"x@granted.test", "granted.test b"}},
		},
		{
			name:    "removed",
			entries: []string{domainEntry("example.cz", "c", c), domainEntry("granted.test", "", "")},
			ok:      true,
			log: `level=INFO msg="DKIM key removed: its mail is no longer signed" domain=granted.test selector=b
level=INFO msg="DKIM keys reloaded" directory=` + directory + ` signed=example.cz added="" removed=granted.test replaced=""
`,
			after: []signs{{"jan@example.cz", "example.cz c"}, {"x@granted.test", ""}},
		},
		{
			name:    "none left",
			entries: []string{domainEntry("example.cz", "", "")},
			ok:      true,
			log: `level=INFO msg="DKIM key removed: its mail is no longer signed" domain=example.cz selector=c
level=INFO msg="DKIM keys reloaded" directory=` + directory + ` signed="" added="" removed=example.cz replaced=""
`,
			after: []signs{{"jan@example.cz", ""}},
		},
	}
	for _, st := range steps {
		writeDirectory(t, directory, st.entries...)
		if ok := s.reload(); ok != st.ok {
			t.Errorf("%s: reload %v, want %v", st.name, ok, st.ok)
		}
		if got := s.logged(); got != st.log {
			t.Errorf("%s: log:\n%s\nwant:\n%s", st.name, got, st.log)
		}
		for _, x := range st.after {
			if got := signedBy(t, s.dkimSigning, x.sender, txt); got != x.by {
				t.Errorf("%s: a message of %s signed by %q, want %q", st.name, x.sender, got, x.by)
			}
		}
	}

	// A key file rewritten in place (keygen --force) holds a new key: the
	// reload replaces it.
	writeDirectory(t, directory, domainEntry("example.cz", "a", a))
	s.reload()
	s.logged()
	_, txtA2 := keyFile(t, dir, "a.key", 0o600)
	if !s.reload() || !strings.Contains(s.logged(), `msg="DKIM key replaced" domain=example.cz selector=a`) {
		t.Errorf("a key rewritten in place is not replaced")
	}
	if got := signedBy(t, s.dkimSigning, "jan@example.cz", map[string]string{"a._domainkey.example.cz": txtA2}); got != "example.cz a" {
		t.Errorf("after the key was rewritten: signed by %q", got)
	}
}

// TestDKIMReloadInProgress: a message whose signing began before a reload
// is signed whole with the key of before; the next one with the new key.
func TestDKIMReloadInProgress(t *testing.T) {
	dir := t.TempDir()
	directory := filepath.Join(dir, "directory.toml")
	a, txtA := keyFile(t, dir, "a.key", 0o600)
	b, txtB := keyFile(t, dir, "b.key", 0o600)
	txt := map[string]string{"a._domainkey.example.cz": txtA, "b._domainkey.example.cz": txtB}
	writeDirectory(t, directory, domainEntry("example.cz", "a", a))
	s := newSigning(t, directory)

	msg := message("jan@example.cz")
	head, body, _ := strings.Cut(msg, "\r\n\r\n")
	pr, pw := io.Pipe()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- s.sign(&out, pr, &contentfilter.Message{Sender: "jan@example.cz"}) }()
	// The signer has read the header section when this write returns.
	if _, err := io.WriteString(pw, head+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	writeDirectory(t, directory, domainEntry("example.cz", "b", b))
	if !s.reload() {
		t.Fatalf("reload failed:\n%s", s.logged())
	}
	if got := signedBy(t, s.dkimSigning, "jan@example.cz", txt); got != "example.cz b" {
		t.Errorf("a message signed after the reload: by %q, want example.cz b", got)
	}
	io.WriteString(pw, body)
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := verified(t, out.Bytes(), msg, txt); got != "example.cz a" {
		t.Errorf("the message in progress: signed by %q, want example.cz a", got)
	}
}

// TestCheckConfigDKIM: check-config reads the DKIM keys as the content
// filter would, and fails with the line of a key it cannot use; for policyd
// alone it does not read them.
func TestCheckConfigDKIM(t *testing.T) {
	dir := t.TempDir()
	good, _ := keyFile(t, dir, "good.key", 0o600)
	missing := filepath.Join(dir, "missing.key")
	tests := []struct {
		name    string
		daemon  string // check-config --for
		entries []string
		want    string // in the output, or in the error if wantErr
		wantErr bool
	}{
		{"no keys", "", []string{domainEntry("example.cz", "", "")}, "no domain has a DKIM key", false},
		{"a key", "", []string{domainEntry("example.cz", "s1", good), domainEntry("example.org", "", "")}, "; DKIM keys for example.cz\n", false},
		{"a key, for the filter", "contentfilter", []string{domainEntry("example.cz", "s1", good)}, "; DKIM keys for example.cz\n", false},
		{"missing key", "", []string{domainEntry("example.cz", "s1", good), domainEntry("example.org", "s2", missing)}, "directory.toml:10: domain example.org: dkim: key file:", true},
		{"missing key, for the filter", "contentfilter", []string{domainEntry("example.org", "s2", missing)}, "directory.toml:5: domain example.org: dkim: key file:", true},
		{"missing key, for policyd", "policyd", []string{domainEntry("example.org", "s2", missing)}, "directory.toml: 1 domains", false},
		{"unknown daemon", "postfix", []string{domainEntry("example.cz", "", "")}, `check-config --for "postfix": want policyd or contentfilter`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			directory := filepath.Join(t.TempDir(), "directory.toml")
			writeDirectory(t, directory, tt.entries...)
			cfg := filepath.Join(t.TempDir(), "relayguard.toml")
			if err := os.WriteFile(cfg, fmt.Appendf(nil, "[policyd]\ndirectory = %q\n[rules.geoip]\nmode = \"off\"\n", directory), 0o644); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err := checkConfig(&out, cfg, tt.daemon)
			switch {
			case tt.wantErr && err == nil:
				t.Fatalf("checkConfig = nil, output %q; want an error containing %q", out.String(), tt.want)
			case tt.wantErr && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("checkConfig = %v; want it to contain %q", err, tt.want)
			case !tt.wantErr && err != nil:
				t.Fatalf("checkConfig = %v", err)
			case !tt.wantErr && !strings.Contains(out.String(), tt.want):
				t.Fatalf("output %q; want it to contain %q", out.String(), tt.want)
			}
		})
	}
}
