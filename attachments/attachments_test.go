package attachments

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"math/rand"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jhillyerd/enmime/v2"
)

// crlf turns the "\n" of a message written in a test into "\r\n", as on the
// wire.
func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// binary returns n pseudo-random bytes as base64 lines of 76 characters.
func binary(n int) string {
	b := make([]byte, n)
	rand.New(rand.NewSource(int64(n))).Read(b)
	enc := base64.StdEncoding.EncodeToString(b)
	var s strings.Builder
	for len(enc) > 76 {
		s.WriteString(enc[:76] + "\n")
		enc = enc[76:]
	}
	s.WriteString(enc + "\n")
	return s.String()
}

const header = "From: jan@example.cz\nTo: petr@example.org\nSubject: faktura\nMessage-ID: <1@example.cz>\nMIME-Version: 1.0\n"

const textPart = "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nDobrý den,\nv příloze posílám fakturu.\n-- \nJan\n"

// mixed returns a multipart/mixed message of parts, each a header block,
// a blank line and a body.
func mixed(parts ...string) string {
	return crlf(header + "Content-Type: multipart/mixed; boundary=\"b1\"\n\n" + multipart("b1", parts...))
}

// multipart returns the body of a multipart: parts between delimiters.
func multipart(boundary string, parts ...string) string {
	var b strings.Builder
	b.WriteString("This is a multi-part message in MIME format.\n")
	for _, p := range parts {
		b.WriteString("--" + boundary + "\n" + p)
	}
	b.WriteString("--" + boundary + "--\n")
	return b.String()
}

// file returns an attachment part with the given Content-Disposition (none
// if empty) and Content-Type.
func file(disposition, ctype string) string {
	s := "Content-Type: " + ctype + "\n"
	if disposition != "" {
		s += "Content-Disposition: " + disposition + "\n"
	}
	return s + "Content-Transfer-Encoding: base64\n\n" + binary(3000)
}

func attached(name string) string {
	return file(`attachment; filename="`+name+`"`, "application/octet-stream")
}

var inspector = func() *Inspector {
	in, err := NewInspector(DefaultExtensions)
	if err != nil {
		panic(err)
	}
	return in
}()

// inspect runs Inspect and checks that the skeleton left enmime's reading of
// the message as it was.
func inspect(t *testing.T, msg string) Result {
	t.Helper()
	res, err := inspector.Inspect(strings.NewReader(msg))
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	sameParse(t, []byte(msg))
	return res
}

