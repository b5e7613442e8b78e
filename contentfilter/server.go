// Package contentfilter is relayguard's SMTP content filter: Postfix hands
// it each message, before the queue (smtpd_proxy_filter: the customer sees
// the filter's reply) or after it (content_filter), and it hands the
// message on to Postfix's reinjection service once its checks pass.
//
// It is a proxy, so that nothing is lost or delivered twice: MAIL and RCPT
// go on to the next hop as Postfix wrote them (parameters untouched) and the
// next hop's replies come back line for line, recipient by recipient; the
// message is received whole, checked, and only then given to the next hop,
// whose reply to the end of data is the one Postfix gets. So the filter
// answers 2xx only after the next hop accepted the message, and 4xx when it
// cannot decide (a scanner down, the next hop down): Postfix keeps the
// message and tries again. A filter killed in the middle leaves the message
// in Postfix's hands.
package contentfilter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"relayguard/internal/conns"
)

// Message is what the checks see of one message.
type Message struct {
	// From Postfix's XFORWARD: the original client, which the customer's
	// SMTP session cannot forge (it never reaches the filter).
	ClientAddr, ClientPort, Helo, Ident, Proto, Source string
	Sender                                             string   // envelope sender, without <>
	Recipients                                         []string // recipients the next hop accepted
	Spool                                              *Spool
}

// Verdict is the outcome of the checks.
type Verdict struct {
	// Reply, when set, is given to Postfix instead of delivering
	// ("554 5.7.1 <id> virus detected", "451 4.7.1 <id> ... try again later").
	Reply string
	// Headers are header fields added at the top before delivery ("X-Spam: Yes").
	Headers []string
}

// A Refusal is an error of Sign that the message itself causes, which
// trying again cannot mend: Postfix gets Reply (5xx) instead of a temporary
// failure.
type Refusal struct{ Reply string }

func (r *Refusal) Error() string { return r.Reply }

// Checker decides on a message.
type Checker interface {
	Check(ctx context.Context, m *Message) Verdict
}

// A Beginner is a Checker that hears of each transaction, by its client's
// address and port (XFORWARD), before the filter accepts its MAIL command.
type Beginner interface {
	Begin(ctx context.Context, clientAddr, clientPort string)
}

// Server is the filter's SMTP server.
type Server struct {
	Hostname       string        // in the greeting and EHLO
	NextHop        string        // host:port of the reinjection service
	Checker        Checker       // nil: every message passes
	MaxSize        int64         // largest message accepted (SIZE)
	SpoolDir       string        // where messages larger than SpoolThreshold go
	SpoolThreshold int64         // bytes kept in memory at most, per message
	Timeout        time.Duration // per command, each side
	// AfterQueue says that Postfix hands the filter queued mail
	// (content_filter) rather than a session's (smtpd_proxy_filter); a
	// message whose XFORWARD says otherwise is logged as an error.
	AfterQueue bool
	Log        *slog.Logger
	// Sign, when set, writes the message as it will be delivered (DKIM).
	// A *Refusal error refuses the message; any other leaves it to Postfix
	// to try again.
	Sign func(w io.Writer, r io.Reader, m *Message) error

	conns conns.Group
}

// Serve accepts Postfix's connections on l until Close.
func (s *Server) Serve(l net.Listener) error {
	return s.conns.Serve(l, func(c net.Conn) { (&session{srv: s, conn: c}).serve() })
}

// Close stops accepting and waits for the sessions; a session in the middle
// of a message is cut, and Postfix keeps that message.
func (s *Server) Close(ctx context.Context) error { return s.conns.Shutdown(ctx) }

// xforwardNames are the attributes the filter accepts (XFORWARD_README).
const xforwardNames = "NAME ADDR PORT PROTO HELO IDENT SOURCE LOGIN DESTADDR DESTPORT"

type session struct {
	srv  *Server
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer

	xforward map[string]string
	next     *nextHop
	mail     string // the MAIL command as Postfix sent it
	sender   string
	rcpts    []string
}

