// Package attachments implements rule R17: a message with an attachment
// whose file name has a banned extension is refused ("554 5.7.1 <id> Bad
// attachment"). The customer's remedy, documented on the help page, is to
// zip the file, so archives are not opened.
//
// Inspect parses the message with enmime (ReadParts: the MIME tree, not
// the Envelope) and walks every part at every depth: multiparts, and parts
// of type message/rfc822 or message/global, which are parsed as messages
// in turn (as are the parts of a multipart/digest without Content-Type,
// RFC 2046 section 5.1.5), up to 10 attached messages deep. A part's names
// are the filename parameter of Content-Disposition and the name parameter
// of Content-Type, RFC 2231 and RFC 2047 encodings decoded; both are
// checked, and so is a name on a part without Content-Disposition (an
// inline attachment): mail clients differ in which one they show. The last
// extension of each name decides (see Extension).
//
// Not in scope: archives (zip, rar, 7z), application/ms-tnef (winmail.dat,
// which wraps Outlook attachments), uuencoded files inside text bodies
// (begin 644 name) and message/partial fragments (logged as a problem).
// These are left to the virus scanner.
//
// A message that enmime cannot parse cleanly is still judged: enmime skips
// a malformed part and goes on (SkipMalformedParts); and when it reports
// the structure damaged (a severe error, a multipart without parts), when a
// multipart is left open, or when enmime gives up, every header block of
// the message is also scanned for names, wherever it is. Every problem
// goes to Result.Problems for the log.
//
// Speed and memory: enmime finds boundaries by reading every byte of every
// part one at a time, whatever its options, and that is where its time
// goes (ReadParts with the options below takes 60 % of the time of
// ReadEnvelope with its defaults on a 50 KB message with a PDF). So
// enmime parses a skeleton of the message (see skeleton): its header
// blocks and the lines that can delimit a part, not the body lines, which
// cannot change the parse. The message streams through a 32 KB buffer; no
// body is held, except the body of an attached message encoded in base64
// or quoted-printable (RFC 2046 forbids both; clients do it), which is held
// once and decoded once to be parsed. What enmime is given is bounded (see
// the limits in skeleton.go: enmime v2.3.0 also takes time exponential in
// the depth of unclosed nested multiparts); past a bound, the rest of the
// message is only scanned.
package attachments

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime/quotedprintable"
	"strconv"
	"strings"

	"github.com/jhillyerd/enmime/v2"
)

// DefaultExtensions are the extensions the help page lists as banned.
var DefaultExtensions = []string{"com", "exe", "pif", "bat", "scr", "cpl", "cmd", "dll", "lnk", "inf", "msi", "sct", "vbs", "vb", "vbe", "js", "wsf", "iso"}

// Limits on what a Result lists and how deep attached messages are parsed.
const (
	maxDepth    = 10
	maxNames    = 1000
	maxFindings = 100
	maxProblems = 100
	// maxPartErrors bounds the errors enmime keeps per part.
	maxPartErrors = 10
)

// parser is configured for the tree and the headers, not the content:
//   - RawContent: enmime does not decode base64 or quoted-printable, nor
//     convert text to UTF-8; the skeleton's bodies are incomplete anyway.
//     (With RawContent, charset detection and the HTML-to-text conversion
//     of ReadEnvelope do not run either; DisableCharacterDetection and
//     DisableTextConversion would change nothing.)
//   - SkipMalformedParts: a part enmime cannot read is skipped and logged,
//     and the rest of the message is still parsed.
//   - MaxStoredPartErrors: a crafted part cannot fill memory with errors.
var parser = enmime.NewParser(
	enmime.RawContent(true),
	enmime.SkipMalformedParts(true),
	enmime.MaxStoredPartErrors(maxPartErrors),
)

// An Inspector checks messages against a list of banned extensions. It is
// safe for concurrent use.
type Inspector struct {
	banned map[string]bool // lower-case extensions without dot
}

