package limits

import (
	"slices"
	"time"
)

// bucket is the count of one non-empty bucket.
type bucket struct {
	idx int64 // the bucket covers [idx·b, (idx+1)·b) in Unix nanoseconds
	n   int64
}

// counter is the counter of one key in one window: its non-empty buckets,
// oldest first. Only the buckets of the current window are kept.
type counter struct {
	w       Window
	buckets []bucket
}

// bucketOf returns the index of the bucket of width b that holds t.
func bucketOf(t time.Time, b int64) int64 {
	ns := t.UnixNano()
	i := ns / b
	if ns%b < 0 {
		i--
	}
	return i
}

// at returns the bucket that a request at now is recorded in: the bucket of
// now, or the counter's newest bucket if a lagging clock puts now before it.
func (c *counter) at(now time.Time) int64 {
	h := bucketOf(now, int64(c.w.Bucket()))
	if k := len(c.buckets); k > 0 && c.buckets[k-1].idx > h {
		h = c.buckets[k-1].idx
	}
	return h
}

// window returns the buckets counted at bucket h: those from h−N on.
func (c *counter) window(h int64) []bucket {
	oldest := h - int64(c.w.Buckets)
	for i, b := range c.buckets {
		if b.idx >= oldest {
			return c.buckets[i:]
		}
	}
	return nil
}

// count returns the count at now. A nil counter counts nothing.
func (c *counter) count(now time.Time) int64 {
	if c == nil {
		return 0
	}
	var sum int64
	for _, b := range c.window(c.at(now)) {
		sum += b.n
	}
	return sum
}

// freeAt returns the first time from now on at which count + n ≤ max: now
// if that holds already, else the time at which enough of the oldest
// buckets have left the window (bucket i leaves at (i+N+1)·b), or the zero
// time if n alone exceeds max. Comparisons are written as total ≤ max − n,
// which cannot overflow for n and max ≥ 0.
func (c *counter) freeAt(now time.Time, n, max int64) time.Time {
	if n > max {
		return time.Time{}
	}
	if c == nil {
		return now
	}
	win := c.window(c.at(now))
	var total int64
	for _, b := range win {
		total += b.n
	}
	if total <= max-n {
		return now
	}
	// The loop ends at the latest with the newest bucket, when total is 0.
	var at time.Time
	for _, b := range win {
		total -= b.n
		at = time.Unix(0, (b.idx+int64(c.w.Buckets)+1)*int64(c.w.Bucket()))
		if total <= max-n {
			break
		}
	}
	return at
}

// entry is a key's counters, one per window, in one slice of buckets: a key
// is one allocation, without pointers, which the garbage collector never
// looks inside (a store holds some hundred thousand of them). Each counter
// is a header, {idx: the window's length in ns, n: its bucket count << 32 |
// its number of non-empty buckets}, then those buckets, oldest first.
type entry []bucket

func header(w Window, buckets int) bucket {
	return bucket{idx: int64(w.Length), n: int64(w.Buckets)<<32 | int64(buckets)}
}

// at returns the counter whose header is at pos, and the position of the
// next header.
func (e entry) at(pos int) (counter, int) {
	h := e[pos]
	w := Window{Length: time.Duration(h.idx), Buckets: int(h.n >> 32)}
	k := int(h.n & (1<<32 - 1))
	return counter{w: w, buckets: e[pos+1 : pos+1+k]}, pos + 1 + k
}

// find returns the counter of window w and the position of its header.
func (e entry) find(w Window) (counter, int, bool) {
	for pos := 0; pos < len(e); {
		c, next := e.at(pos)
		if c.w == w {
			return c, pos, true
		}
		pos = next
	}
	return counter{}, 0, false
}

// len returns the number of counters.
func (e entry) len() int {
	n := 0
	for pos := 0; pos < len(e); n++ {
		_, pos = e.at(pos)
	}
	return n
}

// add records n events at now in the counter of w, new if need be,
// dropping the buckets that left its window, and returns the entry.
func (e entry) add(w Window, now time.Time, n int64) entry {
	c, pos, ok := e.find(w)
	if !ok {
		return append(e.room(2), header(w, 1), bucket{idx: bucketOf(now, int64(w.Bucket())), n: n})
	}
	h := c.at(now)
	k := len(c.window(h)) // the buckets kept
	if gone := len(c.buckets) - k; gone > 0 {
		e = slices.Delete(e, pos+1, pos+1+gone)
		e[pos] = header(w, k)
	}
	last := pos + k // the newest bucket, or the header if none
	if k > 0 && e[last].idx == h {
		e[last].n += n
		return e
	}
	e[pos] = header(w, k+1)
	return slices.Insert(e.room(1), last+1, bucket{idx: h, n: n})
}

// room returns e with room for n more cells, and a few more: an entry
// lives as long as its key is used, so it grows by small steps rather than
// doubling as append would.
func (e entry) room(n int) entry {
	if cap(e)-len(e) >= n {
		return e
	}
	grown := make(entry, len(e), len(e)+n+2)
	copy(grown, e)
	return grown
}

// drop removes the counters for which gone is true.
func (e entry) drop(gone func(c counter) bool) entry {
	for pos := 0; pos < len(e); {
		c, next := e.at(pos)
		if gone(c) {
			e = slices.Delete(e, pos, next)
			continue
		}
		pos = next
	}
	return e
}

// expiresAt returns the time at which the count becomes zero for good: when
// the newest bucket leaves the window.
func (c *counter) expiresAt() time.Time {
	if len(c.buckets) == 0 {
		return time.Time{}
	}
	last := c.buckets[len(c.buckets)-1].idx
	return time.Unix(0, (last+int64(c.w.Buckets)+1)*int64(c.w.Bucket()))
}
