package dkim_test

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"relayguard/dkim"
)

// liveHeap is the heap that is in use after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// probe measures the live heap after each MiB that passes through it, and
// keeps the largest.
type probe struct {
	r       io.Reader
	w       io.Writer
	n, next int
	peak    *uint64
}

func (p *probe) count(n int) {
	p.n += n
	if p.n >= p.next {
		p.next = p.n + 1<<20
		*p.peak = max(*p.peak, liveHeap())
	}
}

func (p *probe) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.count(n)
	return n, err
}

func (p *probe) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.count(n)
	return n, err
}

// TestSignMemory signs a 20 MiB message read from a file and from a stream,
// and checks that the live heap stays far below the message's size.
func TestSignMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("a 20 MiB message")
	}
	const size = 20 << 20
	const bound = 4 << 20
	dir := t.TempDir()
	key := loadKey(t, "example.com", "s1", rsaPEM())
	d := publish(t, key)

	path := filepath.Join(dir, "message.eml")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	bw := bufio.NewWriter(f)
	bw.WriteString("From: jan@example.com\r\nTo: eva@example.org\r\nSubject: big\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	line := strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo", 3)[:76] + "\r\n"
	for n := 0; n < size; n += len(line) {
		bw.WriteString(line)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	check := func(name string, seekable bool) {
		t.Helper()
		in, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		out, err := os.Create(filepath.Join(dir, "signed.eml"))
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		s := dkim.NewSigner([]*dkim.Key{key})
		s.TempDir = dir

		var peak uint64
		base := liveHeap()
		var r io.Reader = &probe{r: in, peak: &peak}
		if seekable {
			r = struct {
				io.Reader
				io.Seeker
			}{r, in}
		}
		signed, err := s.Sign(&probe{w: out, peak: &peak}, r, "example.com")
		if err != nil || !signed {
			t.Fatalf("%s: signed %v, %v", name, signed, err)
		}
		grew := int64(peak) - int64(base)
		t.Logf("%s: the live heap grew by at most %.2f MiB while signing %d MiB", name, float64(grew)/(1<<20), size>>20)
		if grew > bound {
			t.Errorf("%s: the live heap grew by %d bytes; want at most %d", name, grew, bound)
		}

		if _, err := out.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		vs, err := d.verify(bufio.NewReader(out))
		if err != nil || len(vs) != 1 || vs[0].Err != nil {
			t.Errorf("%s: verify: %v %v", name, err, vs)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 2 {
			t.Errorf("%s: files left in %s: %v", name, dir, ents)
		}
	}
	check("a file, read twice", true)
	check("a stream, spooled", false)
}
