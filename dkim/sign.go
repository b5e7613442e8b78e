package dkim

import (
	"bufio"
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"slices"
	"strings"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"relayguard/mailaddr"
)

// Defaults of the Signer's limits.
const (
	DefaultMemoryLimit    = 1 << 20 // bytes of the message spooled in memory
	DefaultMaxHeaderBytes = 1 << 20 // bytes of the header section
)

// bufSize is the size of the read and write buffers of one Sign.
const bufSize = 32 << 10

// ErrHeaderTooLarge is returned by Sign, before it writes anything, for a
// message whose header section is larger than Signer.MaxHeaderBytes: a
// permanent condition (552 5.3.4), whether the domain has a key or not.
var ErrHeaderTooLarge = errors.New("dkim: message header section too large")

// defaultHeaders are the header fields signed when present (RFC 6376 §5.4.1).
var defaultHeaders = []string{
	"From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To", "In-Reply-To", "References",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding",
}

// Signer signs messages with the key of their domain. Set its fields before
// the first Sign; it is then safe for concurrent use.
type Signer struct {
	keys map[string]*Key // by ASCII domain

	// Headers are the header fields to sign, each occurrence that the
	// message has. From is always signed.
	Headers []string

	// Oversign are the header fields listed in h= once more than the
	// message has them, so that a relay or a replayer that adds one breaks
	// the signature (RFC 6376 §8.15). From is always oversigned. A field
	// that Postfix adds on reinjection when missing (Date, Message-ID) must
	// not be here.
	Oversign []string

	// SameOwner reports whether two ASCII domains belong to one customer,
	// as config.Directory.SameOwner does. Nil means only a domain and
	// itself: the From domain then signs only when it is the passed domain.
	SameOwner func(a, b string) bool

	// MemoryLimit is how much of a message that cannot be read twice Sign
	// holds in memory; the rest is spooled to a temporary file in TempDir
	// (the system's temporary directory when empty), which is unlinked at
	// once. Zero means DefaultMemoryLimit.
	MemoryLimit int
	TempDir     string

	// MaxHeaderBytes bounds the header section, which is held in memory.
	// Zero means DefaultMaxHeaderBytes.
	MaxHeaderBytes int
}

// NewSigner makes a Signer that signs with keys, and the default header
// fields (From, To, Cc, Subject, Date, Message-ID, Reply-To, In-Reply-To,
// References, MIME-Version, Content-Type, Content-Transfer-Encoding; From
// oversigned) and limits.
func NewSigner(keys []*Key) *Signer {
	s := &Signer{
		keys:     make(map[string]*Key, len(keys)),
		Headers:  slices.Clone(defaultHeaders),
		Oversign: []string{"From"},
	}
	for _, k := range keys {
		if k != nil {
			s.keys[k.Domain] = k
		}
	}
	return s
}

