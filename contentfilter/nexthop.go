package contentfilter

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"
)

// nextHop is the SMTP session with the reinjection service (Postfix's smtpd
// on 127.0.0.1:10026 in etc/postfix/master.cf).
type nextHop struct {
	conn    net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	timeout time.Duration
	ext     map[string]string // EHLO keywords, upper case, to their parameters
}

func dialNextHop(ctx context.Context, addr, helo string, timeout time.Duration) (*nextHop, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	h := &nextHop{conn: c, r: lineReaders.Get(c), w: lineWriters.Get(c), timeout: timeout, ext: map[string]string{}}
	c.SetDeadline(time.Now().Add(timeout))
	if rep, err := readReply(h.r); err != nil || rep.code != 220 {
		h.drop()
		return nil, fmt.Errorf("greeting: %v %s", err, rep)
	}
	rep, err := h.cmd("EHLO " + helo)
	if err != nil || rep.code != 250 {
		h.drop()
		return nil, fmt.Errorf("EHLO: %v %s", err, rep)
	}
	for _, l := range rep.lines[1:] {
		kw, param, _ := strings.Cut(l[4:], " ")
		h.ext[strings.ToUpper(kw)] = param
	}
	return h, nil
}

// cmd sends one command and reads its reply.
func (h *nextHop) cmd(line string) (reply, error) {
	h.conn.SetDeadline(time.Now().Add(h.timeout))
	h.w.WriteString(line)
	h.w.WriteString("\r\n")
	if err := h.w.Flush(); err != nil {
		return reply{}, err
	}
	return readReply(h.r)
}

// xforward passes on the attributes Postfix gave the filter that the next
// hop accepts (XFORWARD_README), values still xtext-encoded, in commands of
// at most 512 characters.
func (h *nextHop) xforward(attrs map[string]string) error {
	accepted := map[string]bool{}
	for _, a := range strings.Fields(h.ext["XFORWARD"]) {
		accepted[strings.ToUpper(a)] = true
	}
	if len(accepted) == 0 {
		return nil
	}
	names := make([]string, 0, len(attrs))
	for k := range attrs {
		if accepted[k] {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	line := "XFORWARD"
	send := func() error {
		if line == "XFORWARD" {
			return nil
		}
		rep, err := h.cmd(line)
		if err == nil && rep.code != 250 {
			err = fmt.Errorf("%s: %s", line, rep.last())
		}
		line = "XFORWARD"
		return err
	}
	for _, k := range names {
		item := " " + k + "=" + attrs[k]
		if len(line)+len(item) > 510 {
			if err := send(); err != nil {
				return err
			}
		}
		line += item
	}
	return send()
}

// close ends the session politely.
func (h *nextHop) close() {
	h.cmd("QUIT")
	h.drop()
}

// drop closes the connection and gives its buffers back; the nextHop is
// not used again.
func (h *nextHop) drop() {
	h.conn.Close()
	lineReaders.Put(h.r)
	lineWriters.Put(h.w)
	h.r, h.w = nil, nil
}
