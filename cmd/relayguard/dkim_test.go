package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/urfave/cli/v2"

	"relayguard/dkim"
)

// runKeygen runs `relayguard dkim keygen args` and returns what it printed.
func runKeygen(args ...string) (string, error) {
	var out bytes.Buffer
	app := &cli.App{Name: "relayguard", Commands: []*cli.Command{dkimCommand()}, Writer: &out, ErrWriter: io.Discard}
	err := app.Run(append([]string{"relayguard", "dkim", "keygen"}, args...))
	return out.String(), err
}

func TestDKIMKeygen(t *testing.T) {
	dir := t.TempDir()
	check := func(args []string, path, wantErr string) *dkim.Key {
		t.Helper()
		before, _ := os.ReadFile(path)
		out, err := runKeygen(args...)
		if got := errString(err); got != wantErr {
			t.Fatalf("%q: error %q\nwant %q", args, got, wantErr)
		}
		after, _ := os.ReadFile(path)
		if wantErr != "" {
			if out != "" || !bytes.Equal(before, after) {
				t.Errorf("%q: printed %q, key file changed %v", args, out, !bytes.Equal(before, after))
			}
			return nil
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%q: %v %v; want mode 0600", args, fi.Mode(), err)
		}
		if bytes.Equal(before, after) {
			t.Errorf("%q: the key file is unchanged", args)
		}
		domain, selector := args[0], args[2]
		key, err := dkim.LoadKey(domain, selector, path)
		if err != nil {
			t.Fatal(err)
		}
		what, name := "an Ed25519 key", domain
		if key.Algorithm == dkim.RSASHA256 {
			what = fmt.Sprintf("a %d-bit RSA key", key.Signer.Public().(interface{ Size() int }).Size()*8)
		}
		if name != key.Domain {
			name = fmt.Sprintf("%s (%s)", domain, key.Domain)
		}
		want := fmt.Sprintf(`Wrote %s for %s to %s, mode 0600.
Give it to the user the content filter runs as (chown); no one else may read it.

1. Publish this record in the DNS zone of %s, and wait until it resolves
   (dig +short TXT %s._domainkey.%s):

%s

2. Then add these lines to the [[domain]] entry of %s in the directory file,
   and reload the content filter (systemctl reload relayguard-contentfilter,
   or SIGHUP):

dkim_selector = "%s"
dkim_key = "%s"
`, what, name, path, name, selector, key.Domain, dkim.TXTRecord(selector, key.Domain, key.Signer.Public()), name, selector, path)
		if out != want {
			t.Errorf("%q:\n got:\n%s\nwant:\n%s", args, out, want)
		}
		return key
	}

	ed := filepath.Join(dir, "example.com.ed1.key")
	check([]string{"example.com", "--selector", "ed1", "--type", "ed25519", "--out", ed}, ed, "")
	check([]string{"example.com", "--selector", "ed1", "--type", "ed25519", "--out", ed}, ed,
		ed+" exists; pass --force to replace it (mail signed with the old key fails DKIM once its DNS record is replaced)")
	if err := os.Chmod(ed, 0o644); err != nil {
		t.Fatal(err)
	}
	check([]string{"example.com", "--selector", "ed1", "--type", "ed25519", "--out", ed, "--force"}, ed, "")

	rsaPath := filepath.Join(dir, "rsa.key")
	if key := check([]string{"příklad.cz", "--selector", "s2026", "--out", rsaPath}, rsaPath, ""); key.Algorithm != dkim.RSASHA256 {
		t.Errorf("the default type: %s", key.Algorithm)
	}
	t.Chdir(dir)
	check([]string{"example.net", "--selector", "s1", "--bits", "3072", "--out", "relative.key"}, filepath.Join(dir, "relative.key"), "")

	other := filepath.Join(dir, "other.key")
	for _, c := range []struct {
		args []string
		err  string
	}{
		{nil, "usage: relayguard dkim keygen DOMAIN --selector SELECTOR"},
		{[]string{"example.com"}, "--selector is required: the name under which the key is published, such as s2026"},
		{[]string{"example.com", "--selector", "s 1"}, `dkim: selector "s 1": want DNS labels of letters, digits and inner hyphens, such as "s2026"`},
		{[]string{"localhost", "--selector", "s1"}, `domain "localhost" has no dot`},
		{[]string{"example.com", "--selector", "s1", "--type", "dsa", "--out", other}, `dkim: key type "dsa"; want rsa or ed25519`},
		{[]string{"example.com", "--selector", "s1", "--bits", "1024", "--out", other}, "dkim: an RSA key of 1024 bits; want 2048 to 4096 (RFC 8301)"},
		{[]string{"example.com", "--selector", "s1", "--type", "ed25519", "--bits", "256", "--out", other}, "--bits is for RSA keys: Ed25519 keys have one size"},
		{[]string{"example.com", "extra", "--selector", "s1"}, "usage: relayguard dkim keygen DOMAIN --selector SELECTOR"},
		{[]string{"example.com", "--selector", "s1", "--type", "ed25519", "--out", filepath.Join(dir, "missing", "k.key")}, "open " + filepath.Join(dir, "missing", "k.key") + ": no such file or directory"},
	} {
		check(c.args, other, c.err)
	}
	if _, err := os.Stat(other); !os.IsNotExist(err) {
		t.Errorf("%s: %v; want no file after the failures", other, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 3 {
		t.Errorf("files in %s: %v; want the three keys", dir, ents)
	}
}