// NewInspector returns an Inspector that bans extensions: letters and
// digits, without dot, in any case; repeating one is harmless.
func NewInspector(extensions []string) (*Inspector, error) {
	if len(extensions) == 0 {
		return nil, errors.New("attachments: no banned extensions (to stop checking attachments, disable R17)")
	}
	banned := make(map[string]bool, len(extensions))
	for _, e := range extensions {
		switch {
		case e == "":
			return nil, errors.New("attachments: empty extension")
		case strings.Contains(e, "."):
			return nil, fmt.Errorf("attachments: extension %q: write it without dot, as in %q", e, strings.Trim(e, "."))
		}
		for _, c := range e {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
				return nil, fmt.Errorf("attachments: extension %q: only ASCII letters and digits are allowed, not %q", e, c)
			}
		}
		banned[strings.ToLower(e)] = true
	}
	return &Inspector{banned: banned}, nil
}

// A Finding is an attachment with a banned extension.
type Finding struct {
	Name      string // the decoded file name, as the customer named it
	Extension string // the deciding extension, normalised (see Extension)
	// Path locates the part, numbered as in IMAP (RFC 9051 section 6.4.5):
	// "1.2" is the second part of the first part; "2/attached message/1"
	// is the first part of the message attached as part 2; "0" is the
	// top-level multipart itself. "header block 7" is a name found by the
	// scan of a damaged message: the seventh header block from its start.
	Path string
}

// A Result is what Inspect found in one message.
type Result struct {
	Banned   []Finding
	Names    []string // every file name seen, for the log
	Problems []string // parse errors enmime reported, and the inspector's own, for the log
}

// Inspect reads a message and reports its attachments with a banned
// extension. Its error is a read error of r only, and then the message has
// not been judged in full: the caller must not pass it. A malformed message
// is not an error: it is judged on what could be parsed and scanned, and
// the damage is listed in Result.Problems.
func (in *Inspector) Inspect(r io.Reader) (Result, error) {
	w := &walker{in: in}
	err := w.message(r, "", 0)
	w.finish()
	return w.res, err
}

type walker struct {
	in                                    *Inspector
	res                                   Result
	lostNames, lostFindings, lostProblems int
}

// message parses one message, the top-level one or an attached one, whose
// parts are labelled with prefix.
func (w *walker) message(r io.Reader, prefix string, depth int) error {
	s := newSkeleton(r, w.in.banned)
	if depth > maxDepth {
		s.cutOff("attached messages nested more than %d deep are scanned, not parsed", maxDepth)
	}
	root, err := parser.ReadParts(s)
	derr := s.drain()
	s.release()
	if derr != nil {
		return derr
	}
	damaged := s.cut != ""
	if s.cut != "" {
		w.problem(prefix+"0", s.cut)
	} else if u := s.unclosed(); u != "" {
		// enmime's own warning about it depends on where the last
		// newline falls; the skeleton knows.
		w.problem(prefix+"0", u)
		damaged = true
	}
	if err != nil && s.cut == "" {
		w.problem(prefix+"0", "enmime: "+err.Error())
		damaged = true
	}
	seen := map[string]bool{}
	if root != nil {
		path := "1"
		if root.FirstChild != nil {
			path = ""
		}
		if w.part(root, prefix, path, "", depth, seen) {
			damaged = true
		}
	}
	if damaged {
		w.problem(prefix+"0", "MIME structure damaged: every header block scanned for file names")
		for _, f := range s.found {
			if !seen[f.name] {
				w.name(f.name)
				w.finding(Finding{Name: f.name, Extension: Extension(f.name), Path: prefix + "header block " + strconv.Itoa(f.block)})
			}
		}
	}
	return nil
}