func TestInspect(t *testing.T) {
	check := func(name, msg string, want ...Finding) {
		t.Helper()
		res := inspect(t, msg)
		if !slices.Equal(res.Banned, want) {
			t.Errorf("%s: banned %+v, want %+v\nnames %q\nproblems %q", name, res.Banned, want, res.Names, res.Problems)
		}
	}
	exe := func(name, path string) Finding { return Finding{Name: name, Extension: "exe", Path: path} }

	for _, ext := range DefaultExtensions {
		check(ext, mixed(textPart, attached("soubor."+ext)), Finding{"soubor." + ext, ext, "2"})
	}
	check("upper case", mixed(textPart, attached("A.EXE")), exe("A.EXE", "2"))
	check("trailing dot", mixed(textPart, attached("a.exe.")), exe("a.exe.", "2"))
	check("trailing spaces", mixed(textPart, attached("a.exe  ")), exe("a.exe  ", "2"))
	check("last extension", mixed(textPart, attached("a.pdf.exe")), exe("a.pdf.exe", "2"))
	check("not the last extension", mixed(textPart, attached("a.exe.pdf")))
	check("zip is the remedy", mixed(textPart, attached("a.zip")))
	check("no attachment", crlf(header+textPart))
	check("text only, multipart", mixed(textPart))

	check("RFC 2231", mixed(textPart, file(`attachment; filename*=UTF-8''%C3%BA%C4%8Det.exe`, "application/octet-stream")),
		exe("účet.exe", "2"))
	check("RFC 2231 in iso-8859-2, which Go drops", mixed(textPart, file(`attachment; filename*=iso-8859-2''%FA%E8et.exe`, `application/pdf; name="ucet.pdf"`)),
		exe("účet.exe", "2"))
	check("RFC 2231 continuations", mixed(textPart, file("attachment;\n filename*0=\"a\";\n filename*1=\".exe\"", "application/octet-stream")),
		exe("a.exe", "2"))
	check("RFC 2231 continuations with charset", mixed(textPart, file("attachment;\n filename*0*=UTF-8''%C3%BA%C4%8Det;\n filename*1=\".exe\"", "application/octet-stream")),
		exe("účet.exe", "2"))
	check("RFC 2047", mixed(textPart, file("", `application/octet-stream; name="=?UTF-8?B?w7rEjWV0LmV4ZQ==?="`)),
		exe("účet.exe", "2"))
	check("RFC 2047 in filename, folded", mixed(textPart, file("attachment;\n filename=\"=?UTF-8?Q?=C3=BA=C4=8Det?=\n =?UTF-8?Q?.exe?=\"", "application/octet-stream")),
		exe("účet.exe", "2"))
	check("name only in Content-Type", mixed(textPart, file("", `application/x-msdownload; name="setup.exe"`)),
		exe("setup.exe", "2"))
	check("inline with a name", mixed(textPart, file(`inline; filename="run.bat"`, "application/octet-stream")),
		Finding{"run.bat", "bat", "2"})
	check("filename and name differ", mixed(textPart, file(`attachment; filename="faktura.pdf"`, `application/pdf; name="faktura.exe"`)),
		exe("faktura.exe", "2"))
	check("no Content-Type, which enmime reads no further", mixed(textPart, "Content-Disposition: attachment; filename=\"a.exe\"\nContent-Transfer-Encoding: base64\n\n"+binary(300)),
		exe("a.exe", "2"))
	check("parameter hidden in a value", mixed(textPart, file(`attachment; x="filename="; filename="a.exe"`, "application/octet-stream")),
		exe("a.exe", "2"))
	check("whole parameter in RFC 2047", mixed(textPart, file("", `application/octet-stream; =?UTF-8?B?bmFtZT0iZXZpbC5leGUi?=`)),
		exe("evil.exe", "2"))
	check("two Content-Type fields", mixed(textPart, "Content-Type: application/pdf; name=\"a.pdf\"\nContent-Type: application/octet-stream; name=\"a.exe\"\n\n"+binary(300)),
		exe("a.exe", "2"))
	check("single part", crlf(header+file(`attachment; filename="a.exe"`, "application/octet-stream")),
		exe("a.exe", "1"))
	check("LF line ends", strings.ReplaceAll(mixed(textPart, attached("a.exe")), "\r\n", "\n"),
		exe("a.exe", "2"))

	nested := crlf(header + "Content-Type: multipart/mixed; boundary=\"b1\"\n\n" + multipart("b1",
		"Content-Type: multipart/related; boundary=\"b2\"\n\n"+multipart("b2",
			"Content-Type: multipart/alternative; boundary=\"b3\"\n\n"+multipart("b3",
				textPart,
				"Content-Type: text/html; charset=utf-8\n\n<p>Dobrý den</p>\n",
				attached("deep.vbs"),
			),
			file(`inline; filename="logo.png"`, "image/png"),
		),
		attached("faktura.pdf"),
	))
	check("nested multipart, 3 levels", nested, Finding{"deep.vbs", "vbs", "1.1.3"})

	inner := header + "Content-Type: multipart/mixed; boundary=\"i1\"\n\n" + multipart("i1", textPart, attached("bad.js"))
	check("attached message", mixed(textPart, "Content-Type: message/rfc822\nContent-Disposition: attachment; filename=\"fwd.eml\"\n\n"+inner),
		Finding{"bad.js", "js", "2/attached message/2"})
	check("attached message in base64", mixed(textPart, "Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"+base64Lines(crlf(inner))),
		Finding{"bad.js", "js", "2/attached message/2"})
	big := mixed(textPart, "Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"+base64Lines(crlf(inner)+strings.Repeat(textPart, maxRun/len(textPart))))
	check("attached message in base64, longer than a header block", big, Finding{"bad.js", "js", "2/attached message/2"})
	if res := inspect(t, big); len(res.Problems) > 0 {
		t.Errorf("attached message in base64: problems %q", res.Problems)
	}
	check("attached message in quoted-printable", mixed(textPart, "Content-Type: message/rfc822\nContent-Transfer-Encoding: quoted-printable\n\n"+strings.ReplaceAll(inner, "bad.js", "b=61d.js")),
		Finding{"bad.js", "js", "2/attached message/2"})
	check("attached message, type with a CR in it", mixed(textPart, "Content-Type: messa\rge/rfc822\n\n"+inner),
		Finding{"bad.js", "js", "2/attached message/2"})
	check("attached message/global", mixed(textPart, "Content-Type: message/global\n\n"+inner),
		Finding{"bad.js", "js", "2/attached message/2"})
	check("digest", crlf(header+"Content-Type: multipart/digest; boundary=\"d\"\n\n"+multipart("d", "\n"+inner, "\n"+inner)),
		Finding{"bad.js", "js", "1/attached message/2"}, Finding{"bad.js", "js", "2/attached message/2"})
	check("attached single-part message", mixed(textPart, "Content-Type: message/rfc822\n\n"+header+file(`attachment; filename="a.exe"`, "application/octet-stream")),
		exe("a.exe", "2/attached message/1"))

	// Out of scope, on purpose: archives, winmail.dat and uuencode.
	check("archive", mixed(textPart, file(`attachment; filename="a.zip"`, "application/zip")))
	check("TNEF", mixed(textPart, file(`attachment; filename="winmail.dat"`, "application/ms-tnef")))
	check("uuencode", mixed("Content-Type: text/plain\n\nbegin 644 a.exe\nM35I0``(````$``\\`__\\``+@`````````0```\n`\nend\n"))
}

