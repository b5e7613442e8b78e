// Package spamd is a client of SpamAssassin's daemon, for R15 (spam), the
// alternative to rspamd.
//
// It speaks the SPAMC protocol (SpamAssassin's spamd/PROTOCOL), one
// connection per message, with the SYMBOLS command:
//
//	client: "SYMBOLS SPAMC/1.5\r\n"
//	client: "Content-length: <size>\r\n"
//	client: "User: <user>\r\n"                  (when set)
//	client: "\r\n" <the message>                 then it shuts down its writing side
//	spamd:  "SPAMD/1.1 0 EX_OK\r\n"
//	spamd:  "Content-length: <n>\r\n"
//	spamd:  "Spam: True ; 15.0 / 5.0\r\n"        (spam or not; score / threshold)
//	spamd:  "\r\n" "GTUBE,MISSING_DATE,..."      (the rules that matched)
//
// A non-zero code on the first line is a sysexits.h code, and spamd sends
// nothing more. spamd decides spam or ham with its own threshold
// (required_score); Verdict.Spam is that decision.
package spamd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"relayguard/scan"
)

// Defaults for the zero fields of a Client.
const (
	DefaultNetwork = "tcp"
	DefaultTimeout = 30 * time.Second
)

// maxReply bounds what is read of a reply.
const maxReply = 64 << 10

const protocol = "SPAMC/1.5"

// Client checks messages with one spamd. Address is required; the zero
// values of the other fields mean their defaults. A Client is safe for
// concurrent use: every call opens its own connection.
type Client struct {
	Network string // "tcp" (DefaultNetwork) or "unix"
	Address string // "127.0.0.1:783", or the path of spamd's socket
	Timeout time.Duration
	User    string // the user whose preferences spamd applies; none if empty
}

// Verdict is spamd's answer for a message.
type Verdict struct {
	Spam      bool
	Score     float64
	Threshold float64
	Symbols   []string // the names of the rules that matched
}

// ReplyError is spamd's refusal of a request, with its sysexits.h code and
// text. spamd's own failures (EX_TEMPFAIL, EX_IOERR, EX_SOFTWARE, ...) are
// wrapped in a *scan.Error and match scan.ErrUnavailable; its refusals of
// the request (EX_USAGE, EX_DATAERR, EX_NOINPUT, EX_NOUSER, EX_PROTOCOL,
// EX_NOPERM) are returned as is and do not.
type ReplyError struct {
	Code    int
	Message string
}

func (e *ReplyError) Error() string {
	return fmt.Sprintf("spamd answered %d %s", e.Code, e.Message)
}

// refusals are the sysexits.h codes that blame the request.
var refusals = map[int]bool{64: true, 65: true, 66: true, 67: true, 76: true, 77: true}

// Check sends the message that msg yields, size bytes long, to spamd and
// returns spamd's verdict.
//
// An error that matches scan.ErrUnavailable means that there is no verdict:
// spamd could not be reached, did not answer in time (scan.ErrTimeout),
// failed, or answered something that is not its protocol. Other errors: msg
// failed or ended before size bytes, spamd refused the request
// (*ReplyError).
func (c *Client) Check(ctx context.Context, msg io.Reader, size int64) (Verdict, error) {
	if size < 0 {
		return Verdict{}, errors.New("spamd: the message's size is required")
	}
	if strings.ContainsAny(c.User, "\r\n") {
		return Verdict{}, fmt.Errorf("spamd: line break in the user name %q", c.User)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	conn, err := c.dial(ctx)
	if err != nil {
		return Verdict{}, err
	}
	defer conn.Close()

	w := bufio.NewWriter(conn)
	fmt.Fprintf(w, "SYMBOLS %s\r\nContent-length: %d\r\n", protocol, size)
	if c.User != "" {
		fmt.Fprintf(w, "User: %s\r\n", c.User)
	}
	w.WriteString("\r\n")
	src := &source{r: msg}
	n, err := io.CopyN(w, src, size)
	switch {
	case src.err != nil:
		return Verdict{}, fmt.Errorf("spamd: reading the message: %w", src.err)
	case err == io.EOF:
		return Verdict{}, fmt.Errorf("spamd: the message ended after %d of its %d bytes", n, size)
	case err == nil:
		err = w.Flush()
	}
	if cw, ok := conn.(interface{ CloseWrite() error }); ok && err == nil {
		err = cw.CloseWrite()
	}
	hdr, body, rerr := readReply(bufio.NewReader(io.LimitReader(conn, maxReply)))
	if err != nil {
		// spamd may have refused the request before it stopped reading.
		var re *ReplyError
		if errors.As(rerr, &re) {
			return Verdict{}, c.replyError(ctx, re)
		}
		return Verdict{}, scan.Unavailable(ctx, "spamd", "send", err)
	}
	if err := rerr; err != nil {
		return Verdict{}, c.replyError(ctx, err)
	}
	v, err := parseVerdict(hdr, body)
	if err != nil {
		return Verdict{}, scan.Unavailable(ctx, "spamd", "reply", err)
	}
	return v, nil
}

// Ping checks that spamd answers (PING, PONG).
func (c *Client) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	conn, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "PING "+protocol+"\r\n\r\n"); err != nil {
		return scan.Unavailable(ctx, "spamd", "send", err)
	}
	line, err := bufio.NewReader(io.LimitReader(conn, maxReply)).ReadString('\n')
	if err != nil {
		return scan.Unavailable(ctx, "spamd", "reply", err)
	}
	code, text, err := parseStatus(line)
	if err != nil {
		return scan.Unavailable(ctx, "spamd", "reply", err)
	}
	if code != 0 || text != "PONG" {
		return c.replyError(ctx, &ReplyError{Code: code, Message: text})
	}
	return nil
}

