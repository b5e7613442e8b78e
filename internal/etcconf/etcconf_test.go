package etcconf

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "in.toml"), filepath.Join(dir, "out.toml")
	const in = "[a]\nmode = \"on\"\n\n[b]\nmode = \"on\"\nx = 1\n"
	if err := os.WriteFile(src, []byte(in), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(src, dst, []Edit{Replace("b", `mode = "on"`, `mode = "off"`)}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst)
	if want := "[a]\nmode = \"on\"\n\n[b]\nmode = \"off\"\nx = 1\n"; string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	err := Write(src, dst, []Edit{Replace("a", "x = 1", "x = 2")})
	if err == nil || !strings.Contains(err.Error(), `[a] has no line "x = 1"`) {
		t.Errorf("a line of another table: %v", err)
	}
}

func TestFreeAddr(t *testing.T) {
	a, err := FreeAddr()
	if err != nil || !strings.HasPrefix(a, "127.0.0.1:") || strings.HasSuffix(a, ":0") {
		t.Errorf("%q, %v", a, err)
	}
}

func TestUnitEnvironment(t *testing.T) {
	for _, c := range []struct {
		name, unit string
		want       []string
		err        string
	}{
		{"none", "[Service]\nExecStart=/bin/true\n", nil, ""},
		{"lines and pairs", "[Service]\nEnvironment=GOMEMLIMIT=100MiB\n  Environment=GOGC=200 A=b=c\n# Environment=X=1\n",
			[]string{"GOMEMLIMIT=100MiB", "GOGC=200", "A=b=c"}, ""},
		{"quoted", "Environment=\"A=b c\"\n", nil, `unit:1: quoted or escaped`},
		{"not a pair", "\nEnvironment=GOGC\n", nil, `unit:2: "GOGC" is not KEY=VALUE`},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "unit")
			if err := os.WriteFile(path, []byte(c.unit), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := UnitEnvironment(path)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one with %q", err, c.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, c.want) {
				t.Errorf("%q, %v; want %q", got, err, c.want)
			}
		})
	}
	// The daemons' units as etc/ has them.
	for _, unit := range []string{"relayguard-policyd.service", "relayguard-contentfilter.service"} {
		if _, err := UnitEnvironment(filepath.Join("..", "..", "etc", "systemd", unit)); err != nil {
			t.Error(err)
		}
	}
}
