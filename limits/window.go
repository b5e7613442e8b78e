package limits

import "time"

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

// add records n events at now, dropping the buckets that left the window.
func (c *counter) add(now time.Time, n int64) {
	h := c.at(now)
	if win := c.window(h); len(win) < len(c.buckets) {
		c.buckets = append(c.buckets[:0], win...)
	}
	if k := len(c.buckets); k > 0 && c.buckets[k-1].idx == h {
		c.buckets[k-1].n += n
		return
	}
	c.buckets = append(c.buckets, bucket{idx: h, n: n})
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
