// Package etcconf writes the configuration that the end-to-end suite and the
// benchmarks run relayguard with: the operator's file of etc/ with some lines
// replaced, so that they run the very file an operator installs; and reads
// the environment that etc/'s systemd units give the daemons.
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

// UnitEnvironment returns the variables that the systemd unit at path sets
// with Environment= lines, as KEY=VALUE, in order. Only the unquoted form
// (Environment=KEY=VALUE KEY2=VALUE2) is read; a quoted or escaped one is
// an error rather than a variable read wrong.
func UnitEnvironment(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var env []string
	for i, line := range strings.Split(string(data), "\n") {
		value, ok := strings.CutPrefix(strings.TrimSpace(line), "Environment=")
		if !ok {
			continue
		}
		if strings.ContainsAny(value, `"'\\`) {
			return nil, fmt.Errorf("%s:%d: quoted or escaped Environment= values are not read here", path, i+1)
		}
		for _, kv := range strings.Fields(value) {
			if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
				return nil, fmt.Errorf("%s:%d: %q is not KEY=VALUE", path, i+1, kv)
			}
			env = append(env, kv)
		}
	}
	return env, nil
}
