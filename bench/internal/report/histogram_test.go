package report

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBuckets(t *testing.T) {
	prevTop := int64(-1)
	for i := range 64 * 40 {
		top := bucketTop(i)
		if top <= prevTop {
			t.Fatalf("bucket %d ends at %d, not after bucket %d (%d)", i, top, i-1, prevTop)
		}
		for _, v := range []int64{prevTop + 1, top} {
			if b := bucketOf(v); b != i {
				t.Fatalf("value %d is in bucket %d, want %d", v, b, i)
			}
		}
		if width := top - prevTop; prevTop+1 >= 2*subBuckets && float64(width)/float64(prevTop+1) > 1.0/64 {
			t.Fatalf("bucket %d is %d wide from %d: more than 1/64", i, width, prevTop+1)
		}
		prevTop = top
	}
}

// TestQuantiles compares the histogram's percentiles with the exact ones of
// sorted samples.
func TestQuantiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var h, a, b Histogram
	var samples []time.Duration
	for i := range 100_000 {
		d := time.Duration(rng.ExpFloat64() * float64(200*time.Microsecond))
		samples = append(samples, d)
		h.Record(d)
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(&b)
	slices.Sort(samples)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
		exact := samples[int(q*float64(len(samples)))-1]
		for _, x := range []*Histogram{&h, &a} {
			got := x.Quantile(q)
			if got < exact || float64(got-exact) > float64(exact)/64 {
				t.Errorf("p%v = %v, exact %v: want at most 1/64 above", q*100, got, exact)
			}
		}
	}
	if h.Max != samples[len(samples)-1] || h.N != 100_000 || a.N != h.N {
		t.Errorf("max %v n %d (merged n %d), want %v 100000", h.Max, h.N, a.N, samples[len(samples)-1])
	}
}
