// Package conns serves the connections of a daemon's listeners, one
// goroutine each, and shuts them down in order: the listeners first, then
// the connections that are between two requests, then, once the caller's
// deadline is over, the rest. policyd's policy and milter servers and the
// content filter share it.
package conns

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"
)

// Group is a set of listeners and their connections. The zero Group is
// ready to use.
type Group struct {
	mu      sync.Mutex
	ls      []net.Listener
	conns   map[net.Conn]bool // true while the connection is busy
	closing bool
	wg      sync.WaitGroup
}

// Serve accepts connections on l until Shutdown, and serves each with
// handle in a goroutine of its own; handle owns the connection and closes
// it. A new connection counts as busy until it says otherwise (SetBusy).
// Serve returns net.ErrClosed after Shutdown, or the listener's error.
func (g *Group) Serve(l net.Listener, handle func(net.Conn)) error {
	g.mu.Lock()
	if g.closing {
		g.mu.Unlock()
		return net.ErrClosed
	}
	g.ls = append(g.ls, l)
	if g.conns == nil {
		g.conns = map[net.Conn]bool{}
	}
	g.mu.Unlock()
	for {
		c, err := l.Accept()
		if err != nil {
			if g.Closing() {
				return net.ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return err
		}
		g.mu.Lock()
		if g.closing {
			g.mu.Unlock()
			c.Close()
			return net.ErrClosed
		}
		g.conns[c] = true
		g.wg.Add(1)
		g.mu.Unlock()
		go func() {
			defer g.wg.Done()
			defer func() {
				g.mu.Lock()
				delete(g.conns, c)
				g.mu.Unlock()
			}()
			handle(c)
		}()
	}
}

// Closing reports whether Shutdown has begun.
func (g *Group) Closing() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closing
}

// SetBusy marks c as busy (answering a request) or idle (waiting for the
// next one), and reports whether Shutdown has begun: an idle connection
// should then end.
func (g *Group) SetBusy(c net.Conn, busy bool) (closing bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.conns[c]; ok {
		g.conns[c] = busy
	}
	return g.closing
}

// Shutdown closes the listeners and the idle connections, and waits for
// the busy ones to end until ctx is done; then it closes them too, waits
// for their goroutines and returns ctx's error.
func (g *Group) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	g.closing = true
	for _, l := range g.ls {
		l.Close()
	}
	for c, busy := range g.conns {
		if !busy {
			c.Close()
		}
	}
	g.mu.Unlock()
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		g.mu.Lock()
		for c := range g.conns {
			c.Close()
		}
		g.mu.Unlock()
		<-done
		return ctx.Err()
	}
}
