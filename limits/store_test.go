package limits

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"relayguard/internal/fakeclock"
)

// fakeClock is a clock that moves only when told to. It starts at the next
// full hour, so that buckets of a minute or an hour begin with it and
// Badger's TTLs, which follow the real clock, lie in the future.
type fakeClock = fakeclock.Clock

func newFakeClock() *fakeClock {
	return fakeclock.New(time.Now().Truncate(time.Hour).Add(time.Hour))
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openBadger opens a Badger store in dir on clk whose timers do not fire
// during a test unless flush is set.
func openBadger(t testing.TB, dir string, clk *fakeClock, flush time.Duration) *Badger {
	t.Helper()
	if flush == 0 {
		flush = time.Hour
	}
	b, err := OpenBadger(BadgerConfig{Dir: dir, FlushInterval: flush, GCInterval: time.Hour, Log: quietLog(), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// forEachStore runs test on a new Memory and a new Badger store.
func forEachStore(t *testing.T, test func(t *testing.T, s Store, clk *fakeClock)) {
	t.Run("memory", func(t *testing.T) {
		s := NewMemory()
		t.Cleanup(func() { s.Close() })
		test(t, s, newFakeClock())
	})
	t.Run("badger", func(t *testing.T) {
		clk := newFakeClock()
		s := openBadger(t, t.TempDir(), clk, 0)
		t.Cleanup(func() { s.Close() })
		test(t, s, clk)
	})
}

// The limits of R10 with small maximums, and of R13.
var (
	perMinute = Limit{Window: Window{Length: time.Minute, Buckets: 6}, Max: 5}
	perHour   = Limit{Window: Window{Length: time.Hour, Buckets: 6}, Max: 8}
	perDay    = Limit{Window: Window{Length: 24 * time.Hour, Buckets: 24}, Max: 10}
	big3Min   = Limit{Window: Window{Length: 3 * time.Minute, Buckets: 3}, Max: 30}
)

func r10(key string) []KeyLimit {
	return []KeyLimit{{key, perMinute}, {key, perHour}, {key, perDay}}
}

func TestCheckAdd(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store, clk *fakeClock) {
		ctx := context.Background()
		t0 := clk.Now()
		acct, ip := r10("r10|account|jan@example.cz"), r10("r10|ip|192.0.2.1")
		both := append(slices.Clone(acct), ip...)

		type want struct {
			allowed bool
			counts  []int64
			refused KeyLimit
			count   int64
			freeAt  time.Duration // after t0; 0: zero time
		}
		check := func(name string, at time.Duration, n int64, kl []KeyLimit, w want) {
			t.Helper()
			d, err := s.CheckAdd(ctx, t0.Add(at), n, kl...)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			var freeAt time.Time
			if w.freeAt != 0 {
				freeAt = t0.Add(w.freeAt)
			}
			if d.Allowed != w.allowed || !slices.Equal(d.Counts, w.counts) || d.Refused != w.refused ||
				d.Count != w.count || !d.FreeAt.Equal(freeAt) {
				t.Errorf("%s: got %+v (free at +%v), want %+v", name, d, d.FreeAt.Sub(t0), w)
			}
		}

		check("first message, 2 recipients", 0, 2, both,
			want{allowed: true, counts: []int64{2, 2, 2, 2, 2, 2}})
		check("3 more at +15s", 15*time.Second, 3, acct,
			want{allowed: true, counts: []int64{5, 5, 5}})
		// The minute is full. Its buckets are [0,10s) (2) and [10s,20s) (3):
		// the first leaves the window at 70s, and then 3+1 ≤ 5.
		check("minute full", 30*time.Second, 1, both,
			want{counts: []int64{5, 5, 5, 2, 2, 2}, refused: acct[0], count: 5, freeAt: 70 * time.Second})
		check("nothing was added to the IP", 30*time.Second, 3, ip,
			want{allowed: true, counts: []int64{5, 5, 5}})
		check("still full a nanosecond before", 70*time.Second-1, 1, acct,
			want{counts: []int64{5, 5, 5}, refused: acct[0], count: 5, freeAt: 70 * time.Second})
		check("free at +70s", 70*time.Second, 1, acct,
			want{allowed: true, counts: []int64{4, 6, 6}})
		check("hour: 2 more fill it", 2*time.Minute, 2, acct,
			want{allowed: true, counts: []int64{3, 8, 8}})
		// The hour's buckets are 10 minutes: [0,10m) holds all 8, so the
		// request frees when it leaves, at 70 minutes.
		check("hour full", 5*time.Minute, 1, acct,
			want{counts: []int64{0, 8, 8}, refused: acct[1], count: 8, freeAt: 70 * time.Minute})
		check("hour free", 70*time.Minute, 2, acct,
			want{allowed: true, counts: []int64{2, 2, 10}})
		check("day full, frees when the first hour leaves", 71*time.Minute, 1, acct,
			want{counts: []int64{2, 2, 10}, refused: acct[2], count: 10, freeAt: 25 * time.Hour})
		check("more than a limit's maximum never frees", 72*time.Minute, 6, ip[:1],
			want{counts: []int64{0}, refused: ip[0], count: 0})
		check("zero is a check", 72*time.Minute, 0, acct,
			want{allowed: true, counts: []int64{0, 2, 10}})
		check("no limits admit", 0, 1, nil, want{allowed: true, counts: []int64{}})
		// The same counter named twice is added to once.
		dup := []KeyLimit{{"r13|group|seznam.cz", big3Min}, {"r13|group|seznam.cz", Limit{big3Min.Window, 40}}}
		check("same counter twice", 0, 20, dup, want{allowed: true, counts: []int64{20, 20}})
		check("the tighter limit refuses", time.Minute, 20, dup,
			want{counts: []int64{20, 20}, refused: dup[0], count: 20, freeAt: 4 * time.Minute})
	})
}

func TestCheckIsDryRun(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store, clk *fakeClock) {
		ctx := context.Background()
		now := clk.Now()
		kl := r10("k")
		check := func(n int64, allowed bool, counts ...int64) {
			t.Helper()
			d, err := s.Check(ctx, now, n, kl...)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed != allowed || !slices.Equal(d.Counts, counts) {
				t.Errorf("Check(%d) = %v %v, want %v %v", n, d.Allowed, d.Counts, allowed, counts)
			}
		}
		check(5, true, 0, 0, 0)
		check(5, true, 0, 0, 0)
		check(6, false, 0, 0, 0)
		if _, err := s.CheckAdd(ctx, now, 4, kl...); err != nil {
			t.Fatal(err)
		}
		check(1, true, 4, 4, 4)
		check(2, false, 4, 4, 4)
	})
}

