package subject

import (
	"net/netip"
	"testing"
)

func TestIP(t *testing.T) {
	check := func(in string, bits int, want string) {
		t.Helper()
		if got := IP(netip.MustParseAddr(in), bits); got != want {
			t.Errorf("IP(%s, %d) = %s, want %s", in, bits, got, want)
		}
	}
	check("192.0.2.7", 64, "192.0.2.7")
	check("::ffff:192.0.2.7", 64, "192.0.2.7")
	check("2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64")
	check("2001:db8:1:2:ffff::1", 64, "2001:db8:1:2::/64")
	check("2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::/48")
	check("2001:db8::1", 128, "2001:db8::1/128")
}

func TestAccount(t *testing.T) {
	for in, want := range map[string]string{"Jan@Example.CZ": "jan@example.cz", "jan@příklad.cz": "jan@xn--pklad-zsa96e.cz", "JAN": "jan"} {
		if got := Account(in); got != want {
			t.Errorf("Account(%q) = %q, want %q", in, got, want)
		}
	}
	if Key("r4", "ip", "192.0.2.7") != "r4|ip|192.0.2.7" {
		t.Error("Key")
	}
}
