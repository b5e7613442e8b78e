package policyd

import (
	"fmt"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// A flood of transactions that never end keeps the tracker bounded, and an
// entry in use survives the generations.
func TestTrackerBounded(t *testing.T) {
	tr := newTracker(false)
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	k := session{keyOf(netip.MustParseAddrPort("192.0.2.1:1000")), keyOf(netip.MustParseAddrPort("127.0.0.1:587"))}
	tr.addRecipient("kept", "a@example.net", "example.net", now)
	for i := range 3 * maxEntries {
		tr.addRecipient(fmt.Sprint(i), "a@example.net", "example.net", now)
		if i%1000 == 0 {
			if n, has := tr.recipients("kept", "a@example.net", now); n != 1 || !has {
				t.Fatalf("after %d transactions the one in use is lost", i)
			}
		}
	}
	if n := len(tr.txs.cur) + len(tr.txs.prev); n > maxEntries {
		t.Errorf("%d transactions kept, at most %d", n, maxEntries)
	}
	// Idle entries go after two generations.
	tr.commit("kept", k, now)
	if tr.messages(k, now) != 1 {
		t.Fatal("message not counted")
	}
	now = now.Add(idleAfter)
	tr.addRecipient("x", "b@example.net", "example.net", now)
	now = now.Add(idleAfter)
	tr.addRecipient("y", "b@example.net", "example.net", now)
	tr.messages(session{}, now)
	now = now.Add(idleAfter)
	tr.messages(session{}, now)
	if tr.committed("kept", now) || tr.messages(k, now) != 0 {
		t.Error("idle entries outlived two generations")
	}
}

// A policy connection shows when a transaction and a session end: the
// tracker forgets them then, and keeps what is still going on.
func TestConnForgets(t *testing.T) {
	e := newTestEngine(t, nil)
	tr := e.tracker
	c := e.NewConn()
	s1 := session{keyOf(netip.MustParseAddrPort("127.0.0.1:1000")), keyOf(netip.MustParseAddrPort("127.0.0.1:587"))}
	jan := transaction{client: "127.0.0.1", port: "1000", login: "jan@example.cz", from: "jan@example.cz",
		rcpts: rcpts(2, "foreign.test"), instance: "1.a", conn: c, repeat: true}
	count := func() [3]int { return [3]int{tr.sessions.len(), tr.txs.len(), tr.clients.len()} }
	check := func(what string, want [3]int, messages int) {
		t.Helper()
		if got := count(); got != want {
			t.Errorf("%s: %d sessions, %d transactions, %d clients kept; want %d, %d, %d", what, got[0], got[1], got[2], want[0], want[1], want[2])
		}
		if n := tr.messages(s1, e.clock.Now()); n != messages {
			t.Errorf("%s: the session has %d messages, want %d", what, n, messages)
		}
	}
	if stage, a := jan.run(e); a != "DUNNO" {
		t.Fatalf("%s: %s", stage, a)
	}
	check("first message", [3]int{1, 1, 1}, 1)
	// The next transaction of the session: the first one is forgotten at
	// its first RCPT, the session counts both messages.
	jan.instance = "1.b"
	if stage, a := jan.run(e); a != "DUNNO" {
		t.Fatalf("%s: %s", stage, a)
	}
	check("second message", [3]int{1, 1, 1}, 2)
	if tr.committed("1.a", e.clock.Now()) || !tr.committed("1.b", e.clock.Now()) {
		t.Error("the ended transaction is kept, or the current one lost")
	}
	// The smtpd process serves another session: the first one has ended.
	eva := transaction{client: "127.0.0.7", port: "2000", login: "eva@example.cz", from: "eva@example.cz",
		rcpts: rcpts(1, "foreign.test"), instance: "2.a", conn: c}
	if stage, a := eva.run(e); a != "DUNNO" {
		t.Fatalf("%s: %s", stage, a)
	}
	check("another session", [3]int{1, 1, 1}, 0)
	if _, ok := tr.whoSent(keyOf(netip.MustParseAddrPort("127.0.0.7:2000")), "", e.clock.Now()); !ok {
		t.Error("the sender of the current session is lost")
	}
	// Without a connection nothing is forgotten before its time.
	for i, inst := range []string{"3.a", "3.b"} {
		petr := transaction{client: "127.0.0.3", port: strconv.Itoa(3000 + i), login: "petr@example.cz", from: "petr@example.cz",
			rcpts: rcpts(1, "foreign.test"), instance: inst}
		if stage, a := petr.run(e); a != "DUNNO" {
			t.Fatalf("%s: %s", stage, a)
		}
	}
	check("without a connection", [3]int{3, 3, 3}, 0)
}

func BenchmarkTrackerRecipients(b *testing.B) {
	tr := newTracker(false)
	now := time.Now()
	for i := 0; b.Loop(); i++ {
		inst := fmt.Sprint(i)
		tr.addRecipient(inst, "a@example.net", "example.net", now)
		tr.commit(inst, session{}, now)
	}
}

// A set holds what was added, short or long.
func TestRecipientSet(t *testing.T) {
	for _, n := range []int{0, 1, smallSet - 1, smallSet, smallSet + 1, 10 * smallSet} {
		var r recipientSet
		for i := range n {
			if r.has(fmt.Sprint(i)) {
				t.Fatalf("%d of %d: found before it was added", i, n)
			}
			r.add(fmt.Sprint(i))
		}
		for i := range n {
			if !r.has(fmt.Sprint(i)) {
				t.Errorf("%d of %d: lost", i, n)
			}
		}
		if r.has("x") {
			t.Errorf("%d: has what was never added", n)
		}
	}
}
