package policyd

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// A flood of transactions that never end keeps the tracker bounded, and an
// entry in use survives the generations.
func TestTrackerBounded(t *testing.T) {
	tr := newTracker()
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	k := session{netip.MustParseAddrPort("192.0.2.1:1000"), netip.MustParseAddrPort("127.0.0.1:587")}
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

func BenchmarkTrackerRecipients(b *testing.B) {
	tr := newTracker()
	now := time.Now()
	for i := 0; b.Loop(); i++ {
		inst := fmt.Sprint(i)
		tr.addRecipient(inst, "a@example.net", "example.net", now)
		tr.commit(inst, session{}, now)
	}
}