// Sign writes to w the message read from r, preceded by a DKIM-Signature
// header field. domain is the domain that the caller vouches for, the
// envelope sender's (the null sender's "" vouches for none); the From
// header's domain signs instead when it has a key and SameOwner(from, domain)
// holds (see the package documentation). A message that no key signs, or
// that has no From field, is copied unchanged and signed is false.
//
// A signed message is written with CRLF line endings (a bare CR or LF
// becomes CRLF), its last line terminated, and a header-only message gets the empty line that ends the
// header section: those are the bytes that are signed, and the bytes that an
// SMTP client sends.
//
// Memory: Sign holds the header section, at most MaxHeaderBytes, three
// times (as read, as written, and go-msgauth's copy) and 100 KiB of buffers. go-msgauth hashes
// the message as it streams; when r is an io.ReadSeeker (the filter's spool
// file), Sign hashes it in a first pass and seeks back to write it, and r must
// not change in between; otherwise it keeps up to MemoryLimit bytes of the
// message in memory and the rest in a temporary file. One case is beyond
// Sign: go-msgauth's relaxed body canonicaliser keeps a run of empty or
// blank lines until the next line with text, so a body made of megabytes of
// empty lines costs their size (twice, briefly) until the run ends.
//
// An error other than ErrHeaderTooLarge may come after part of the message
// was written to w: the caller abandons the transaction it was writing.
func (s *Signer) Sign(w io.Writer, r io.Reader, domain string) (signed bool, err error) {
	rs, seekable := r.(io.ReadSeeker)
	var start int64
	if seekable {
		if start, err = rs.Seek(0, io.SeekCurrent); err != nil {
			seekable = false
		}
	}
	br := bufio.NewReaderSize(r, bufSize)
	m, err := readHead(br, orDefault(s.MaxHeaderBytes, DefaultMaxHeaderBytes))
	if err != nil {
		return false, err
	}
	key := s.choose(m.fields, domain)
	if key == nil {
		if _, err := w.Write(m.head); err != nil {
			return false, fmt.Errorf("dkim: %w", err)
		}
		if _, err := io.Copy(w, br); err != nil {
			return false, fmt.Errorf("dkim: %w", err)
		}
		return false, nil
	}
	ds, err := msgauth.NewSigner(&msgauth.SignOptions{
		Domain:                 key.Domain,
		Selector:               key.Selector,
		Signer:                 key.Signer,
		Hash:                   crypto.SHA256,
		HeaderCanonicalization: msgauth.CanonicalizationRelaxed,
		BodyCanonicalization:   msgauth.CanonicalizationRelaxed,
		HeaderKeys:             s.headerKeys(m.fields),
	})
	if err != nil {
		return false, fmt.Errorf("dkim: key of %s: %w", key.Domain, err)
	}
	defer ds.Close()

	if seekable {
		if err := m.writeTo(ds, br); err != nil {
			return false, err
		}
		if err := ds.Close(); err != nil {
			return false, fmt.Errorf("dkim: signing with the key of %s: %w", key.Domain, err)
		}
		if _, err := rs.Seek(start+int64(len(m.head)), io.SeekStart); err != nil {
			return false, fmt.Errorf("dkim: rereading the message: %w", err)
		}
		br.Reset(rs)
		if _, err := io.WriteString(w, ds.Signature()); err != nil {
			return false, fmt.Errorf("dkim: %w", err)
		}
		return true, m.writeTo(w, br)
	}

	sp := &spool{dir: s.TempDir, limit: orDefault(s.MemoryLimit, DefaultMemoryLimit)}
	defer sp.Close()
	if err := m.writeTo(io.MultiWriter(sp, ds), br); err != nil {
		return false, err
	}
	if err := ds.Close(); err != nil {
		return false, fmt.Errorf("dkim: signing with the key of %s: %w", key.Domain, err)
	}
	if _, err := io.WriteString(w, ds.Signature()); err != nil {
		return false, fmt.Errorf("dkim: %w", err)
	}
	if err := sp.writeTo(w); err != nil {
		return false, err
	}
	return true, nil
}

