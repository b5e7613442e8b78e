package attachments

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/jhillyerd/enmime/v2"
	"github.com/jhillyerd/enmime/v2/mediatype"

	"relayguard/internal/bufpool"
)

// What a skeleton hands to enmime is bounded, so that a crafted message
// cannot make the parser use unbounded time or memory. Past a bound, enmime
// reads end of file and the rest of the message is only scanned.
const (
	// lineBuffer is the longest line a skeleton can drop; longer lines
	// (RFC 5322 allows 998 bytes) are handed to enmime whole.
	lineBuffer = 32 << 10
	// maxNesting bounds the multiparts open at once. enmime v2.3.0 takes
	// time exponential in the number of nested multiparts that are open
	// when their input ends (each level probes the one below it two or
	// three times): 20 open levels take a third of a second, 30 hang.
	maxNesting = 10
	// maxDelimiterLines bounds the lines containing "--": each can start a
	// part, and enmime appends a part to its siblings in time linear in
	// their number.
	maxDelimiterLines = 5000
	// maxWork bounds the bytes enmime reads, each counted once per open
	// multipart: enmime reads a part's bytes one at a time in every
	// enclosing multipart.
	maxWork = 256 << 20
	// maxRun bounds the header block read; a longer one is read up to
	// maxRun and counted as one more open multipart. (The body of an
	// attached message in base64 is read as a header block too.)
	maxRun = 256 << 10
)

var dashes = []byte("--")

// placeholder returns the line that stands for dropped lines, with the
// line end of the first.
func placeholder(line []byte) []byte {
	switch {
	case bytes.HasSuffix(line, []byte("\r\n")):
		return []byte(".\r\n")
	case bytes.HasSuffix(line, []byte("\n")):
		return []byte(".\n")
	}
	return []byte(".")
}

// scanned is a banned name that the header-block scan found.
type scanned struct {
	block int
	name  string
}

// open is a multipart that enmime may have open: its boundary, or none
// known, for a header block that could not be read like enmime reads it
// (such an entry is never closed, so that the count errs high).
type open struct {
	boundary string
	known    bool
}

// A skeleton is the reader enmime parses: the message without the lines
// that cannot change what enmime makes of it. It exists for speed: enmime
// finds boundaries by reading a part's bytes one at a time (86 % of its
// time on a 50 KB message with a PDF, with every decoding option turned
// off), and the rules need the MIME tree and the names, not the bodies.
//
// A skeleton keeps every line of a header block; every line containing
// "--", which is the only kind of line where enmime can see a delimiter
// (it looks for "--boundary" at the start of a line, one byte into it, and
// anywhere in a preamble line); blank lines; and lines longer than its
// buffer. It drops the other lines of bodies, preambles and epilogues,
// leaving a line "." for each run of them: enmime would only have stored
// them as content, which the inspector does not read (that is why the parser runs with RawContent: no decoding of
// the bodies that are left). The body of an attached message starts with
// a header block, so its content is the skeleton of the attached message,
// which the inspector parses in turn; but if an attached message is
// encoded in base64 or quoted-printable, its lines are not lines of the
// message, and from there on the skeleton keeps everything, as it does
// from the start of a multipart/digest on.
//
// It reads every header block itself as well, with enmime's header reader
// and media type parser: to know which multiparts are open (a boundary is
// opened by a Content-Type and closed by "--boundary--" at the start of a
// line), and to scan the block for file names, so that a message whose
// structure enmime reports damaged is still judged on every name in it.
type skeleton struct {
	src    *bufio.Reader
	banned map[string]bool
	out    []byte // what enmime has yet to read of the current line
	eof    bool
	err    error  // the first read error of src
	cut    string // why enmime got end of file early

	pos      int64  // bytes read from src
	nextDash finder // where the next "--" is (see skip)

	dropped   bool // the last line was dropped
	midLine   bool // inside a line longer than the buffer
	keepLine  bool
	lineBlank bool
	lineDash  bool
	prevDash  bool // the last chunk of the line ended with "-"

	header  bool          // in a header block
	run     []byte        // the header block so far
	hdr     *bufio.Reader // reads run
	runLong bool          // run holds the start of a longer header block
	runMsg  bool          // the header block mentions "message/"
	runEnc  bool          // ... "base64" or "quoted-printable"
	runCT   bool          // ... a Content-Type field
	runOpen bool          // ... what can open a multipart (see mayOpen)
	runName bool          // ... "Content-": it may name a file
	keepAll bool
	digest  bool

	open   []open
	delims int
	work   int64

	blocks int
	found  []scanned

	folded [512]byte // a header line, for mentions
}