// part checks one part and its children; it reports whether enmime found
// the structure damaged there.
func (w *walker) part(p *enmime.Part, prefix, path, parentType string, depth int, seen map[string]bool) (damaged bool) {
	label := prefix + path
	if path == "" {
		label = prefix + "0"
	}
	for _, e := range p.Errors {
		w.problem(label, e.Error())
		damaged = damaged || e.Severe
	}
	w.names(p, label, seen)
	i := 0
	for c := p.FirstChild; c != nil; c = c.NextSibling {
		i++
		child := strconv.Itoa(i)
		if path != "" {
			child = path + "." + child
		}
		if w.part(c, prefix, child, p.ContentType, depth, seen) {
			damaged = true
		}
	}
	if p.FirstChild != nil {
		return damaged
	}
	switch {
	case strings.HasPrefix(p.ContentType, "multipart/"):
		w.problem(label, "multipart without parts: its boundary "+strconv.Quote(p.Boundary)+" is never used")
		damaged = true
	case p.ContentType == "message/rfc822", p.ContentType == "message/global",
		p.ContentType == "" && parentType == "multipart/digest":
		// Reading p.Content does not fail.
		_ = w.message(transferDecoded(p), label+"/attached message/", depth+1)
		p.Content = nil
	case p.ContentType == "message/partial":
		w.problem(label, "message/partial: the fragments of a split message are not joined, names in them are not seen")
	}
	return damaged
}

// names checks the names of one part: enmime's choice and every name and
// filename parameter of its Content-Disposition and Content-Type fields.
func (w *walker) names(p *enmime.Part, label string, seen map[string]bool) {
	var names []string
	add := func(n string) {
		if n == "" {
			return
		}
		for _, m := range names {
			if m == n {
				return
			}
		}
		names = append(names, n)
	}
	add(p.FileName)
	for _, key := range []string{"Content-Disposition", "Content-Type"} {
		for _, v := range p.Header.Values(key) {
			for _, n := range fileNames(v) {
				add(n)
			}
		}
	}
	for _, n := range names {
		seen[n] = true
		w.name(n)
		if ext := Extension(n); w.in.banned[ext] {
			w.finding(Finding{Name: n, Extension: ext, Path: label})
		}
	}
}

// transferDecoded returns the body of an attached message without its
// Content-Transfer-Encoding, decoded as it is read. RFC 2046 section 5.2.1
// allows none for message/rfc822, but mail clients do encode it, and
// decode it. A damaged encoding is decoded as far as it goes.
func transferDecoded(p *enmime.Part) io.Reader {
	switch strings.ToLower(strings.TrimSpace(p.Header.Get("Content-Transfer-Encoding"))) {
	case "base64":
		return endAtError{base64.NewDecoder(base64.RawStdEncoding, &base64Text{p.Content})}
	case "quoted-printable":
		return endAtError{quotedprintable.NewReader(bytes.NewReader(p.Content))}
	}
	return bytes.NewReader(p.Content)
}

// base64Text reads the base64 alphabet out of a text, up to its first "=".
type base64Text struct{ b []byte }

func (t *base64Text) Read(p []byte) (int, error) {
	n := 0
	for len(t.b) > 0 && n < len(p) {
		c := t.b[0]
		if c == '=' {
			t.b = nil
			break
		}
		t.b = t.b[1:]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' {
			p[n] = c
			n++
		}
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// endAtError ends a decoded text where its decoding fails.
type endAtError struct{ r io.Reader }

func (e endAtError) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil {
		err = io.EOF
	}
	return n, err
}

func (w *walker) name(n string) {
	if len(w.res.Names) < maxNames {
		w.res.Names = append(w.res.Names, n)
	} else {
		w.lostNames++
	}
}

func (w *walker) finding(f Finding) {
	if len(w.res.Banned) < maxFindings {
		w.res.Banned = append(w.res.Banned, f)
	} else {
		w.lostFindings++
	}
}

func (w *walker) problem(label, text string) {
	if len(w.res.Problems) < maxProblems {
		w.res.Problems = append(w.res.Problems, label+": "+text)
	} else {
		w.lostProblems++
	}
}

func (w *walker) finish() {
	if w.lostFindings > 0 {
		w.res.Problems = append(w.res.Problems, fmt.Sprintf("%d more banned attachments not listed", w.lostFindings))
	}
	if w.lostNames > 0 {
		w.res.Problems = append(w.res.Problems, fmt.Sprintf("%d more file names not listed", w.lostNames))
	}
	if w.lostProblems > 0 {
		w.res.Problems = append(w.res.Problems, fmt.Sprintf("%d more problems not listed", w.lostProblems))
	}
}