func TestGet(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store, clk *fakeClock) {
		ctx := context.Background()
		t0 := clk.Now()
		check := func(at time.Duration, l Limit, count int64, freeAt time.Duration) {
			t.Helper()
			c, f, err := s.Get(ctx, t0.Add(at), "k", l)
			if err != nil {
				t.Fatal(err)
			}
			if c != count || !f.Equal(t0.Add(freeAt)) {
				t.Errorf("Get(+%v, %s) = %d, +%v; want %d, +%v", at, l, c, f.Sub(t0), count, freeAt)
			}
		}
		check(0, perMinute, 0, 0)
		for i, at := range []time.Duration{0, 10 * time.Second, 25 * time.Second, 25 * time.Second, 59 * time.Second} {
			if d, err := s.CheckAdd(ctx, t0.Add(at), 1, KeyLimit{"k", perMinute}); err != nil || !d.Allowed {
				t.Fatalf("add %d: %+v %v", i, d, err)
			}
		}
		check(59*time.Second, perMinute, 5, 70*time.Second)
		check(59*time.Second, Limit{perMinute.Window, 6}, 5, 59*time.Second)
		check(70*time.Second, perMinute, 4, 70*time.Second)
		check(2*time.Minute-1, perMinute, 1, 2*time.Minute-1)
		check(2*time.Minute, perMinute, 0, 2*time.Minute)
		check(0, perHour, 0, 0)
	})
}

func TestReset(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store, clk *fakeClock) {
		ctx := context.Background()
		now := clk.Now()
		for _, key := range []string{"a", "ab"} {
			if _, err := s.CheckAdd(ctx, now, 3, r10(key)...); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Block(ctx, "a", now.Add(time.Hour), "spam", 11); err != nil {
			t.Fatal(err)
		}
		if err := s.Reset(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if err := s.Reset(ctx, "never"); err != nil {
			t.Fatal(err)
		}
		check := func(key string, want int64) {
			t.Helper()
			for _, l := range []Limit{perMinute, perHour, perDay} {
				if c, _, err := s.Get(ctx, now, key, l); err != nil || c != want {
					t.Errorf("Get(%q, %s) = %d, %v; want %d", key, l, c, err, want)
				}
			}
		}
		check("a", 0)
		check("ab", 3)
		if _, ok, _ := s.Blocked(ctx, "a", now); !ok {
			t.Error("Reset lifted the block")
		}
	})
}

