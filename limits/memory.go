package limits

import (
	"cmp"
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// numShards is the number of independently locked parts of a Memory.
	numShards = 256
	// sweepEvery is how often, in the callers' time, a shard that is used
	// drops its expired counters and blocks.
	sweepEvery = time.Minute
	// sweepGrace is how long after its count became zero for good a counter
	// is kept: a request whose clock lags by less still finds the counter's
	// newest bucket and is recorded no earlier (see the package doc).
	sweepGrace = time.Minute
)

// Memory is a Store in memory. Counters whose windows have passed and
// blocks that have expired are dropped at most sweepEvery after they
// expire, when their shard is next used, so its memory is bounded by the
// keys active in the longest window. It is safe for concurrent use.
type Memory struct {
	seed   maphash.Seed
	closed atomic.Bool
	shards [numShards]shard
}

// shard is one part of a Memory, holding the keys that hash to it.
type shard struct {
	mu        sync.Mutex
	counters  map[string]entry // by key, one counter per window
	blocks    map[string]Block
	nextSweep int64 // Unix nanoseconds

	// The changes since the last flush, when the Memory persists: the keys
	// whose counters or block changed.
	dirty       map[string]struct{}
	dirtyBlocks map[string]struct{}

	_ [64]byte // keeps neighbouring shards' mutexes off one cache line
}

// NewMemory returns an empty Memory.
func NewMemory() *Memory {
	return newMemory(false)
}

// newMemory returns an empty Memory; persist makes its shards record their
// changes for Badger's flush.
func newMemory(persist bool) *Memory {
	m := &Memory{seed: maphash.MakeSeed()}
	for i := range m.shards {
		s := &m.shards[i]
		s.counters = make(map[string]entry)
		s.blocks = make(map[string]Block)
		if persist {
			s.dirty = make(map[string]struct{})
			s.dirtyBlocks = make(map[string]struct{})
		}
	}
	return m
}

func (m *Memory) shardOf(key string) int {
	return int(maphash.String(m.seed, key) % numShards)
}

// lock locks the shards of idx, a sorted list without duplicates, in order
// so that two operations on overlapping keys cannot deadlock.
func (m *Memory) lock(idx []int) {
	for _, i := range idx {
		m.shards[i].mu.Lock()
	}
}

func (m *Memory) unlock(idx []int) {
	for _, i := range idx {
		m.shards[i].mu.Unlock()
	}
}

// sweepDue sweeps the shards of idx, which the caller holds, if it is time.
func (m *Memory) sweepDue(idx []int, now time.Time) {
	ns := now.UnixNano()
	for _, i := range idx {
		if s := &m.shards[i]; ns >= s.nextSweep {
			s.sweep(now)
			s.nextSweep = ns + int64(sweepEvery)
		}
	}
}

// sweep drops the counters that have been zero for sweepGrace and the
// blocks that expired. The caller holds s.mu. Persisted copies expire by
// their own TTL, so nothing is marked dirty.
func (s *shard) sweep(now time.Time) {
	for key, e := range s.counters {
		kept := e.drop(func(c counter) bool { return !c.expiresAt().Add(sweepGrace).After(now) })
		if len(kept) == 0 {
			delete(s.counters, key)
		} else if len(kept) < len(e) {
			s.counters[key] = kept
		}
	}
	for key, b := range s.blocks {
		if !b.Until.After(now) {
			delete(s.blocks, key)
		}
	}
}

// find returns key's counter for w, valid until the key's entry changes.
// The caller holds the shard.
func (s *shard) find(key string, w Window) (counter, bool) {
	c, _, ok := s.counters[key].find(w)
	return c, ok
}

// add records n events at now in key's counter for w.
func (s *shard) add(key string, w Window, now time.Time, n int64) {
	e, ok := s.counters[key]
	if !ok {
		// Own the key: the caller's string may point into a larger buffer.
		key = strings.Clone(key)
	}
	s.counters[key] = e.add(w, now, n)
}

func (s *shard) markDirty(key string) {
	if s.dirty != nil {
		if _, ok := s.dirty[key]; !ok {
			s.dirty[strings.Clone(key)] = struct{}{}
		}
	}
}

func (s *shard) markBlockDirty(key string) {
	if s.dirtyBlocks != nil {
		if _, ok := s.dirtyBlocks[key]; !ok {
			s.dirtyBlocks[strings.Clone(key)] = struct{}{}
		}
	}
}

// CheckAdd implements Store. Memory never waits for anything, so ctx is
// not consulted.
func (m *Memory) CheckAdd(_ context.Context, now time.Time, n int64, limits ...KeyLimit) (Decision, error) {
	return m.decide(now, n, limits, true)
}

// Check implements Store.
func (m *Memory) Check(_ context.Context, now time.Time, n int64, limits ...KeyLimit) (Decision, error) {
	return m.decide(now, n, limits, false)
}