func base64Lines(s string) string {
	enc := base64.StdEncoding.EncodeToString([]byte(s))
	var b strings.Builder
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\n")
		enc = enc[76:]
	}
	return b.String() + enc + "\n"
}

func TestInspectDeepMessages(t *testing.T) {
	msg := header + file(`attachment; filename="a.exe"`, "application/octet-stream")
	for range maxDepth + 2 {
		msg = header + "Content-Type: message/rfc822\n\n" + msg
	}
	res := inspect(t, crlf(msg))
	wantPath := strings.Repeat("1/attached message/", maxDepth+1) + "header block 2"
	if len(res.Banned) != 1 || res.Banned[0].Path != wantPath {
		t.Errorf("banned %+v\nproblems %q", res.Banned, res.Problems)
	}
}

func TestInspectMalformed(t *testing.T) {
	// logged: whether enmime or the inspector reports a problem; enmime
	// repairs some damage silently.
	check := func(name, msg string, logged bool, want ...string) {
		t.Helper()
		res := inspect(t, msg)
		var got []string
		for _, f := range res.Banned {
			got = append(got, f.Name)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: banned %q, want %q\nproblems %q", name, got, want, res.Problems)
		}
		if (len(res.Problems) > 0) != logged {
			t.Errorf("%s: problems %q, want some: %v", name, res.Problems, logged)
		}
	}
	good := mixed(textPart, attached("a.exe"))

	check("missing closing boundary", strings.TrimSuffix(good, "--b1--\r\n"), true, "a.exe")
	check("truncated in the attachment", good[:len(good)/2], true, "a.exe")
	check("boundary never used", strings.Replace(good, `boundary="b1"`, `boundary="zz"`, 1), true, "a.exe")
	check("no boundary parameter", strings.Replace(good, `; boundary="b1"`, "", 1), true, "a.exe")
	check("boundary with a space", strings.Replace(good, `boundary="b1"`, `boundary="b1 x"`, 1), true, "a.exe")
	check("boundary longer than enmime's buffer", strings.ReplaceAll(good, "b1", strings.Repeat("b", 5000)), true, "a.exe")
	check("garbage headers", strings.Replace(good, "Subject: faktura\r\n", "Subject: faktura\r\n\x00\x01\xff: x\r\n: colon first\r\nno colon at all\r\n", 1), true, "a.exe")
	check("garbage part header", strings.Replace(good, "Content-Type: application/octet-stream\r\n", "Content-Type: application/octet-stream\r\n\xff\xfe bad: \x00\r\n", 1), true, "a.exe")
	check("bad Content-Type", strings.Replace(good, "Content-Type: application/octet-stream\r\n", "Content-Type: /;;;==\"\r\n", 1), false, "a.exe")
	check("bad root Content-Type", strings.Replace(good, "Content-Type: multipart/mixed;", "Content-Type: multipart/mixed/x/\"\";;", 1), false, "a.exe")
	check("part header starting with a blank continuation, which enmime skips", strings.Replace(good, "--b1\r\nContent-Type: application", "--b1\r\n \r\nContent-Type: application", 1), true, "a.exe")
	check("skipped part with Content-Disposition only", mixed(textPart, " \nContent-Disposition: attachment; filename=\"a.exe\"\n\nMZ\n"), true, "a.exe")
	check("ends in a header block of a part enmime skips", strings.TrimSuffix(mixed(textPart), "--b1--\r\n")+"--b1\r\n \r\nContent-Disposition: attachment; filename=\"a.exe\"\r\n", true, "a.exe")
	check("name in the epilogue, which no client shows", mixed(textPart)+"\r\n--zz\r\nContent-Disposition: attachment; filename=\"a.exe\"\r\n", false)
	check("inner boundary not closed", mixed(textPart, "Content-Type: multipart/mixed; boundary=\"b2\"\n\n--b2\n"+textPart, attached("a.exe")), true, "a.exe")
	check("garbage", "\x00\x01\x02--\r\n\r\n\xff", true, []string(nil)...)
}

