package harness

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// Security is how a Client protects the session.
type Security int

const (
	// Plain never starts TLS by itself (port 25 as most clients use it; call StartTLS to upgrade).
	Plain Security = iota
	// StartTLS upgrades with STARTTLS in Hello (port 587).
	StartTLS
	// ImplicitTLS starts TLS before the greeting (port 465).
	ImplicitTLS
)

// Reply is one SMTP reply: its code and its lines exactly as the server sent them, without CRLF.
type Reply struct {
	Code  int
	Lines []string
}

// Last returns the last line of the reply (the whole reply when it has one line).
func (r Reply) Last() string {
	if len(r.Lines) == 0 {
		return ""
	}
	return r.Lines[len(r.Lines)-1]
}

// ReplyError is a reply whose code is not the one the step expects.
type ReplyError struct {
	Cmd   string // the command, "" for the greeting; AUTH's credentials are left out
	Reply Reply
}

func (e *ReplyError) Error() string {
	if e.Cmd == "" {
		return "greeting: " + e.Reply.Last()
	}
	return e.Cmd + ": " + e.Reply.Last()
}

// Client is a small line-based SMTP client (net.Conn plus bufio, not go-smtp's client) that keeps
// every reply line exactly as the server sent it, greeting included, so tests can compare the
// lines a customer's mail client would show.
//
// Every step returns the last line of the server's reply and an error: nil when the code is the
// one the step expects (220, 235, 250, 354, 221), a *ReplyError when it is not, or the I/O error.
type Client struct {
	// Greeting is the last line of the server's greeting, e.g. "220 host ESMTP" or a refusal at
	// connect such as "421 4.7.0 ...".
	Greeting string
	// Timeout bounds each step (default 30s).
	Timeout time.Duration

	conn       net.Conn
	r          *bufio.Reader
	sec        Security
	tls        bool
	ehlo       Reply
	transcript []string
}

// Dial connects to addr (host:port) from the local IP address local (e.g. "127.0.0.7"; "" lets
// the kernel choose) and reads the greeting. With ImplicitTLS it does the TLS handshake first. TLS
// does not verify the server's certificate.
//
// When the greeting is not 220, Dial returns the Client (whose Greeting holds the line) together
// with a *ReplyError; the Client is nil only when nothing was read.
func Dial(addr, local string, sec Security) (*Client, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if local != "" {
		ip := net.ParseIP(local)
		if ip == nil {
			return nil, fmt.Errorf("harness: bad local address %q", local)
		}
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &Client{Timeout: 30 * time.Second, conn: conn, sec: sec}
	if sec == ImplicitTLS {
		if err := c.handshake(); err != nil {
			conn.Close()
			return nil, err
		}
	} else {
		c.r = bufio.NewReader(conn)
	}
	c.conn.SetDeadline(time.Now().Add(c.Timeout))
	rep, err := c.readReply()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("harness: greeting: %w", err)
	}
	c.Greeting = rep.Last()
	if rep.Code != 220 {
		return c, &ReplyError{Reply: rep}
	}
	return c, nil
}

// Cmd sends one command line and returns the reply, whatever its code; the error is an I/O error.
func (c *Client) Cmd(line string) (Reply, error) {
	return c.cmd(line, line)
}

// Hello does what a mail client does after the greeting: EHLO, and for a StartTLS client
// STARTTLS and EHLO again. It returns the last line of the last reply.
func (c *Client) Hello(name string) (string, error) {
	line, err := c.Ehlo(name)
	if err != nil || c.sec != StartTLS || c.tls {
		return line, err
	}
	if line, err := c.StartTLS(); err != nil {
		return line, err
	}
	return c.Ehlo(name)
}

// Ehlo sends EHLO name.
func (c *Client) Ehlo(name string) (string, error) {
	rep, err := c.step("EHLO "+name, "", 250)
	if err == nil {
		c.ehlo = rep
	}
	return rep.Last(), err
}

// Supports reports whether the last EHLO reply announced the extension ext (e.g. "AUTH",
// "STARTTLS"), and returns the rest of its line (e.g. "PLAIN LOGIN").
func (c *Client) Supports(ext string) (bool, string) {
	for i, l := range c.ehlo.Lines {
		if i == 0 || len(l) < 4 {
			continue
		}
		kw, params, _ := strings.Cut(l[4:], " ")
		if strings.EqualFold(kw, ext) {
			return true, params
		}
	}
	return false, ""
}

// StartTLS sends STARTTLS and, after a 220, does the TLS handshake.
func (c *Client) StartTLS() (string, error) {
	rep, err := c.step("STARTTLS", "", 220)
	if err != nil {
		return rep.Last(), err
	}
	return rep.Last(), c.handshake()
}

// Auth logs in with AUTH PLAIN (RFC 4616), the credentials in the initial response.
func (c *Client) Auth(user, pass string) (string, error) {
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	rep, err := c.step("AUTH PLAIN "+ir, "AUTH PLAIN", 235)
	return rep.Last(), err
}

// Mail sends MAIL FROM:<from>.
func (c *Client) Mail(from string) (string, error) {
	rep, err := c.step("MAIL FROM:<"+from+">", "", 250)
	return rep.Last(), err
}