func (c *Client) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	network := c.Network
	if network == "" {
		network = DefaultNetwork
	}
	return scan.Dial(ctx, "spamd", network, c.Address)
}

// replyError classifies an error of the reply: a refusal as is, anything
// else as spamd being unavailable.
func (c *Client) replyError(ctx context.Context, err error) error {
	var re *ReplyError
	if errors.As(err, &re) && refusals[re.Code] {
		return err
	}
	return scan.Unavailable(ctx, "spamd", "reply", err)
}

// source is the message's reader, remembering its error to tell it from
// the connection's.
type source struct {
	r   io.Reader
	err error
}

func (s *source) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// readReply reads a reply: the status line, the headers (names in lower
// case) and the body. A non-zero status is a *ReplyError.
func readReply(r *bufio.Reader) (map[string]string, string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		if err == io.EOF && line == "" {
			return nil, "", errors.New("connection closed without a reply")
		}
		return nil, "", fmt.Errorf("status line: %w", err)
	}
	code, text, err := parseStatus(line)
	if err != nil {
		return nil, "", err
	}
	if code != 0 {
		return nil, "", &ReplyError{Code: code, Message: text}
	}
	hdr := make(map[string]string)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, "", fmt.Errorf("headers: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, "", fmt.Errorf("malformed header %q", line)
		}
		hdr[strings.ToLower(strings.TrimSpace(name))] = strings.TrimSpace(value)
	}
	var body []byte
	if cl, ok := hdr["content-length"]; ok {
		n, err := strconv.Atoi(cl)
		if err != nil || n < 0 {
			return nil, "", fmt.Errorf("malformed Content-length %q", cl)
		}
		body = make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return nil, "", fmt.Errorf("body: %w", err)
		}
	} else if body, err = io.ReadAll(r); err != nil {
		return nil, "", fmt.Errorf("body: %w", err)
	}
	return hdr, string(body), nil
}

// parseStatus parses "SPAMD/1.1 0 EX_OK".
func parseStatus(line string) (code int, text string, err error) {
	line = strings.TrimRight(line, "\r\n")
	version, rest, ok := strings.Cut(line, " ")
	if !ok || !strings.HasPrefix(version, "SPAMD/") {
		return 0, "", fmt.Errorf("malformed status line %q", line)
	}
	num, text, _ := strings.Cut(rest, " ")
	code, err = strconv.Atoi(num)
	if err != nil || code < 0 {
		return 0, "", fmt.Errorf("malformed status line %q", line)
	}
	return code, text, nil
}

// parseVerdict reads the Spam header ("True ; 15.0 / 5.0") and the
// comma-separated rule names of the body.
func parseVerdict(hdr map[string]string, body string) (Verdict, error) {
	value, ok := hdr["spam"]
	if !ok {
		return Verdict{}, errors.New("reply has no Spam header")
	}
	flag, scores, ok1 := strings.Cut(value, ";")
	score, threshold, ok2 := strings.Cut(scores, "/")
	var v Verdict
	switch strings.ToLower(strings.TrimSpace(flag)) {
	case "true", "yes":
		v.Spam = true
	case "false", "no":
	default:
		ok1 = false
	}
	var err1, err2 error
	v.Score, err1 = strconv.ParseFloat(strings.TrimSpace(score), 64)
	v.Threshold, err2 = strconv.ParseFloat(strings.TrimSpace(threshold), 64)
	if !ok1 || !ok2 || err1 != nil || err2 != nil {
		return Verdict{}, fmt.Errorf("malformed Spam header %q", value)
	}
	for _, s := range strings.Split(body, ",") {
		if s = strings.TrimSpace(s); s != "" {
			v.Symbols = append(v.Symbols, s)
		}
	}
	return v, nil
}