func (t *session) reply(lines ...string) error {
	t.conn.SetWriteDeadline(time.Now().Add(t.srv.Timeout))
	for _, l := range lines {
		t.w.WriteString(l)
		t.w.WriteString("\r\n")
	}
	return t.w.Flush()
}

// resetTransaction forgets the transaction, XFORWARD attributes included.
func (t *session) resetTransaction() {
	t.mail, t.sender, t.rcpts = "", "", nil
	t.xforward = map[string]string{}
}

func (t *session) serve() {
	defer t.conn.Close()
	defer func() {
		if t.next != nil {
			t.next.close()
		}
	}()
	t.r = bigReaders.Get(deadlineReader{t.conn, t.srv.Timeout})
	defer bigReaders.Put(t.r)
	t.w = lineWriters.Get(t.conn)
	defer lineWriters.Put(t.w)
	t.resetTransaction()
	if t.reply("220 "+t.srv.Hostname+" ESMTP relayguard") != nil {
		return
	}
	for {
		t.conn.SetReadDeadline(time.Now().Add(t.srv.Timeout))
		line, err := readLine(t.r)
		if errors.Is(err, errLineTooLong) {
			if t.reply("500 5.5.2 Error: line too long") != nil {
				return
			}
			continue
		}
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			err = t.reply("250-"+t.srv.Hostname, "250-PIPELINING", fmt.Sprintf("250-SIZE %d", t.srv.MaxSize),
				"250-8BITMIME", "250-SMTPUTF8", "250-DSN", "250-ENHANCEDSTATUSCODES", "250 XFORWARD "+xforwardNames)
		case "HELO":
			err = t.reply("250 " + t.srv.Hostname)
		case "XFORWARD":
			err = t.xforwardCmd(arg)
		case "MAIL":
			err = t.mailCmd(line)
		case "RCPT":
			err = t.rcptCmd(line)
		case "DATA":
			err = t.dataCmd()
		case "RSET":
			if t.next != nil {
				t.next.cmd("RSET")
			}
			t.resetTransaction()
			err = t.reply("250 2.0.0 Ok")
		case "NOOP":
			err = t.reply("250 2.0.0 Ok")
		case "QUIT":
			t.reply("221 2.0.0 Bye")
			return
		default:
			err = t.reply("502 5.5.2 Error: command not recognized")
		}
		if err != nil {
			return
		}
	}
}

func (t *session) xforwardCmd(arg string) error {
	for _, item := range strings.Fields(arg) {
		k, v, ok := strings.Cut(item, "=")
		k = strings.ToUpper(k)
		if !ok || !strings.Contains(" "+xforwardNames+" ", " "+k+" ") {
			return t.reply("501 5.5.4 Bad XFORWARD attribute " + k)
		}
		t.xforward[k] = v
	}
	return t.reply("250 2.0.0 Ok")
}

// nextHopDown is the reply when the reinjection service cannot be reached:
// temporary, so that Postfix keeps the message.
const nextHopDown = "451 4.4.1 next hop unavailable, try again later"

