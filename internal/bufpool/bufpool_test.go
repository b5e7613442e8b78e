package bufpool

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestPools(t *testing.T) {
	rs := NewReaders(64 << 10)
	r := rs.Get(strings.NewReader("first"))
	if r.Size() != 64<<10 {
		t.Errorf("reader of %d bytes, want %d", r.Size(), 64<<10)
	}
	r.ReadByte() // buffers "first"
	rs.Put(r)
	r = rs.Get(strings.NewReader("second"))
	if got, _ := io.ReadAll(r); string(got) != "second" {
		t.Errorf("a reader taken again read %q, want only its new source", got)
	}

	ws := NewWriters(4 << 10)
	var a, b bytes.Buffer
	w := ws.Get(&a)
	w.WriteString("unflushed")
	ws.Put(w)
	w = ws.Get(&b)
	w.WriteString("x")
	w.Flush()
	if w.Size() != 4<<10 || a.Len() != 0 || b.String() != "x" {
		t.Errorf("size %d, first writer got %q, second %q; want 4096, nothing, \"x\"", w.Size(), a.String(), b.String())
	}
}
