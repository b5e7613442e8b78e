// Package reply holds the SMTP replies that relayguard gives customers.
//
// A reply is configuration: "550 5.1.0 {id} invalid domain" is a basic status
// code (RFC 5321 §4.2), an enhanced status code (RFC 3463) whose class agrees
// with it, and a public text with {placeholders} filled per decision. The
// public text is the documented customer-facing line; details belong in the
// log line that carries the same {id}.
package reply

import (
	"fmt"
	"strconv"
	"strings"
)

// Template is a parsed reply.
type Template struct {
	Code     int    // 421, 450, 550, ...
	Enhanced string // "5.1.0"
	parts    []part // the text after the enhanced code
	src      string
}

type part struct {
	lit string
	v   string // placeholder name, when lit is ""
}

// Parse parses "NNN X.Y.Z text", where the text may hold {name} placeholders.
func Parse(s string) (Template, error) {
	t := Template{src: s}
	if strings.ContainsAny(s, "\r\n") {
		return t, fmt.Errorf("reply %q: must be one line", s)
	}
	code, rest, ok := strings.Cut(s, " ")
	n, err := strconv.Atoi(code)
	if !ok || err != nil || len(code) != 3 || n < 400 || n > 599 {
		return t, fmt.Errorf("reply %q: must start with a 4xx or 5xx code, a space, an enhanced status code and a text", s)
	}
	enh, text, ok := strings.Cut(rest, " ")
	if !ok || !validEnhanced(enh) {
		return t, fmt.Errorf("reply %q: %q is not an enhanced status code such as 5.1.0 (RFC 3463)", s, enh)
	}
	if enh[0] != code[0] {
		return t, fmt.Errorf("reply %q: code %s is %s but enhanced code %s is not", s, code, class(code[0]), enh)
	}
	if strings.TrimSpace(text) == "" {
		return t, fmt.Errorf("reply %q: the text is empty", s)
	}
	t.Code, t.Enhanced = n, enh
	for text != "" {
		i := strings.IndexByte(text, '{')
		if i < 0 {
			t.parts = append(t.parts, part{lit: text})
			break
		}
		j := strings.IndexByte(text[i:], '}')
		if j < 0 {
			return t, fmt.Errorf("reply %q: unclosed {", s)
		}
		if i > 0 {
			t.parts = append(t.parts, part{lit: text[:i]})
		}
		name := text[i+1 : i+j]
		if name == "" {
			return t, fmt.Errorf("reply %q: empty {} placeholder", s)
		}
		t.parts = append(t.parts, part{v: name})
		text = text[i+j+1:]
	}
	return t, nil
}

// MustParse is Parse for the built-in defaults, which tests prove valid.
func MustParse(s string) Template {
	t, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return t
}

func class(c byte) string {
	if c == '4' {
		return "temporary (4xx)"
	}
	return "permanent (5xx)"
}

func validEnhanced(s string) bool {
	f := strings.Split(s, ".")
	if len(f) != 3 || (f[0] != "4" && f[0] != "5") {
		return false
	}
	for _, x := range f[1:] {
		if n, err := strconv.Atoi(x); err != nil || n < 0 || n > 999 || len(x) > 3 {
			return false
		}
	}
	return true
}

// UnmarshalText lets a Template be a configuration value.
func (t *Template) UnmarshalText(b []byte) error {
	p, err := Parse(string(b))
	if err != nil {
		return err
	}
	*t = p
	return nil
}

// String is the template as written.
func (t Template) String() string { return t.src }

// IsZero reports whether the template was never set.
func (t Template) IsZero() bool { return t.Code == 0 }

// Temporary reports whether the reply asks the client to retry (4xx).
func (t Template) Temporary() bool { return t.Code < 500 }

// Placeholders lists the {names} the template uses.
func (t Template) Placeholders() []string {
	var names []string
	for _, p := range t.parts {
		if p.lit == "" {
			names = append(names, p.v)
		}
	}
	return names
}

// Check reports a placeholder that is not among allowed.
func (t Template) Check(allowed ...string) error {
	for _, name := range t.Placeholders() {
		ok := false
		for _, a := range allowed {
			ok = ok || a == name
		}
		if !ok {
			return fmt.Errorf("reply %q: unknown placeholder {%s}; this reply knows {%s}", t.src, name, strings.Join(allowed, "}, {"))
		}
	}
	return nil
}

// Render fills the placeholders with vars (name, value, name, value, ...) and
// returns the whole reply line. Values are made single-line first, so nothing
// a client sends can split the reply.
func (t Template) Render(vars ...string) string {
	return strconv.Itoa(t.Code) + " " + t.Enhanced + " " + t.Text(vars...)
}

// Text is Render without the codes: the text alone, for a channel that adds
// its own (Dovecot's auth policy message).
func (t Template) Text(vars ...string) string {
	var b strings.Builder
	for _, p := range t.parts {
		if p.lit != "" {
			b.WriteString(p.lit)
			continue
		}
		for i := 0; i+1 < len(vars); i += 2 {
			if vars[i] == p.v {
				b.WriteString(oneLine(vars[i+1]))
				break
			}
		}
	}
	return b.String()
}

func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n\x00") {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == 0 {
			return ' '
		}
		return r
	}, s)
}
