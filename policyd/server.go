package policyd

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"relayguard/internal/conns"
)

// Server accepts Postfix's policy connections. Each smtpd process keeps one
// persistent connection and sends one request at a time on it, so a
// connection is served by one goroutine and many connections are answered
// concurrently.
type Server struct {
	Engine         *Engine
	Limits         Limits
	IdleTimeout    time.Duration // close a connection that sends nothing for this long
	RequestTimeout time.Duration // deadline for deciding one request
	Voice          *Voice        // nil: replies go back through the policy protocol
	Log            *slog.Logger

	conns conns.Group
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("policyd: server closed")

// Serve accepts connections on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	err := s.conns.Serve(l, s.serveConn)
	if errors.Is(err, net.ErrClosed) && s.conns.Closing() {
		return ErrServerClosed
	}
	return err
}

func (s *Server) serveConn(c net.Conn) {
	defer c.Close()
	if s.conns.SetBusy(c, false) { // waiting for its first request
		return
	}
	peer := c.RemoteAddr().String()
	dec := NewDecoder(c, s.Limits)
	conn := s.Engine.NewConn()
	ctx := newRequestContext(s.RequestTimeout)
	w := bufio.NewWriter(c)
	var req Request
	for {
		c.SetReadDeadline(time.Now().Add(s.IdleTimeout))
		err := dec.Decode(&req)
		switch {
		case err == nil:
		case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
			return
		case errors.Is(err, os.ErrDeadlineExceeded):
			s.Log.Debug("idle policy connection closed", "peer", peer, "idle", s.IdleTimeout)
			return
		case errors.Is(err, ErrMalformed):
			s.Log.Warn("malformed policy request, connection closed without a reply", "peer", peer, "error", err)
			return
		default:
			s.Log.Warn("policy connection failed", "peer", peer, "error", err)
			return
		}
		if s.conns.SetBusy(c, true) {
			return
		}
		ctx = ctx.next(s.RequestTimeout)
		action := conn.Decide(ctx, &req)
		ctx.cancel()
		if s.Voice != nil {
			action = conn.Speak(s.Voice, action)
		}
		c.SetWriteDeadline(time.Now().Add(s.RequestTimeout))
		err = WriteAction(w, action)
		if s.conns.SetBusy(c, false) || err != nil {
			if err != nil {
				s.Log.Warn("policy reply not sent", "peer", peer, "error", err)
			}
			return
		}
	}
}

// Shutdown stops accepting, closes idle connections at once, lets the
// requests being answered finish, and waits for them until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error { return s.conns.Shutdown(ctx) }
