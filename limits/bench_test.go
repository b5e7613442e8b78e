package limits

import (
	"bufio"
	"context"
	"flag"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// benchKeys is the number of distinct accounts of the performance target.
const benchKeys = 100_000

// benchLimits are R10's defaults: 250 a minute, 1000 an hour, 20000 a day.
var benchLimits = []Limit{
	{Window: Window{Length: time.Minute, Buckets: 12}, Max: 250},
	{Window: Window{Length: time.Hour, Buckets: 12}, Max: 1000},
	{Window: Window{Length: 24 * time.Hour, Buckets: 24}, Max: 20000},
}

// BenchmarkCheckAdd counts one event in R10's three windows of one of
// 100 000 accounts, chosen at random, from many goroutines at once as
// policyd's connections would, on the real clock. Every account has been
// counted once before the timer starts. It reports the process's resident
// memory at the end (run one sub-benchmark alone, with -benchtime=Nx, for a
// clean figure) and, for Badger, includes the flushes every second.
func BenchmarkCheckAdd(b *testing.B) {
	b.Run("memory", func(b *testing.B) {
		s := NewMemory()
		defer s.Close()
		benchCheckAdd(b, s)
	})
	b.Run("badger", func(b *testing.B) {
		s, err := OpenBadger(BadgerConfig{Dir: b.TempDir(), Log: quietLog()})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		benchCheckAdd(b, s)
	})
}

func benchCheckAdd(b *testing.B, s Store) {
	ctx := context.Background()
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = "r10|account|user" + strconv.Itoa(i) + "@example.cz"
		if _, err := s.CheckAdd(ctx, time.Now(), 1, keyLimits(nil, keys[i])...); err != nil {
			b.Fatal(err)
		}
	}
	runtime.GC()
	var seed atomic.Uint64
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(seed.Add(1), 0))
		kl := make([]KeyLimit, 0, len(benchLimits))
		for pb.Next() {
			kl = keyLimits(kl[:0], keys[rng.IntN(len(keys))])
			if _, err := s.CheckAdd(ctx, time.Now(), 1, kl...); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(procStatusMiB(b, "VmRSS"), "RSS-MiB")
}

func keyLimits(kl []KeyLimit, key string) []KeyLimit {
	for _, l := range benchLimits {
		kl = append(kl, KeyLimit{Key: key, Limit: l})
	}
	return kl
}

// BenchmarkSustained counts requests of 100 000 accounts in R10's three
// windows at a steady rate, -limits.rate a second, from one goroutine, as
// policyd's END-OF-MESSAGE commits arrive under load. Its time per request
// is the pacing; what it measures is the resident memory at the end and at
// its peak and the CPU time per request, background flushes and Badger's
// compactions included. Run one sub-benchmark alone, for N seconds with
// -benchtime=(rate × N)x.
func BenchmarkSustained(b *testing.B) {
	b.Run("memory", func(b *testing.B) {
		s := NewMemory()
		defer s.Close()
		benchSustained(b, s)
	})
	b.Run("badger", func(b *testing.B) {
		s, err := OpenBadger(BadgerConfig{Dir: b.TempDir(), Log: quietLog()})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		benchSustained(b, s)
	})
}

var sustainedRate = flag.Int("limits.rate", 20000, "requests a second of BenchmarkSustained")

func benchSustained(b *testing.B, s Store) {
	ctx := context.Background()
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = "r10|account|user" + strconv.Itoa(i) + "@example.cz"
		if _, err := s.CheckAdd(ctx, time.Now(), 1, keyLimits(nil, keys[i])...); err != nil {
			b.Fatal(err)
		}
	}
	runtime.GC()
	rng := rand.New(rand.NewPCG(1, 2))
	kl := make([]KeyLimit, 0, len(benchLimits))
	cpu := cpuTime(b)
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		// Sleep only when a millisecond ahead, so that timers keep up.
		due := start.Add(time.Duration(i) * time.Second / time.Duration(*sustainedRate))
		if d := time.Until(due); d > time.Millisecond {
			time.Sleep(d)
		}
		kl = keyLimits(kl[:0], keys[rng.IntN(len(keys))])
		if _, err := s.CheckAdd(ctx, time.Now(), 1, kl...); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime(b)-cpu).Microseconds())/float64(b.N), "cpu-µs/op")
	b.ReportMetric(procStatusMiB(b, "VmRSS"), "RSS-MiB")
	b.ReportMetric(procStatusMiB(b, "VmHWM"), "peak-RSS-MiB")
}

// cpuTime returns the user and system CPU time of the process so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procStatusMiB returns a memory figure of /proc/self/status, such as VmRSS,
// the resident set size, or VmHWM, its peak.
func procStatusMiB(b *testing.B, field string) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Skip("no /proc/self/status")
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb / 1024
		}
	}
	b.Fatalf("no %s in /proc/self/status", field)
	return 0
}
