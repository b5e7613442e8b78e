package report

import (
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
