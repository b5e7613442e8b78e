// Package etcconf writes the configuration that the end-to-end suite and the
// benchmarks run relayguard with: the operator's file of etc/ with some lines
// replaced, so that they run the very file an operator installs.
package etcconf

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// Edit replaces the line Old of the table Table ("policyd",
// "contentfilter.rules.virus") with New.
type Edit struct{ Table, Old, New string }

// Replace is the Edit that replaces the line old of table with new.
func Replace(table, old, new string) Edit { return Edit{Table: table, Old: old, New: new} }

// Write writes the file src with the edits applied to dst. Each line must be
// found as it stands in its table, so that an edit cannot silently stop
// applying when etc/ changes.
func Write(src, dst string, edits []Edit) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	lines := strings.Split(string(data), "\n")
	for _, e := range edits {
		table, done := "", false
		for i, l := range lines {
			if strings.HasPrefix(l, "[") {
				table = strings.Trim(l, "[]")
				continue
			}
			if table == e.Table && l == e.Old {
				lines[i], done = e.New, true
				break
			}
		}
		if !done {
			return fmt.Errorf("%s: [%s] has no line %q", src, e.Table, e.Old)
		}
	}
	return os.WriteFile(dst, []byte(strings.Join(lines, "\n")), 0o644)
}

// FreeAddr returns a loopback address with a port that nothing listens on
// now, for a server this process starts.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
