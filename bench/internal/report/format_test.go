package report

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestFormat(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                       "0 µs",
		1500 * time.Nanosecond:  "2 µs",
		420 * time.Microsecond:  "420 µs",
		9999 * time.Microsecond: "9999 µs",
		10 * time.Millisecond:   "10.0 ms",
		1234 * time.Millisecond: "1234.0 ms",
	} {
		if got := Latency(d); got != want {
			t.Errorf("Latency(%v) = %q, want %q", d, got, want)
		}
	}
	if Verdict(true) != "met" || Verdict(false) != "MISSED" {
		t.Error("Verdict")
	}
}

func TestLogSummary(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
	os.WriteFile(a, []byte("time=1 level=INFO msg=message\ntime=2 level=WARN msg=\"MIME damaged\"\n"), 0o644)
	os.WriteFile(b, []byte("time=3 level=ERROR msg=\"next hop unavailable\"\n"), 0o644)
	got := LogSummary("the filter", a, b)
	want := "the filter's log: 1 warnings, 1 errors\n  time=2 level=WARN msg=\"MIME damaged\"\n  time=3 level=ERROR msg=\"next hop unavailable\"\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
