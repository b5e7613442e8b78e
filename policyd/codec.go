package policyd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// The Postfix policy delegation protocol (SMTPD_POLICY_README): a request is a
// sequence of "name=value" lines ended by an empty line; the reply is
// "action=..." followed by an empty line. Postfix keeps the connection open
// and sends the next request on it.

// Limits bound what one client may make the server buffer. Postfix 3.7 sends
// 29 attributes of a few hundred bytes in all; the defaults leave ample room.
type Limits struct {
	MaxLine       int // bytes in one line, without the newline
	MaxRequest    int // bytes in one request, all lines included
	MaxAttributes int // attributes in one request
}

// DefaultLimits are generous for Postfix and small for an attacker.
var DefaultLimits = Limits{MaxLine: 4096, MaxRequest: 32768, MaxAttributes: 128}

// Request is one policy request: its attributes in arrival order. Postfix
// never repeats an attribute; a request that does is malformed.
type Request struct {
	names  []string
	values []string
}

// Get returns the value of attribute name, or "" when it is absent.
func (r *Request) Get(name string) string {
	for i, n := range r.names {
		if n == name {
			return r.values[i]
		}
	}
	return ""
}

// Has reports whether the request carries attribute name.
func (r *Request) Has(name string) bool {
	for _, n := range r.names {
		if n == name {
			return true
		}
	}
	return false
}

// Len is the number of attributes.
func (r *Request) Len() int { return len(r.names) }

// Set adds or replaces an attribute; tests and the benchmark build requests with it.
func (r *Request) Set(name, value string) {
	for i, n := range r.names {
		if n == name {
			r.values[i] = value
			return
		}
	}
	r.names = append(r.names, name)
	r.values = append(r.values, value)
}

// WriteTo writes the request in wire form.
func (r *Request) WriteTo(w io.Writer) (int64, error) {
	var b bytes.Buffer
	for i, n := range r.names {
		b.WriteString(n)
		b.WriteByte('=')
		b.WriteString(r.values[i])
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	return b.WriteTo(w)
}

// ErrMalformed marks a request that breaks the protocol; the connection is
// closed without a reply, which is what Postfix expects of a policy server
// that cannot parse its input.
var ErrMalformed = errors.New("malformed policy request")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Decoder reads requests from one connection.
type Decoder struct {
	r      *bufio.Reader
	limits Limits
}

// NewDecoder returns a decoder reading from r within limits.
func NewDecoder(r io.Reader, limits Limits) *Decoder {
	return &Decoder{r: bufio.NewReaderSize(r, min(limits.MaxLine+2, 64*1024)), limits: limits}
}

// Decode reads the next request into req, which it resets first. It returns
// io.EOF when the peer closed the connection between requests, an error
// wrapping ErrMalformed for a protocol violation, and other errors as they
// come from the connection (timeouts included).
func (d *Decoder) Decode(req *Request) error {
	// same: the names so far are those of the previous request, in order;
	// its names were distinct, so a name found at its place is new here.
	// (Past its end, the array holds names of older requests.)
	prev, same := len(req.names), true
	req.names = req.names[:0]
	req.values = req.values[:0]
	total := 0
	for {
		line, err := d.readLine()
		if err != nil {
			if err == io.EOF && (len(req.names) > 0 || total > 0) {
				return malformed("connection closed inside a request")
			}
			return err
		}
		total += len(line) + 1
		if total > d.limits.MaxRequest {
			return malformed("request longer than %d bytes", d.limits.MaxRequest)
		}
		if len(line) == 0 {
			if len(req.names) == 0 {
				return malformed("empty request")
			}
			return nil
		}
		eq := bytes.IndexByte(line, '=')
		if eq <= 0 {
			return malformed("line %d is not name=value", len(req.names)+1)
		}
		if len(req.names) == d.limits.MaxAttributes {
			return malformed("more than %d attributes", d.limits.MaxAttributes)
		}
		i := len(req.names)
		old := req.names[:cap(req.names)]
		same = same && i < prev && old[i] == string(line[:eq])
		name := reuse(old, i, line[:eq])
		if !same && req.Has(name) {
			return malformed("attribute %q repeated", name)
		}
		value := reuse(req.values[:cap(req.values)], i, line[eq+1:])
		req.names = append(req.names, name)
		req.values = append(req.values, value)
	}
}

// reuse returns b as a string: the one at old[i] if it is the same, else a
// new one. Postfix sends the attributes in the same order every time, and
// most of them (their names, and values such as the client's address, the
// login or the sender) repeat from one request of a session to the next:
// reading them into the previous request's strings saves most allocations.
func reuse(old []string, i int, b []byte) string {
	if i < len(old) && old[i] == string(b) {
		return old[i]
	}
	return string(b)
}

// readLine returns one line without its "\n" (a "\r\n" ending is tolerated,
// for people who test with telnet; a carriage return elsewhere is not),
// refusing lines longer than the limit without buffering them.
func (d *Decoder) readLine() ([]byte, error) {
	line, err := d.r.ReadSlice('\n')
	switch {
	case err == bufio.ErrBufferFull || (err == nil && len(line)-1 > d.limits.MaxLine):
		return nil, malformed("line longer than %d bytes", d.limits.MaxLine)
	case err == io.EOF && len(line) > 0:
		return nil, malformed("connection closed inside a line")
	case err != nil:
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) > d.limits.MaxLine {
		return nil, malformed("line longer than %d bytes", d.limits.MaxLine)
	}
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, malformed("carriage return inside a line")
	}
	return line, nil
}

// WriteAction writes the reply to one request. The action must be a single
// line: replies come from configuration that was validated at start-up.
func WriteAction(w *bufio.Writer, action string) error {
	w.WriteString("action=")
	w.WriteString(action)
	w.WriteString("\n\n")
	return w.Flush()
}
