package attachments

import (
	"bytes"
	"testing"
)

// FuzzInspect feeds arbitrary bytes to Inspect: it must not panic nor fail
// (a bytes.Reader does not fail), enmime must make of the skeleton the tree
// it makes of the whole input, and the skeleton must be the same whether it
// skips body lines at once or one by one.
func FuzzInspect(f *testing.F) {
	f.Fuzz(func(t *testing.T, msg []byte) {
		if _, err := inspector.Inspect(bytes.NewReader(msg)); err != nil {
			t.Fatalf("Inspect: %v", err)
		}
		sameParse(t, msg)
		sameSkip(t, msg)
	})
}
