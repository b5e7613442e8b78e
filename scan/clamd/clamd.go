// Package clamd is a client of ClamAV's daemon, for R16 (viruses).
//
// It streams a message to clamd with the INSTREAM command, over TCP or a
// unix socket, one connection per scan, as clamd's protocol documentation
// (clamd(8), "INSTREAM") describes:
//
//	client: "zINSTREAM\x00"
//	client: <length, 4 bytes, network byte order><length bytes of data>   (repeated)
//	client: <0, 4 bytes>                                                   (end of stream)
//	clamd:  "stream: OK\x00" | "stream: <signature> FOUND\x00" | "<text> ERROR\x00"
//
// The "z" prefix makes clamd end its reply with a NUL byte. clamd spools the
// chunks to a temporary file and scans the whole stream once it ends, so a
// signature that straddles two chunks is found.
//
// clamd refuses a stream longer than its StreamMaxLength (25 MiB unless
// configured): as soon as a chunk's length would take the stream past it,
// it answers "INSTREAM size limit exceeded. ERROR" and closes the connection
// (clamd/server-th.c, handle_stream: a stream of exactly StreamMaxLength
// bytes is accepted). Client.MaxStream is that limit. A longer message is
// not refused: its first MaxStream bytes are scanned and the result says
// TooLarge, so that a virus in them is still found and the caller decides,
// per configuration, what to do with a message that was not scanned whole.
// If clamd's limit turns out to be lower than MaxStream, its refusal is
// reported the same way, as TooLarge with nothing scanned.
//
// The message is read from an io.Reader in ChunkSize pieces and written to
// the connection as it is read: it is never held whole in memory.
package clamd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"time"

	"relayguard/scan"
)

// Defaults for the zero fields of a Client.
const (
	DefaultNetwork   = "tcp"
	DefaultTimeout   = 30 * time.Second
	DefaultChunkSize = 64 << 10
	DefaultMaxStream = 25 << 20 // clamd's default StreamMaxLength (25M)
)

// maxReply bounds what is read of a reply: clamd's are one short line.
const maxReply = 4096

// Replies, without their NUL terminator.
const (
	replyOK        = "stream: OK"
	replyPong      = "PONG"
	replySizeLimit = "INSTREAM size limit exceeded. ERROR"
	streamPrefix   = "stream: "
	foundSuffix    = " FOUND"
	errorSuffix    = " ERROR"
)

// Client scans messages with one clamd. The zero values of its fields mean
// their defaults; Address is required. A Client is safe for concurrent use:
// every call opens its own connection.
type Client struct {
	Network string // "tcp" (DefaultNetwork) or "unix"
	Address string // "127.0.0.1:3310", or the path of clamd's LocalSocket

	// Timeout bounds a whole call, from the connection to the reply, in
	// addition to the context's deadline. Default DefaultTimeout.
	Timeout time.Duration

	// ChunkSize is the length of the chunks the stream is cut into, and so
	// the size of the one buffer a scan uses. Default DefaultChunkSize.
	ChunkSize int

	// MaxStream is clamd's StreamMaxLength: no more than this many bytes of
	// a message are sent. Default DefaultMaxStream.
	MaxStream int64
}

// Result is clamd's verdict on a message.
type Result struct {
	// Infected reports that clamd found a signature, named by Signature
	// (custom databases' names end in ".UNOFFICIAL").
	Infected  bool
	Signature string

	// TooLarge reports that the message is longer than MaxStream (or than
	// clamd's own limit), so that it was not scanned whole: Infected is
	// about its first MaxStream bytes, or about nothing at all if clamd
	// refused the stream.
	TooLarge bool
}

// Scan streams the message that r yields to clamd and returns its verdict.
//
// An error that matches scan.ErrUnavailable means that there is no verdict:
// clamd could not be reached, did not answer in time (scan.ErrTimeout),
// closed the connection, answered an error of its own or something that is
// not its protocol. An error from r is returned wrapped, and does not match
// scan.ErrUnavailable.
func (c *Client) Scan(ctx context.Context, r io.Reader) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	conn, err := c.dial(ctx)
	if err != nil {
		return Result{}, err
	}
	defer conn.Close()

	tooLarge, err := c.send(conn, r)
	var merr *readError
	switch {
	case errors.As(err, &merr):
		return Result{}, fmt.Errorf("clamd: reading the message: %w", merr.err)
	case err != nil:
		// clamd may have answered before it stopped reading: its refusal
		// of a stream longer than its limit, or an error of its own. Only
		// an error: a verdict on part of the message is none.
		if reply, rerr := readReply(conn); rerr == nil && strings.HasSuffix(reply, errorSuffix) {
			return parseScanReply(ctx, reply, tooLarge)
		}
		return Result{}, scan.Unavailable(ctx, "clamd", "send", err)
	}
	reply, err := readReply(conn)
	if err != nil {
		return Result{}, scan.Unavailable(ctx, "clamd", "reply", err)
	}
	return parseScanReply(ctx, reply, tooLarge)
}

