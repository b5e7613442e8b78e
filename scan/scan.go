// Package scan holds what the content filter's scanner clients have in
// common: how they say that a scanner gave no verdict.
//
// The clients live in the subpackages: clamd (viruses, R16) speaks clamd's
// INSTREAM protocol, rspamd (spam, R15) posts to rspamd's /checkv2, and
// spamd speaks SpamAssassin's SPAMC protocol. Each call ends in one of three
// ways:
//
//   - a verdict (clean, infected, too large to scan whole; an rspamd action;
//     spam or ham), with a nil error;
//   - an error that matches ErrUnavailable: the scanner is down, did not
//     answer in time (these also match ErrTimeout), failed while scanning or
//     answered something that is not its protocol. The caller applies the
//     fail mode configured for that scanner; the default is a 4xx reply, so
//     that Postfix keeps the message and tries again later;
//   - any other error: the request could not be made (the message could not
//     be read, a header value is not sendable) or the scanner refused it as
//     malformed or unauthorized (see rspamd.StatusError and
//     spamd.ReplyError). That is a fault on this side, which no fail mode
//     should turn into accepting mail unscanned; the caller answers 4xx and
//     logs it.
//
// A caller that gives up (its context canceled) gets an error that matches
// context.Canceled and not ErrUnavailable.
package scan

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// ErrUnavailable is matched (errors.Is) by every error that says that a
// scanner gave no verdict through no fault of the request.
var ErrUnavailable = errors.New("scanner unavailable")

// ErrTimeout is matched by the errors of scanners that did not answer in
// time. Those errors match ErrUnavailable too.
var ErrTimeout = errors.New("scanner timed out")

// Error is a scanner's failure to give a verdict. It matches ErrUnavailable,
// and ErrTimeout when the scanner did not answer in time.
type Error struct {
	Scanner string // "clamd", "rspamd", "spamd"
	Op      string // what was under way: "connect", "send", "reply", ...
	Err     error  // the cause: a network error, the scanner's own error reply, ...
}

func (e *Error) Error() string {
	return e.Scanner + " unavailable: " + e.Op + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes the error match ErrUnavailable, and ErrTimeout when it is one.
func (e *Error) Is(target error) bool {
	return target == ErrUnavailable || target == ErrTimeout && e.Timeout()
}

// Timeout reports whether the scanner did not answer in time: a deadline of
// the context or of the connection passed.
func (e *Error) Timeout() bool {
	if errors.Is(e.Err, context.DeadlineExceeded) || errors.Is(e.Err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(e.Err, &ne) && ne.Timeout()
}

// Unavailable returns the error of a client of scanner that failed at op
// with err while working under ctx. When ctx was canceled, the cause is the
// caller giving up, and the result matches context.Canceled, not
// ErrUnavailable. When ctx's deadline passed, err is only its symptom (a
// connection whose deadline is ctx's, or was moved to the past when ctx
// ended), and the result carries context.DeadlineExceeded instead.
// Otherwise the result is an *Error with err as its cause.
func Unavailable(ctx context.Context, scanner, op string, err error) error {
	switch cerr := ctx.Err(); {
	case errors.Is(cerr, context.Canceled):
		return fmt.Errorf("%s: %s: %w", scanner, op, cerr)
	case cerr != nil:
		err = cerr
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The connection's deadline is ctx's, and may pass a moment before
		// ctx's timer fires.
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			err = context.DeadlineExceeded
		}
	}
	return &Error{Scanner: scanner, Op: op, Err: err}
}

// Dial connects to a scanner over network ("tcp", "unix") for a client of
// scanner, with an error from Unavailable if it fails. The connection's
// deadline is ctx's, and it is moved to the past when ctx is done, so that
// a read or write under way returns; Close releases that tie.
func Dial(ctx context.Context, scanner, network, address string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, Unavailable(ctx, scanner, "connect", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	return &ctxConn{Conn: conn, stop: context.AfterFunc(ctx, func() {
		conn.SetDeadline(time.Unix(1, 0))
	})}, nil
}

// ctxConn is a connection tied to a context by Dial.
type ctxConn struct {
	net.Conn
	stop func() bool
}

func (c *ctxConn) Close() error {
	c.stop()
	return c.Conn.Close()
}

// CloseWrite shuts down the writing side of the connection (TCP and unix
// connections can), to tell the scanner that the request is complete.
func (c *ctxConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