// buffers holds the skeletons' line buffers between messages, and
// headerReaders the readers of their header blocks (see opensIn).
var (
	buffers       = bufpool.NewReaders(lineBuffer)
	headerReaders = bufpool.NewReaders(4096)
)

func newSkeleton(r io.Reader, banned map[string]bool) *skeleton {
	return &skeleton{src: buffers.Get(r), banned: banned, header: true, blocks: 1}
}

// release gives the line buffer back, once enmime is done: what it keeps,
// it copied.
func (s *skeleton) release() {
	s.out = nil
	buffers.Put(s.src)
	s.src = nil
	if s.hdr != nil {
		headerReaders.Put(s.hdr)
		s.hdr = nil
	}
}

func (s *skeleton) Read(p []byte) (int, error) {
	for len(s.out) == 0 {
		switch {
		case s.err != nil:
			return 0, s.err
		case s.eof || s.cut != "":
			return 0, io.EOF
		}
		s.step()
	}
	n := copy(p, s.out)
	s.out = s.out[n:]
	return n, nil
}

// drain reads the rest of the message, which enmime did not want, for the
// header-block scan; it returns the read error of the source, if any.
func (s *skeleton) drain() error {
	for s.out = nil; !s.eof && s.err == nil; s.out = nil {
		s.step()
	}
	return s.err
}

// cutOff gives enmime end of file from now on.
func (s *skeleton) cutOff(format string, args ...any) {
	if s.cut == "" {
		s.cut = fmt.Sprintf(format, args...)
	}
	s.out = nil
}

// step reads one line, or one buffer's worth of a longer line, or a run
// of body lines that enmime does not get (see skip).
func (s *skeleton) step() {
	if skipLines && !s.header && !s.keepAll && !s.midLine && s.skip() {
		return
	}
	chunk, err := s.src.ReadSlice('\n')
	s.pos += int64(len(chunk))
	endsLine := true
	switch err {
	case nil:
	case bufio.ErrBufferFull:
		endsLine = false
	case io.EOF:
		s.eof = true
	default:
		s.err = err
	}
	if len(chunk) > 0 {
		switch keep := s.take(chunk, endsLine); {
		case s.cut != "":
		case keep:
			s.out, s.dropped = chunk, false
		case !s.dropped:
			// Lines dropped in a row leave one line of one byte: with
			// "\n" line ends, enmime looks for a delimiter only if a byte
			// follows the delimiter line.
			s.out, s.dropped = placeholder(chunk), true
		}
	}
	if s.eof || s.err != nil {
		s.endRun()
	}
}

// skipLines turns skip on; the tests turn it off to compare.
var skipLines = true

// skip drops, at once, the complete lines at the start of what is
// buffered that take would drop one by one: in a body (not in a header
// block, not keeping everything), the lines that hold no "--" and are not
// blank. Such lines change nothing of the state but leave a placeholder.
// One search of the buffer for "--" and a look at each line's end is
// several times faster than reading the lines one by one through take,
// and bodies are most of a message. It reports whether it dropped
// anything.
func (s *skeleton) skip() bool {
	buf, _ := s.src.Peek(s.src.Buffered())
	limit := len(buf)
	if d, ok := s.nextDash.find(buf, s.pos, dashes); ok {
		limit = d
	}
	end := 0 // the complete lines before limit that are not blank
	for end < limit {
		i := bytes.IndexByte(buf[end:limit], '\n')
		if i < 0 || i == 0 || i == 1 && buf[end] == '\r' {
			break
		}
		end += i + 1
	}
	if end == 0 {
		return false
	}
	if s.cut == "" && !s.dropped {
		s.out, s.dropped = placeholder(buf[:bytes.IndexByte(buf, '\n')+1]), true
	}
	s.lineBlank, s.lineDash, s.prevDash, s.keepLine = false, false, false, false
	s.src.Discard(end)
	s.pos += int64(end)
	return true
}

