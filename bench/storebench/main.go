// Command storebench measures what the embedded Badger store costs in
// memory and garbage collection over the in-memory store it persists, under
// policybench's rate of changes: -rate R10 commits a second (three windows,
// 1 min/12, 1 h/12, 24 h/24, for the account and for the client IP), spread
// over -accounts accounts and -ips addresses, for -duration.
//
// Three measurements, each a fresh process with GOMEMLIMIT=75MiB (policyd's
// 100 MiB less what its other parts hold under policybench):
//
//   - memory: limits.Memory alone, the baseline;
//   - badger, new: limits.Badger on an empty database, for -duration;
//   - badger, restarted: limits.Badger reopened on that database (so that it
//     loads every key and compacts what the first run wrote), for -restart.
//
// Reported for each: the peak of the live heap (sampled every second), the
// garbage collections and their CPU, all the process's CPU, and its peak
// RSS; then Badger's figures against the baseline. BadgerOptions's comment
// and limits/README.md say how these figures chose its options.
//
// Exposure: nothing listens; the database is in a temporary directory,
// removed at the end.
//
//	go run ./bench/storebench
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime/metrics"
	"strconv"
	"text/tabwriter"
	"time"

	"relayguard/bench/internal/proc"
	"relayguard/limits"
)

// memLimit is the child processes' GOMEMLIMIT.
const memLimit = "75MiB"

type options struct {
	duration, restart time.Duration
	rate              int
	accounts, ips     int
}

// result is what one child process measured.
type result struct {
	PeakLive uint64  // bytes
	GCs      uint64  // collections during the load
	GCCPU    float64 // seconds
	CPU      float64 // seconds, user and system
	PeakRSS  int64   // bytes
	Commits  int
}

func main() {
	var o options
	child := flag.String("child", "", "run one measurement: memory, or badger with -dir (used by the benchmark itself)")
	dir := flag.String("dir", "", "the Badger database directory (with -child badger)")
	flag.DurationVar(&o.duration, "duration", 15*time.Second, "load on the memory store and on a new Badger database")
	flag.DurationVar(&o.restart, "restart", 25*time.Second, "load on the reopened Badger database")
	flag.IntVar(&o.rate, "rate", 12_000, "R10 commits a second (policybench's messages a second)")
	flag.IntVar(&o.accounts, "accounts", 100_000, "distinct accounts")
	flag.IntVar(&o.ips, "ips", 6_000, "distinct client addresses")
	flag.Parse()
	if *child != "" {
		d, err := time.ParseDuration(flag.Arg(0))
		if err != nil {
			fail(err)
		}
		r, err := measure(*child, *dir, d, o)
		if err != nil {
			fail(err)
		}
		if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
			fail(err)
		}
		return
	}
	if err := run(o); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "storebench:", err)
	os.Exit(1)
}

func run(o options) error {
	dir, err := os.MkdirTemp("", "storebench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	db := dir + "/db"
	phases := []struct {
		name, store string
		d           time.Duration
	}{
		{"memory", "memory", o.duration},
		{"badger, new", "badger", o.duration},
		{"badger, restarted", "badger", o.restart},
	}
	fmt.Printf("%d R10 commits/s over %d accounts and %d IPs, GOMEMLIMIT=%s, each a fresh process\n", o.rate, o.accounts, o.ips, memLimit)
	results := make([]result, len(phases))
	for i, p := range phases {
		fmt.Printf("%s: %s\n", p.name, p.d)
		r, err := runChild(p.store, db, p.d, o)
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		results[i] = r
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "store\tduration\tcommits\tpeak live heap\tGCs\tGC CPU\tCPU\tpeak RSS\t")
	for i, p := range phases {
		r := results[i]
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f MB\t%d\t%.2f s\t%.2f s\t%.1f MB\t\n", p.name, p.d, r.Commits,
			float64(r.PeakLive)/1e6, r.GCs, r.GCCPU, r.CPU, float64(r.PeakRSS)/1e6)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	base := results[0]
	for i, p := range phases[1:] {
		r := results[i+1]
		scale := p.d.Seconds() / phases[0].d.Seconds() // per the baseline's duration
		fmt.Printf("%s over memory: live heap +%.1f MB, GC CPU ×%.1f, CPU ×%.1f, peak RSS +%.1f MB\n", p.name,
			float64(r.PeakLive-min(r.PeakLive, base.PeakLive))/1e6, r.GCCPU/scale/base.GCCPU, r.CPU/scale/base.CPU,
			float64(r.PeakRSS-base.PeakRSS)/1e6)
	}
	return nil
}

func runChild(store, db string, d time.Duration, o options) (result, error) {
	self, err := os.Executable()
	if err != nil {
		return result{}, err
	}
	cmd := exec.Command(self, "-child", store, "-dir", db, "-rate", strconv.Itoa(o.rate),
		"-accounts", strconv.Itoa(o.accounts), "-ips", strconv.Itoa(o.ips), d.String())
	cmd.Env = append(os.Environ(), "GOMEMLIMIT="+memLimit)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return result{}, err
	}
	var r result
	return r, json.Unmarshal(out, &r)
}