func TestInspectNoPanic(t *testing.T) {
	for _, msg := range []string{"", "\r\n", "--", ":", "Content-Type: multipart/mixed; boundary=x\r\n\r\n--x", "Content-Type: message/rfc822\r\n\r\n"} {
		if _, err := inspector.Inspect(strings.NewReader(msg)); err != nil {
			t.Errorf("Inspect(%q): %v", msg, err)
		}
	}
}

func TestInspectLimits(t *testing.T) {
	check := func(name, msg string, wantBanned bool) {
		t.Helper()
		res, err := inspector.Inspect(strings.NewReader(msg))
		if err != nil {
			t.Fatal(err)
		}
		if got := len(res.Banned) > 0; got != wantBanned {
			t.Errorf("%s: banned %v, want %v; problems %q", name, res.Banned, wantBanned, res.Problems)
		}
	}
	var deep strings.Builder
	deep.WriteString("Content-Type: multipart/mixed; boundary=0\r\n\r\n")
	for i := 1; i <= 3*maxNesting; i++ {
		deep.WriteString("--" + strconv.Itoa(i-1) + "\r\nContent-Type: multipart/mixed; boundary=" + strconv.Itoa(i) + "\r\n\r\n")
	}
	deep.WriteString("--" + strconv.Itoa(3*maxNesting) + "\r\nContent-Type: application/octet-stream; name=a.exe\r\n\r\nMZ\r\n")
	// 30 nested multiparts never closed take enmime alone hours.
	check("nested too deep", deep.String(), true)

	many := make([]string, 2*maxDelimiterLines)
	for i := range many {
		many[i] = "Content-Type: text/plain\n\nx\n"
	}
	check("too many parts", mixed(append(many, file("", `application/x-msdownload; name="a.exe"`))...), true)
	check("many parts, none banned", mixed(many...), false)
}