// Rcpt sends RCPT TO:<to>.
func (c *Client) Rcpt(to string) (string, error) {
	rep, err := c.step("RCPT TO:<"+to+">", "", 250)
	return rep.Last(), err
}

// Data sends DATA and, after a 354, the message (LF or CRLF line ends; dot-stuffed here) and the
// final dot. It returns the line of the reply to DATA when that is not 354, else the final reply.
func (c *Client) Data(msg []byte) (string, error) {
	return c.DataFrom(bytes.NewReader(msg))
}

// DataFrom is Data with the message read from r as it is sent, so that a test can hold the rest of
// a message back in the middle of DATA (a slow client) and do something in between. The whole
// message must arrive within the Client's Timeout.
func (c *Client) DataFrom(r io.Reader) (string, error) {
	rep, err := c.step("DATA", "", 354)
	if err != nil {
		return rep.Last(), err
	}
	c.conn.SetDeadline(time.Now().Add(c.Timeout))
	bw := bufio.NewWriter(c.conn)
	dw := textproto.NewWriter(bw).DotWriter()
	n, err := io.Copy(dw, r)
	if err != nil {
		return "", err
	}
	if err := dw.Close(); err != nil {
		return "", err
	}
	c.transcript = append(c.transcript, fmt.Sprintf("C: <%d bytes of data>", n))
	rep, err = c.readReply()
	if err != nil {
		return "", err
	}
	if rep.Code != 250 {
		return rep.Last(), &ReplyError{Cmd: "end of DATA", Reply: rep}
	}
	return rep.Last(), nil
}

// Send runs one mail transaction: MAIL, one RCPT per recipient, DATA. It stops at the first
// failing step and returns its line; on success it returns the final reply to DATA.
func (c *Client) Send(from string, to []string, msg []byte) (string, error) {
	if line, err := c.Mail(from); err != nil {
		return line, err
	}
	for _, r := range to {
		if line, err := c.Rcpt(r); err != nil {
			return line, err
		}
	}
	return c.Data(msg)
}

// Rset sends RSET.
func (c *Client) Rset() (string, error) {
	rep, err := c.step("RSET", "", 250)
	return rep.Last(), err
}

// Quit sends QUIT and closes the connection.
func (c *Client) Quit() (string, error) {
	rep, err := c.step("QUIT", "", 221)
	c.conn.Close()
	return rep.Last(), err
}

// Close closes the connection without QUIT.
func (c *Client) Close() error {
	return c.conn.Close()
}

// LocalAddr returns the client's end of the connection; with the server's address it identifies
// the session (the client_address and client_port of Postfix's policy requests).
func (c *Client) LocalAddr() *net.TCPAddr {
	return c.conn.LocalAddr().(*net.TCPAddr)
}

// TLS reports whether the session is encrypted.
func (c *Client) TLS() bool { return c.tls }

// Transcript returns the session so far, one "C: " or "S: " line per line sent or received.
func (c *Client) Transcript() string {
	return strings.Join(c.transcript, "\n")
}

func (c *Client) step(line, logged string, want int) (Reply, error) {
	if logged == "" {
		logged = line
	}
	rep, err := c.cmd(line, logged)
	if err != nil {
		return rep, err
	}
	if rep.Code != want {
		return rep, &ReplyError{Cmd: logged, Reply: rep}
	}
	return rep, nil
}

func (c *Client) cmd(line, logged string) (Reply, error) {
	c.conn.SetDeadline(time.Now().Add(c.Timeout))
	c.transcript = append(c.transcript, "C: "+logged)
	if _, err := c.conn.Write([]byte(line + "\r\n")); err != nil {
		return Reply{}, err
	}
	return c.readReply()
}

// readReply reads the lines of one reply: "NNN-text" lines up to the "NNN text" (or "NNN") line.
func (c *Client) readReply() (Reply, error) {
	var rep Reply
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			return rep, fmt.Errorf("reading reply after %q: %w", rep.Lines, err)
		}
		l = strings.TrimRight(l, "\r\n")
		c.transcript = append(c.transcript, "S: "+l)
		rep.Lines = append(rep.Lines, l)
		if len(l) < 3 {
			return rep, fmt.Errorf("malformed reply line %q", l)
		}
		code, err := strconv.Atoi(l[:3])
		if err != nil {
			return rep, fmt.Errorf("malformed reply line %q", l)
		}
		rep.Code = code
		if len(l) == 3 || l[3] == ' ' {
			return rep, nil
		}
		if l[3] != '-' {
			return rep, fmt.Errorf("malformed reply line %q", l)
		}
	}
}

func (c *Client) handshake() error {
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true, ServerName: "relayguard-lab.example.test"})
	tc.SetDeadline(time.Now().Add(c.Timeout))
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("harness: TLS handshake: %w", err)
	}
	c.conn, c.r, c.tls = tc, bufio.NewReader(tc), true
	c.transcript = append(c.transcript, "-- TLS "+tls.VersionName(tc.ConnectionState().Version))
	return nil
}
