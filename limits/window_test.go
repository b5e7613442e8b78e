package limits

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

// history is the reference record of the events admitted into one counter,
// in time order, with running sums for range queries.
type history struct {
	at  []int64 // Unix ns
	cum []int64 // cum[i] = events 0..i
}

func (h *history) add(at, n int64) {
	var prev int64
	if k := len(h.cum); k > 0 {
		prev = h.cum[k-1]
	}
	h.at = append(h.at, at)
	h.cum = append(h.cum, prev+n)
}

// upTo returns the events at or before t.
func (h *history) upTo(t int64) int64 {
	i := sort.Search(len(h.at), func(i int) bool { return h.at[i] > t })
	if i == 0 {
		return 0
	}
	return h.cum[i-1]
}

// in returns the events in the closed interval [lo, hi].
func (h *history) in(lo, hi int64) int64 {
	if hi < lo {
		return 0
	}
	return h.upTo(hi) - h.upTo(lo-1)
}

// maxIn returns the most events admitted in any closed interval of length w.
// The maximum is reached by an interval that begins with an event.
func (h *history) maxIn(w int64) int64 {
	var most int64
	for _, s := range h.at {
		most = max(most, h.in(s, s+w))
	}
	return most
}

// exact returns the count at t as the package doc defines it: the events in
// [⌊(t−W)/b⌋·b, t].
func (h *history) exact(t int64, l Limit) int64 {
	b := int64(l.Bucket())
	return h.in(floorDiv(t-int64(l.Length), b)*b, t)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}

// schedule is one run of the property test: limits on two keys, and the
// strategy by which request times are chosen.
type schedule struct {
	rng    *rand.Rand
	pairs  []KeyLimit // one limit per (key, window)
	kind   string
	now    int64
	freeAt int64 // of the last refusal, 0 if none
	hist   map[KeyLimit]*history
}

var windowChoices = []Window{
	{10 * time.Second, 1}, {10 * time.Second, 2}, {10 * time.Second, 5},
	{time.Minute, 3}, {time.Minute, 4}, {time.Minute, 6}, {time.Minute, 12},
	{time.Hour, 6}, {time.Hour, 60}, {24 * time.Hour, 24},
}

func newSchedule(rng *rand.Rand, kind string, start int64) *schedule {
	s := &schedule{rng: rng, kind: kind, now: start, hist: map[KeyLimit]*history{}}
	for _, key := range []string{"account", "ip"} {
		perm := rng.Perm(len(windowChoices))
		for _, i := range perm[:1+rng.IntN(3)] {
			l := Limit{Window: windowChoices[i], Max: 1 + rng.Int64N(40)}
			kl := KeyLimit{key, l}
			s.pairs = append(s.pairs, kl)
			s.hist[kl] = &history{}
		}
	}
	return s
}

// next moves the clock by the schedule's strategy; it never goes back.
func (s *schedule) next() {
	l := s.pairs[s.rng.IntN(len(s.pairs))].Limit
	b, w := int64(l.Bucket()), int64(l.Length)
	var t int64
	switch k := s.rng.IntN(10); {
	case s.kind == "random" || k < 2:
		// Gaps around the rate at which the limit fills, some zero.
		if s.rng.IntN(5) > 0 {
			t = s.now + s.rng.Int64N(2*w/max(l.Max, 1)+1)
		} else {
			t = s.now
		}
	case s.kind == "boundary":
		// A burst at, just before or just after a bucket boundary.
		edge := (floorDiv(s.now, b) + 1 + s.rng.Int64N(2)) * b
		t = edge + s.rng.Int64N(3) - 1
	case s.kind == "expiry" && s.freeAt != 0 && k < 7:
		// Just before and at the time the last refusal said.
		t = s.freeAt - s.rng.Int64N(2)
	default:
		// Just before, at or after an admitted event leaves: its time + W,
		// or the end of its bucket + W.
		h := s.hist[s.pairs[s.rng.IntN(len(s.pairs))]]
		if len(h.at) == 0 {
			t = s.now + b
			break
		}
		e := h.at[len(h.at)-1-s.rng.IntN(min(len(h.at), 8))]
		if s.rng.IntN(2) == 0 {
			t = e + w
		} else {
			t = (floorDiv(e, b)+1)*b + w
		}
		t += s.rng.Int64N(3) - 1
	}
	s.now = max(s.now, t)
}

// request returns the pairs of a request: each with probability 3/4, at
// least one.
func (s *schedule) request() []KeyLimit {
	var kl []KeyLimit
	for _, p := range s.pairs {
		if s.rng.IntN(4) > 0 {
			kl = append(kl, p)
		}
	}
	if len(kl) == 0 {
		kl = append(kl, s.pairs[s.rng.IntN(len(s.pairs))])
	}
	return kl
}