// TestSkeletonBounds checks what the skeleton keeps of adversarial
// messages as enmime reads them: never more open multiparts than the bound,
// however many the message opens.
func TestSkeletonBounds(t *testing.T) {
	check := func(name, msg string, wantCut bool) {
		t.Helper()
		s := newSkeleton(strings.NewReader(msg), inspector.banned)
		defer s.release()
		most := 0
		for buf := make([]byte, 512); ; {
			_, err := s.Read(buf)
			most = max(most, len(s.open))
			if err != nil {
				break
			}
		}
		if err := s.drain(); err != nil {
			t.Fatal(err)
		}
		most = max(most, len(s.open))
		if most > maxNesting+1 || (s.cut != "") != wantCut {
			t.Errorf("%s: %d multiparts open at most, cut %q", name, most, s.cut)
		}
	}
	// Nests that an outer delimiter keeps closing, and opening again.
	var nests strings.Builder
	nests.WriteString("Content-Type: multipart/mixed; boundary=0\r\n\r\n")
	for i := 1; i < 20000; i++ {
		nests.WriteString("--" + strconv.Itoa(i%12) + "\r\nContent-Type: multipart/mixed; boundary=" + strconv.Itoa((i+1)%12) + "\r\n\r\n")
	}
	check("collapsing nests", nests.String(), true)
	check("well-formed", mixed(textPart, attached("a.pdf")), false)
	czech := []string{textPart}
	for range 3 * maxNesting {
		czech = append(czech, file("", `application/pdf; name="=?UTF-8?B?w7rEjWV0LnBkZg==?="`))
	}
	check("attachments with RFC 2047 names", mixed(czech...), false)
	check("closed nests", crlf(header+"Content-Type: multipart/mixed; boundary=\"b1\"\n\n"+strings.Repeat(multipart("b1", "Content-Type: multipart/mixed; boundary=\"b2\"\n\n"+multipart("b2", textPart)), 50)), false)
}

func TestInspectConcurrent(t *testing.T) {
	msgs := []string{mixed(textPart, attached("a.exe")), mixed(textPart, attached("a.pdf")), mixed(textPart, file("", `application/octet-stream; name="=?UTF-8?B?w7rEjWV0LmV4ZQ==?="`))}
	want := []int{1, 0, 1}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				k := (g + i) % len(msgs)
				res, err := inspector.Inspect(strings.NewReader(msgs[k]))
				if err != nil || len(res.Banned) != want[k] {
					t.Errorf("message %d: %+v, %v", k, res, err)
				}
			}
		})
	}
	wg.Wait()
}

type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func TestInspectReadError(t *testing.T) {
	broken := errors.New("connection reset")
	msg := mixed(textPart, attached("a.pdf"))
	for _, n := range []int{0, 10, len(msg) / 2, len(msg)} {
		_, err := inspector.Inspect(&failingReader{r: strings.NewReader(msg[:n]), err: broken})
		if !errors.Is(err, broken) {
			t.Errorf("after %d bytes: error %v, want %v", n, err, broken)
		}
	}
}

