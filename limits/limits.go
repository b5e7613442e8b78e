// Package limits keeps relayguard's counters in sliding windows and its
// blocks with an expiry: the state behind the rate limits (R10, R13, R15)
// and the blocks (R4, R15) of DESIGN.md.
//
// # Keys and windows
//
// A counter is named by a key, the rule and the subject it counts
// ("r10|account|jan@example.cz", "r4|ip|192.0.2.1"), and a Window. The store
// adds the window slot: each counter is a list of per-bucket counts, and a
// counter is forgotten once its newest bucket has left the window. A Limit
// is a Window with the largest count it admits, so one counter serves every
// limit on the same window.
//
// # Sliding windows
//
// A Limit admits at most Max events in any window of length W. Time is cut
// into buckets of width b = W/N (N = Window.Buckets): bucket i covers
// [i·b, (i+1)·b) of Unix time. The count at time t is the sum of the buckets
// ⌊t/b⌋−N … ⌊t/b⌋: the bucket of t, the N−1 before it, and the oldest, which
// holds t−W and is counted whole although only its end lies in the window. A
// request for n events at t is admitted when count + n ≤ Max holds for every
// limit it names, and then n is added to the bucket of t of every counter;
// otherwise nothing is added (Store.CheckAdd).
//
// Guarantee 1, never too many: in no closed interval [s, s+W] are more than
// Max events admitted. Proof: [s, s+W] meets exactly the N+1 buckets
// j = ⌊s/b⌋ … j+N. Let h ≤ j+N be the bucket of the last request admitted
// into them. Requests are recorded in buckets that never decrease (see
// below), so every event admitted into these buckets before it lies in
// j … h; since h−N ≤ j, its count included all of them. It was admitted, so
// they and its own n are at most Max, and nothing was admitted into the
// buckets after it. ∎ (It bounds any N+1 consecutive buckets, a span longer
// than W, which is why the oldest bucket is counted whole.)
//
// Guarantee 2, no refusal that the exact count would not make, beyond one
// bucket's share: with requests in time order, the count at t covers
// exactly the events admitted in [(⌊t/b⌋−N)·b, t]. That interval contains
// [t−W, t] and begins less than b before t−W. So a request is refused only
// if the events of the trailing window [t−W, t], plus those of the sliver
// of less than b just before it, plus n, exceed Max. Hence, if at most S
// events are admitted in any interval shorter than b (one bucket's share,
// Max/N for an even sender), nothing is refused while the true count of the
// trailing window is at most Max − S − n. ∎ More buckets make the sliver
// thinner and cost memory: a counter keeps one record per non-empty bucket,
// at most N+1.
//
// Requests may arrive slightly out of time order (concurrent requests, or
// nodes of a shared store whose clocks differ). A counter therefore records
// a request in bucket max(⌊t/b⌋, its newest bucket): a lagging clock never
// reopens old buckets, and both proofs hold with t read as that bucket's
// time.
//
// When a request is refused, the Decision says which (key, limit) refused,
// its count, and when the request would be admitted if nothing more were
// added: the oldest buckets leave the window one by one, bucket i at
// (i+N+1)·b, and FreeAt is the first such time at which count + n ≤ Max
// holds for every limit.
//
// # Blocks
//
// A block (R4: too many failed AUTH from an IP, R15: spam allowance spent)
// refuses a subject until a time. It carries the reason and the count that
// caused it, for the log and for `relayguard blocks`, and is forgotten when
// it expires or is unblocked.
//
// # Stores
//
// Memory keeps everything in memory, in 256 shards each behind its own
// mutex, so that requests on different keys do not wait for one another;
// an operation on several keys locks their shards in index order. It is the
// store of the tests and the hot layer of Badger.
//
// Badger, the embedded default, serves every operation from a Memory and
// writes the changed counters and blocks to a Badger database in one batch
// every FlushInterval and on Close, and loads them back on open. Every
// database key has a TTL, the end of its longest window or of its block, so
// the database forgets what the memory forgets. See README.md for its options, memory and
// durability window.
//
// A Redis store shares the limits across Postfix nodes. The interface is
// shaped so that each operation is one round trip, a Lua script run
// atomically by Redis with the caller's time as an argument:
//
//   - a counter is a hash "c:<key>:<W>:<N>" of bucket index → count, with
//     PEXPIREAT at the end of its window; CheckAdd's script takes the hashes
//     as KEYS and now, n and each (b, N, Max) as ARGV, computes every count
//     (from HGETALL, with bucket max(⌊now/b⌋, newest field)), and only if all
//     admit does HINCRBY, HDEL of the buckets that left and PEXPIREAT; Check
//     and Get are the same script without the writes;
//   - a block is a hash "b:<key>" {until, reason, count} with PEXPIREAT
//     until, also a member of a sorted set "blocks" scored by until; Block,
//     Unblock and Blocked are one HSET/DEL/HGETALL each (with ZADD/ZREM);
//   - List and ListBlocks are scripts over index sorted sets ("counters",
//     all scores 0, read by ZRANGEBYLEX from the prefix; "blocks" by score
//     from now), which drop the members whose hash expired;
//   - Reset deletes the key's hashes listed in the "counters" index.
//
// A script's KEYS must hash to one slot in Redis Cluster, and CheckAdd joins
// account and IP keys; relayguard therefore expects one Redis primary (with
// replicas or Sentinel for failover), not a cluster.
package limits

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Store keeps counters and blocks. Each method is atomic: it sees and leaves
// a consistent state of every key it names. Methods that depend on time take
// it as now, so that tests move the clock by hand. Keys are at most
// MaxKeyLength bytes.
type Store interface {
	// CheckAdd admits n events at now if every (key, limit) pair admits
	// them, and then adds n to each distinct (key, window) counter once;
	// otherwise it adds nothing. With no pairs it admits.
	CheckAdd(ctx context.Context, now time.Time, n int64, limits ...KeyLimit) (Decision, error)
	// Check is CheckAdd's dry run: the same decision, nothing added.
	Check(ctx context.Context, now time.Time, n int64, limits ...KeyLimit) (Decision, error)
	// Get returns the count of key in l's window at now and the time at
	// which l admits one more event (now when it admits one now; the zero
	// time when l.Max is 0 and it never will).
	Get(ctx context.Context, now time.Time, key string, l Limit) (count int64, freeAt time.Time, err error)
	// Reset forgets every counter of key, in every window. Its blocks stay.
	Reset(ctx context.Context, key string) error
	// List returns the counters whose key begins with prefix and whose
	// count at now is not zero, sorted by key and window length.
	List(ctx context.Context, now time.Time, prefix string) ([]Usage, error)

	// Block refuses key until the given time, replacing any block of key.
	Block(ctx context.Context, key string, until time.Time, reason string, count int64) error
	// Unblock lifts the block of key and reports whether there was one.
	Unblock(ctx context.Context, key string) (bool, error)
	// Blocked returns the block of key if it is in force at now.
	Blocked(ctx context.Context, key string, now time.Time) (Block, bool, error)
	// ListBlocks returns the blocks in force at now whose key begins with
	// prefix, sorted by key.
	ListBlocks(ctx context.Context, now time.Time, prefix string) ([]Block, error)

	// Close saves everything the store must keep and releases it. Every
	// method then returns ErrClosed.
	Close() error
}

