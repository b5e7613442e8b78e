package contentfilter

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
)

// TestSpool writes messages of sizes around the chunk size and the
// threshold in pieces of every size, and reads them back, twice, as the
// checks, the signer and the next hop do.
func TestSpool(t *testing.T) {
	const threshold = 3*chunkSize + 100
	rng := rand.New(rand.NewPCG(1, 2))
	check := func(size, piece int) {
		t.Helper()
		dir := t.TempDir()
		msg := make([]byte, size)
		for i := range msg {
			msg[i] = byte(rng.Uint32())
		}
		s := newSpool(dir, threshold)
		defer s.Close()
		for p := msg; len(p) > 0; {
			n := min(len(p), piece)
			if k, err := s.Write(p[:n]); k != n || err != nil {
				t.Fatalf("size %d: Write: %d, %v", size, k, err)
			}
			p = p[n:]
		}
		if s.Size() != int64(size) || s.OnDisk() != (size > threshold) {
			t.Errorf("size %d: Size %d, OnDisk %v", size, s.Size(), s.OnDisk())
		}
		for range 2 {
			r := s.Reader()
			got, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("size %d, pieces of %d: read %d bytes, %v", size, piece, len(got), err)
			}
			// The signer reads the body again from where the header ends.
			rs, ok := r.(io.ReadSeeker)
			if !ok {
				t.Fatalf("size %d: the reader cannot seek", size)
			}
			at := int64(size / 3)
			if _, err := rs.Seek(at, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			if rest, err := io.ReadAll(rs); err != nil || !bytes.Equal(rest, msg[at:]) {
				t.Fatalf("size %d: after Seek(%d): %d bytes, %v", size, at, len(rest), err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("size %d: files left: %v", size, ents)
		}
	}
	for _, size := range []int{0, 1, chunkSize - 1, chunkSize, chunkSize + 1, 3 * chunkSize, threshold, threshold + 1, 5*chunkSize + 7} {
		for _, piece := range []int{1, 77, chunkSize, 4 * chunkSize} {
			if size > 2*chunkSize && piece == 1 {
				continue
			}
			check(size, piece)
		}
	}
}

// TestSpoolClosed: a reader still reading when the message is closed, as
// the signer can be when the next hop failed first, gets an error, and
// never the bytes of the next message, which reuses the memory.
func TestSpoolClosed(t *testing.T) {
	s := newSpool(t.TempDir(), 1<<20)
	s.Write(bytes.Repeat([]byte("a"), 3*chunkSize))
	r := s.Reader()
	buf := make([]byte, 100)
	if _, err := r.Read(buf); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			n, err := r.Read(buf)
			if bytes.ContainsRune(buf[:n], 'b') {
				t.Error("read the next message's bytes")
			}
			if err != nil {
				if !errors.Is(err, errSpoolClosed) && err != io.EOF {
					t.Errorf("read after Close: %v", err)
				}
				return
			}
		}
	})
	s.Close()
	next := newSpool(t.TempDir(), 1<<20)
	next.Write(bytes.Repeat([]byte("b"), 3*chunkSize))
	wg.Wait()
	next.Close()
	if _, err := s.Reader().Read(buf); !errors.Is(err, errSpoolClosed) {
		t.Errorf("new reader after Close: %v", err)
	}
	if _, err := s.Write([]byte("x")); !errors.Is(err, errSpoolClosed) {
		t.Errorf("Write after Close: %v", err)
	}
}
