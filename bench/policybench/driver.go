package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"relayguard/bench/internal/proc"
	"relayguard/bench/internal/report"
)

// The load: conns persistent connections, as many smtpd processes, each
// sending one request at a time and waiting for its answer (smtpd waits for
// the answer before it replies to the client). First every account sends one
// message (priming: the store then holds every account, as it does after a
// day of traffic), then the mixed load runs for a warm-up and for the
// measured duration.

type loadConfig struct {
	conns          int
	warmup         time.Duration
	duration       time.Duration
	primeTimeout   time.Duration // priming must end within this
	requestTimeout time.Duration // smtpd's timeout for one answer (etc/postfix/main.cf: 10s)
	seed           uint64
	// measuring, when set, is called as the measurement begins, with its
	// duration; the measurement ends once the returned channel yields.
	measuring func(time.Duration) <-chan error
}

const (
	phaseWarm int32 = iota
	phaseMeasure
	phaseStop
)

// result is what one server did under the load.
type result struct {
	name        string
	primed      int           // accounts that sent their priming message
	primeReqs   uint64        // requests of the priming sessions
	primeTime   time.Duration // from the first request until every connection had primed
	measured    time.Duration
	requests    uint64 // answered during the measurement
	latency     report.Histogram
	byStage     [numStages]report.Histogram
	notDunno    [numStages]uint64 // in all phases
	timeouts    [numStages]uint64 // unanswered within requestTimeout, in all phases
	answered    uint64            // in all phases
	perSecond   []uint64          // answers in each second from the first request
	primedAt    int               // the second in which priming ended
	measuredAt  int               // the second in which the measurement began
	examples    []string          // some of the answers that were not DUNNO
	cpu         proc.CPUUse       // during the measurement: the server's, this process's, the others'
	mem         proc.Memory       // at the end of the measurement
	memAtPrimed proc.Memory
}

// worker is one connection and what it saw.
type worker struct {
	addr     string
	conn     net.Conn
	r        *bufio.Reader
	rng      *rand.Rand
	smtpd    smtpd
	buf      []byte
	measured uint64
	latency  report.Histogram
	byStage  [numStages]report.Histogram
	notDunno [numStages]uint64
	timeouts [numStages]uint64
	answered *atomic.Uint64 // shared by the workers
	examples []string
}

var dunno = []byte("action=DUNNO\n")

// ask sends one request and reads its answer.
func (w *worker) ask(req []byte, st stage, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	w.conn.SetDeadline(start.Add(timeout))
	if _, err := w.conn.Write(req); err != nil {
		return 0, err
	}
	line, err := w.r.ReadSlice('\n')
	if err != nil {
		return 0, fmt.Errorf("reading the answer to a %s request: %w", st, err)
	}
	end, err := w.r.ReadSlice('\n')
	if err != nil {
		return 0, fmt.Errorf("reading the answer to a %s request: %w", st, err)
	}
	d := time.Since(start)
	if len(end) != 1 {
		return 0, fmt.Errorf("answer to a %s request: %q is not followed by an empty line", st, line)
	}
	w.answered.Add(1)
	if !bytes.Equal(line, dunno) {
		w.notDunno[st]++
		if len(w.examples) < 3 {
			w.examples = append(w.examples, st.String()+": "+string(bytes.TrimSpace(line)))
		}
	}
	return d, nil
}

// session sends every request of s, recording latencies while measuring.
// It returns early when the load stops.
func (w *worker) session(s *session, phase *atomic.Int32, cfg *loadConfig) (requests uint64, err error) {
	c := newCursor(s)
	for {
		ph := phase.Load()
		if ph == phaseStop {
			return requests, nil
		}
		var st stage
		var ok bool
		w.buf, st, ok = c.next(w.buf[:0])
		if !ok {
			return requests, nil
		}
		d, err := w.ask(w.buf, st, cfg.requestTimeout)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// As smtpd does: the command gets default_action (a 4xx), the
			// connection is closed and opened again for what follows.
			w.timeouts[st]++
			if ph == phaseMeasure {
				w.latency.Record(cfg.requestTimeout)
				w.byStage[st].Record(cfg.requestTimeout)
			}
			return requests, w.redial()
		}
		if err != nil {
			return requests, err
		}
		requests++
		if ph == phaseMeasure {
			w.measured++
			w.latency.Record(d)
			w.byStage[st].Record(d)
		}
	}
}

func (w *worker) redial() error {
	w.conn.Close()
	conn, err := net.Dial("tcp", w.addr)
	if err != nil {
		return err
	}
	w.conn, w.r = conn, bufio.NewReader(conn)
	return nil
}