func measure(kind, dir string, d time.Duration, o options) (result, error) {
	var s limits.Store
	switch kind {
	case "memory":
		s = limits.NewMemory()
	case "badger":
		if dir == "" {
			return result{}, fmt.Errorf("-child badger needs -dir")
		}
		b, err := limits.OpenBadger(limits.BadgerConfig{Dir: dir, Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		if err != nil {
			return result{}, err
		}
		s = b
	default:
		return result{}, fmt.Errorf("unknown store %q", kind)
	}
	accounts := make([]string, o.accounts)
	for i := range accounts {
		accounts[i] = fmt.Sprintf("r10|account|user%d@domain%d.example", i, i%3000)
	}
	ips := make([]string, o.ips)
	for i := range ips {
		ips[i] = fmt.Sprintf("r10|ip|10.%d.%d.%d", i>>16, i>>8&255, i&255)
	}
	// R10's windows; maxima that never refuse, as in policybench.
	windows := []limits.Window{{Length: time.Minute, Buckets: 12}, {Length: time.Hour, Buckets: 12}, {Length: 24 * time.Hour, Buckets: 24}}
	samples := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/cycles/total:gc-cycles"}, {Name: "/cpu/classes/gc/total:cpu-seconds"}}
	metrics.Read(samples)
	gcs0, gcCPU0 := samples[1].Value.Uint64(), samples[2].Value.Float64()
	cpu0 := proc.SelfCPU()

	var r result
	kl := make([]limits.KeyLimit, 0, 2*len(windows))
	const batch = 100 // commits between pauses
	start := time.Now()
	next := start.Add(time.Second)
	for i := 0; time.Since(start) < d; {
		for range batch {
			account, ip := accounts[i%len(accounts)], ips[i*7%len(ips)]
			i += 7919 // a prime: every account in turn, in a scattered order
			kl = kl[:0]
			for _, w := range windows {
				l := limits.Limit{Window: w, Max: 1 << 40}
				kl = append(kl, limits.KeyLimit{Key: account, Limit: l}, limits.KeyLimit{Key: ip, Limit: l})
			}
			if _, err := s.CheckAdd(context.Background(), time.Now(), 1, kl...); err != nil {
				return r, err
			}
			r.Commits++
		}
		time.Sleep(time.Until(start.Add(time.Duration(r.Commits) * time.Second / time.Duration(o.rate))))
		if time.Now().After(next) {
			metrics.Read(samples)
			r.PeakLive = max(r.PeakLive, samples[0].Value.Uint64())
			next = next.Add(time.Second)
		}
	}
	metrics.Read(samples)
	r.PeakLive = max(r.PeakLive, samples[0].Value.Uint64())
	r.GCs, r.GCCPU = samples[1].Value.Uint64()-gcs0, samples[2].Value.Float64()-gcCPU0
	r.CPU = (proc.SelfCPU() - cpu0).Seconds()
	if err := s.Close(); err != nil {
		return r, err
	}
	mem, err := proc.ReadMemory(os.Getpid())
	r.PeakRSS = mem.Peak
	return r, err
}