func orDefault(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

// choose returns the key that signs a message with these header fields and
// envelope domain, or nil.
func (s *Signer) choose(fields []field, domain string) *Key {
	var froms []string
	for _, f := range fields {
		if strings.EqualFold(f.name, "From") {
			froms = append(froms, f.value)
		}
	}
	if len(froms) == 0 {
		// RFC 6376 §5.4: the From field must be signed, and Postfix
		// would add one on reinjection.
		return nil
	}
	d, err := mailaddr.Domain(domain)
	if err != nil {
		return nil
	}
	if len(froms) == 1 {
		if fd := fromDomain(froms[0]); fd != "" && s.keys[fd] != nil &&
			(fd == d || s.SameOwner != nil && s.SameOwner(fd, d)) {
			return s.keys[fd]
		}
	}
	return s.keys[d]
}

// fromDomain returns the ASCII domain of the From field's value when all its
// mailboxes have one and the same domain, else "".
func fromDomain(value string) string {
	// The display names matter not: any charset of an encoded-word
	// (RFC 2047) is taken as it is.
	p := mail.AddressParser{WordDecoder: &mime.WordDecoder{
		CharsetReader: func(_ string, input io.Reader) (io.Reader, error) { return input, nil },
	}}
	list, err := p.ParseList(value)
	if err != nil || len(list) == 0 {
		return ""
	}
	var domain string
	for _, a := range list {
		_, d, err := mailaddr.Split(a.Address)
		if err != nil || domain != "" && d != domain {
			return ""
		}
		domain = d
	}
	return domain
}

// headerKeys is the h= list for a message with these fields: each field of
// From, Headers and Oversign once for each occurrence, and those of From and
// Oversign once more.
func (s *Signer) headerKeys(fields []field) []string {
	count := map[string]int{}
	for _, f := range fields {
		count[strings.ToLower(f.name)]++
	}
	over := map[string]bool{"from": true}
	for _, name := range s.Oversign {
		over[strings.ToLower(name)] = true
	}
	seen := map[string]bool{}
	var keys []string
	for _, name := range slices.Concat([]string{"From"}, s.Headers, s.Oversign) {
		lower := strings.ToLower(name)
		if seen[lower] {
			continue
		}
		seen[lower] = true
		n := count[lower]
		if over[lower] {
			n++ // RFC 6376 §8.15
		}
		for range n {
			keys = append(keys, name)
		}
	}
	return keys
}

// field is a header field's name, and its unfolded value for From.
type field struct {
	name, value string
}

// message is the header section of a message being signed.
type message struct {
	head     []byte // the raw header section, the empty line that ends it included
	complete bool   // whether the section ends with an empty line, not with the message
	fields   []field
}

// readHead reads the header section from br, up to and including the empty
// line that ends it, and parses it as it will be written: a bare CR in it
// is a line break once written, and may end the section earlier.
func readHead(br *bufio.Reader, limit int) (*message, error) {
	m := &message{}
	lineStart := true
	for {
		chunk, err := br.ReadSlice('\n')
		if len(m.head)+len(chunk) > limit {
			return nil, ErrHeaderTooLarge
		}
		m.head = append(m.head, chunk...)
		if err == bufio.ErrBufferFull {
			lineStart = false
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("dkim: reading the message: %w", err)
		}
		if lineStart && (len(chunk) == 1 || len(chunk) == 2 && chunk[0] == '\r') {
			break
		}
		lineStart = true
	}
	var norm bytes.Buffer
	bw := bufio.NewWriter(&norm)
	(&crlfWriter{w: bw}).Write(m.head)
	bw.Flush()
	section := norm.Bytes()
	if bytes.HasPrefix(section, []byte("\r\n")) {
		section, m.complete = nil, true
	} else if i := bytes.Index(section, []byte("\r\n\r\n")); i >= 0 {
		section, m.complete = section[:i+2], true
	}
	m.fields = parseFields(section)
	return m, nil
}

// parseFields splits a header section with CRLF line endings, without the
// empty line that ends it, into fields as go-msgauth does: a line that starts
// with a space or a tab continues the field before it. A section that starts
// with such a line has no fields: a signature put before it would take it as
// its own continuation.
func parseFields(section []byte) []field {
	if len(section) > 0 && (section[0] == ' ' || section[0] == '\t') {
		return nil
	}
	var fields []field
	for line := range bytes.Lines(section) {
		line = bytes.TrimSuffix(line, []byte("\r\n"))
		if line[0] == ' ' || line[0] == '\t' {
			if f := &fields[len(fields)-1]; strings.EqualFold(f.name, "From") {
				f.value += string(line) // RFC 5322 §2.2.3: unfolding
			}
			continue
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		f := field{name: string(bytes.TrimSpace(name))}
		if strings.EqualFold(f.name, "From") {
			f.value = string(value)
		}
		fields = append(fields, f)
	}
	return fields
}

// writeTo writes the message to dst as it is signed and sent: the header
// section, then the rest read from body, with CRLF line endings.
func (m *message) writeTo(dst io.Writer, body io.Reader) error {
	bw := bufio.NewWriterSize(dst, bufSize)
	cw := &crlfWriter{w: bw}
	_, err := cw.Write(m.head)
	if err == nil && !m.complete {
		// RFC 5322 §2.1: the empty line before a body, here an empty one.
		if err = cw.end(); err == nil {
			_, err = cw.Write([]byte("\r\n"))
		}
	}
	if err == nil {
		_, err = io.Copy(cw, body)
	}
	if err == nil {
		err = cw.end()
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return fmt.Errorf("dkim: %w", err)
	}
	return nil
}

// crlfWriter writes what it is given with every bare CR or bare LF turned
// into CRLF: SMTP allows CR and LF only together (RFC 5321 §2.3.8), Postfix
// refuses a bare LF (smtpd_forbid_bare_newline), and an SMTP client's DATA
// writer changes some of them (Go's textproto writes CR CR LF as CR CR CR
// LF). A message with CRLF line endings only is sent as it is signed.
type crlfWriter struct {
	w         *bufio.Writer
	cr        bool // the last byte was a CR, already written as CRLF
	written   bool
	lineStart bool
}

func (c *crlfWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexAny(p, "\r\n")
		if i < 0 {
			i = len(p)
		}
		if i > 0 {
			if _, err := c.w.Write(p[:i]); err != nil {
				return 0, err
			}
			c.cr, c.written, c.lineStart = false, true, false
		}
		if i == len(p) {
			break
		}
		if p[i] == '\r' || !c.cr {
			if _, err := c.w.WriteString("\r\n"); err != nil {
				return 0, err
			}
		}
		c.cr, c.written, c.lineStart = p[i] == '\r', true, true
		p = p[i+1:]
	}
	return n, nil
}

// end terminates the last line, if it is not, as an SMTP client's DATA does.
func (c *crlfWriter) end() error {
	if !c.written || c.lineStart {
		return nil
	}
	_, err := c.w.WriteString("\r\n")
	c.lineStart = true
	return err
}