func (t *session) mailCmd(line string) error {
	if t.mail != "" {
		return t.reply("503 5.5.1 Error: nested MAIL command")
	}
	if len(line) < len("MAIL FROM:") || !strings.EqualFold(line[:len("MAIL FROM:")], "MAIL FROM:") {
		return t.reply("501 5.5.4 Syntax: MAIL FROM:<address>")
	}
	addr, _, _ := strings.Cut(strings.TrimSpace(line[len("MAIL FROM:"):]), " ")
	// A connection kept from the previous message may have been closed by
	// the next hop in between (Postfix's smtpd ends an idle session with
	// 421 after smtpd_timeout): then MAIL is tried once on a new one.
	// Nothing of this transaction has reached the next hop yet, so nothing
	// can be delivered twice.
	reused := t.next != nil
	var rep reply
	for {
		if t.next == nil {
			ctx, cancel := context.WithTimeout(context.Background(), t.srv.Timeout)
			h, err := dialNextHop(ctx, t.srv.NextHop, t.srv.Hostname, t.srv.Timeout)
			cancel()
			if err != nil {
				t.srv.Log.Error("next hop unavailable", "next_hop", t.srv.NextHop, "error", err)
				return t.reply(nextHopDown)
			}
			t.next = h
		}
		var err error
		if err = t.next.xforward(t.xforward); err == nil {
			rep, err = t.next.cmd(line)
		}
		if reused && (err != nil || rep.code == 421) {
			t.srv.Log.Info("next hop closed the connection kept from the previous message, reconnecting",
				"next_hop", t.srv.NextHop, "error", err, "reply", rep.String())
			t.next.drop()
			t.next, reused = nil, false
			continue
		}
		if err != nil {
			t.srv.Log.Error("next hop failed at MAIL", "next_hop", t.srv.NextHop, "error", err)
			return t.dropNextHop()
		}
		break
	}
	if rep.code == 250 {
		t.mail, t.sender = line, strings.Trim(addr, "<>")
		if b, ok := t.srv.Checker.(Beginner); ok {
			ctx, cancel := context.WithTimeout(context.Background(), t.srv.Timeout)
			b.Begin(ctx, xtext(t.xforward["ADDR"]), xtext(t.xforward["PORT"]))
			cancel()
		}
	}
	return t.reply(rep.lines...)
}

// dropNextHop answers a temporary failure after the next hop failed.
func (t *session) dropNextHop() error {
	if t.next != nil {
		t.next.drop()
		t.next = nil
	}
	t.resetTransaction()
	return t.reply(nextHopDown)
}

func (t *session) rcptCmd(line string) error {
	if t.mail == "" {
		return t.reply("503 5.5.1 Error: need MAIL command")
	}
	if len(line) < len("RCPT TO:") || !strings.EqualFold(line[:len("RCPT TO:")], "RCPT TO:") {
		return t.reply("501 5.5.4 Syntax: RCPT TO:<address>")
	}
	rep, err := t.next.cmd(line)
	if err != nil {
		return t.dropNextHop()
	}
	if rep.code == 250 || rep.code == 251 {
		addr, _, _ := strings.Cut(strings.TrimSpace(line[len("RCPT TO:"):]), " ")
		t.rcpts = append(t.rcpts, strings.Trim(addr, "<>"))
	}
	return t.reply(rep.lines...)
}

// checkMode logs a message that Postfix hands over in the other mode than
// configured: after the queue, XFORWARD IDENT is the queue id; before it,
// there is none yet ([UNAVAILABLE]). policyd keeps who sent queued mail only
// in after-queue mode, so a wrong mode loses the sender of spam (R15).
func (t *session) checkMode(m *Message) {
	queued := m.Ident != "" && m.Ident != "[UNAVAILABLE]"
	if queued == t.srv.AfterQueue {
		return
	}
	mode, sent := "before-queue", "a queue id"
	if t.srv.AfterQueue {
		mode, sent = "after-queue", "no queue id"
	}
	t.srv.Log.Error("contentfilter.mode is "+mode+" but Postfix's XFORWARD IDENT has "+sent+": set the mode that etc/postfix/main.cf uses",
		"client", m.ClientAddr, "ident", m.Ident)
}

