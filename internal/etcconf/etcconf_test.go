package etcconf

import (
	"os"
	"path/filepath"
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
