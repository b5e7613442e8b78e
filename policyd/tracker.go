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
// empty when there were several, so only this memory knows them. It also
// remembers who sends from each client address and port and, when the
// content filter runs after the queue, who sent each queued message (R15).
//
// It is in memory only: a transaction lives for minutes, and after a
// restart Postfix's sessions begin anew. A session and its transactions are
// forgotten as soon as their policy connection shows that they ended (see
// Conn). What no connection saw end (its smtpd process exited) is kept in
// two generations (gen): an entry used lives on, one unused for a whole
// generation is dropped when the next one begins. Eviction never scans, so
// a request never waits for more than a map access, whatever the load.
type tracker struct {
	mu       sync.Mutex
	sessions *gen[session, int] // messages accepted in the session
	txs      *gen[string, *txState]
	clients  *gen[addrKey, identity] // by the client's address and port
	queued   *gen[string, identity]  // by Postfix's queue id; nil before the queue
}

// identity is who sent a message, for the content filter, which knows only
// the client's address and port (XFORWARD) and, after the queue, the queue id.
type identity struct {
	login string
	ip    netip.Addr
}

type txState struct {
	recipients recipientSet // normalised addresses accepted at RCPT; emptied once committed
	domains    []string     // their ASCII domains, each once
	count      int          // recipients accepted, kept after commit
	committed  bool         // END-OF-MESSAGE counted
}

// recipientSet is a set of addresses: a list while it is short, as it is
// for most messages, a map past smallSet.
type recipientSet struct {
	list []string
	set  map[string]struct{}
}

const smallSet = 16

func (r *recipientSet) has(a string) bool {
	if r.set != nil {
		_, ok := r.set[a]
		return ok
	}
	for _, x := range r.list {
		if x == a {
			return true
		}
	}
	return false
}

func (r *recipientSet) add(a string) {
	switch {
	case r.set != nil:
		r.set[a] = struct{}{}
	case len(r.list) < smallSet:
		r.list = append(r.list, a)
	default:
		r.set = make(map[string]struct{}, 2*smallSet)
		for _, x := range r.list {
			r.set[x] = struct{}{}
		}
		r.set[a] = struct{}{}
		r.list = nil
	}
}

const (
	// idleAfter is a generation's length: an idle session or transaction
	// is forgotten after one to two of them.
	idleAfter = time.Hour
	// maxEntries bounds each table (both generations together).
	maxEntries = 200000
	// queueLifetime is Postfix's maximal_queue_lifetime: queued mail
	// waits for an after-queue filter at most that long.
	queueLifetime = 5 * 24 * time.Hour
)

// newTracker returns an empty tracker; afterQueue keeps who sent each
// queued message, for a content filter that runs after the queue.
func newTracker(afterQueue bool) *tracker {
	t := &tracker{
		sessions: newGen[session, int](maxEntries/2, idleAfter),
		txs:      newGen[string, *txState](maxEntries/2, idleAfter),
		clients:  newGen[addrKey, identity](maxEntries/2, idleAfter),
	}
	if afterQueue {
		t.queued = newGen[string, identity](maxEntries/2, queueLifetime/2)
	}
	return t
}

// gen is a map in two generations: get and put work on the current one
// (an entry found in the previous one moves to the current one); when the
// current one is full or older than every, it becomes the previous one and
// the old previous one is dropped whole.
type gen[K comparable, V any] struct {
	cur, prev map[K]V
	max       int
	every     time.Duration
	began     time.Time
}

func newGen[K comparable, V any](max int, every time.Duration) *gen[K, V] {
	return &gen[K, V]{cur: map[K]V{}, prev: map[K]V{}, max: max, every: every}
}

func (g *gen[K, V]) rotate(now time.Time) {
	if g.began.IsZero() {
		g.began = now
	}
	if len(g.cur) >= g.max || now.Sub(g.began) >= g.every {
		g.prev, g.cur, g.began = g.cur, make(map[K]V), now
	}
}

func (g *gen[K, V]) get(k K, now time.Time) (V, bool) {
	g.rotate(now)
	if v, ok := g.cur[k]; ok {
		return v, true
	}
	v, ok := g.prev[k]
	if ok {
		delete(g.prev, k)
		g.put(k, v, now)
	}
	return v, ok
}

func (g *gen[K, V]) put(k K, v V, now time.Time) {
	g.rotate(now)
	g.cur[k] = v
}

func (g *gen[K, V]) delete(k K) {
	delete(g.cur, k)
	delete(g.prev, k)
}

func (g *gen[K, V]) len() int { return len(g.cur) + len(g.prev) }

// identify records who sends from a client address and port, and with
// which queue id once Postfix has one.
func (t *tracker) identify(client addrKey, queueID, login string, ip netip.Addr, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	id := identity{login: login, ip: ip}
	if client.valid() {
		t.clients.put(client, id, now)
	}
	if queueID != "" && t.queued != nil {
		t.queued.put(queueID, id, now)
	}
}

// whoSent returns the sender of a message the filter has, by queue id first.
func (t *tracker) whoSent(client addrKey, queueID string, now time.Time) (identity, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if queueID != "" && t.queued != nil {
		if x, ok := t.queued.get(queueID, now); ok {
			return x, true
		}
	}
	return t.clients.get(client, now)
}

// ended forgets a session that ended, with its last transaction (instance,
// may be empty) and who sent from its client address and port. What was
// queued stays known by its queue id.
func (t *tracker) ended(s session, instance string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sessions.delete(s)
	t.clients.delete(s.client)
	if instance != "" {
		t.txs.delete(instance)
	}
}

// txEnded forgets a transaction that ended (committed or not).
func (t *tracker) txEnded(instance string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.txs.delete(instance)
}

// tx returns the state of a transaction, new if need be; t.mu is held.
func (t *tracker) tx(instance string, now time.Time) *txState {
	x, ok := t.txs.get(instance, now)
	if !ok {
		x = &txState{}
		t.txs.put(instance, x, now)
	}
	return x
}

// messages returns how many messages the session has had accepted.
func (t *tracker) messages(k session, now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, _ := t.sessions.get(k, now)
	return n
}

// recipients returns how many recipients the transaction has, and whether
// rcpt is among them.
func (t *tracker) recipients(instance, rcpt string, now time.Time) (n int, has bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	x, ok := t.txs.get(instance, now)
	if !ok {
		return 0, false
	}
	return x.count, x.recipients.has(rcpt)
}

// addRecipient records a recipient accepted at RCPT; a repeated request for
// the same recipient changes nothing.
func (t *tracker) addRecipient(instance, rcpt, domain string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	x := t.tx(instance, now)
	if x.committed {
		return
	}
	if x.recipients.has(rcpt) {
		return
	}
	x.recipients.add(rcpt)
	x.count++
	for _, d := range x.domains {
		if d == domain {
			return
		}
	}
	x.domains = append(x.domains, domain)
}

// domains returns the recipient domains of a transaction.
func (t *tracker) domains(instance string, now time.Time) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if x, ok := t.txs.get(instance, now); ok {
		return append([]string(nil), x.domains...)
	}
	return nil
}

// committed reports whether the transaction's message was already counted.
func (t *tracker) committed(instance string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	x, ok := t.txs.get(instance, now)
	return ok && x.committed
}

// commit marks the message counted and adds it to its session, once. The
// recipient set is no longer needed then and is freed.
func (t *tracker) commit(instance string, k session, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	x := t.tx(instance, now)
	if x.committed {
		return
	}
	x.committed, x.recipients, x.domains = true, recipientSet{}, nil
	n, _ := t.sessions.get(k, now)
	t.sessions.put(k, n+1, now)
}
