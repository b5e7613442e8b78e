package mailaddr

import "testing"

func TestNormalize(t *testing.T) {
	check := func(in, want string, wantErr bool) {
		t.Helper()
		got, err := Normalize(in)
		if (err != nil) != wantErr || got != want {
			t.Errorf("Normalize(%q) = %q, %v", in, got, err)
		}
	}
	check("Jan@Example.CZ", "jan@example.cz", false)
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