func TestList(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store, clk *fakeClock) {
		ctx := context.Background()
		t0 := clk.Now()
		add := func(at time.Duration, n int64, kl ...KeyLimit) {
			t.Helper()
			if _, err := s.CheckAdd(ctx, t0.Add(at), n, kl...); err != nil {
				t.Fatal(err)
			}
		}
		add(0, 2, r10("r10|account|b@example.cz")...)
		add(0, 1, r10("r10|account|a@example.cz")...)
		add(0, 1, r10("r10|ip|192.0.2.1")...)
		add(0, 1, KeyLimit{"r13|group|seznam.cz", big3Min})

		check := func(at time.Duration, prefix string, want ...Usage) {
			t.Helper()
			got, err := s.List(ctx, t0.Add(at), prefix)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("List(+%v, %q) = %v, want %v", at, prefix, got, want)
			}
		}
		// What is asked at +0 is asked before anything happens later: a
		// store may forget a counter whose window a later request has passed.
		check(0, "r13|", Usage{"r13|group|seznam.cz", big3Min.Window, 1})
		check(0, "r10|ip|192.0.2.1",
			Usage{"r10|ip|192.0.2.1", perMinute.Window, 1}, Usage{"r10|ip|192.0.2.1", perHour.Window, 1},
			Usage{"r10|ip|192.0.2.1", perDay.Window, 1})
		check(0, "nothing|")
		add(30*time.Minute, 1, r10("r10|account|a@example.cz")...)
		a, b := "r10|account|a@example.cz", "r10|account|b@example.cz"
		check(30*time.Minute, "r10|account|",
			Usage{a, perMinute.Window, 1}, Usage{a, perHour.Window, 2}, Usage{a, perDay.Window, 2},
			Usage{b, perHour.Window, 2}, Usage{b, perDay.Window, 2})
		check(25*time.Hour-1, "",
			Usage{a, perDay.Window, 2}, Usage{b, perDay.Window, 2}, Usage{"r10|ip|192.0.2.1", perDay.Window, 1})
		check(25*time.Hour, "")
	})
}

func TestBlocks(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store, clk *fakeClock) {
		ctx := context.Background()
		t0 := clk.Now()
		block := func(key string, until time.Duration, reason string, count int64) Block {
			t.Helper()
			if err := s.Block(ctx, key, t0.Add(until), reason, count); err != nil {
				t.Fatal(err)
			}
			return Block{Key: key, Until: t0.Add(until), Reason: reason, Count: count}
		}
		check := func(key string, at time.Duration, want Block, blocked bool) {
			t.Helper()
			b, ok, err := s.Blocked(ctx, key, t0.Add(at))
			if err != nil {
				t.Fatal(err)
			}
			if ok != blocked || !sameBlock(b, want) {
				t.Errorf("Blocked(%q, +%v) = %+v %v, want %+v %v", key, at, b, ok, want, blocked)
			}
		}
		checkList := func(at time.Duration, prefix string, want ...Block) {
			t.Helper()
			got, err := s.ListBlocks(ctx, t0.Add(at), prefix)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(got, want, sameBlock) {
				t.Errorf("ListBlocks(+%v, %q) = %+v, want %+v", at, prefix, got, want)
			}
		}
		checkUnblock := func(key string, existed bool) {
			t.Helper()
			if ok, err := s.Unblock(ctx, key); err != nil || ok != existed {
				t.Errorf("Unblock(%q) = %v, %v; want %v", key, ok, err, existed)
			}
		}

		ip1 := block("r4|ip|192.0.2.1", time.Hour, "auth failures", 11)
		ip2 := block("r4|ip|2001:db8::/64", 2*time.Hour, "auth failures", 12)
		acct := block("r15|account|jan@example.cz", 24*time.Hour, "spam allowance", 10)
		check(ip1.Key, 0, ip1, true)
		check(ip1.Key, time.Hour-1, ip1, true)
		check(ip1.Key, time.Hour, Block{}, false)
		check("r4|ip|192.0.2.2", 0, Block{}, false)
		checkList(0, "r4|", ip1, ip2)
		checkList(0, "", acct, ip1, ip2)
		checkList(time.Hour, "r4|", ip2)
		checkList(24*time.Hour, "")

		ip1 = block(ip1.Key, 3*time.Hour, "auth failures", 15)
		check(ip1.Key, 2*time.Hour, ip1, true)
		checkUnblock(ip1.Key, true)
		checkUnblock(ip1.Key, false)
		check(ip1.Key, 0, Block{}, false)
		checkList(0, "r4|", ip2)
	})
}

