package policyd

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func startServer(t *testing.T, idle time.Duration) (*Server, string) {
	t.Helper()
	e := newTestEngine(t, nil)
	s := &Server{Engine: e.Engine, Limits: DefaultLimits, IdleTimeout: idle, RequestTimeout: 5 * time.Second, Log: slog.New(slog.DiscardHandler)}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return s, l.Addr().String()
}

// ask sends one request on c and reads the action.
func ask(t *testing.T, c net.Conn, r *bufio.Reader, req *Request) string {
	t.Helper()
	if _, err := req.WriteTo(c); err != nil {
		t.Fatal(err)
	}
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the reply: %v", err)
	}
	if blank, err := r.ReadString('\n'); err != nil || blank != "\n" {
		t.Fatalf("reply not ended by an empty line: %q %v", blank, err)
	}
	return strings.TrimSuffix(line, "\n")
}

func TestServerPersistentConnections(t *testing.T) {
	_, addr := startServer(t, time.Minute)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			r := bufio.NewReader(c)
			for j := range 50 {
				want := "action=DUNNO"
				req := request("MAIL", "127.0.0.1", "jan@example.cz", "jan@example.cz", "")
				if (i+j)%2 == 1 {
					req = request("MAIL", "127.0.0.1", "", "jan@example.cz", "")
					want = "action=530 5.7.0 ID authentication required"
				}
				if got := ask(t, c, r, req); got != want {
					t.Errorf("conn %d request %d: %q, want %q", i, j, got, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestServerClosesOnMalformed(t *testing.T) {
	_, addr := startServer(t, time.Minute)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "this is not a policy request\n\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 100)); err != io.EOF {
		t.Errorf("after a malformed request: read %d bytes, %v; want the connection closed without a reply", n, err)
	}
}

func TestServerIdleTimeout(t *testing.T) {
	_, addr := startServer(t, 200*time.Millisecond)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("idle connection: %v, want it closed by the server", err)
	}
}

func TestServerShutdownClosesIdleConnections(t *testing.T) {
	s, addr := startServer(t, time.Minute)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if got := ask(t, c, r, request("CONNECT", "127.0.0.1", "", "", "")); got != "action=DUNNO" {
		t.Fatalf("got %q", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadByte(); err != io.EOF {
		t.Errorf("after shutdown: %v, want EOF", err)
	}
}