// drive runs the load against the server at addr, whose process is pid.
func drive(name, addr string, pid int, wl *workload, cfg loadConfig) (*result, error) {
	var answered atomic.Uint64
	workers := make([]*worker, cfg.conns)
	for i := range workers {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			for _, w := range workers[:i] {
				w.conn.Close()
			}
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		workers[i] = &worker{
			addr: addr, conn: conn, r: bufio.NewReader(conn),
			rng:      rand.New(rand.NewPCG(cfg.seed, uint64(i))),
			smtpd:    smtpd{pid: 20000 + 37*i},
			buf:      make([]byte, 0, 2048),
			answered: &answered,
		}
	}
	defer func() {
		for _, w := range workers {
			w.conn.Close()
		}
	}()

	var (
		phase             atomic.Int32
		primeNext, next   atomic.Uint64
		primed, primeReqs atomic.Uint64
		primeWG, wg       sync.WaitGroup
		failOnce          sync.Once
		failErr           error
	)
	failed := make(chan struct{})
	fail := func(err error) {
		failOnce.Do(func() { failErr = err; close(failed) })
	}
	start := time.Now()
	primeWG.Add(len(workers))
	wg.Add(len(workers))
	for _, w := range workers {
		go func() {
			defer wg.Done()
			primeDone := sync.OnceFunc(primeWG.Done)
			defer primeDone()
			for {
				n := primeNext.Add(1) - 1
				if n >= uint64(wl.accounts) || phase.Load() == phaseStop {
					break
				}
				reqs, err := w.session(wl.newSession(w.rng, wl.account(n), &w.smtpd, true), &phase, &cfg)
				primeReqs.Add(reqs)
				if err != nil {
					fail(err)
					return
				}
				primed.Add(1)
			}
			primeDone()
			for phase.Load() != phaseStop {
				s := wl.newSession(w.rng, wl.account(next.Add(1)-1), &w.smtpd, false)
				if _, err := w.session(s, &phase, &cfg); err != nil {
					fail(err)
					return
				}
			}
		}()
	}

	res := &result{name: name}
	timeline := make(chan []uint64)
	go func() {
		var per []uint64
		var last uint64
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for range tick.C {
			if phase.Load() == phaseStop { // the second in which the load stopped is partial
				break
			}
			n := answered.Load()
			per = append(per, n-last)
			last = n
		}
		timeline <- per
	}()
	stop := func(err error) (*result, error) {
		phase.Store(phaseStop)
		wg.Wait()
		<-timeline
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	// wait returns false when a connection failed first.
	wait := func(d time.Duration) bool {
		select {
		case <-time.After(d):
			return true
		case <-failed:
			return false
		}
	}
	primedCh := make(chan struct{})
	go func() { primeWG.Wait(); close(primedCh) }()
	select {
	case <-primedCh:
	case <-failed:
		return stop(failErr)
	case <-time.After(cfg.primeTimeout):
		return stop(fmt.Errorf("priming did not end within %v (%d of %d accounts): the server is too slow for this load; raise -prime-timeout",
			cfg.primeTimeout, primed.Load(), wl.accounts))
	}
	res.primeTime, res.primed, res.primeReqs = time.Since(start), int(primed.Load()), primeReqs.Load()
	res.primedAt = int(res.primeTime / time.Second)
	res.memAtPrimed, _ = proc.ReadMemory(pid)

	if !wait(cfg.warmup) {
		return stop(failErr)
	}
	cpu0, err := proc.SampleCPU(pid)
	if err != nil {
		return stop(err)
	}
	t0 := time.Now()
	res.measuredAt = int(t0.Sub(start) / time.Second)
	phase.Store(phaseMeasure)
	var measuring <-chan error
	if cfg.measuring != nil {
		measuring = cfg.measuring(cfg.duration)
	}
	ok := wait(cfg.duration)
	if measuring != nil {
		if err := <-measuring; err != nil {
			return stop(err)
		}
	}
	phase.Store(phaseStop)
	res.measured = time.Since(t0)
	cpu1, err := proc.SampleCPU(pid)
	if err != nil {
		return stop(err)
	}
	res.cpu = cpu1.Since(cpu0)
	if res.mem, err = proc.ReadMemory(pid); err != nil {
		return stop(err)
	}
	wg.Wait()
	res.perSecond = <-timeline
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, failErr)
	}
	for _, w := range workers {
		res.requests += w.measured
		res.latency.Merge(&w.latency)
		for st := range numStages {
			res.byStage[st].Merge(&w.byStage[st])
			res.notDunno[st] += w.notDunno[st]
			res.timeouts[st] += w.timeouts[st]
		}
		res.examples = append(res.examples, w.examples...)
	}
	res.examples = res.examples[:min(len(res.examples), 5)]
	res.answered = answered.Load()
	return res, nil
}

// refused is how many requests were not answered DUNNO, or not in time.
func (r *result) refused() uint64 {
	var n uint64
	for st := range numStages {
		n += r.notDunno[st] + r.timeouts[st]
	}
	return n
}

var errRefused = errors.New("the server refused part of the load: a refused load measures nothing")
