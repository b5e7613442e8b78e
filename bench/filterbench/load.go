package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"relayguard/bench/internal/proc"
	"relayguard/bench/internal/report"
	"relayguard/internal/testmail"
)

// The load, as Postfix's smtpd speaks to a before-queue filter
// (smtpd_proxy_filter): one connection per message, each command waiting
// for its reply (EHLO, XFORWARD with the client's attributes, MAIL with
// SIZE and BODY, RCPT, DATA, the message, QUIT).

// client is one connection to the server under test.
type client struct {
	conn    net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	timeout time.Duration
}

// refusal is a reply other than the one a step expects: a refused message.
type refusal struct {
	step, reply string
}

func (r *refusal) Error() string { return r.step + ": " + r.reply }

func dial(addr string, timeout time.Duration) (*client, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	c := &client{conn: conn, r: smallReaders.Get(conn), w: bigWriters.Get(conn), timeout: timeout}
	if _, err := c.expect("greeting", 220); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// expect reads a reply and checks its code.
func (c *client) expect(step string, code int) (string, error) {
	c.conn.SetReadDeadline(time.Now().Add(c.timeout))
	var last string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("%s: reading the reply: %w", step, err)
		}
		last = strings.TrimRight(line, "\r\n")
		if len(last) < 4 || last[3] != '-' {
			break
		}
	}
	if got, err := strconv.Atoi(last[:min(3, len(last))]); err != nil || got != code {
		return last, &refusal{step: step, reply: last}
	}
	return last, nil
}

func (c *client) cmd(line string, code int) (string, error) {
	c.conn.SetWriteDeadline(time.Now().Add(c.timeout))
	c.w.WriteString(line)
	c.w.WriteString("\r\n")
	if err := c.w.Flush(); err != nil {
		return "", fmt.Errorf("%s: %w", line, err)
	}
	step, _, _ := strings.Cut(line, " ")
	return c.expect(step, code)
}

// hello is EHLO and XFORWARD as Postfix's smtpd sends them before the
// first transaction; n varies the client.
func (c *client) hello(n int) error {
	if _, err := c.cmd("EHLO mail.hosting.bench", 250); err != nil {
		return err
	}
	_, err := c.cmd(fmt.Sprintf("XFORWARD NAME=client%d.example.net ADDR=198.51.100.%d PORT=%d PROTO=ESMTP HELO=client%d.example.net IDENT=[UNAVAILABLE] SOURCE=REMOTE",
		n, 1+n%250, 40000+n%20000, n), 250)
	return err
}

// envelope is MAIL, RCPT and DATA up to the 354.
func (c *client) envelope(m *testmail.Message) error {
	if _, err := c.cmd(fmt.Sprintf("MAIL FROM:<%s> SIZE=%d BODY=8BITMIME", testmail.Sender, m.Size), 250); err != nil {
		return err
	}
	if _, err := c.cmd("RCPT TO:<"+testmail.Recipient+">", 250); err != nil {
		return err
	}
	_, err := c.cmd("DATA", 354)
	return err
}

// data sends the message and reads the reply to its end, and returns how
// long that reply took after the final ".".
func (c *client) data(m *testmail.Message, id string) (time.Duration, error) {
	c.conn.SetWriteDeadline(time.Now().Add(c.timeout))
	if err := m.WriteData(c.w, id); err != nil {
		return 0, fmt.Errorf("sending the message: %w", err)
	}
	sent := time.Now()
	_, err := c.expect("end of data", 250)
	return time.Since(sent), err
}

func (c *client) quit() {
	c.cmd("QUIT", 221)
	c.close()
}

func (c *client) close() {
	c.conn.Close()
	smallReaders.Put(c.r)
	bigWriters.Put(c.w)
}

// loadConfig is the steady load.
type loadConfig struct {
	conns    int
	warmup   time.Duration
	duration time.Duration
	timeout  time.Duration // for each reply
}

const (
	phaseWarm int32 = iota
	phaseMeasure
	phaseStop
)

// result is what one server did under the steady load.
type result struct {
	name     string
	measured time.Duration
	messages uint64           // accepted during the measurement
	latency  report.Histogram // from connecting to the reply to the end of data
	eod      report.Histogram // from the final "." to its reply
	cpu      proc.CPUUse      // during the measurement
	mem      proc.Memory      // at its end
	accepted []string         // every message accepted, in every phase
	refused  []string         // replies that refused a message, in every phase
	losses   losses
}

func (r *result) rate() float64 { return float64(r.messages) / r.measured.Seconds() }

// worker is one connection at a time and what it saw.
type worker struct {
	n        int
	latency  report.Histogram
	eod      report.Histogram
	measured uint64
	accepted []string
	refused  []string
}