// finder remembers where a pattern occurs next in the source, so that
// skip, called once per run of lines, searches each byte for it once: a
// body of short paragraphs would otherwise have it search its whole buffer
// for each paragraph.
type finder struct {
	at    int64 // where the pattern starts next, if found
	found bool
	free  int64 // the pattern starts nowhere from the read position to this
}

// find returns where pattern starts in buf, which starts at pos in the
// source.
func (f *finder) find(buf []byte, pos int64, pattern []byte) (int, bool) {
	if !f.found || f.at < pos {
		f.found = false
		if rel := max(0, int(f.free-pos)); rel < len(buf) {
			if i := bytes.Index(buf[rel:], pattern); i >= 0 {
				f.at, f.found = pos+int64(rel+i), true
			} else {
				// The last bytes may start an occurrence.
				f.free = pos + int64(max(rel, len(buf)-len(pattern)+1))
			}
		}
	}
	if f.found && f.at < pos+int64(len(buf)) {
		return int(f.at - pos), true
	}
	return 0, false
}

// take follows the state of the message through one chunk and reports
// whether enmime gets it.
func (s *skeleton) take(chunk []byte, endsLine bool) bool {
	dash := bytes.Contains(chunk, dashes)
	if !s.midLine {
		s.lineBlank = endsLine && (len(chunk) == 1 || len(chunk) == 2 && chunk[0] == '\r')
		s.lineDash = false
		s.prevDash = false
		// A line longer than the buffer is kept whole: dropping its start
		// could bring a "--boundary" further on next to the line start.
		s.keepLine = s.header || s.keepAll || !endsLine || s.lineBlank || dash
		if s.header {
			s.mentions(chunk, endsLine)
		}
		if s.cut == "" && bytes.HasPrefix(chunk, dashes) {
			s.close(chunk)
		}
	}
	if s.header && !s.lineBlank {
		if len(s.run)+len(chunk) > maxRun {
			s.runLong = true
		} else {
			s.run = append(s.run, chunk...)
		}
	}
	s.lineDash = s.lineDash || dash || s.prevDash && chunk[0] == '-'
	s.prevDash = chunk[len(chunk)-1] == '-'
	s.midLine = !endsLine
	if endsLine {
		s.endLine()
	}
	if s.keepLine && s.cut == "" {
		s.work += int64(len(chunk)) * int64(max(1, len(s.open)))
		if s.work > maxWork {
			s.cutOff("more than %d MB of MIME structure to parse (counted once per open multipart)", maxWork>>20)
		}
	}
	return s.keepLine
}

func (s *skeleton) endLine() {
	if s.lineDash {
		s.delims++
		if s.delims > maxDelimiterLines {
			s.cutOff("more than %d lines that can delimit MIME parts", maxDelimiterLines)
		}
	}
	switch {
	case s.header && s.lineBlank:
		// The body of an attached message starts with its header block;
		// so does the body of a part of a digest without Content-Type
		// (RFC 2046 section 5.1.5). If the attached message is encoded,
		// its lines are not lines of the message: enmime gets them all.
		encoded := s.runMsg && s.runEnc
		s.keepAll = s.keepAll || encoded
		s.header = s.runMsg && !encoded || s.digest && !s.runCT
		s.endRun()
	case !s.header && s.lineDash:
		s.header = true
	}
}

