package policyd

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
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

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]bool // true while a request is being answered
	closing   bool
	wg        sync.WaitGroup
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("policyd: server closed")

// Serve accepts connections on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	if s.listeners == nil {
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[net.Conn]bool{}
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return err
		}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			c.Close()
			return ErrServerClosed
		}
		s.conns[c] = false
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

func (s *Server) setBusy(c net.Conn, busy bool) (closing bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[c] = busy
	return s.closing
}

func (s *Server) serveConn(c net.Conn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
		s.wg.Done()
	}()
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
		if s.setBusy(c, true) {
			return
		}
		ctx = ctx.next(s.RequestTimeout)
		action := conn.Decide(ctx, &req)
		ctx.cancel()
		if s.Voice != nil {
			action = s.Voice.Policy(&req, action)
		}
		c.SetWriteDeadline(time.Now().Add(s.RequestTimeout))
		err = WriteAction(w, action)
		if s.setBusy(c, false) || err != nil {
			if err != nil {
				s.Log.Warn("policy reply not sent", "peer", peer, "error", err)
			}
			return
		}
	}
}

// Shutdown stops accepting, closes idle connections at once, lets the
// requests being answered finish, and waits for them until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for l := range s.listeners {
		l.Close()
	}
	for c, busy := range s.conns {
		if !busy {
			c.Close()
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}
