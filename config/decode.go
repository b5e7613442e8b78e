// Package config reads relayguard's TOML files: the daemon configuration and
// the domain directory.
//
// Decoding walks the TOML syntax tree itself, field by field, instead of
// handing the file to a generic unmarshaller, so that every problem in a file
// (an unknown key, a wrong type, a duplicate, an impossible value) is reported
// at once with its file:line, and the program refuses to start. Values that
// are absent keep the defaults the caller put in the struct.
package config

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2/unstable"
)

// Error is one problem in a file, at a line when one can be named.
type Error struct {
	File string
	Line int
	Msg  string
}

func (e Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Errors are all the problems found in one or more files, in file and line order.
type Errors []Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// doc remembers where each key of a file was defined, so that checks run
// after decoding can still name the line of the value they reject.
type doc struct {
	file   string
	lines  map[string]int // "rules.geoip.mode", "domain[2].aliases" -> line
	errs   Errors
	syntax bool // the file is not TOML: later checks would only add noise
}

// errorf records a problem with the value at path (a key path as in lines).
// When the key is absent from the file (a default is wrong, or a required key
// is missing), the nearest enclosing table that is present gives the line.
func (d *doc) errorf(path, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	d.errs = append(d.errs, Error{File: d.file, Line: d.line(path), Msg: msg})
}

func (d *doc) line(path string) int {
	for p := path; p != ""; {
		if l, ok := d.lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 0
}

func (d *doc) err() error {
	if len(d.errs) == 0 {
		return nil
	}
	sort.SliceStable(d.errs, func(i, j int) bool { return d.errs[i].Line < d.errs[j].Line })
	return d.errs
}

// decode fills v (a pointer to a struct with `toml` tags) from data.
func decode(file string, data []byte, v any) *doc {
	d := &doc{file: file, lines: map[string]int{}}
	var p unstable.Parser
	p.Reset(data)
	root := reflect.ValueOf(v).Elem()
	table, tablePath := root, ""
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			keys, line := keyParts(&p, e.Key())
			table, tablePath = d.header(root, keys, line, e.Kind == unstable.ArrayTable)
		case unstable.KeyValue:
			if !table.IsValid() {
				continue // inside a table already reported as unknown
			}
			keys, line := keyParts(&p, e.Key())
			d.keyValue(&p, table, tablePath, keys, e.Value(), line)
		}
	}
	if err := p.Error(); err != nil {
		var perr *unstable.ParserError
		line := 0
		if errors.As(err, &perr) {
			line = p.Shape(p.Range(perr.Highlight)).Start.Line
		}
		d.errs = append(d.errs, Error{File: file, Line: line, Msg: "TOML syntax: " + err.Error()})
		d.syntax = true
	}
	return d
}

func keyParts(p *unstable.Parser, it unstable.Iterator) ([]string, int) {
	var keys []string
	line := 0
	for it.Next() {
		n := it.Node()
		if line == 0 {
			line = p.Shape(n.Raw).Start.Line
		}
		keys = append(keys, string(n.Data))
	}
	return keys, line
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// field finds the struct field tagged key, looking into embedded structs.
func field(s reflect.Value, key string) (reflect.Value, bool) {
	t := s.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if sf.Anonymous && sf.Tag.Get("toml") == "" && sf.Type.Kind() == reflect.Struct {
			if f, ok := field(s.Field(i), key); ok {
				return f, true
			}
			continue
		}
		if name, _, _ := strings.Cut(sf.Tag.Get("toml"), ","); name == key {
			return s.Field(i), true
		}
	}
	return reflect.Value{}, false
}

// header handles [a.b] and [[a.b]], returning the table that the following
// keys fill. An invalid Value means the table is unknown (already reported).
func (d *doc) header(root reflect.Value, keys []string, line int, array bool) (reflect.Value, string) {
	cur, path := root, ""
	for i, k := range keys {
		last := i == len(keys)-1
		path = join(path, k)
		f, ok := field(cur, k)
		if !ok {
			d.errs = append(d.errs, Error{File: d.file, Line: line, Msg: fmt.Sprintf("unknown table [%s]", strings.Join(keys[:i+1], "."))})
			return reflect.Value{}, ""
		}
		switch {
		case last && array:
			if f.Kind() != reflect.Slice || f.Type().Elem().Kind() != reflect.Struct {
				d.errs = append(d.errs, Error{File: d.file, Line: line, Msg: fmt.Sprintf("%s: not a list of tables; write [%s]", path, path)})
				return reflect.Value{}, ""
			}
			f.Set(reflect.Append(f, reflect.New(f.Type().Elem()).Elem()))
			path = fmt.Sprintf("%s[%d]", path, f.Len()-1)
			d.lines[path] = line
			return f.Index(f.Len() - 1), path
		case f.Kind() == reflect.Struct:
			cur = f
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Struct && f.Len() > 0 && !last:
			path = fmt.Sprintf("%s[%d]", path, f.Len()-1)
			cur = f.Index(f.Len() - 1)
		default:
			d.errs = append(d.errs, Error{File: d.file, Line: line, Msg: fmt.Sprintf("%s: not a table", path)})
			return reflect.Value{}, ""
		}
	}
	if _, seen := d.lines[path]; seen {
		d.errs = append(d.errs, Error{File: d.file, Line: line, Msg: fmt.Sprintf("table [%s] defined twice", path)})
	}
	d.lines[path] = line
	return cur, path
}

