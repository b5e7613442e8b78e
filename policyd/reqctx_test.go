package policyd

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestRequestContext(t *testing.T) {
	closed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	t.Run("deadline, waited on", func(t *testing.T) {
		c := newRequestContext(20 * time.Millisecond)
		if d, ok := c.Deadline(); !ok || time.Until(d) > 20*time.Millisecond {
			t.Errorf("deadline %v, %v", d, ok)
		}
		if c.Err() != nil || closed(c.Done()) {
			t.Fatal("ended before its deadline")
		}
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("Done not closed at the deadline")
		}
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Errorf("Err %v", c.Err())
		}
		c.cancel()
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Errorf("cancel after the deadline changed Err to %v", c.Err())
		}
	})
	t.Run("deadline, not waited on", func(t *testing.T) {
		c := newRequestContext(time.Millisecond)
		for c.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		if !errors.Is(c.Err(), context.DeadlineExceeded) || !closed(c.Done()) {
			t.Errorf("Err %v, Done closed %v", c.Err(), closed(c.Done()))
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		for _, waited := range []bool{false, true} {
			c := newRequestContext(time.Hour)
			var done <-chan struct{}
			if waited {
				done = c.Done()
			}
			c.cancel()
			if !errors.Is(c.Err(), context.Canceled) || !closed(c.Done()) || (waited && !closed(done)) {
				t.Errorf("waited %v: Err %v", waited, c.Err())
			}
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		c := newRequestContext(5 * time.Millisecond)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				<-c.Done()
				if c.Err() == nil {
					t.Error("Done closed, Err nil")
				}
			})
		}
		wg.Wait()
	})
	t.Run("a child", func(t *testing.T) {
		c := newRequestContext(time.Hour)
		child, stop := context.WithTimeout(c, time.Hour)
		defer stop()
		c.cancel()
		select {
		case <-child.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the child outlived its parent")
		}
	})
}

// A context nothing waited on serves the next request; one that something
// waited on is left to its holder.
func TestRequestContextNext(t *testing.T) {
	c := newRequestContext(time.Hour)
	c.cancel()
	n := c.next(time.Hour)
	if n != c || n.Err() != nil {
		t.Errorf("not reused, or still ended: %v", n.Err())
	}
	done := n.Done()
	n.cancel()
	m := n.next(time.Hour)
	if m == n || m.Err() != nil || !errors.Is(n.Err(), context.Canceled) {
		t.Errorf("a context waited on was reused, or the new one is ended: %v", m.Err())
	}
	select {
	case <-done:
	default:
		t.Error("the old context's Done is open")
	}
}
