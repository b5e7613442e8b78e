// Command policybench measures relayguard policyd under the load of a busy
// shared submission service, next to a bare policy-protocol server on the
// same machine, and reports requests/s, latency percentiles, CPU and peak
// RSS of both.
//
// The bare server is this program in -serve-bare mode: it parses each
// request with policyd's decoder and answers DUNNO, so it is the floor that
// the protocol and the loopback network alone cost. policyd runs as built
// (the -relayguard binary) with the configuration of etc/relayguard.toml,
// every rule enforcing, against an in-process DNS server (policyd's cache is
// warm after the first look-ups), a GeoIP database that places every client
// in an allowed country, and its Badger store in a temporary directory, with
// GOMEMLIMIT=100MiB as etc/systemd/relayguard-policyd.service sets it. R10's
// maxima are raised so that the load is never refused; its counters are kept
// and checked as with the defaults.
//
// Both servers run as processes of their own and get the same load: -conns
// persistent connections, one request at a time on each, as Postfix's smtpd
// processes send them; the 29 attributes of Postfix 3.7 per request
// (../shared/lab/LAB.md §3a); sessions of -accounts accounts in -domains
// hosted domains from -ipv4 IPv4 and -ipv6 IPv6 client addresses. First each
// account sends one message (so that the store holds every account), then the
// mixed load runs for -warmup and is measured for -duration. Every answer must
// be DUNNO: any other answer is reported and fails the run. The two servers
// are measured -rounds times, alternating, each time a fresh process, so
// that the spread shows how much the figures vary on a shared machine; the
// verdicts use the median ratio and the largest peak RSS.
//
// Exposure: everything listens on 127.0.0.1 only, on ports the system chose;
// the servers end with the run (and if this program dies). The load
// generator runs in this process, on the same CPUs as the server under test.
//
//	go run ./bench/policybench -relayguard bin/relayguard
package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"relayguard/bench/internal/proc"
	"relayguard/bench/internal/report"
	"relayguard/internal/etcconf"
)

// Targets of the issue that asked for this benchmark.
const (
	targetRatio = 0.5
	targetRSS   = 150e6 // bytes
)

type options struct {
	relayguard string
	etc        string
	keep       bool
	profile    string
	rounds     int
	accounts   int
	domains    int
	ipv4, ipv6 int
	rcptDoms   int
	load       loadConfig
}

