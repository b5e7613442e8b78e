package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"relayguard/integration/harness"
)

// What the filter does when what it depends on fails: a message is never
// lost and never delivered twice. Before the queue the customer's client
// gets a 4xx and sends again; after the queue Postfix keeps the message
// deferred and delivers it when the filter can take it again (the tests
// flush the queue rather than wait for the retry).

// deferredBy is the delay_reason Postfix gives a queued message that the
// after-queue filter answered with reply ({id}: any id).
func deferredBy(reply, stage string) string {
	return "host 127.0.0.1[127.0.0.1] said: " + reply + " (in reply to " + stage + " command)"
}

// deferred waits until the message with queue id id was deferred and
// returns why (the delay_reason of its recipient). The message is not
// always in the deferred queue then: when qmgr finds a queue file still
// locked by the delivery agent that deferred it, it logs "skipped, still
// being delivered" and moves it to the incoming queue, dated a minute ahead
// (qmgr_active.c); `postqueue -f` still delivers it at once.
func deferred(t *testing.T, lab *harness.Lab, id string) string {
	t.Helper()
	var reason string
	waitQueue(t, lab, id+" deferred", func(q []queueEntry) bool {
		for _, e := range q {
			if e.ID == id && len(e.Recipients) == 1 && e.Recipients[0].DelayReason != "" {
				reason = e.Recipients[0].DelayReason
				return true
			}
		}
		return false
	})
	return reason
}

// flushedOnce flushes lab's queue (`postqueue -f`) until the letter reached
// the sink, and asserts that it came once. One flush is not always enough:
// a retry that qmgr made on its own just before it may have moved the
// message a minute ahead (see deferred).
func (l letter) flushedOnce(t *testing.T, lab *harness.Lab) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := lab.Postqueue("-f"); err != nil {
			t.Fatal(err)
		}
		if _, err := lab.Sink.WaitFor(l.is, time.Second); err == nil || time.Now().After(deadline) {
			break
		}
	}
	l.deliveredOnce(t, lab)
}

// kill kills the daemon with SIGKILL, as the kernel's OOM killer or a
// crash would end it: no clean-up of its own, and waits for it.
func (d *daemon) kill() {
	d.cmd.Process.Kill()
	<-d.done
}

// holdsFileIn reports whether the daemon has a file of dir open, deleted
// ones included: the filter's spool files are unlinked as soon as they are
// created, and one open means that a message is being received or checked.
func (d *daemon) holdsFileIn(dir string) bool {
	fds := fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid)
	ents, _ := os.ReadDir(fds)
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(fds, e.Name())); err == nil && strings.HasPrefix(l, dir+"/") {
			return true
		}
	}
	return false
}

// R16's fail mode, "tempfail" by default: with clamd stopped no message
// passes unscanned, and each is delivered once when clamd is back.
func TestClamdDown(t *testing.T) {
	const tempfail = "451 4.7.1 {id} temporary failure, try again later"
	bq := newLetter("jan@example.cz", "clamd-bq@dest.test", plainText("jan@example.cz", "clamd-bq@dest.test", "Scan me.\r\n"))
	aq := newLetter("jan@example.cz", "clamd-aq@dest.test", plainText("jan@example.cz", "clamd-aq@dest.test", "Scan me later.\r\n"))
	if err := env.clamd.Stop(); err != nil {
		t.Fatal(err)
	}
	down := true
	t.Cleanup(func() {
		if down {
			if err := env.clamd.Start(); err != nil {
				t.Error(err)
			}
		}
	})

	stage, line := bq.submit(t, env.lab, "127.0.0.121")
	expectFilter(t, stage, line, "DATA", tempfail)
	bq.notDelivered(t, env.lab)
	stage, line = aq.submit(t, env.aq.lab, "127.0.0.133")
	if stage != "" {
		t.Fatalf("after the queue, refused at %s: %q", stage, line)
	}
	queueID := queuedAs(t, line)
	filterRefused(t, env.aq, deferred(t, env.aq.lab, queueID), deferredBy(tempfail, "end of DATA"), queueID)
	if n := aq.copies(env.aq.lab); n != 0 {
		t.Fatalf("after the queue, delivered %d times without a scan", n)
	}

	if err := env.clamd.Start(); err != nil {
		t.Fatal(err)
	}
	down = false
	// The customer's client sends again; Postfix retries from its queue.
	if stage, line := bq.submit(t, env.lab, "127.0.0.121"); stage != "" {
		t.Fatalf("clamd back, refused at %s: %q", stage, line)
	}
	bq.deliveredOnce(t, env.lab)
	aq.flushedOnce(t, env.aq.lab)
	noModeMismatch(t, env.stack)
	noModeMismatch(t, env.aq)
}