// session sends one message on a connection of its own. Only an error that
// is not a refusal is returned.
func (w *worker) session(addr string, m *testmail.Message, id string, phase *atomic.Int32, timeout time.Duration) error {
	start := time.Now()
	c, err := dial(addr, timeout)
	var eod time.Duration
	if err == nil {
		defer c.quit()
		if err = c.hello(w.n); err == nil {
			if err = c.envelope(m); err == nil {
				eod, err = c.data(m, id)
			}
		}
	}
	if r := (*refusal)(nil); errors.As(err, &r) {
		w.refused = append(w.refused, r.Error())
		return nil
	}
	if err != nil {
		return err
	}
	w.accepted = append(w.accepted, id)
	if phase.Load() == phaseMeasure {
		w.measured++
		w.latency.Record(time.Since(start))
		w.eod.Record(eod)
	}
	return nil
}

// drive runs the steady load against the server at addr, whose process is
// pid, with the messages of run (their ids start with it).
func drive(name, run, addr string, pid int, m *testmail.Message, cfg loadConfig) (*result, error) {
	var (
		phase    atomic.Int32
		next     atomic.Uint64
		wg       sync.WaitGroup
		failOnce sync.Once
		failErr  error
	)
	failed := make(chan struct{})
	workers := make([]*worker, cfg.conns)
	for i := range workers {
		w := &worker{n: i}
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			for phase.Load() != phaseStop {
				if err := w.session(addr, m, testmail.ID(run, next.Add(1)), &phase, cfg.timeout); err != nil {
					failOnce.Do(func() { failErr = err; close(failed) })
					return
				}
			}
		}()
	}
	res := &result{name: name}
	stop := func(err error) (*result, error) {
		phase.Store(phaseStop)
		wg.Wait()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	wait := func(d time.Duration) bool {
		select {
		case <-time.After(d):
			return true
		case <-failed:
			return false
		}
	}
	if !wait(cfg.warmup) {
		return stop(failErr)
	}
	cpu0, err := proc.SampleCPU(pid)
	if err != nil {
		return stop(err)
	}
	phase.Store(phaseMeasure)
	ok := wait(cfg.duration)
	phase.Store(phaseStop)
	cpu1, err := proc.SampleCPU(pid)
	if err != nil {
		return stop(err)
	}
	res.cpu = cpu1.Since(cpu0)
	res.measured = res.cpu.Wall
	if res.mem, err = proc.ReadMemory(pid); err != nil {
		return stop(err)
	}
	wg.Wait()
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, failErr)
	}
	for _, w := range workers {
		res.messages += w.measured
		res.latency.Merge(&w.latency)
		res.eod.Merge(&w.eod)
		res.accepted = append(res.accepted, w.accepted...)
		res.refused = append(res.refused, w.refused...)
	}
	return res, nil
}

// burstResult is what one server did with messages all in flight at once.
type burstResult struct {
	name     string
	messages int
	inFlight int64         // bytes of the messages in flight at once
	wall     time.Duration // from the first byte of data to the last reply
	idle     proc.Memory   // before
	mem      proc.Memory   // after: its peak is the burst's
	sampled  int64         // the largest RSS sampled during the burst
	cpu      proc.CPUUse
	accepted []string
	refused  []string
	slowest  time.Duration // the longest reply to an end of data
	losses   losses
}

// burst opens n connections to the server at addr (process pid), takes
// each to the start of DATA, then sends message m on all of them at once
// and waits for every reply.
func burst(name, run, addr string, pid int, n int, m *testmail.Message, timeout time.Duration) (*burstResult, error) {
	res := &burstResult{name: name, messages: n, inFlight: int64(n) * int64(m.Size)}
	clients := make([]*client, n)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.quit()
			}
		}
	}()
	for i := range clients {
		c, err := dial(addr, timeout)
		if err == nil {
			clients[i] = c
			if err = c.hello(i); err == nil {
				err = c.envelope(m)
			}
		}
		if r := (*refusal)(nil); errors.As(err, &r) {
			res.refused = append(res.refused, r.Error())
			if clients[i] != nil {
				clients[i].quit()
				clients[i] = nil
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	var err error
	if res.idle, err = proc.ReadMemory(pid); err != nil {
		return nil, err
	}
	cpu0, err := proc.SampleCPU(pid)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	sampled := make(chan int64)
	go func() {
		var peak int64
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				if mem, err := proc.ReadMemory(pid); err == nil {
					peak = max(peak, mem.RSS)
				}
			case <-done:
				sampled <- peak
				return
			}
		}
	}()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for i, c := range clients {
		if c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			msgID := testmail.ID(run, uint64(i+1))
			eod, err := c.data(m, msgID)
			mu.Lock()
			defer mu.Unlock()
			res.slowest = max(res.slowest, eod)
			var r *refusal
			switch {
			case errors.As(err, &r):
				res.refused = append(res.refused, r.Error())
			case err != nil:
				errs = append(errs, err)
			default:
				res.accepted = append(res.accepted, msgID)
			}
		}()
	}
	wg.Wait()
	close(done)
	res.sampled = <-sampled
	cpu1, err := proc.SampleCPU(pid)
	if err != nil {
		return nil, err
	}
	res.cpu = cpu1.Since(cpu0)
	res.wall = res.cpu.Wall
	if res.mem, err = proc.ReadMemory(pid); err != nil {
		return nil, err
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s: %w", name, errors.Join(errs...))
	}
	return res, nil
}
