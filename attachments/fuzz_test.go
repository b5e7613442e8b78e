package attachments

import (
	"bytes"
	"testing"
)

// FuzzInspect feeds arbitrary bytes to Inspect: it must not panic nor fail
// (a bytes.Reader does not fail), and enmime must make of the skeleton
// the tree it makes of the whole input.
func FuzzInspect(f *testing.F) {
	f.Fuzz(func(t *testing.T, msg []byte) {
		if _, err := inspector.Inspect(bytes.NewReader(msg)); err != nil {
			t.Fatalf("Inspect: %v", err)
		}
		sameParse(t, msg)
	})
}
