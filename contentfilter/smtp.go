package contentfilter

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// The narrow SMTP that the filter speaks on both sides. go-smtp has no
// XFORWARD, neither as a server nor as a client, and a filter must pass MAIL
// and RCPT parameters through as Postfix wrote them and mirror the next
// hop's replies line for line, so both sides are written here over a
// buffered connection: commands are lines, replies are code-prefixed lines
// (RFC 5321 §4.2), message data is dot-stuffed (§4.5.2).

// maxLine bounds one command or reply line (RFC 5321 §4.5.3.1: 512 for
// commands, with room for extensions' parameters).
const maxLine = 4096

var errLineTooLong = errors.New("line too long")

// readLine reads one CRLF- (or LF-) terminated line without its ending.
func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(line) > maxLine {
		for errors.Is(err, bufio.ErrBufferFull) { // skip the rest of it
			_, err = r.ReadSlice('\n')
		}
		return "", errLineTooLong
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

// reply is one SMTP reply: its code and its lines as sent ("250-..." and "250 ...").
type reply struct {
	code  int
	lines []string
}

func (r reply) String() string { return strings.Join(r.lines, "\r\n") }

// last is the reply's final line.
func (r reply) last() string { return r.lines[len(r.lines)-1] }

// readReply reads a possibly multi-line reply.
func readReply(r *bufio.Reader) (reply, error) {
	var rep reply
	for {
		line, err := readLine(r)
		if err != nil {
			return rep, err
		}
		if len(line) < 3 {
			return rep, fmt.Errorf("malformed reply %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil || code < 200 || code > 599 || (rep.code != 0 && code != rep.code) {
			return rep, fmt.Errorf("malformed reply %q", line)
		}
		rep.code = code
		rep.lines = append(rep.lines, line)
		if len(line) == 3 || line[3] == ' ' {
			return rep, nil
		}
		if line[3] != '-' {
			return rep, fmt.Errorf("malformed reply %q", line)
		}
	}
}

// readData reads dot-stuffed message data up to the lone "." line, undoing
// the stuffing, into w, at most max bytes. Past max it reads on to the end,
// so that the session stays in step, and returns errTooBig.
func readData(r *bufio.Reader, w io.Writer, max int64) error {
	var n int64
	tooBig := false
	for {
		line, err := r.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		full := !errors.Is(err, bufio.ErrBufferFull)
		if full && (bytes.Equal(line, []byte(".\r\n")) || bytes.Equal(line, []byte(".\n"))) {
			if tooBig {
				return errTooBig
			}
			return nil
		}
		if line[0] == '.' {
			line = line[1:]
		}
		for { // the rest of a line longer than the buffer, then the next line
			if n += int64(len(line)); n > max {
				tooBig = true
			}
			if !tooBig {
				if _, werr := w.Write(line); werr != nil {
					return werr
				}
			}
			if full {
				break
			}
			line, err = r.ReadSlice('\n')
			if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
			full = !errors.Is(err, bufio.ErrBufferFull)
		}
	}
}

// dataWriter writes message data to the next hop (RFC 5321 §4.5.2): a
// line that starts with "." gets one more, every line ends with CRLF (a
// bare LF becomes CRLF), and Close ends the data with the lone ".". The
// signer writes into it directly: no pipe, no goroutine, no copy between
// them.
type dataWriter struct {
	w         *bufio.Writer
	lineStart bool // the next byte starts a line
	cr        bool // the last byte written was a CR
	err       error
}

func newDataWriter(w *bufio.Writer) *dataWriter { return &dataWriter{w: w, lineStart: true} }

func (d *dataWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && d.err == nil {
		if d.lineStart && p[0] == '.' {
			d.w.WriteByte('.')
		}
		i := bytes.IndexByte(p, '\n')
		switch {
		case i < 0:
			_, d.err = d.w.Write(p)
			d.lineStart, d.cr = false, p[len(p)-1] == '\r'
			p = nil
			continue
		case i > 0 && p[i-1] == '\r', i == 0 && d.cr:
			_, d.err = d.w.Write(p[:i+1])
		default: // a bare LF
			d.w.Write(p[:i])
			_, d.err = d.w.WriteString("\r\n")
		}
		d.lineStart, d.cr = true, false
		p = p[i+1:]
	}
	if d.err != nil {
		return 0, d.err
	}
	return n, nil
}

// Close ends the last line if it has no end, writes the lone "." and
// flushes.
func (d *dataWriter) Close() error {
	if d.err != nil {
		return d.err
	}
	if !d.lineStart {
		d.w.WriteString("\r\n")
	}
	d.w.WriteString(".\r\n")
	return d.w.Flush()
}

// xtext decodes an XFORWARD or DSN value (RFC 3461 §4: "+" and two hex digits).
func xtext(s string) string {
	if !strings.Contains(s, "+") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '+' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