// mentions notes what a header line says about the parse to come.
func (s *skeleton) mentions(line []byte, endsLine bool) {
	if !endsLine {
		// A header line longer than the buffer could say anything.
		s.keepAll, s.runMsg, s.runOpen, s.runName = true, true, true, true
		return
	}
	// Lower-cased once, without its CRs, the line is searched fast.
	var folded []byte
	if len(line) <= len(s.folded) {
		folded = lowerNoCR(s.folded[:0], line)
	}
	s.runMsg = s.runMsg || has(line, folded, "message/")
	s.runEnc = s.runEnc || has(line, folded, "base64") || has(line, folded, "quoted-printable")
	s.runCT = s.runCT || len(line) >= 12 && containsFold(line[:12], "content-type")
	s.runOpen = s.runOpen || has(line, folded, "boundary") || has(line, folded, "=?") // mayOpen
	s.runName = s.runName || has(line, folded, "content-")
	if has(line, folded, "multipart/digest") {
		// The parts of a digest hold messages; which ones is for enmime
		// to say: it gets them all.
		s.digest, s.keepAll = true, true
	}
}

// close notes a line that starts with "--": if it starts with
// "--boundary--" for an open boundary, enmime closes that multipart. (It
// also closes the multiparts inside, and on other lines in rarer cases;
// leaving those open here only makes the count err high.)
func (s *skeleton) close(line []byte) {
	for i := len(s.open) - 1; i >= 0; i-- {
		o := s.open[i]
		if o.known && len(line) >= len(o.boundary)+4 && string(line[2:2+len(o.boundary)]) == o.boundary &&
			string(line[2+len(o.boundary):4+len(o.boundary)]) == "--" {
			s.open = append(s.open[:i], s.open[i+1:]...)
			return
		}
	}
}

// endRun reads the header block that just ended: the multiparts it opens,
// and the file names in it.
func (s *skeleton) endRun() {
	defer func() {
		s.run = s.run[:0]
		s.runLong, s.runMsg, s.runEnc, s.runCT, s.runOpen, s.runName = false, false, false, false, false, false
	}()
	if len(s.run) == 0 {
		return
	}
	defer func() { s.blocks++ }()
	// Once enmime has stopped, only the names matter.
	if s.runLong && s.cut == "" {
		s.push(open{})
	}
	if s.runOpen && s.cut == "" {
		s.opens()
	}
	if s.runName || s.runLong {
		for _, v := range contentFields(s.run) {
			for _, name := range fileNames(v) {
				s.scanned(name)
			}
		}
	}
}

// opens pushes the multiparts that the header block opens. A line
// starting with "--" inside it can be a delimiter, after which enmime reads
// a new header block: each piece is read on its own.
func (s *skeleton) opens() {
	start := 0
	for i := 0; i < len(s.run); {
		end := len(s.run)
		if j := bytes.IndexByte(s.run[i:], '\n'); j >= 0 {
			end = i + j + 1
		}
		if bytes.HasPrefix(s.run[i:], dashes) {
			s.opensIn(s.run[start:i])
			start = end
		}
		i = end
	}
	s.opensIn(s.run[start:])
}

// opensIn pushes the multiparts that one header block opens, read like
// enmime reads it; what cannot be read so counts as open, never closed.
func (s *skeleton) opensIn(block []byte) {
	if !mayOpen(block) {
		return
	}
	if s.hdr == nil {
		s.hdr = headerReaders.Get(nil)
	}
	s.hdr.Reset(bytes.NewReader(block))
	h, err := enmime.ReadHeader(s.hdr, ignoreErrors{})
	if err != nil {
		for line := range bytes.Lines(block) {
			if mayOpen(line) {
				s.push(open{})
			}
		}
		return
	}
	for _, v := range h.Values("Content-Type") {
		_, params, _, err := mediatype.Parse(v)
		switch {
		case err == nil && params["boundary"] != "":
			s.push(open{boundary: params["boundary"], known: true})
		case err == nil && containsFold([]byte(v), "boundary"), err != nil && mayOpen([]byte(v)):
			s.push(open{})
		}
	}
}