func (m *Memory) decide(now time.Time, n int64, pairs []KeyLimit, add bool) (Decision, error) {
	if n < 0 {
		return Decision{}, fmt.Errorf("limits: negative count %d", n)
	}
	var buf, lockBuf [8]int
	idx, locks := buf[:0], lockBuf[:0]
	for _, p := range pairs {
		if err := p.validate(); err != nil {
			return Decision{}, err
		}
		i := m.shardOf(p.Key)
		idx = append(idx, i)
		locks = append(locks, i)
	}
	slices.Sort(locks)
	locks = slices.Compact(locks)
	m.lock(locks)
	defer m.unlock(locks)
	if m.closed.Load() {
		return Decision{}, ErrClosed
	}
	m.sweepDue(locks, now)

	d := Decision{Allowed: true, Counts: make([]int64, len(pairs))}
	for i, p := range pairs {
		var c *counter
		if found, ok := m.shards[idx[i]].find(p.Key, p.Limit.Window); ok {
			c = &found
		}
		d.Counts[i] = c.count(now)
		if d.Counts[i] <= p.Limit.Max-n {
			continue
		}
		at := c.freeAt(now, n, p.Limit.Max)
		if d.Allowed || (!d.FreeAt.IsZero() && (at.IsZero() || at.After(d.FreeAt))) {
			d.Refused, d.Count, d.FreeAt = p, d.Counts[i], at
		}
		d.Allowed = false
	}
	if !d.Allowed || !add || n == 0 {
		return d, nil
	}
	for i, p := range pairs {
		d.Counts[i] += n
		if slices.ContainsFunc(pairs[:i], func(q KeyLimit) bool {
			return q.Key == p.Key && q.Limit.Window == p.Limit.Window
		}) {
			continue
		}
		s := &m.shards[idx[i]]
		s.add(p.Key, p.Limit.Window, now, n)
		s.markDirty(p.Key)
	}
	return d, nil
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, now time.Time, key string, l Limit) (int64, time.Time, error) {
	if err := (KeyLimit{key, l}).validate(); err != nil {
		return 0, time.Time{}, err
	}
	idx := []int{m.shardOf(key)}
	m.lock(idx)
	defer m.unlock(idx)
	if m.closed.Load() {
		return 0, time.Time{}, ErrClosed
	}
	var c *counter
	if found, ok := m.shards[idx[0]].find(key, l.Window); ok {
		c = &found
	}
	return c.count(now), c.freeAt(now, 1, l.Max), nil
}

// Reset implements Store.
func (m *Memory) Reset(_ context.Context, key string) error {
	s := &m.shards[m.shardOf(key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.closed.Load() {
		return ErrClosed
	}
	if _, ok := s.counters[key]; ok {
		delete(s.counters, key)
		s.markDirty(key)
	}
	return nil
}

// List implements Store. It holds every shard while it reads them.
func (m *Memory) List(_ context.Context, now time.Time, prefix string) ([]Usage, error) {
	all := m.lockAll()
	defer m.unlock(all)
	if m.closed.Load() {
		return nil, ErrClosed
	}
	var out []Usage
	for i := range m.shards {
		for key, e := range m.shards[i].counters {
			if !strings.HasPrefix(key, prefix) {
				continue
			}
			for pos := 0; pos < len(e); {
				c, next := e.at(pos)
				if n := c.count(now); n > 0 {
					out = append(out, Usage{Key: key, Window: c.w, Count: n})
				}
				pos = next
			}
		}
	}
	slices.SortFunc(out, func(a, b Usage) int {
		return cmp.Or(strings.Compare(a.Key, b.Key), cmp.Compare(a.Window.Length, b.Window.Length),
			cmp.Compare(a.Window.Buckets, b.Window.Buckets))
	})
	return out, nil
}

func (m *Memory) lockAll() []int {
	all := make([]int, numShards)
	for i := range all {
		all[i] = i
	}
	m.lock(all)
	return all
}

// Block implements Store.
func (m *Memory) Block(_ context.Context, key string, until time.Time, reason string, count int64) error {
	if err := validateKey(key); err != nil {
		return err
	}
	s := &m.shards[m.shardOf(key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.closed.Load() {
		return ErrClosed
	}
	key = strings.Clone(key)
	s.blocks[key] = Block{Key: key, Until: until, Reason: reason, Count: count}
	s.markBlockDirty(key)
	return nil
}

// Unblock implements Store.
func (m *Memory) Unblock(_ context.Context, key string) (bool, error) {
	s := &m.shards[m.shardOf(key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.closed.Load() {
		return false, ErrClosed
	}
	_, ok := s.blocks[key]
	if ok {
		delete(s.blocks, key)
		s.markBlockDirty(key)
	}
	return ok, nil
}

// Blocked implements Store.
func (m *Memory) Blocked(_ context.Context, key string, now time.Time) (Block, bool, error) {
	s := &m.shards[m.shardOf(key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.closed.Load() {
		return Block{}, false, ErrClosed
	}
	b, ok := s.blocks[key]
	if !ok || !b.Until.After(now) {
		return Block{}, false, nil
	}
	return b, true, nil
}

// ListBlocks implements Store. It holds every shard while it reads them.
func (m *Memory) ListBlocks(_ context.Context, now time.Time, prefix string) ([]Block, error) {
	all := m.lockAll()
	defer m.unlock(all)
	if m.closed.Load() {
		return nil, ErrClosed
	}
	var out []Block
	for i := range m.shards {
		for key, b := range m.shards[i].blocks {
			if strings.HasPrefix(key, prefix) && b.Until.After(now) {
				out = append(out, b)
			}
		}
	}
	slices.SortFunc(out, func(a, b Block) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// Sweep drops, in every shard, the counters and blocks expired at now.
// Memory sweeps a shard on its own when it is used; Badger calls Sweep on
// its flush timer so that idle shards shrink too.
func (m *Memory) Sweep(now time.Time) {
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		s.sweep(now)
		s.nextSweep = now.UnixNano() + int64(sweepEvery)
		s.mu.Unlock()
	}
}

// Close implements Store. Operations under way finish first.
func (m *Memory) Close() error {
	m.closed.Store(true)
	m.unlock(m.lockAll())
	return nil
}
