package limits

import (
	"slices"
	"testing"
	"time"
)

// Whatever the database holds, decoding never panics, and what it accepts
// is an entry of valid counters that is read back as it is written.
func FuzzDecodeCounters(f *testing.F) {
	t0 := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	var e entry
	e = e.add(Window{Length: time.Minute, Buckets: 12}, t0, 3)
	e = e.add(Window{Length: time.Minute, Buckets: 12}, t0.Add(20*time.Second), 1)
	e = e.add(Window{Length: 24 * time.Hour, Buckets: 24}, t0, 7)
	kv, k := appendCounters(nil, "r10|account|jan@example.cz", e)
	f.Add(kv[:k], kv[k:])
	f.Add([]byte("c"), []byte{0})
	f.Add([]byte("cx"), []byte{1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 1})
	f.Fuzz(func(t *testing.T, k, v []byte) {
		key, e, err := decodeCounters(k, v)
		if err != nil {
			return
		}
		again, n := appendCounters(nil, key, e)
		key2, e2, err := decodeCounters(again[:n], again[n:])
		if err != nil || key2 != key || !slices.Equal(e2, e) {
			t.Fatalf("decoded %q %v, which encodes as %x %x and decodes as %q %v, %v", key, e, again[:n], again[n:], key2, e2, err)
		}
		for pos := 0; pos < len(e); {
			c, next := e.at(pos)
			if next > len(e) || c.w.validate() != nil {
				t.Fatalf("entry %v: bad counter at %d", e, pos)
			}
			c.count(t0)
			pos = next
		}
	})
}
