package attachments

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// skeletonOf reads a message through a skeleton to its end, as enmime and
// drain do, and returns what enmime got and the skeleton's state.
func skeletonOf(msg []byte, skip bool) (out []byte, state string) {
	defer func(old bool) { skipLines = old }(skipLines)
	skipLines = skip
	s := newSkeleton(bytes.NewReader(msg), inspector.banned)
	out, _ = io.ReadAll(s)
	s.drain()
	state = fmt.Sprintf("cut %q open %v found %v blocks %d delims %d work %d header %v keepAll %v digest %v",
		s.cut, s.open, s.found, s.blocks, s.delims, s.work, s.header, s.keepAll, s.digest)
	s.release()
	return out, state
}

// sameSkip fails unless the skeleton gives enmime the same bytes and ends
// in the same state whether it skips body lines at once or one by one.
func sameSkip(t testing.TB, msg []byte) {
	t.Helper()
	fast, fastState := skeletonOf(msg, true)
	slow, slowState := skeletonOf(msg, false)
	if !bytes.Equal(fast, slow) || fastState != slowState {
		t.Fatalf("message %q:\nskipping gives %q\n%s\nline by line %q\n%s", msg, fast, fastState, slow, slowState)
	}
}

// TestSkip compares the skeletons of the fuzz corpus and of messages with
// long bodies, with and without skipping.
func TestSkip(t *testing.T) {
	msgs := [][]byte{
		pdfMessage(50 << 10),
		forwardedMessage(200 << 10),
		[]byte(strings.ReplaceAll(string(pdfMessage(40<<10)), "\r\n", "\n")),
		[]byte(mixed(textPart, "Content-Type: text/plain\n\nline\n\n\nafter blank lines\r\nx--y\n-\n-\n--b1x\n"+strings.Repeat("z", 40<<10)+"\n"+binary(20<<10))),
		[]byte(mixed("Content-Type: text/plain\n\n" + strings.Repeat("a\r\n\r\n", 5000) + strings.Repeat("b\n", 20000))),
		paragraphs(),
	}
	for _, m := range msgs[:] {
		msgs = append(msgs, bytes.ReplaceAll(m, []byte("\r\n"), []byte("\n")))
	}
	files, _ := filepath.Glob("testdata/fuzz/FuzzInspect/*")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		_, lit, ok := strings.Cut(string(data), "[]byte(")
		if !ok {
			t.Fatalf("%s: not a corpus file", f)
		}
		msg, err := strconv.Unquote(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(lit), ")")))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		msgs = append(msgs, []byte(msg))
	}
	for _, msg := range msgs {
		sameSkip(t, msg)
	}
}

// paragraphs is a message of many short paragraphs: runs of one line.
func paragraphs() []byte {
	return []byte(mixed("Content-Type: text/plain\n\n" + strings.Repeat("Dobrý den, toto je odstavec textu.\n\n", 30000)))
}

// BenchmarkInspectParagraphs: skipping must not cost more than reading
// line by line when each run is one line.
func BenchmarkInspectParagraphs(b *testing.B) {
	benchmark(b, paragraphs(), inspectOK)
}

// FuzzLowerNoCR: searching a line lower-cased without its CRs finds what
// containsFold finds.
func FuzzLowerNoCR(f *testing.F) {
	f.Add([]byte("Content-Type: Message/RFC822"), "message/")
	f.Add([]byte("messa\rge/rfc822"), "message/")
	f.Add([]byte("=\r?utf-8?q?x?="), "=?")
	f.Add([]byte("BOUNDARY\r\r"), "boundary")
	f.Fuzz(func(t *testing.T, line []byte, pattern string) {
		lower := strings.ToLower(strings.ReplaceAll(pattern, "\r", ""))
		if lower == "" {
			return
		}
		for _, c := range []byte(lower) {
			if c >= 0x80 {
				return // containsFold takes lower-case ASCII patterns
			}
		}
		if got, want := bytes.Contains(lowerNoCR(nil, line), []byte(lower)), containsFold(line, lower); got != want {
			t.Errorf("%q in %q: %v, containsFold %v", lower, line, got, want)
		}
	})
}