// Ping checks that clamd answers (zPING, PONG).
func (c *Client) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	conn, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("zPING\x00")); err != nil {
		return scan.Unavailable(ctx, "clamd", "send", err)
	}
	reply, err := readReply(conn)
	if err != nil {
		return scan.Unavailable(ctx, "clamd", "reply", err)
	}
	if reply != replyPong {
		return scan.Unavailable(ctx, "clamd", "reply", fmt.Errorf("unexpected reply to PING %s", quote(reply)))
	}
	return nil
}

func (c *Client) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

func (c *Client) chunkSize() int {
	n := int64(DefaultChunkSize)
	if c.ChunkSize > 0 {
		n = int64(c.ChunkSize)
	}
	// A chunk never needs to be longer than the stream, and its length is
	// a 32-bit number.
	return int(min(n, c.maxStream(), math.MaxUint32))
}

func (c *Client) maxStream() int64 {
	if c.MaxStream > 0 {
		return c.MaxStream
	}
	return DefaultMaxStream
}

func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	network := c.Network
	if network == "" {
		network = DefaultNetwork
	}
	return scan.Dial(ctx, "clamd", network, c.Address)
}

// readError is an error of the message's reader, as opposed to one of the
// connection.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }

// send writes the INSTREAM command, the message in chunks and the end of
// the stream. It reports whether the message was longer than MaxStream, in
// which case only MaxStream bytes were sent.
func (c *Client) send(conn net.Conn, r io.Reader) (tooLarge bool, err error) {
	if _, err := conn.Write([]byte("zINSTREAM\x00")); err != nil {
		return false, err
	}
	// One buffer: the chunk's 4-byte length, then its data, read in place
	// and written with one call.
	buf := make([]byte, 4+c.chunkSize())
	left := c.maxStream()
	for {
		if left == 0 {
			// The limit is reached: one more byte tells whether the
			// message goes on.
			n, err := io.ReadFull(r, buf[4:5])
			if err != nil && err != io.EOF {
				return false, &readError{err}
			}
			tooLarge = n > 0
			break
		}
		n, rerr := io.ReadFull(r, buf[4:4+min(int64(len(buf)-4), left)])
		if n > 0 {
			binary.BigEndian.PutUint32(buf, uint32(n))
			if _, err := conn.Write(buf[:4+n]); err != nil {
				return false, err
			}
			left -= int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return false, &readError{rerr}
		}
	}
	_, err = conn.Write([]byte{0, 0, 0, 0})
	return tooLarge, err
}

// readReply reads one NUL-terminated reply and returns it without the NUL.
func readReply(conn net.Conn) (string, error) {
	buf := make([]byte, maxReply)
	n := 0
	for {
		if n == len(buf) {
			return "", fmt.Errorf("no end to a reply of %d bytes: %s", n, quote(string(buf)))
		}
		k, err := conn.Read(buf[n:])
		n += k
		if i := bytes.IndexByte(buf[:n], 0); i >= 0 {
			return string(buf[:i]), nil
		}
		switch {
		case err == io.EOF && n == 0:
			return "", errors.New("connection closed without a reply")
		case err == io.EOF:
			return "", fmt.Errorf("connection closed in the middle of the reply %s", quote(string(buf[:n])))
		case err != nil:
			return "", err
		}
	}
}

// parseScanReply turns clamd's reply to INSTREAM into a Result. tooLarge
// says whether the message was cut at MaxStream.
func parseScanReply(ctx context.Context, reply string, tooLarge bool) (Result, error) {
	if rest, ok := strings.CutPrefix(reply, streamPrefix); ok {
		if sig, ok := strings.CutSuffix(rest, foundSuffix); ok && strings.TrimSpace(sig) != "" {
			return Result{Infected: true, Signature: strings.TrimSpace(sig), TooLarge: tooLarge}, nil
		}
	}
	switch {
	case reply == replyOK:
		return Result{TooLarge: tooLarge}, nil
	case reply == replySizeLimit:
		return Result{TooLarge: true}, nil
	case strings.HasSuffix(reply, errorSuffix):
		return Result{}, scan.Unavailable(ctx, "clamd", "scan", fmt.Errorf("clamd answered %s", quote(reply)))
	}
	return Result{}, scan.Unavailable(ctx, "clamd", "reply", fmt.Errorf("unexpected reply %s", quote(reply)))
}

// quote quotes a reply for an error message, cut to a readable length.
func quote(s string) string {
	const limit = 200
	if len(s) > limit {
		return fmt.Sprintf("%q...", s[:limit])
	}
	return fmt.Sprintf("%q", s)
}