// ErrClosed is returned by a Store's methods after Close.
var ErrClosed = errors.New("limits: store closed")

// Window is a sliding window of length Length counted in Buckets buckets of
// Length/Buckets each. Length must be a positive multiple of Buckets
// nanoseconds, so that buckets are exact.
type Window struct {
	Length  time.Duration
	Buckets int
}

// Bucket returns the width of one bucket.
func (w Window) Bucket() time.Duration { return w.Length / time.Duration(w.Buckets) }

func (w Window) String() string {
	return w.Length.String() + "/" + strconv.Itoa(w.Buckets)
}

// maxBuckets bounds a window's buckets (an entry keeps the count in 32 bits).
const maxBuckets = 1 << 20

func (w Window) validate() error {
	if w.Length <= 0 || w.Buckets <= 0 || w.Length%time.Duration(w.Buckets) != 0 {
		return fmt.Errorf("limits: invalid window %s: the length must be a positive multiple of the bucket count", w)
	}
	if w.Buckets > maxBuckets {
		return fmt.Errorf("limits: invalid window %s: more than %d buckets", w, maxBuckets)
	}
	return nil
}

// Limit admits at most Max events in any window.
type Limit struct {
	Window
	Max int64
}

func (l Limit) String() string {
	return strconv.FormatInt(l.Max, 10) + " per " + l.Window.String()
}

func (l Limit) validate() error {
	if l.Max < 0 {
		return fmt.Errorf("limits: invalid limit %s: negative maximum", l)
	}
	return l.Window.validate()
}

// MaxKeyLength is the longest key, in bytes, that a store accepts.
const MaxKeyLength = 1024

func validateKey(key string) error {
	if len(key) > MaxKeyLength {
		return fmt.Errorf("limits: key of %d bytes, longer than %d", len(key), MaxKeyLength)
	}
	return nil
}

// KeyLimit is a limit on the counter of one key.
type KeyLimit struct {
	Key   string
	Limit Limit
}

func (kl KeyLimit) validate() error {
	if err := validateKey(kl.Key); err != nil {
		return err
	}
	return kl.Limit.validate()
}

// Decision is the answer of CheckAdd and Check.
type Decision struct {
	// Allowed says whether all the limits admit the events.
	Allowed bool
	// Counts holds the count of each pair, in the order given: after the
	// addition when CheckAdd admits, as found otherwise.
	Counts []int64
	// Refused is the refusing pair that frees up last, Count its count and
	// FreeAt the time at which the request would be admitted if nothing
	// more were added (the zero time if never: n exceeds a Max). They are
	// zero when Allowed.
	Refused KeyLimit
	Count   int64
	FreeAt  time.Time
}

// Usage is one counter as List reports it.
type Usage struct {
	Key    string
	Window Window
	Count  int64
}

// Block is a subject refused until a time.
type Block struct {
	Key    string
	Until  time.Time
	Reason string
	Count  int64 // the count that caused the block
}
