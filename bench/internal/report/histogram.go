// Package report holds what the benchmarks' tables share: latency
// histograms and the formatting of their cells and verdicts.
package report

import (
	"math"
	"math/bits"
	"time"
)

// Histogram counts durations in log-linear buckets, as HdrHistogram does:
// nanoseconds below 128 exactly, above that 64 buckets per power of two, so
// that a percentile is read to within 1/64 (1.6 %) of its value whatever the
// range, in constant memory.
type Histogram struct {
	counts []uint64
	N      uint64        // durations recorded
	Max    time.Duration // the largest
}

const subBuckets = 64

func bucketOf(v int64) int {
	if v < 2*subBuckets {
		return int(max(v, 0))
	}
	shift := bits.Len64(uint64(v)) - 7
	return subBuckets*shift + int(v>>shift)
}

// bucketTop is the largest value that falls in bucket i.
func bucketTop(i int) int64 {
	if i < 2*subBuckets {
		return int64(i)
	}
	shift := i/subBuckets - 1
	top := int64(i - subBuckets*shift)
	return (top+1)<<shift - 1
}

func (h *Histogram) Record(d time.Duration) {
	i := bucketOf(int64(d))
	if i >= len(h.counts) {
		h.counts = append(h.counts, make([]uint64, i+1-len(h.counts))...)
	}
	h.counts[i]++
	h.N++
	h.Max = max(h.Max, d)
}

func (h *Histogram) Merge(o *Histogram) {
	if len(o.counts) > len(h.counts) {
		h.counts = append(h.counts, make([]uint64, len(o.counts)-len(h.counts))...)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.N += o.N
	h.Max = max(h.Max, o.Max)
}

// Quantile returns the value below which a fraction q of the durations
// fall, as the top of its bucket (never above the largest recorded).
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.N == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.N)))
	rank = min(max(rank, 1), h.N)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(time.Duration(bucketTop(i)), h.Max)
		}
	}
	return h.Max
}
