package conns

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// Shutdown closes the listener and an idle connection at once, lets a busy
// one finish, and past its deadline closes the rest.
func TestShutdown(t *testing.T) {
	var g Group
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	ended := make(chan string, 3)
	served := make(chan error, 1)
	go func() {
		served <- g.Serve(l, func(c net.Conn) {
			defer c.Close()
			var b [1]byte
			if _, err := c.Read(b[:]); err != nil {
				return
			}
			switch b[0] {
			case 'i': // idle: waits for a next request that never comes
				if g.SetBusy(c, false) {
					ended <- "idle, closing"
					return
				}
				_, err := c.Read(b[:])
				ended <- "idle: " + errString(err)
			case 'b': // busy until released
				<-release
				ended <- "busy: finished"
			case 's': // busy, never finishes by itself
				_, err := c.Read(b[:])
				ended <- "stuck: " + errString(err)
			}
		})
	}()
	dial := func(kind byte) net.Conn {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.Write([]byte{kind})
		return c
	}
	dial('i')
	dial('b')
	dial('s')
	// Wait until the idle one is idle: SetBusy has run when the group says so.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		g.mu.Lock()
		idle := 0
		for _, busy := range g.conns {
			if !busy {
				idle++
			}
		}
		n := len(g.conns)
		g.mu.Unlock()
		if idle == 1 && n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections, %d idle", n, idle)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	shut := make(chan error, 1)
	go func() { shut <- g.Shutdown(ctx) }()
	if got := <-ended; got != "idle: use of closed network connection" {
		t.Errorf("first to end: %q, want the idle connection, closed", got)
	}
	if err := <-served; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve returned %v, want net.ErrClosed", err)
	}
	close(release)
	if got := <-ended; got != "busy: finished" {
		t.Errorf("second to end: %q, want the busy one, finished", got)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a connection still busy", err)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	if got := <-ended; got != "stuck: use of closed network connection" {
		t.Errorf("last to end: %q, want the stuck one, closed at the deadline", got)
	}
	if err := <-shut; !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown returned %v, want the context's error", err)
	}
	if err := g.Serve(l, func(net.Conn) {}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve after Shutdown: %v", err)
	}
}

func errString(err error) string {
	var ne *net.OpError
	switch {
	case err == nil:
		return "read"
	case errors.Is(err, io.EOF):
		return "EOF"
	case errors.As(err, &ne):
		return ne.Err.Error()
	}
	return err.Error()
}
