package attachments

import (
	"io"
	"mime"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/text/encoding/htmlindex"
)

// fileNames returns the file names that one Content-Type or
// Content-Disposition field value carries in its name and filename
// parameters, decoded. It reads what enmime (through Go's
// mime.ParseMediaType) drops or reads otherwise:
//
//   - both parameters, where enmime keeps one (a mail client may show the
//     other);
//   - RFC 2231 values in any charset (Go decodes UTF-8 and US-ASCII only and
//     drops the parameter otherwise), with continuations (filename*0*=,
//     filename*1=), invalid %-escapes kept as they are;
//   - RFC 2047 encoded words in a value, as mail clients write them inside
//     quotes although RFC 2047 section 5 forbids it;
//   - a parameter whose whole "name=value" is one encoded word, which enmime
//     decodes too;
//   - values after a missing ";", and quoted values followed by more text,
//     read to the next ";".
//
// It never fails: what it cannot decode it returns as it stands.
func fileNames(v string) []string {
	return scanParams(v, true)
}

type section struct {
	n        int
	extended bool // RFC 2231 "*" after the section number: %-encoded
	value    string
}

type nameParam struct {
	plain    []string  // name=, filename=
	extended []string  // name*=, filename*=
	sections []section // name*0=, name*1*=, ...
}

func scanParams(v string, decodeWords bool) []string {
	var params [2]nameParam // filename, name
	var names []string
	for i := 0; i < len(v); {
		c := v[i]
		if c == ';' || c == ' ' || c == '\t' || c == '\r' || c == '\n' {
			i++
			continue
		}
		if decodeWords && strings.HasPrefix(v[i:], "=?") {
			// RFC 2047 encoded "name=value": decode it and read it again.
			end := valueEnd(v, i)
			if d := decodeWordsIn(v[i:end]); d != v[i:end] {
				names = append(names, scanParams(d, false)...)
			}
			i = end
			continue
		}
		if c == '"' {
			i = quotedEnd(v, i)
			continue
		}
		start := i
		for i < len(v) && !strings.ContainsRune("=;\" \t\r\n", rune(v[i])) {
			i++
		}
		key := strings.ToLower(v[start:i])
		for i < len(v) && (v[i] == ' ' || v[i] == '\t') {
			i++
		}
		if i >= len(v) || v[i] != '=' {
			continue
		}
		i++
		for i < len(v) && (v[i] == ' ' || v[i] == '\t') {
			i++
		}
		end := valueEnd(v, i)
		value := unquote(v[i:end])
		i = end
		base, rest, star := strings.Cut(key, "*")
		var p *nameParam
		switch base {
		case "filename":
			p = &params[0]
		case "name":
			p = &params[1]
		default:
			continue
		}
		switch {
		case !star:
			p.plain = append(p.plain, value)
		case rest == "":
			p.extended = append(p.extended, value)
		default:
			digits, ext := strings.CutSuffix(rest, "*")
			n, err := strconv.Atoi(digits)
			if err != nil || n < 0 {
				continue
			}
			p.sections = append(p.sections, section{n: n, extended: ext, value: value})
		}
	}
	add := func(n string) {
		if n != "" {
			names = append(names, n)
		}
		// A C string ends at NUL: "a.exe%00.pdf" may be saved as a.exe.
		if i := strings.IndexByte(n, 0); i > 0 {
			names = append(names, n[:i])
		}
	}
	for _, p := range params {
		for _, s := range p.plain {
			add(decodeWordsIn(s))
		}
		for _, s := range p.extended {
			add(decode2231(s))
		}
		if len(p.sections) > 0 {
			add(joinSections(p.sections))
		}
	}
	return names
}

// valueEnd returns where the parameter value starting at i ends: at the
// next ";" outside quotes.
func valueEnd(v string, i int) int {
	for i < len(v) && v[i] != ';' {
		if v[i] == '"' {
			i = quotedEnd(v, i)
			continue
		}
		i++
	}
	return i
}

// quotedEnd returns the index after the quoted string that starts at i, or
// len(v) if it is not closed.
func quotedEnd(v string, i int) int {
	for i++; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(v)
}

// unquote removes the quotes and the backslash escapes of RFC 5322
// quoted strings from a value, wherever they are in it, and the spaces
// around it.
func unquote(s string) string {
	s = strings.TrimSpace(s)
	if !strings.ContainsAny(s, `"\`) {
		return s
	}
	var b strings.Builder
	quoted := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			quoted = !quoted
		case c == '\\' && quoted && i+1 < len(s):
			i++
			b.WriteByte(s[i])
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// decode2231 decodes an RFC 2231 extended value: charset'language'%-encoded.
func decode2231(s string) string {
	charset, rest, ok := strings.Cut(s, "'")
	if !ok {
		return percentDecode(s)
	}
	if _, value, ok := strings.Cut(rest, "'"); ok {
		rest = value
	}
	return fromCharset(charset, percentDecode(rest))
}

// joinSections joins RFC 2231 continuations in the order of their numbers;
// the charset of section 0 applies to every %-encoded section. Missing
// numbers are skipped rather than ending the value, and repeated ones are
// all kept: a damaged value still shows its last extension.
func joinSections(sections []section) string {
	sort.SliceStable(sections, func(i, j int) bool { return sections[i].n < sections[j].n })
	charset := ""
	var b strings.Builder
	for i, s := range sections {
		value := s.value
		if s.extended {
			if i == 0 && s.n == 0 {
				if cs, rest, ok := strings.Cut(value, "'"); ok {
					charset = cs
					if _, v, ok := strings.Cut(rest, "'"); ok {
						rest = v
					}
					value = rest
				}
			}
			value = percentDecode(value)
		}
		b.WriteString(value)
	}
	return decodeWordsIn(fromCharset(charset, b.String()))
}

func percentDecode(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	return string(b)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}

// fromCharset converts s from the named charset to UTF-8. Charsets are
// looked up by their WHATWG labels, which cover the MIME names in use
// (iso-8859-2, windows-1250, koi8-r, shift_jis, ...). An unknown charset
// leaves the bytes as they are: the extension of an ASCII-compatible name
// still reads right.
func fromCharset(charset, s string) string {
	switch strings.ToLower(charset) {
	case "", "us-ascii", "utf-8", "utf8":
		return s
	}
	e, err := htmlindex.Get(charset)
	if err != nil {
		return s
	}
	d, err := e.NewDecoder().String(s)
	if err != nil {
		return s
	}
	return d
}

// wordDecoder decodes RFC 2047 encoded words; like fromCharset, it takes
// the bytes of an unknown charset as they are.
var wordDecoder = mime.WordDecoder{
	CharsetReader: func(charset string, r io.Reader) (io.Reader, error) {
		e, err := htmlindex.Get(charset)
		if err != nil {
			return r, nil
		}
		return e.NewDecoder().Reader(r), nil
	},
}

// decodeWordsIn decodes the RFC 2047 encoded words in s; if one cannot be
// decoded, s is returned as it stands.
func decodeWordsIn(s string) string {
	if !strings.Contains(s, "=?") {
		return s
	}
	d, err := wordDecoder.DecodeHeader(s)
	if err != nil {
		return s
	}
	return d
}
