package scan

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestUnavailable(t *testing.T) {
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	ioTimeout := &net.OpError{Op: "read", Net: "tcp", Err: timeoutError{}}

	check := func(name string, ctx context.Context, cause error, unavailable, timeout bool, is error) {
		t.Helper()
		err := Unavailable(ctx, "clamd", "reply", cause)
		if errors.Is(err, ErrUnavailable) != unavailable || errors.Is(err, ErrTimeout) != timeout {
			t.Errorf("%s: %v: unavailable %v, timeout %v; want %v, %v", name, err,
				errors.Is(err, ErrUnavailable), errors.Is(err, ErrTimeout), unavailable, timeout)
		}
		if !errors.Is(err, is) {
			t.Errorf("%s: %v does not match %v", name, err, is)
		}
	}
	check("refused", context.Background(), refused, true, false, syscall.ECONNREFUSED)
	check("EOF", context.Background(), io.EOF, true, false, io.EOF)
	check("i/o timeout", context.Background(), ioTimeout, true, true, ioTimeout)
	check("deadline passed", expired, io.ErrClosedPipe, true, true, context.DeadlineExceeded)
	check("canceled", canceled, io.ErrClosedPipe, false, false, context.Canceled)

	err := Unavailable(context.Background(), "clamd", "connect", refused)
	if want := "clamd unavailable: connect: dial tcp: connection refused"; err.Error() != want {
		t.Errorf("Error() = %q, want %q", err, want)
	}
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

func TestDialDeadlines(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
		}
	}()

	// The context's deadline is the connection's.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	conn, err := Dial(ctx, "test", "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = conn.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read past the deadline: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("read returned after %v", d)
	}
	conn.Close()

	// Canceling the context interrupts a read.
	ctx, cancel = context.WithCancel(context.Background())
	conn, err = Dial(ctx, "test", "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Error("read returned no error after cancel")
	}
	if err := conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Errorf("CloseWrite: %v", err)
	}
}