func sameBlock(a, b Block) bool {
	return a.Key == b.Key && a.Until.Equal(b.Until) && a.Reason == b.Reason && a.Count == b.Count
}

func TestInvalid(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store, clk *fakeClock) {
		ctx := context.Background()
		now := clk.Now()
		check := func(name string, n int64, l Limit) {
			t.Helper()
			if _, err := s.CheckAdd(ctx, now, n, KeyLimit{"k", l}); err == nil {
				t.Errorf("%s: CheckAdd accepted it", name)
			}
			if _, err := s.Check(ctx, now, n, KeyLimit{"k", l}); err == nil {
				t.Errorf("%s: Check accepted it", name)
			}
		}
		check("negative count", -1, perMinute)
		check("no window", 1, Limit{Max: 5})
		check("no buckets", 1, Limit{Window: Window{Length: time.Minute}, Max: 5})
		check("uneven buckets", 1, Limit{Window: Window{Length: time.Minute + 1, Buckets: 7}, Max: 5})
		check("negative maximum", 1, Limit{Window: perMinute.Window, Max: -1})
		if _, _, err := s.Get(ctx, now, "k", Limit{}); err == nil {
			t.Error("Get accepted an invalid limit")
		}
		long := strings.Repeat("x", MaxKeyLength+1)
		if _, err := s.CheckAdd(ctx, now, 1, KeyLimit{long, perMinute}); err == nil {
			t.Error("CheckAdd accepted a key that is too long")
		}
		if err := s.Block(ctx, long, now.Add(time.Hour), "", 0); err == nil {
			t.Error("Block accepted a key that is too long")
		}
		// n near the largest int64 must not overflow count + n.
		if d, err := s.CheckAdd(ctx, now, math.MaxInt64, KeyLimit{"k", perMinute}); err != nil || d.Allowed {
			t.Errorf("CheckAdd(MaxInt64) = %+v, %v; want a refusal", d, err)
		}
		if _, err := s.CheckAdd(ctx, now, 1, KeyLimit{"k", perMinute}); err != nil {
			t.Fatal(err)
		}
		if d, err := s.CheckAdd(ctx, now, math.MaxInt64, KeyLimit{"k", perMinute}); err != nil || d.Allowed {
			t.Errorf("CheckAdd(MaxInt64) after 1 = %+v, %v; want a refusal", d, err)
		}
	})
}

// A request whose clock lags behind the counter's newest bucket is recorded
// in that bucket: it cannot reopen older buckets.
func TestLaggingClock(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store, clk *fakeClock) {
		ctx := context.Background()
		t0 := clk.Now()
		kl := KeyLimit{"k", perMinute}
		add := func(at time.Duration, n int64, allowed bool, count int64) {
			t.Helper()
			d, err := s.CheckAdd(ctx, t0.Add(at), n, kl)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed != allowed || d.Counts[0] != count {
				t.Errorf("CheckAdd(+%v, %d) = %v %v, want %v %d", at, n, d.Allowed, d.Counts, allowed, count)
			}
		}
		add(0, 3, true, 3)
		add(70*time.Second, 2, true, 2)
		// At 0s the minute holds 3, but the counter's newest bucket is
		// [70s,80s): the lagging request is taken at 70s.
		add(0, 3, true, 5)
		add(75*time.Second, 1, false, 5)
		if c, _, _ := s.Get(ctx, t0.Add(140*time.Second-1), "k", perMinute); c != 5 {
			t.Errorf("count at +140s-1ns = %d, want 5", c)
		}
		if c, _, _ := s.Get(ctx, t0.Add(140*time.Second), "k", perMinute); c != 0 {
			t.Errorf("count at +140s = %d, want 0", c)
		}
	})
}

