package policyd

import (
	"context"
	"sync"
	"time"
)

// requestContext is the context of one policy request: a deadline, and a
// Done channel that is made, with its timer, only when something waits on
// it (a DNS look-up that misses the cache). Most requests wait on nothing,
// and the timer of a context.WithTimeout per request was a quarter of what
// policyd allocated under load. It carries no values.
type requestContext struct {
	deadline time.Time

	mu    sync.Mutex
	done  chan struct{}
	timer *time.Timer
	err   error
}

func newRequestContext(timeout time.Duration) *requestContext {
	return &requestContext{deadline: time.Now().Add(timeout)}
}

// next returns the context of a connection's next request: c itself, made
// new, if nothing ever waited on it (only what asks for Done can still
// hold a context after its request was answered: policyd's DNS look-ups
// continue detached, through context.WithoutCancel, which never asks its
// parent for anything), else a new one.
func (c *requestContext) next(timeout time.Duration) *requestContext {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return newRequestContext(timeout)
	}
	c.deadline, c.err = time.Now().Add(timeout), nil
	return c
}

func (c *requestContext) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *requestContext) Value(any) any { return nil }

func (c *requestContext) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		switch d := time.Until(c.deadline); {
		case c.err != nil:
			close(c.done)
		case d <= 0:
			c.end(context.DeadlineExceeded)
		default:
			c.timer = time.AfterFunc(d, func() {
				c.mu.Lock()
				defer c.mu.Unlock()
				c.end(context.DeadlineExceeded)
			})
		}
	}
	return c.done
}

func (c *requestContext) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil && !time.Now().Before(c.deadline) {
		c.end(context.DeadlineExceeded)
	}
	return c.err
}

// cancel ends the context when the request is answered.
func (c *requestContext) cancel() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.end(context.Canceled)
}

// end sets the context's error, once, closes Done if it was made and stops
// its timer. c.mu is held.
func (c *requestContext) end(err error) {
	if c.err != nil {
		return
	}
	c.err = err
	if c.done != nil {
		close(c.done)
	}
	if c.timer != nil {
		c.timer.Stop()
	}
}