// The reinjection service down: the filter cannot hand a message on, so it
// takes none (4xx); each is delivered once when the service is back.
func TestNextHopDown(t *testing.T) {
	const unavailable = "451 4.4.1 next hop unavailable, try again later"
	bq := newLetter("jan@example.cz", "hop-bq@dest.test", plainText("jan@example.cz", "hop-bq@dest.test", "Pass me on.\r\n"))
	aq := newLetter("jan@example.cz", "hop-aq@dest.test", plainText("jan@example.cz", "hop-aq@dest.test", "Pass me on later.\r\n"))
	down := map[*stack]bool{}
	t.Cleanup(func() {
		for s := range down {
			if err := s.lab.StartReinject(); err != nil {
				t.Error(err)
			}
		}
	})
	for _, s := range []*stack{env.stack, env.aq} {
		if err := s.lab.StopReinject(); err != nil {
			t.Fatal(err)
		}
		down[s] = true
	}

	// Postfix opens the before-queue filter's session at the first RCPT and
	// passes it MAIL then: the filter's refusal of MAIL is the customer's
	// reply to RCPT.
	stage, line := bq.submit(t, env.lab, "127.0.0.122")
	if stage != "RCPT" || line != unavailable {
		t.Fatalf("before the queue: %s %q, want RCPT %q", stage, line, unavailable)
	}
	bq.notDelivered(t, env.lab)
	stage, line = aq.submit(t, env.aq.lab, "127.0.0.134")
	if stage != "" {
		t.Fatalf("after the queue, refused at %s: %q", stage, line)
	}
	queueID := queuedAs(t, line)
	if reason, want := deferred(t, env.aq.lab, queueID), deferredBy(unavailable, "MAIL FROM"); reason != want {
		t.Fatalf("after the queue, deferred: %q, want %q", reason, want)
	}
	if n := aq.copies(env.aq.lab); n != 0 {
		t.Fatalf("after the queue, delivered %d times", n)
	}

	for s := range down {
		if err := s.lab.StartReinject(); err != nil {
			t.Fatal(err)
		}
		delete(down, s)
	}
	if stage, line := bq.submit(t, env.lab, "127.0.0.122"); stage != "" {
		t.Fatalf("next hop back, refused at %s: %q", stage, line)
	}
	bq.deliveredOnce(t, env.lab)
	aq.flushedOnce(t, env.aq.lab)
}

// held gives nothing until open is closed, then what r gives: the part of a
// message that a slow client has not sent yet.
type held struct {
	open <-chan struct{}
	r    io.Reader
}

func (h held) Read(p []byte) (int, error) {
	<-h.open
	return h.r.Read(p)
}