func (s *schedule) size() int64 {
	switch k := s.rng.IntN(20); {
	case k == 0:
		return 0
	case k == 1:
		return 20 + s.rng.Int64N(30) // often above a maximum
	default:
		return 1 + s.rng.Int64N(4)
	}
}

// run drives store with the schedule for steps requests and checks every
// decision against the reference histories. restart, when not nil, may
// replace the store between requests.
func (s *schedule) run(t *testing.T, store Store, steps int, restart func(Store, time.Time) Store) Store {
	t.Helper()
	ctx := context.Background()
	for step := range steps {
		s.next()
		now := time.Unix(0, s.now)
		kl, n := s.request(), s.size()
		dry, err := store.Check(ctx, now, n, kl...)
		if err != nil {
			t.Fatal(err)
		}
		d, err := store.CheckAdd(ctx, now, n, kl...)
		if err != nil {
			t.Fatal(err)
		}
		where := fmt.Sprintf("step %d at %s, n=%d, %v", step, now.Format("15:04:05.000000000"), n, kl)
		if dry.Allowed != d.Allowed || !dry.FreeAt.Equal(d.FreeAt) {
			t.Fatalf("%s: Check %+v, CheckAdd %+v", where, dry, d)
		}

		admits, explained := true, false
		for i, p := range kl {
			h := s.hist[p]
			exact := h.exact(s.now, p.Limit)
			if dry.Counts[i] != exact {
				t.Fatalf("%s: %s counts %d, the definition gives %d", where, p, dry.Counts[i], exact)
			}
			if exact+n > p.Limit.Max {
				admits = false
			}
			// Guarantee 2: only the trailing window and the sliver of less
			// than a bucket before it can refuse.
			w, b := int64(p.Limit.Length), int64(p.Limit.Bucket())
			trailing, sliver := h.in(s.now-w, s.now), h.in(s.now-w-b+1, s.now-w-1)
			if trailing+sliver+n > p.Limit.Max {
				explained = true
			}
		}
		if d.Allowed != admits {
			t.Fatalf("%s: allowed %v, the counts say %v", where, d.Allowed, admits)
		}
		if !d.Allowed && !explained {
			t.Fatalf("%s: refused although the trailing window and a bucket's sliver admit it", where)
		}
		s.freeAt = 0
		if !d.Allowed {
			s.checkFreeAt(t, where, d, kl, n)
		}
		if d.Allowed && n > 0 {
			for i, p := range kl {
				if d.Counts[i] != dry.Counts[i]+n {
					t.Fatalf("%s: %s counts %d after adding, want %d", where, p, d.Counts[i], dry.Counts[i]+n)
				}
				if !containsCounter(kl[:i], p) {
					s.hist[p].add(s.now, n)
				}
			}
		}
		if restart != nil && s.rng.IntN(100) == 0 {
			store = restart(store, now)
		}
	}
	// Guarantee 1: no closed interval of length W holds more than Max.
	for _, p := range s.pairs {
		if most := s.hist[p].maxIn(int64(p.Limit.Length)); most > p.Limit.Max {
			t.Fatalf("%s: %d events admitted in one window", p, most)
		}
		count, _, err := store.Get(ctx, time.Unix(0, s.now), p.Key, p.Limit)
		if err != nil {
			t.Fatal(err)
		}
		if want := s.hist[p].exact(s.now, p.Limit); count != want {
			t.Fatalf("%s: Get counts %d at the end, the definition gives %d", p, count, want)
		}
	}
	return store
}

// checkFreeAt checks a refusal's FreeAt against the reference: the request
// is admitted at FreeAt and refused a nanosecond before, if nothing more is
// added.
func (s *schedule) checkFreeAt(t *testing.T, where string, d Decision, kl []KeyLimit, n int64) {
	t.Helper()
	admitsAt := func(at int64) bool {
		for _, p := range kl {
			if s.hist[p].exact(at, p.Limit)+n > p.Limit.Max {
				return false
			}
		}
		return true
	}
	if d.FreeAt.IsZero() {
		for _, p := range kl {
			if n > p.Limit.Max {
				return
			}
		}
		t.Fatalf("%s: FreeAt is never, but n fits every limit", where)
	}
	free := d.FreeAt.UnixNano()
	if free <= s.now || !admitsAt(free) || admitsAt(free-1) {
		t.Fatalf("%s: FreeAt %s is not the first time the request is admitted", where,
			d.FreeAt.Format("15:04:05.000000000"))
	}
	s.freeAt = free
}