// unclosed describes the multiparts still open at the end of the message,
// or returns "" if there are none.
func (s *skeleton) unclosed() string {
	if len(s.open) == 0 {
		return ""
	}
	var b strings.Builder
	for i, o := range s.open {
		if i > 0 {
			b.WriteString(", ")
		}
		if o.known {
			b.WriteString("boundary " + strconv.Quote(o.boundary))
		} else {
			b.WriteString("a header block read otherwise by enmime")
		}
	}
	return "multiparts not closed: " + b.String()
}

// mayOpen reports whether a header text could give enmime a boundary:
// it names one, or holds an RFC 2047 encoded word, which enmime decodes in
// parameter names too.
func mayOpen(text []byte) bool {
	return containsFold(text, "boundary") || containsFold(text, "=?")
}

func (s *skeleton) push(o open) {
	if s.cut != "" {
		return
	}
	s.open = append(s.open, o)
	if len(s.open) > maxNesting {
		s.cutOff("more than %d multiparts open at once", maxNesting)
	}
}

func (s *skeleton) scanned(name string) {
	if !s.banned[Extension(name)] || len(s.found) >= maxFindings {
		return
	}
	for _, f := range s.found {
		if f.name == name {
			return
		}
	}
	s.found = append(s.found, scanned{block: s.blocks, name: name})
}

// contentFields returns the values of the Content-Type and
// Content-Disposition fields of a header block, read leniently: unlike
// enmime's header reader, it does not give up on a block that starts with
// a continuation line or holds a line it cannot read.
func contentFields(run []byte) []string {
	var values []string
	var field []byte
	in := false
	end := func() {
		if in {
			values = append(values, string(field))
		}
		in, field = false, field[:0]
	}
	for line := range bytes.Lines(run) {
		text := bytes.TrimRight(line, "\r\n")
		colon := bytes.IndexByte(text, ':')
		switch {
		case len(text) > 0 && (text[0] == ' ' || text[0] == '\t'):
			if in {
				field = append(append(field, ' '), bytes.TrimSpace(text)...)
			}
		case colon > 0:
			end()
			name := bytes.TrimSpace(text[:colon])
			in = bytes.EqualFold(name, []byte("Content-Type")) || bytes.EqualFold(name, []byte("Content-Disposition"))
			field = append(field, bytes.TrimSpace(text[colon+1:])...)
		case colon == 0:
			// enmime skips a line that starts with a colon.
		case colon < 0 && len(text) > 0 && !bytes.HasPrefix(text, dashes):
			// enmime repairs a continuation line that is not indented.
			if in {
				field = append(append(field, ' '), text...)
			}
		default:
			end()
		}
	}
	end()
	return values
}

// ignoreErrors is an enmime.ErrorCollector for header blocks that enmime
// reads again anyway, reporting their errors in the tree.
type ignoreErrors struct{}

func (ignoreErrors) AddError(string, string, ...any)   {}
func (ignoreErrors) AddWarning(string, string, ...any) {}

// has is containsFold(line, lower), searched in folded, line lower-cased
// without its CRs, unless that is nil.
func has(line, folded []byte, lower string) bool {
	if folded == nil {
		return containsFold(line, lower)
	}
	return bytes.Contains(folded, []byte(lower))
}

// lowerNoCR appends b to dst in lower case (ASCII) and without its CR bytes:
// containsFold(b, lower) is bytes.Contains(lowerNoCR(nil, b), lower).
func lowerNoCR(dst, b []byte) []byte {
	for _, c := range b {
		switch {
		case c == '\r':
			continue
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// containsFold reports whether b contains lower, which is lower-case ASCII,
// in any case and ignoring CR bytes: enmime's media type parser deletes
// them, so "messa\rge/rfc822" is message/rfc822 to it.
func containsFold(b []byte, lower string) bool {
	for i := range b {
		j := 0
		for k := i; j < len(lower) && k < len(b); k++ {
			c := b[k]
			if c == '\r' {
				continue
			}
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != lower[j] {
				break
			}
			j++
		}
		if j == len(lower) {
			return true
		}
	}
	return false
}
