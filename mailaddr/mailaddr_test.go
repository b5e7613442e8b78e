package mailaddr

import (
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	check := func(in, want string, wantErr bool) {
		t.Helper()
		got, err := Normalize(in)
		if (err != nil) != wantErr || got != want {
			t.Errorf("Normalize(%q) = %q, %v", in, got, err)
		}
	}
	check("jan@example.cz", "jan@example.cz", false)
	check("Jan@Example.CZ", "jan@example.cz", false)
	check("jan@Example.cz", "jan@example.cz", false)
	check("Jan@example.cz", "jan@example.cz", false)
	check("jan@příklad.cz", "jan@xn--pklad-zsa96e.cz", false)
	check("jan@PŘÍKLAD.cz", "jan@xn--pklad-zsa96e.cz", false)
	check("jan@xn--pklad-zsa96e.cz", "jan@xn--pklad-zsa96e.cz", false)
	check(`"a@b"@example.cz`, `"a@b"@example.cz`, false)
	check("jan@example.cz.", "jan@example.cz", false)
	check("jan", "", true)
	check("@example.cz", "", true)
	check("jan@", "", true)
	check("jan@localhost", "", true)
	check("jan@exa mple.cz", "", true)
}

// A domain that skips the IDNA mapping is one that the mapping returns as
// it is.
func FuzzDomain(f *testing.F) {
	for _, d := range []string{"example.cz", "a.b", "xn--pklad-zsa96e.cz", "a--b.cz", "ab--c.cz", "-a.cz", "a-.cz",
		"a..b", ".a.b", "EXAMPLE.CZ", "příklad.cz", "a_b.cz", "localhost", "1.2.3.4", "a.b.", strings.Repeat("a", 64) + ".cz"} {
		f.Add(d)
	}
	f.Fuzz(func(t *testing.T, d string) {
		if !plainASCII(d) {
			return
		}
		got, err := idnaDomain(d)
		if err != nil || got != d {
			t.Errorf("%q passes as plain ASCII, but the IDNA mapping gives %q, %v", d, got, err)
		}
	})
}