func containsCounter(kl []KeyLimit, p KeyLimit) bool {
	for _, q := range kl {
		if q.Key == p.Key && q.Limit.Window == p.Limit.Window {
			return true
		}
	}
	return false
}

// TestGuarantees checks the package doc's definition of the count, its two
// guarantees and FreeAt over random schedules and adversarial ones: bursts
// at bucket boundaries, and requests just before, at and after the moment
// an event or a bucket leaves the window and the moment a refusal named.
func TestGuarantees(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	start := time.Now().Truncate(time.Hour).Add(time.Hour).UnixNano()
	for _, kind := range []string{"random", "boundary", "expiry"} {
		t.Run(kind, func(t *testing.T) {
			for range 60 {
				s := newSchedule(rng, kind, start+rng.Int64N(int64(time.Hour)))
				m := NewMemory()
				s.run(t, m, 400, nil)
				m.Close()
			}
		})
	}
}

// TestGuaranteesAcrossRestarts runs schedules on Badger, closing and
// reopening it at random steps: what was admitted must survive exactly.
func TestGuaranteesAcrossRestarts(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	clk := newFakeClock()
	for _, kind := range []string{"random", "boundary", "expiry"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			s := newSchedule(rng, kind, clk.Now().UnixNano())
			restarts := 0
			restart := func(old Store, now time.Time) Store {
				if err := old.Close(); err != nil {
					t.Fatal(err)
				}
				clk.Advance(now.Sub(clk.Now()))
				restarts++
				return openBadger(t, dir, clk, 0)
			}
			store := s.run(t, openBadger(t, dir, clk, 0), 500, restart)
			if err := store.Close(); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d restarts", restarts)
		})
	}
}

// An entry keeps each window's buckets apart: adding to one window drops
// only its old buckets and moves the windows after it without changing
// them; drop removes whole counters.
func TestEntry(t *testing.T) {
	minute := Window{Length: time.Minute, Buckets: 12}
	hour := Window{Length: time.Hour, Buckets: 12}
	day := Window{Length: 24 * time.Hour, Buckets: 24}
	t0 := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	var e entry
	type step struct {
		w   Window
		at  time.Duration
		n   int64
		cnt [3]int64 // counts of minute, hour, day at that time, after the add
		nb  [3]int   // their non-empty buckets
	}
	for i, s := range []step{
		{hour, 0, 1, [3]int64{0, 1, 0}, [3]int{0, 1, 0}},
		{minute, 0, 2, [3]int64{2, 1, 0}, [3]int{1, 1, 0}},
		{day, 0, 3, [3]int64{2, 1, 3}, [3]int{1, 1, 1}},
		{minute, 10 * time.Second, 1, [3]int64{3, 1, 3}, [3]int{2, 1, 1}},
		{hour, 10 * time.Second, 1, [3]int64{3, 2, 3}, [3]int{2, 1, 1}},  // same 5-minute bucket
		{minute, 2 * time.Minute, 5, [3]int64{5, 2, 3}, [3]int{1, 1, 1}}, // the first two buckets leave
		{day, 3 * time.Hour, 1, [3]int64{0, 0, 4}, [3]int{1, 1, 2}},      // counts lapse, buckets stay until the next add
		{hour, 3 * time.Hour, 7, [3]int64{0, 7, 4}, [3]int{1, 1, 2}},
	} {
		now := t0.Add(s.at)
		e = e.add(s.w, now, s.n)
		for j, w := range []Window{minute, hour, day} {
			var got int64
			c, _, ok := e.find(w)
			if ok {
				got = c.count(now)
			}
			if got != s.cnt[j] || len(c.buckets) != s.nb[j] {
				t.Errorf("step %d, %v: count %d in %d buckets, want %d in %d", i, w, got, len(c.buckets), s.cnt[j], s.nb[j])
			}
		}
		if e.len() != min(i+1, 3) {
			t.Errorf("step %d: %d counters", i, e.len())
		}
	}
	e = e.drop(func(c counter) bool { return c.w == hour })
	if _, _, ok := e.find(hour); ok || e.len() != 2 {
		t.Errorf("hour not dropped: %d counters", e.len())
	}
	if c, _, ok := e.find(day); !ok || c.count(t0.Add(3*time.Hour)) != 4 {
		t.Error("day lost with hour")
	}
	if e = e.drop(func(counter) bool { return true }); len(e) != 0 {
		t.Errorf("%d cells left", len(e))
	}
}