func main() {
	var o options
	bare := flag.String("serve-bare", "", "run the bare policy server on `ADDR` (used by the benchmark itself)")
	flag.StringVar(&o.relayguard, "relayguard", "bin/relayguard", "the relayguard binary to run as policyd")
	flag.StringVar(&o.etc, "etc", "etc", "the directory of relayguard.toml, whose lines the benchmark's configuration replaces")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (configuration, logs, store) and print its path")
	flag.IntVar(&o.rounds, "rounds", 3, "measurements of each server, alternating; the verdicts use the median ratio and the largest peak RSS")
	flag.StringVar(&o.profile, "profile", "", "write policyd's CPU profile of the measurement (its first 25 s) and its heap at the end to `DIR`, read through its admin socket")
	flag.IntVar(&o.load.conns, "conns", 32, "persistent connections (smtpd processes)")
	flag.DurationVar(&o.load.warmup, "warmup", 3*time.Second, "mixed load before the measurement, after priming")
	flag.DurationVar(&o.load.duration, "duration", 10*time.Second, "measured duration per server and round")
	flag.DurationVar(&o.load.primeTimeout, "prime-timeout", 90*time.Second, "longest time for every account to send its first message")
	flag.DurationVar(&o.load.requestTimeout, "request-timeout", 10*time.Second, "longest wait for one answer (smtpd's timeout in etc/postfix/main.cf)")
	flag.Uint64Var(&o.load.seed, "seed", 1, "seed of the load's random choices")
	flag.IntVar(&o.accounts, "accounts", 100_000, "distinct SASL accounts")
	flag.IntVar(&o.domains, "domains", 3000, "hosted domains (every tenth with an alias domain)")
	flag.IntVar(&o.ipv4, "ipv4", 5000, "IPv4 client addresses")
	flag.IntVar(&o.ipv6, "ipv6", 1000, "IPv6 client networks (/64)")
	flag.IntVar(&o.rcptDoms, "rcpt-domains", 2000, "recipient domains")
	flag.Parse()
	if *bare != "" {
		fmt.Fprintln(os.Stderr, "bare server:", serveBare(*bare))
		os.Exit(1)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "policybench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.rounds < 1 || o.load.conns < 1 || o.load.duration <= 0 || o.load.warmup < 0 {
		return errors.New("-rounds, -conns and -duration must be positive, -warmup not negative")
	}
	wl, err := newWorkload(o.accounts, o.domains, o.ipv4, o.ipv6, o.rcptDoms)
	if err != nil {
		return err
	}
	relayguard, err := filepath.Abs(o.relayguard)
	if err != nil {
		return err
	}
	if _, err := os.Stat(relayguard); err != nil {
		return fmt.Errorf("the relayguard binary: %w (make bench builds it)", err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "policybench")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Printf("temporary directory (kept): %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	l, err := setupLab(wl, o.etc, dir)
	if err != nil {
		return err
	}
	defer l.close()
	printSetup(o, wl, l.env)

	var rounds [][2]*result
	for round := 1; round <= o.rounds; round++ {
		bareAddr, err := etcconf.FreeAddr()
		if err != nil {
			return err
		}
		bare, err := measure(fmt.Sprintf("bare (round %d)", round), filepath.Join(dir, "bare.log"), nil,
			[]string{self, "-serve-bare", bareAddr}, []string{bareAddr}, wl, o.load)
		if err != nil {
			return err
		}
		pdLoad := o.load
		if o.profile != "" && round == o.rounds {
			pdLoad.measuring = func(d time.Duration) <-chan error { return profile(l.admin, o.profile, d) }
		}
		// Every round's policyd opens the store the previous one left:
		// from the second round on, it starts with 100 000 accounts on disk.
		pd, err := measure(fmt.Sprintf("policyd (round %d)", round), filepath.Join(dir, "policyd.log"), l.env,
			[]string{relayguard, "policyd", "--config", l.config}, []string{l.policy, l.milter, l.auth}, wl, pdLoad)
		if err != nil {
			return err
		}
		rounds = append(rounds, [2]*result{bare, pd})
	}
	printReport(os.Stdout, rounds, o.load.requestTimeout, l.env)
	fmt.Println()
	fmt.Print(report.LogSummary("policyd", filepath.Join(dir, "policyd.log")))
	for _, r := range rounds {
		if r[0].refused()+r[1].refused() > 0 {
			return errRefused
		}
	}
	return nil
}

// measure starts a server, drives the load against it and stops it.
func measure(name, logPath string, env, argv, addrs []string, wl *workload, cfg loadConfig) (*result, error) {
	fmt.Printf("%s: starting\n", name)
	c, err := proc.Start(name, logPath, env, argv...)
	if err != nil {
		return nil, err
	}
	if err := c.WaitListening(addrs...); err != nil {
		c.Stop()
		return nil, err
	}
	res, err := drive(name, addrs[0], c.Pid(), wl, cfg)
	if err != nil {
		c.Stop()
		return nil, fmt.Errorf("%w\n%s's log ends with:\n%s", err, name, c.LogTail(20))
	}
	if err := c.Stop(); err != nil {
		return nil, err
	}
	fmt.Printf("%s: primed %d accounts in %.1fs (%.0f requests/s), then measured %.1fs\n",
		name, res.primed, res.primeTime.Seconds(), float64(res.primeReqs)/res.primeTime.Seconds(), res.measured.Seconds())
	fmt.Printf("%s: requests/s, second by second (P priming ended, M measurement began): %s\n", name, timeline(res))
	return res, nil
}

// timeline shows the answers of each second (k: thousands), so that a
// server that slows down as its state grows shows it.
func timeline(r *result) string {
	var b strings.Builder
	for i, n := range r.perSecond {
		if i == r.primedAt {
			b.WriteString("P ")
		}
		if i == r.measuredAt {
			b.WriteString("M ")
		}
		if n < 1000 {
			fmt.Fprintf(&b, "%d ", n)
		} else {
			fmt.Fprintf(&b, "%.1fk ", float64(n)/1000)
		}
	}
	return strings.TrimSpace(b.String())
}

func printSetup(o options, wl *workload, env []string) {
	fmt.Printf("load: %d persistent connections, one request at a time on each (as smtpd processes); Postfix 3.7's 29 attributes per request\n", o.load.conns)
	fmt.Printf("      %d accounts in %d hosted domains (%d with an alias), %d IPv4 and %d IPv6 (/64) clients, %d recipient domains\n",
		wl.accounts, wl.domains, (wl.domains+aliasEvery-1)/aliasEvery, wl.ipv4, wl.ipv6, len(wl.rcptDomains))
	fmt.Printf("      each account sends one message first (priming), then the mixed load: %v warm-up, %v measured\n", o.load.warmup, o.load.duration)
	fmt.Printf("cpus: %d; the load generator runs in this process on the same CPUs as the server\n", runtime.NumCPU())
	fmt.Printf("policyd: %s, etc/relayguard.toml with every rule enforcing (R10 maxima raised), Badger store, in-process DNS, GeoIP; environment of etc/systemd: %s\n",
		o.relayguard, strings.Join(env, " "))
	fmt.Println("bare: this program's -serve-bare: policyd.NewDecoder, answers DUNNO")
	fmt.Println()
}

const mb = 1e6

func rate(r *result) float64 { return float64(r.requests) / r.measured.Seconds() }

func printReport(out *os.File, rounds [][2]*result, requestTimeout time.Duration, env []string) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\tserver\treq/s\tp50\tp90\tp99\tmax\tpeak RSS\tRSS at end\tserver CPU\tCPU/req\tload gen CPU\tother CPU\tnot DUNNO or late\t")
	busy := false
	var ratios []float64
	var peak *result // the policyd of the largest peak RSS
	for i, pair := range rounds {
		for _, r := range pair {
			other := r.cpu.Cores(r.cpu.Other)
			busy = busy || other > report.BusyOther
			name, _, _ := strings.Cut(r.name, " ")
			fmt.Fprintf(tw, "%d\t%s\t%.0f\t%s\t%s\t%s\t%s\t%.1f MB\t%.1f MB\t%.2f cores\t%.1f µs\t%.2f cores\t%.2f cores\t%d of %d\t\n",
				i+1, name, rate(r), report.Latency(r.latency.Quantile(0.5)), report.Latency(r.latency.Quantile(0.9)), report.Latency(r.latency.Quantile(0.99)), report.Latency(r.latency.Max),
				float64(r.mem.Peak)/mb, float64(r.mem.RSS)/mb,
				r.cpu.Cores(r.cpu.Server), float64(r.cpu.Server.Microseconds())/float64(r.requests),
				r.cpu.Cores(r.cpu.Load), other, r.refused(), r.answered)
		}
		ratios = append(ratios, rate(pair[1])/rate(pair[0]))
		if peak == nil || pair[1].mem.Peak > peak.mem.Peak {
			peak = pair[1]
		}
	}
	tw.Flush()
	if busy {
		fmt.Fprintln(out, report.BusyWarning)
	}

	// The round of the median ratio stands for the run.
	order := make([]int, len(rounds))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(ratios[a], ratios[b]) })
	mid := order[len(order)/2]
	bare, pd := rounds[mid][0], rounds[mid][1]

	fmt.Fprintln(out)
	fmt.Fprintf(out, "policyd by stage (round %d, the median):\n", mid+1)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "stage\tshare\tp50\tp90\tp99\tmax\t")
	var total uint64
	for st := range numStages {
		total += pd.byStage[st].N
	}
	for st := range numStages {
		h := &pd.byStage[st]
		fmt.Fprintf(tw, "%s\t%.1f %%\t%s\t%s\t%s\t%s\t\n", st, 100*float64(h.N)/float64(total),
			report.Latency(h.Quantile(0.5)), report.Latency(h.Quantile(0.9)), report.Latency(h.Quantile(0.99)), report.Latency(h.Max))
	}
	tw.Flush()

	fmt.Fprintln(out)
	var each []string
	for _, r := range ratios {
		each = append(each, fmt.Sprintf("%.1f %%", 100*r))
	}
	ratio := ratios[mid]
	fmt.Fprintf(out, "policyd/bare: %.1f %% of the requests/s (the median of %s; spread %.1f points) (target ≥ %.0f %%: %s); p50 ×%.1f, p99 ×%.1f\n",
		100*ratio, strings.Join(each, ", "), 100*(ratios[order[len(order)-1]]-ratios[order[0]]), 100*targetRatio, report.Verdict(ratio >= targetRatio),
		float64(pd.latency.Quantile(0.5))/float64(bare.latency.Quantile(0.5)),
		float64(pd.latency.Quantile(0.99))/float64(bare.latency.Quantile(0.99)))
	fmt.Fprintf(out, "policyd peak RSS: %.1f MB (%.1f MiB; %.1f MB when priming ended), the largest of %d rounds, with %s (target < %.0f MB: %s)\n",
		float64(peak.mem.Peak)/mb, float64(peak.mem.Peak)/(1<<20), float64(peak.memAtPrimed.Peak)/mb, len(rounds), strings.Join(env, " "), targetRSS/mb, report.Verdict(float64(peak.mem.Peak) < targetRSS))
	for _, pair := range rounds {
		printRefusals(out, pair, requestTimeout)
	}
}

// printRefusals shows what a round's servers answered other than DUNNO.
func printRefusals(out *os.File, pair [2]*result, requestTimeout time.Duration) {
	for _, r := range pair {
		var answers, late []string
		for st := range numStages {
			if c := r.notDunno[st]; c > 0 {
				answers = append(answers, fmt.Sprintf("%s %d", st, c))
			}
			if c := r.timeouts[st]; c > 0 {
				late = append(late, fmt.Sprintf("%s %d", st, c))
			}
		}
		if len(late) > 0 {
			fmt.Fprintf(out, "%s did not answer within %v (smtpd then applies default_action, a 4xx): %s\n",
				r.name, requestTimeout, strings.Join(late, ", "))
		}
		if len(answers) > 0 {
			fmt.Fprintf(out, "%s answered something else than DUNNO: %s, e.g.:\n  %s\n",
				r.name, strings.Join(answers, ", "), strings.Join(r.examples, "\n  "))
		}
	}
}