// The filter killed (SIGKILL) while it receives a message before the queue:
// Postfix answers the customer with a 4xx, the next hop, which had MAIL and
// RCPT but no DATA, queues nothing, and the message sent again in the same
// session is delivered once.
func TestFilterKilledMidData(t *testing.T) {
	// 4 MB: its first half is past the filter's spool_threshold (1 MiB), so
	// a spool file open in the filter shows that the message is coming in.
	row := strings.Repeat("0123456789", 7) + "\r\n"
	l := newLetter("jan@example.cz", "killed@dest.test", plainText("jan@example.cz", "killed@dest.test", strings.Repeat(row, 4_000_000/len(row))))
	c := sessionOn(t, env.lab, "127.0.0.123", "jan@example.cz")
	if line, err := c.Mail(l.from); err != nil {
		t.Fatalf("MAIL: %q", line)
	}
	if line, err := c.Rcpt(l.rcpt); err != nil {
		t.Fatalf("RCPT: %q", line)
	}
	rest := make(chan struct{})
	killed := make(chan error, 1)
	go func() {
		defer close(rest)
		deadline := time.Now().Add(30 * time.Second)
		for !env.filter.holdsFileIn(env.spool) {
			if time.Now().After(deadline) {
				killed <- errors.New("the filter opened no spool file within 30s")
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		env.filter.kill()
		killed <- env.filter.start()
	}()
	half := len(l.data) / 2
	reply, err := c.DataFrom(io.MultiReader(bytes.NewReader(l.data[:half]), held{rest, bytes.NewReader(l.data[half:])}))
	if err := <-killed; err != nil {
		t.Fatal(err)
	}
	// smtpd logs "warning: lost connection with proxy 127.0.0.1:PORT" and
	// "proxy-reject: END-OF-MESSAGE: 451 4.3.0 Error: queue file write error".
	const lost = "451 4.3.0 Error: queue file write error"
	if err == nil || reply != lost {
		t.Fatalf("the filter killed during DATA: %q, %v; want %q", reply, err, lost)
	}
	l.notDelivered(t, env.lab)
	// The spool file was unlinked when it was made: the killed filter left
	// nothing behind.
	if left, err := os.ReadDir(env.spool); err != nil || len(left) > 0 {
		t.Errorf("spool_dir after the kill: %v %v", left, err)
	}

	if stage, line := l.send(c); stage != "" {
		t.Fatalf("sent again to the restarted filter: refused at %s: %q", stage, line)
	}
	m := l.deliveredOnce(t, env.lab)
	if !bytes.HasSuffix(m.Data, l.data[len(l.data)-1000:]) {
		t.Errorf("the message did not arrive whole (%d bytes)", len(m.Data))
	}
}

// connectedTo reports whether the daemon has a TCP connection to addr
// (127.0.0.1:port) established: its sockets' inodes, found in the kernel's
// table of TCP connections (/proc/net/tcp) with addr as the remote end.
func (d *daemon) connectedTo(addr string) bool {
	_, port, _ := strings.Cut(addr, ":")
	p, err := strconv.Atoi(port)
	if err != nil {
		return false
	}
	inodes := map[string]bool{}
	fds := fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid)
	ents, _ := os.ReadDir(fds)
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(fds, e.Name())); err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	table, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false
	}
	// "  1: 0100007F:A1B2 0100007F:1F90 01 ... inode": the remote address in
	// hex, state 01 is ESTABLISHED.
	remote := fmt.Sprintf("0100007F:%04X", p)
	for _, line := range strings.Split(string(table), "\n") {
		f := strings.Fields(line)
		if len(f) >= 10 && f[2] == remote && f[3] == "01" && inodes[f[9]] {
			return true
		}
	}
	return false
}

// The after-queue filter killed (SIGKILL) while it checks a message it has
// received whole, before it answered: Postfix defers the message with the
// warning that it may be sent more than once, but the filter had not passed
// it on, so it is delivered once. clamd is paused, so that the filter is
// surely waiting for the scan when it is killed.
func TestAfterQueueFilterKilledMidMessage(t *testing.T) {
	l := newLetter("jan@example.cz", "killed-aq@dest.test", plainText("jan@example.cz", "killed-aq@dest.test", "Check me.\r\n"))
	if err := env.clamd.Pause(); err != nil {
		t.Fatal(err)
	}
	paused := true
	t.Cleanup(func() {
		if paused {
			if err := env.clamd.Resume(); err != nil {
				t.Error(err)
			}
		}
	})
	stage, reply := l.submit(t, env.aq.lab, "127.0.0.135")
	if stage != "" {
		t.Fatalf("refused at %s: %q", stage, reply)
	}
	queueID := queuedAs(t, reply)
	deadline := time.Now().Add(30 * time.Second)
	for !env.aq.filter.connectedTo(env.clamd.Addr) {
		if time.Now().After(deadline) {
			t.Fatal("the filter did not ask clamd within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	env.aq.filter.kill()
	// Postfix retries a deferred message after a second or more, by then
	// against a filter that is down or back: its log has the reason of this
	// attempt.
	want := queueID + ": to=<" + l.rcpt + ">"
	reason := "status=deferred (lost connection with 127.0.0.1[127.0.0.1] while sending end of data -- message may be sent more than once)"
	for len(linesWith(env.aq.lab.PostfixLog(), want, reason)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("Postfix did not log %q %q within 30s", want, reason)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := env.clamd.Resume(); err != nil {
		t.Fatal(err)
	}
	paused = false
	if err := env.aq.filter.start(); err != nil {
		t.Fatal(err)
	}
	l.flushedOnce(t, env.aq.lab)
}