func (d *doc) keyValue(p *unstable.Parser, table reflect.Value, tablePath string, keys []string, value *unstable.Node, line int) {
	cur, path := table, tablePath
	for i, k := range keys {
		path = join(path, k)
		f, ok := field(cur, k)
		if !ok {
			d.errs = append(d.errs, Error{File: d.file, Line: line, Msg: fmt.Sprintf("unknown key %s", path)})
			return
		}
		if i < len(keys)-1 {
			if f.Kind() != reflect.Struct {
				d.errs = append(d.errs, Error{File: d.file, Line: line, Msg: fmt.Sprintf("%s: not a table", path)})
				return
			}
			cur = f
			continue
		}
		if _, seen := d.lines[path]; seen {
			d.errs = append(d.errs, Error{File: d.file, Line: line, Msg: fmt.Sprintf("%s: defined twice", path)})
			return
		}
		d.lines[path] = line
		d.assign(p, f, path, value, line)
	}
}

var (
	durationType        = reflect.TypeOf(time.Duration(0))
	textUnmarshalerType = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
)

func kindName(k unstable.Kind) string {
	switch k {
	case unstable.String:
		return "a string"
	case unstable.Integer:
		return "an integer"
	case unstable.Float:
		return "a number"
	case unstable.Bool:
		return "a boolean"
	case unstable.Array:
		return "a list"
	case unstable.InlineTable:
		return "a table"
	default:
		return "a date or time"
	}
}

// assign stores the TOML value n into f, or records why it cannot.
func (d *doc) assign(p *unstable.Parser, f reflect.Value, path string, n *unstable.Node, line int) {
	mismatch := func(want string) {
		d.errs = append(d.errs, Error{File: d.file, Line: line, Msg: fmt.Sprintf("%s: expected %s, found %s", path, want, kindName(n.Kind))})
	}
	bad := func(err error) {
		d.errs = append(d.errs, Error{File: d.file, Line: line, Msg: fmt.Sprintf("%s: %v", path, err)})
	}
	switch {
	case f.Type() == durationType:
		if n.Kind != unstable.String {
			mismatch(`a duration such as "30s" or "1h"`)
			return
		}
		dur, err := time.ParseDuration(string(n.Data))
		if err != nil {
			bad(fmt.Errorf("%q is not a duration such as \"30s\" or \"1h\"", n.Data))
			return
		}
		f.SetInt(int64(dur))
	case reflect.PointerTo(f.Type()).Implements(textUnmarshalerType):
		if n.Kind != unstable.String {
			mismatch("a string")
			return
		}
		if err := f.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText(n.Data); err != nil {
			bad(err)
		}
	case f.Kind() == reflect.String:
		if n.Kind != unstable.String {
			mismatch("a string")
			return
		}
		f.SetString(string(n.Data))
	case f.Kind() == reflect.Bool:
		if n.Kind != unstable.Bool {
			mismatch("true or false")
			return
		}
		f.SetBool(string(n.Data) == "true")
	case f.Kind() == reflect.Int:
		if n.Kind != unstable.Integer {
			mismatch("an integer")
			return
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(string(n.Data), "_", ""), 0, 64)
		if err != nil || int64(int(i)) != i {
			bad(fmt.Errorf("integer %s out of range", n.Data))
			return
		}
		f.SetInt(i)
	case f.Kind() == reflect.Slice:
		if n.Kind != unstable.Array {
			mismatch("a list")
			return
		}
		s := reflect.MakeSlice(f.Type(), 0, 4)
		it := n.Children()
		for i := 0; it.Next(); i++ {
			e := reflect.New(f.Type().Elem()).Elem()
			d.assign(p, e, fmt.Sprintf("%s[%d]", path, i), it.Node(), line)
			s = reflect.Append(s, e)
		}
		f.Set(s)
	case f.Kind() == reflect.Struct:
		if n.Kind != unstable.InlineTable {
			mismatch("a table")
			return
		}
		it := n.Children()
		for it.Next() {
			kv := it.Node()
			keys, _ := keyParts(p, kv.Key())
			d.keyValue(p, f, path, keys, kv.Value(), line)
		}
	default:
		panic(fmt.Sprintf("config: no decoder for %s (%s)", path, f.Type()))
	}
}