func TestClosed(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store, clk *fakeClock) {
		ctx := context.Background()
		now := clk.Now()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		_, err1 := s.CheckAdd(ctx, now, 1, r10("k")...)
		_, err2 := s.Check(ctx, now, 1, r10("k")...)
		_, _, err3 := s.Get(ctx, now, "k", perMinute)
		err4 := s.Reset(ctx, "k")
		_, err5 := s.List(ctx, now, "")
		err6 := s.Block(ctx, "k", now.Add(time.Hour), "", 0)
		_, err7 := s.Unblock(ctx, "k")
		_, _, err8 := s.Blocked(ctx, "k", now)
		_, err9 := s.ListBlocks(ctx, now, "")
		for i, err := range []error{err1, err2, err3, err4, err5, err6, err7, err8, err9} {
			if !errors.Is(err, ErrClosed) {
				t.Errorf("operation %d after Close: %v, want ErrClosed", i+1, err)
			}
		}
	})
}

// Expired counters and blocks leave memory, so that it is bounded by the
// keys active in the longest window.
func TestSweep(t *testing.T) {
	m := NewMemory()
	clk := newFakeClock()
	ctx := context.Background()
	size := func() (counters, blocks int) {
		for i := range m.shards {
			s := &m.shards[i]
			s.mu.Lock()
			for _, cs := range s.counters {
				counters += cs.len()
			}
			blocks += len(s.blocks)
			s.mu.Unlock()
		}
		return counters, blocks
	}
	check := func(name string, counters, blocks int) {
		t.Helper()
		if c, b := size(); c != counters || b != blocks {
			t.Errorf("%s: %d counters and %d blocks in memory, want %d and %d", name, c, b, counters, blocks)
		}
	}
	for i := range 1000 {
		key := "r10|account|" + strconv.Itoa(i)
		if _, err := m.CheckAdd(ctx, clk.Now(), 1, r10(key)...); err != nil {
			t.Fatal(err)
		}
		if err := m.Block(ctx, key, clk.Now().Add(time.Hour), "", 0); err != nil {
			t.Fatal(err)
		}
	}
	check("after adding", 3000, 1000)
	// A counter goes sweepGrace after its newest bucket left the window.
	clk.Advance(70*time.Second + sweepGrace - 1)
	m.Sweep(clk.Now())
	check("minute windows passed, within the grace", 3000, 1000)
	clk.Advance(1)
	m.Sweep(clk.Now())
	check("minute windows passed", 2000, 1000)
	clk.Advance(70 * time.Minute)
	m.Sweep(clk.Now())
	check("hour windows and blocks passed", 1000, 0)
	// A shard sweeps itself when it is used.
	clk.Advance(24 * time.Hour)
	for i := range 5000 {
		if _, err := m.Check(ctx, clk.Now(), 1, KeyLimit{strconv.Itoa(i), perMinute}); err != nil {
			t.Fatal(err)
		}
	}
	check("day windows passed", 0, 0)
}

// Concurrent requests over overlapping keys admit exactly what the limits
// allow and nothing of a refused request.
func TestConcurrent(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store, clk *fakeClock) {
		ctx := context.Background()
		now := clk.Now()
		const workers, perWorker = 8, 300
		keys := []string{"a", "b", "c", "d"}
		lim := Limit{Window: Window{Length: time.Hour, Buckets: 60}, Max: 500}
		var mu sync.Mutex
		admitted := map[string]int64{}
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range perWorker {
					k1, k2 := keys[(w+i)%len(keys)], keys[(w+2*i+1)%len(keys)]
					at := now.Add(time.Duration(i) * time.Millisecond)
					d, err := s.CheckAdd(ctx, at, 1, KeyLimit{k1, lim}, KeyLimit{k2, lim})
					if err != nil {
						t.Error(err)
						return
					}
					if d.Allowed {
						mu.Lock()
						admitted[k1]++
						if k2 != k1 {
							admitted[k2]++
						}
						mu.Unlock()
					}
					if i%50 == 0 {
						if _, err := s.List(ctx, at, ""); err != nil {
							t.Error(err)
						}
						if err := s.Block(ctx, k1, at.Add(time.Minute), "test", int64(i)); err != nil {
							t.Error(err)
						}
						if _, _, err := s.Blocked(ctx, k2, at); err != nil {
							t.Error(err)
						}
					}
				}
			})
		}
		if b, ok := s.(*Badger); ok {
			wg.Go(func() {
				for range 20 {
					if err := b.flush(); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		for _, k := range keys {
			c, _, err := s.Get(ctx, now.Add(time.Second), k, lim)
			if err != nil {
				t.Fatal(err)
			}
			if c != admitted[k] || c > lim.Max {
				t.Errorf("%s: count %d, admitted %d, max %d", k, c, admitted[k], lim.Max)
			}
		}
	})
}
