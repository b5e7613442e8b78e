package policyd

import (
	"net/netip"
	"sync"
	"time"
)

// tracker keeps what Postfix's requests do not repeat: per SMTP session, the
// messages accepted (R12); per mail transaction, keyed by the "instance"
// attribute that is the same for all requests of one transaction, the
// recipients accepted (R11, R10's pending count, R13's destination domains)
// and whether the message was committed. At END-OF-MESSAGE "recipient" is
// empty when there were several, so only this memory knows them.
//
// It is in memory only: a transaction lives for minutes, and after a
// restart Postfix's sessions begin anew. Entries unseen for idleAfter are
// dropped, and at most maxEntries are kept, so that sessions whose end is
// never seen cannot grow it without bound.
type tracker struct {
	mu       sync.Mutex
	sessions map[session]*sessionState
	txs      map[string]*txState
	clients  map[netip.AddrPort]*identity // by the client's address and port
	queued   map[string]*identity         // by Postfix's queue id
	ops      int
}

// identity is who sent a message, for the content filter, which knows only
// the client's address and port (XFORWARD) and, after the queue, the queue id.
type identity struct {
	login string
	ip    netip.Addr
	seen  time.Time
}

type sessionState struct {
	messages int
	seen     time.Time
}

type txState struct {
	recipients map[string]struct{} // normalised addresses accepted at RCPT
	domains    map[string]struct{} // their ASCII domains
	committed  bool                // END-OF-MESSAGE counted
	seen       time.Time
}

const (
	idleAfter  = time.Hour
	maxEntries = 200000
)

func newTracker() *tracker {
	return &tracker{sessions: map[session]*sessionState{}, txs: map[string]*txState{},
		clients: map[netip.AddrPort]*identity{}, queued: map[string]*identity{}}
}

// sweep drops idle entries now and then, and more eagerly when full.
func (t *tracker) sweep(now time.Time) {
	t.ops++
	full := len(t.sessions)+len(t.txs) > maxEntries
	if t.ops%4096 != 0 && !full {
		return
	}
	idle := idleAfter
	if full {
		idle = idleAfter / 12
	}
	for k, s := range t.sessions {
		if now.Sub(s.seen) > idle {
			delete(t.sessions, k)
		}
	}
	for k, x := range t.txs {
		if now.Sub(x.seen) > idle {
			delete(t.txs, k)
		}
	}
	for k, x := range t.clients {
		if now.Sub(x.seen) > idle {
			delete(t.clients, k)
		}
	}
	// Queued mail waits for the filter at most as long as Postfix keeps it.
	for k, x := range t.queued {
		if now.Sub(x.seen) > queueLifetime {
			delete(t.queued, k)
		}
	}
}

// queueLifetime is Postfix's maximal_queue_lifetime.
const queueLifetime = 5 * 24 * time.Hour

// identify records who sends from a client address and port, and with
// which queue id once Postfix has one.
func (t *tracker) identify(client netip.AddrPort, queueID, login string, ip netip.Addr, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweep(now)
	id := &identity{login: login, ip: ip, seen: now}
	if client.IsValid() {
		t.clients[client] = id
	}
	if queueID != "" {
		t.queued[queueID] = id
	}
}

// whoSent returns the sender of a message the filter has, by queue id first.
func (t *tracker) whoSent(client netip.AddrPort, queueID string) (identity, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if x := t.queued[queueID]; queueID != "" && x != nil {
		return *x, true
	}
	if x := t.clients[client]; x != nil {
		return *x, true
	}
	return identity{}, false
}

// tx returns the state of a transaction, new if need be; t.mu is held.
func (t *tracker) tx(instance string, now time.Time) *txState {
	t.sweep(now)
	x := t.txs[instance]
	if x == nil {
		x = &txState{recipients: map[string]struct{}{}, domains: map[string]struct{}{}}
		t.txs[instance] = x
	}
	x.seen = now
	return x
}

// messages returns how many messages the session has had accepted.
func (t *tracker) messages(k session, now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := t.sessions[k]; s != nil {
		s.seen = now
		return s.messages
	}
	return 0
}

// recipients returns how many recipients the transaction has, and whether
// rcpt is among them.
func (t *tracker) recipients(instance, rcpt string, now time.Time) (n int, has bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	x := t.txs[instance]
	if x == nil {
		return 0, false
	}
	x.seen = now
	_, has = x.recipients[rcpt]
	return len(x.recipients), has
}

// addRecipient records a recipient accepted at RCPT; a repeated request for
// the same recipient changes nothing.
func (t *tracker) addRecipient(instance, rcpt, domain string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	x := t.tx(instance, now)
	x.recipients[rcpt] = struct{}{}
	x.domains[domain] = struct{}{}
}

// domains returns the recipient domains of a transaction.
func (t *tracker) domains(instance string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var ds []string
	if x := t.txs[instance]; x != nil {
		for d := range x.domains {
			ds = append(ds, d)
		}
	}
	return ds
}

// committed reports whether the transaction's message was already counted.
func (t *tracker) committed(instance string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	x := t.txs[instance]
	return x != nil && x.committed
}

// commit marks the message counted and adds it to its session, once.
func (t *tracker) commit(instance string, k session, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	x := t.tx(instance, now)
	if x.committed {
		return
	}
	x.committed = true
	s := t.sessions[k]
	if s == nil {
		s = &sessionState{}
		t.sessions[k] = s
	}
	s.messages++
	s.seen = now
}