func TestNewInspector(t *testing.T) {
	check := func(extensions []string, wantErr string) {
		t.Helper()
		in, err := NewInspector(extensions)
		switch {
		case wantErr == "" && err != nil:
			t.Errorf("NewInspector(%q): %v", extensions, err)
		case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
			t.Errorf("NewInspector(%q): error %v, want %q", extensions, err, wantErr)
		case wantErr == "" && in == nil:
			t.Errorf("NewInspector(%q): nil", extensions)
		}
	}
	check(DefaultExtensions, "")
	check([]string{"EXE", "exe", "7z"}, "")
	check(nil, "no banned extensions")
	check([]string{}, "no banned extensions")
	check([]string{"exe", ""}, "empty extension")
	check([]string{".exe"}, `write it without dot, as in "exe"`)
	check([]string{"tar.gz"}, "without dot")
	check([]string{"ex e"}, "only ASCII letters and digits")
	check([]string{"exé"}, "only ASCII letters and digits")

	in, err := NewInspector([]string{"PDF"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := in.Inspect(strings.NewReader(mixed(textPart, attached("a.exe"), attached("b.pdf"))))
	if err != nil {
		t.Fatal(err)
	}
	if want := []Finding{{"b.pdf", "pdf", "3"}}; !slices.Equal(res.Banned, want) {
		t.Errorf("banned %+v, want %+v", res.Banned, want)
	}
	if want := []string{"a.exe", "b.pdf"}; !slices.Equal(res.Names, want) {
		t.Errorf("names %q, want %q", res.Names, want)
	}
}

// sameParse checks the skeleton's promise: enmime makes of the skeleton
// the tree it makes of the whole message, with the same headers, file
// names and errors; and so on in every attached message, whose content is
// itself a skeleton.
func sameParse(t testing.TB, msg []byte) {
	t.Helper()
	sameParseOf(t, msg, msg, 0)
}

func sameParseOf(t testing.TB, skelInput, fullInput []byte, depth int) {
	t.Helper()
	s := newSkeleton(bytes.NewReader(skelInput), inspector.banned)
	skel, serr := parser.ReadParts(s)
	s.release()
	if s.cut != "" || depth > maxDepth {
		return
	}
	full, ferr := parser.ReadParts(bytes.NewReader(fullInput))
	if (serr == nil) != (ferr == nil) {
		t.Fatalf("error from the skeleton %v, from the message %v", serr, ferr)
	}
	if serr != nil {
		return
	}
	var walk func(a, b *enmime.Part, parentType string)
	walk = func(a, b *enmime.Part, parentType string) {
		for a != nil && b != nil {
			if a.PartID != b.PartID || a.ContentType != b.ContentType || a.FileName != b.FileName ||
				a.Boundary != b.Boundary || a.Disposition != b.Disposition || !equalHeaders(a, b) || !equalErrors(a, b) {
				t.Fatalf("part %s: skeleton %+v\nmessage %+v", b.PartID, a, b)
			}
			if a.FirstChild == nil && (b.ContentType == "message/rfc822" || b.ContentType == "message/global" ||
				b.ContentType == "" && parentType == "multipart/digest") {
				skel, _ := io.ReadAll(transferDecoded(a))
				full, _ := io.ReadAll(transferDecoded(b))
				sameParseOf(t, skel, full, depth+1)
			}
			walk(a.FirstChild, b.FirstChild, b.ContentType)
			a, b = a.NextSibling, b.NextSibling
		}
		if a != nil || b != nil {
			t.Fatalf("different trees: skeleton %v, message %v", a, b)
		}
	}
	walk(skel, full, "")
}

func equalHeaders(a, b *enmime.Part) bool {
	if len(a.Header) != len(b.Header) {
		return false
	}
	for k, v := range b.Header {
		if !slices.Equal(a.Header[k], v) {
			return false
		}
	}
	return true
}

// equalErrors compares the errors of two parts in any order: enmime lists
// the malformed parameters of a header in map order. Its warning about a
// boundary not closed is left out: enmime gives it when end of input comes
// a few bytes after a newline, which depends on the lines the skeleton
// drops (the inspector asks the skeleton instead, see skeleton.unclosed).
func equalErrors(a, b *enmime.Part) bool {
	texts := func(p *enmime.Part) []string {
		var s []string
		for _, e := range p.Errors {
			if e.Name != enmime.ErrorMissingBoundary {
				s = append(s, e.Error())
			}
		}
		slices.Sort(s)
		return s
	}
	if len(a.Errors) == maxPartErrors || len(b.Errors) == maxPartErrors {
		// Which errors enmime kept depends on that map order too.
		return len(a.Errors) == len(b.Errors)
	}
	return slices.Equal(texts(a), texts(b))
}