func (t *session) dataCmd() error {
	if t.mail == "" {
		return t.reply("503 5.5.1 Error: need MAIL command")
	}
	if len(t.rcpts) == 0 {
		return t.reply("554 5.5.1 Error: no valid recipients")
	}
	if err := t.reply("354 End data with <CR><LF>.<CR><LF>"); err != nil {
		return err
	}
	spool := newSpool(t.srv.SpoolDir, t.srv.SpoolThreshold)
	defer spool.Close()
	t.conn.SetReadDeadline(time.Now().Add(t.srv.Timeout))
	err := readData(t.r, spool, t.srv.MaxSize)
	m := &Message{
		ClientAddr: xtext(t.xforward["ADDR"]), ClientPort: xtext(t.xforward["PORT"]), Helo: xtext(t.xforward["HELO"]),
		Ident: xtext(t.xforward["IDENT"]), Proto: xtext(t.xforward["PROTO"]), Source: xtext(t.xforward["SOURCE"]),
		Sender: t.sender, Recipients: t.rcpts, Spool: spool,
	}
	defer t.resetTransaction()
	t.checkMode(m)
	switch {
	case errors.Is(err, errTooBig):
		t.abortNextHop()
		return t.reply(fmt.Sprintf("552 5.3.4 Error: message larger than %d bytes", t.srv.MaxSize))
	case err != nil:
		t.srv.Log.Warn("message not received whole, Postfix keeps it", "client", m.ClientAddr, "error", err)
		return err
	}
	v := Verdict{}
	if t.srv.Checker != nil {
		ctx, cancel := context.WithTimeout(context.Background(), t.srv.Timeout)
		v = t.srv.Checker.Check(ctx, m)
		cancel()
	}
	if v.Reply != "" {
		t.abortNextHop()
		return t.reply(v.Reply)
	}
	return t.deliver(m, v)
}

// abortNextHop ends the next hop's transaction.
func (t *session) abortNextHop() {
	if rep, err := t.next.cmd("RSET"); err != nil || rep.code != 250 {
		t.next.drop()
		t.next = nil
	}
}

// deliver gives the message to the next hop and mirrors its reply.
func (t *session) deliver(m *Message, v Verdict) error {
	rep, err := t.next.cmd("DATA")
	if err != nil {
		return t.dropNextHop()
	}
	if rep.code != 354 {
		return t.reply(rep.lines...)
	}
	t.next.conn.SetDeadline(time.Now().Add(t.srv.Timeout))
	body := m.Spool.Reader()
	if len(v.Headers) > 0 {
		body = io.MultiReader(strings.NewReader(strings.Join(v.Headers, "\r\n")+"\r\n"), body)
	}
	bw := bigWriters.Get(t.next.conn)
	defer bigWriters.Put(bw)
	dw := newDataWriter(bw)
	if t.srv.Sign != nil {
		err = t.srv.Sign(dw, body, m)
	} else {
		br := bigReaders.Get(body)
		_, err = br.WriteTo(dw)
		bigReaders.Put(br)
	}
	if err == nil {
		err = dw.Close()
	}
	if r := (*Refusal)(nil); errors.As(err, &r) {
		// The next hop is in the middle of DATA: only closing the
		// connection ends its transaction without a message.
		t.srv.Log.Info("reject", "client", m.ClientAddr, "port", m.ClientPort, "ident", m.Ident, "sender", m.Sender, "reply", r.Reply)
		t.next.drop()
		t.next = nil
		return t.reply(r.Reply)
	}
	if err != nil {
		t.srv.Log.Error("delivery to the next hop failed, Postfix keeps the message", "client", m.ClientAddr, "error", err)
		return t.dropNextHop()
	}
	rep, err = readReply(t.next.r)
	if err != nil {
		t.srv.Log.Error("no reply from the next hop, Postfix keeps the message", "client", m.ClientAddr, "error", err)
		return t.dropNextHop()
	}
	t.srv.Log.Info("message", "client", m.ClientAddr, "port", m.ClientPort, "ident", m.Ident, "sender", m.Sender,
		"recipients", len(m.Recipients), "size", m.Spool.Size(), "next_hop", rep.last())
	return t.reply(rep.lines...)
}

// deadlineReader renews the read deadline before each read of the
// connection, as the data comes in: once per read rather than once per
// line of the message (which cost a fifth of the filter's CPU).
type deadlineReader struct {
	conn    net.Conn
	timeout time.Duration
}

func (d deadlineReader) Read(p []byte) (int, error) {
	d.conn.SetReadDeadline(time.Now().Add(d.timeout))
	return d.conn.Read(p)
}
