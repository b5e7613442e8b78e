// Command filterbench measures relayguard's content filter (relayguard
// contentfilter) next to a bare pass-through SMTP relay on the same machine,
// in the same run, and reports messages/s, latency percentiles, CPU per
// message and peak RSS of both.
//
// What runs: the filter as built (the -relayguard binary), with the
// configuration of etc/relayguard.toml in which only addresses and paths
// change, no policyd (admin.socket = "": no END-OF-MESSAGE replies to ask
// for) and no external scanner: R16 (clamd) and R15 (rspamd) off, R17
// (banned attachments) enforcing, R19 (DKIM) signing every message with a
// key of the sender's domain (-dkim: an RSA 2048 key by default, as
// `relayguard dkim keygen` makes, or ed25519, or off). The pass-through is
// this program in -serve-bare mode: for each connection it connects to the
// next hop and relays each command and reply line as they come, and streams
// the message data without holding or parsing it; it is the floor that the
// SMTP exchanges and the loopback network alone cost. Both hand the
// messages to the same next hop, a fast SMTP server inside this program
// (the sink), which notes every message that arrives: a message that a
// client saw accepted and that did not arrive whole and once (and signed,
// with a valid signature for the first), or any refused message, fails the
// run. A missed target does not.
//
// Two measurements:
//
//   - Steady load: -conns concurrent connections, as many of Postfix's
//     smtpd processes each handing the filter one message per connection
//     (before-queue: EHLO, XFORWARD, MAIL with SIZE, RCPT, DATA, QUIT), of
//     -size bytes (a letter in text and HTML with a PDF attached), for
//     -warmup and then -duration measured. Reported: messages/s; the
//     latency of a message from connecting to the reply at its end, and of
//     that reply after the final "." (the filter's checking, signing and
//     delivery; the pass-through's delivery); the server's CPU, in cores and
//     per message; this program's CPU (load generator and sink); and the
//     other processes' CPU, which must be near zero for the figures to
//     hold. Target: the filter at 70 % of the pass-through's messages/s or
//     better.
//   - Burst: -big-conns connections each take a message of -big-size bytes
//     to the start of DATA, then send them all at once. Reported: each
//     server's resident set before and at its peak (VmHWM: each server is a
//     fresh process). Target: the filter's peak RSS at most 64 MB + 3 × the
//     bytes in flight (the filter spools each message past
//     spool_threshold, 1 MiB, to disk).
//
// Each measurement runs -rounds times, alternating the two servers, each a
// fresh process, so that the spread shows how much the figures vary on a
// shared machine; the verdicts use the median ratio and the largest peak.
//
// Exposure: everything listens on 127.0.0.1 only, on ports the system
// chose; the servers end with the run (and if this program dies); the
// filter's spool and DKIM key are in a temporary directory, removed at the
// end unless -keep. The load generator and the sink run in this process,
// on the same CPUs as the server under test.
//
// Reproduce (make bench builds the binary and runs this after policybench):
//
//	make build && go run ./bench/filterbench -relayguard bin/relayguard
//
// The CPU profile of the same code path in one process is
// BenchmarkFilter of package contentfilter:
//
//	go test -run '^$' -bench Filter -cpuprofile cpu.out ./contentfilter/
//
// # Measured
//
// On a shared virtual machine of 2 cores (AMD EPYC), Go 1.26, with the
// other CPU column near 0 (the pass-through's own figures still vary by 2×
// from round to round: both it and the load generator slow down together,
// so the spread below is the machine's). Ranges are over rounds; ratios are
// each round's, then the median of the run.
//
//	DKIM key   pass-through msg/s  (CPU/msg)   filter msg/s  (CPU/msg)         filter/pass-through
//	RSA 2048   5 547-11 629        (78-166 µs)  873-1 462     (1 066-1 613 µs)  10-22 %, medians 13-15 %
//	Ed25519    9 468-11 022        (82-95 µs)   1 845-1 984   (693-764 µs)      18-20 %, median 18 %
//	off        5 029-10 225        (89-174 µs)  2 606-3 627   (282-391 µs)      32-65 %, medians 40-58 %
//
// (off: four runs after the filter's writes to the next hop went through a
// 64 KiB buffer, strace -c counting 16 writes per message where there were
// 28 and the pass-through makes 15; no change shows through the noise.)
//
// Signing is go-msgauth's: its relaxed body canonicaliser costs about
// 0.4 ms for 50 KB, and a one-pass signer written here, byte for byte the
// same, took Ed25519 to 386-464 µs per message and 43 %; the project does
// not write DKIM itself, so that belongs in go-msgauth.
//
// The filter before this benchmark's optimisations (its binary of commit
// 69e190f, same harness): RSA 1 056-1 117 msg/s at 1 438-1 508 µs per
// message, Ed25519 1 478-1 783 at 830-989 µs, off 2 876-2 901 at 438 µs.
//
// Burst, 20 × 10 MB in flight (200 MB): the filter's peak RSS is 35-41 MB
// (it held 36-42 MB before), about 1 MB per message above its RSS at
// rest; target 664 MB, met by far, and the stricter reading, 64 MB + 3 ×
// the bytes held in memory (20 × spool_threshold), 127 MB, too. With an
// RSA key it takes 0.8 s and 1.4 s of CPU (before: 1.2 s and 2.2 s).
//
// The 70 % target is missed, and cannot be met on this machine. With RSA,
// the private-key operation alone (measured and printed by the run:
// 690-763 µs) is five to nine times the pass-through's whole CPU per
// message: 70 % of a pass-through at 9 000 messages/s would take 4.8
// cores of signing. Without DKIM the filter still holds each message,
// parses its MIME tree (about 60 µs for 50 KB in BenchmarkInspect, most of
// it enmime: two 4 KiB buffers and a header map per part, which a caller
// cannot reuse), and writes it again, where the pass-through copies bytes
// between two sockets: 2 to 4 times its CPU. With R17 off as well (the
// filter receiving, holding and passing on the message, nothing else), one
// run measured 4 996-5 995 messages/s at 147-178 µs each, 57-107 % of the
// pass-through: the floor of holding a message is itself near the target,
// and with the load generator on the same two cores, 70 % leaves the
// filter about 190 µs per message for everything.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
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
	"relayguard/internal/testmail"
)

// Targets of the issue that asked for this benchmark.
const (
	targetRatio   = 0.7
	targetRSSBase = 64 * mb // plus targetRSSPer × the bytes in flight
	targetRSSPer  = 3
)

const mb = 1e6

type options struct {
	relayguard string
	etc        string
	keep       bool
	rounds     int
	load       loadConfig
	size       int
	bigConns   int
	bigSize    int
	dkim       string
	steady     bool
	burst      bool
}

func main() {
	var o options
	bare := flag.String("serve-bare", "", "run the pass-through relay on `ADDR` (used by the benchmark itself)")
	next := flag.String("next-hop", "", "the pass-through relay's next hop `ADDR` (with -serve-bare)")
	flag.StringVar(&o.relayguard, "relayguard", "bin/relayguard", "the relayguard binary to run as the content filter")
	flag.StringVar(&o.etc, "etc", "etc", "the directory of relayguard.toml, whose lines the benchmark's configuration replaces")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (configuration, key, logs) and print its path")
	flag.IntVar(&o.rounds, "rounds", 3, "measurements of each server, alternating")
	flag.IntVar(&o.load.conns, "conns", 16, "concurrent connections of the steady load")
	flag.DurationVar(&o.load.warmup, "warmup", 2*time.Second, "steady load before each measurement")
	flag.DurationVar(&o.load.duration, "duration", 10*time.Second, "measured duration of the steady load, per server and round")
	flag.DurationVar(&o.load.timeout, "timeout", time.Minute, "longest wait for one reply")
	flag.IntVar(&o.size, "size", 50_000, "bytes of each message of the steady load")
	flag.IntVar(&o.bigConns, "big-conns", 20, "messages in flight at once in the burst")
	flag.IntVar(&o.bigSize, "big-size", 10_000_000, "bytes of each message of the burst")
	flag.StringVar(&o.dkim, "dkim", "rsa", "the sender domain's DKIM key: rsa (2048 bits), ed25519, or off (no signing)")
	flag.BoolVar(&o.steady, "steady", true, "measure the steady load")
	flag.BoolVar(&o.burst, "burst", true, "measure the burst")
	flag.Parse()
	if *bare != "" {
		fmt.Fprintln(os.Stderr, "pass-through:", serveBare(*bare, *next))
		os.Exit(1)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "filterbench:", err)
		os.Exit(1)
	}
}

// bench is one run: the sink, the lab and the servers' command lines.
type bench struct {
	o          options
	dir        string
	sink       *sink
	lab        *lab
	self       string
	relayguard string
	small, big *testmail.Message
}

func run(o options) error {
	switch {
	case o.rounds < 1 || o.load.conns < 1 || o.bigConns < 1 || o.load.duration <= 0 || o.load.warmup < 0:
		return errors.New("-rounds, -conns, -big-conns and -duration must be positive, -warmup not negative")
	case o.dkim != "rsa" && o.dkim != "ed25519" && o.dkim != "off":
		return fmt.Errorf("-dkim %q: want rsa, ed25519 or off", o.dkim)
	}
	b := &bench{o: o}
	var err error
	if b.relayguard, err = filepath.Abs(o.relayguard); err != nil {
		return err
	}
	if _, err := os.Stat(b.relayguard); err != nil {
		return fmt.Errorf("the relayguard binary: %w (make bench builds it)", err)
	}
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	if b.dir, err = os.MkdirTemp("", "filterbench"); err != nil {
		return err
	}
	if o.keep {
		fmt.Printf("temporary directory (kept): %s\n", b.dir)
	} else {
		defer os.RemoveAll(b.dir)
	}
	if b.sink, err = startSink(); err != nil {
		return err
	}
	defer b.sink.close()
	if b.lab, err = setupLab(o.etc, b.dir, b.sink.addr(), o.dkim); err != nil {
		return err
	}
	b.small, b.big = testmail.New(o.size, 1), testmail.New(o.bigSize, 2)
	b.printSetup()

	var steady [][2]*result
	for round := 1; o.steady && round <= o.rounds; round++ {
		bare, err := b.steady(round, false)
		if err != nil {
			return err
		}
		filter, err := b.steady(round, true)
		if err != nil {
			return err
		}
		steady = append(steady, [2]*result{bare, filter})
	}
	var bursts [][2]*burstResult
	for round := 1; o.burst && round <= o.rounds; round++ {
		bare, err := b.burst(round, false)
		if err != nil {
			return err
		}
		filter, err := b.burst(round, true)
		if err != nil {
			return err
		}
		bursts = append(bursts, [2]*burstResult{bare, filter})
	}
	failed := false
	if len(steady) > 0 {
		fmt.Println()
		failed = printSteady(os.Stdout, steady) || failed
		if b.lab.key != nil {
			if cost, err := b.lab.signCost(); err == nil {
				fmt.Printf("of the filter's CPU per message, the DKIM signature itself (one %s private-key operation, measured in this process): %.0f µs\n",
					o.dkim, float64(cost)/float64(time.Microsecond))
			}
		}
	}
	if len(bursts) > 0 {
		fmt.Println()
		failed = printBursts(os.Stdout, bursts) || failed
	}
	fmt.Println()
	if o.dkim != "off" && o.steady {
		if err := b.lab.verify(b.sink.keptMessage()); err != nil {
			fmt.Printf("DKIM: the first signed message that arrived does not verify: %v\n", err)
			failed = true
		} else {
			fmt.Printf("DKIM: the first signed message that arrived verifies (d=%s, s=%s, %s key)\n", testmail.SenderDomain, selector, o.dkim)
		}
	}
	if n := b.sink.withoutID(); n > 0 {
		fmt.Printf("%d messages arrived at the sink without their %s\n", n, testmail.IDHeader)
		failed = true
	}
	logs, _ := filepath.Glob(filepath.Join(b.dir, "filter-*.log"))
	fmt.Print(report.LogSummary("the filter", logs...))
	if failed {
		return errors.New("messages were refused or lost: a run that loses mail measures nothing")
	}
	return nil
}

// start starts the filter or the pass-through for one measurement.
func (b *bench) start(name string, filter bool) (*proc.Child, string, error) {
	logPath := filepath.Join(b.dir, name+".log")
	var argv, env []string
	addr := b.lab.filter
	if filter {
		argv, env = []string{b.relayguard, "contentfilter", "--config", b.lab.config}, b.lab.env
	} else {
		var err error
		if addr, err = etcconf.FreeAddr(); err != nil {
			return nil, "", err
		}
		argv = []string{b.self, "-serve-bare", addr, "-next-hop", b.sink.addr()}
	}
	c, err := proc.Start(name, logPath, env, argv...)
	if err != nil {
		return nil, "", err
	}
	if err := c.WaitListening(addr); err != nil {
		c.Stop()
		return nil, "", err
	}
	return c, addr, nil
}

func serverName(filter bool) string {
	if filter {
		return "filter"
	}
	return "pass-through"
}

// steady measures one server under the steady load.
func (b *bench) steady(round int, filter bool) (*result, error) {
	run := fmt.Sprintf("s%d%c", round, serverName(filter)[0])
	name := fmt.Sprintf("%s-%d", map[bool]string{true: "filter", false: "bare"}[filter], round)
	c, addr, err := b.start(name, filter)
	if err != nil {
		return nil, err
	}
	if filter && round == 1 {
		b.sink.keepNext()
	}
	res, err := drive(serverName(filter), run, addr, c.Pid(), b.small, b.o.load)
	if err != nil {
		c.Stop()
		return nil, fmt.Errorf("%w\nits log ends with:\n%s", err, c.LogTail(20))
	}
	if err := c.Stop(); err != nil {
		return nil, err
	}
	res.losses = check(res.accepted, int64(b.small.Size), filter && b.o.dkim != "off", b.sink.take(run+"-"), run+"-")
	fmt.Printf("round %d, %s: %.0f messages/s, %d accepted, %d refused, %d lost or damaged; other processes %.2f cores\n",
		round, res.name, res.rate(), len(res.accepted), len(res.refused), res.losses.lost+res.losses.damaged, res.cpu.Cores(res.cpu.Other))
	return res, nil
}

// burst measures one server with the big messages all in flight.
func (b *bench) burst(round int, filter bool) (*burstResult, error) {
	run := fmt.Sprintf("b%d%c", round, serverName(filter)[0])
	name := fmt.Sprintf("%s-burst-%d", map[bool]string{true: "filter", false: "bare"}[filter], round)
	c, addr, err := b.start(name, filter)
	if err != nil {
		return nil, err
	}
	res, err := burst(serverName(filter), run, addr, c.Pid(), b.o.bigConns, b.big, b.o.load.timeout)
	if err != nil {
		c.Stop()
		return nil, fmt.Errorf("%w\nits log ends with:\n%s", err, c.LogTail(20))
	}
	if err := c.Stop(); err != nil {
		return nil, err
	}
	res.losses = check(res.accepted, int64(b.big.Size), filter && b.o.dkim != "off", b.sink.take(run+"-"), run+"-")
	fmt.Printf("round %d, %s: %d × %.1f MB at once in %.1fs, peak RSS %.1f MB\n",
		round, res.name, res.messages, float64(b.big.Size)/mb, res.wall.Seconds(), float64(res.mem.Peak)/mb)
	return res, nil
}

func (b *bench) printSetup() {
	o := b.o
	fmt.Printf("steady load: %d connections, one %d-byte message each (text, HTML and a PDF), one connection per message as Postfix's smtpd_proxy_filter; %v warm-up, %v measured; %d rounds\n",
		o.load.conns, b.small.Size, o.load.warmup, o.load.duration, o.rounds)
	fmt.Printf("burst: %d connections, one %d-byte message each, all sent at once\n", o.bigConns, b.big.Size)
	fmt.Printf("cpus: %d; the load generator and the sink run in this process on the same CPUs as the server\n", runtime.NumCPU())
	dkim := "DKIM signing with an RSA 2048 key"
	switch o.dkim {
	case "ed25519":
		dkim = "DKIM signing with an Ed25519 key"
	case "off":
		dkim = "no DKIM signing"
	}
	env := "none"
	if len(b.lab.env) > 0 {
		env = strings.Join(b.lab.env, " ")
	}
	fmt.Printf("filter: %s contentfilter, etc/relayguard.toml with R17 enforcing, R16 and R15 off (no scanners), %s, spool_threshold as in etc/; environment of etc/systemd: %s\n",
		o.relayguard, dkim, env)
	fmt.Println("pass-through: this program's -serve-bare: relays command and reply lines, streams the data unparsed")
	fmt.Println("next hop of both: an SMTP sink in this process")
	fmt.Println()
}

// printSteady prints the steady load's table and verdict, and reports
// whether a message was refused or lost.
func printSteady(out io.Writer, rounds [][2]*result) (failed bool) {
	fmt.Fprintln(out, "steady load:")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\tserver\tmsg/s\tp50\tp99\tmax\tend of data p50\tp99\tpeak RSS\tserver CPU\tCPU/msg\tload gen+sink CPU\tother CPU\trefused\tlost\t")
	busy := false
	var ratios []float64
	for i, pair := range rounds {
		for _, r := range pair {
			other := r.cpu.Cores(r.cpu.Other)
			busy = busy || other > report.BusyOther
			perMsg := 0.0
			if r.messages > 0 {
				perMsg = float64(r.cpu.Server.Microseconds()) / float64(r.messages)
			}
			fmt.Fprintf(tw, "%d\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%.1f MB\t%.2f cores\t%.0f µs\t%.2f cores\t%.2f cores\t%d\t%d\t\n",
				i+1, r.name, r.rate(),
				report.Latency(r.latency.Quantile(0.5)), report.Latency(r.latency.Quantile(0.99)), report.Latency(r.latency.Max),
				report.Latency(r.eod.Quantile(0.5)), report.Latency(r.eod.Quantile(0.99)),
				float64(r.mem.Peak)/mb, r.cpu.Cores(r.cpu.Server), perMsg, r.cpu.Cores(r.cpu.Load), other,
				len(r.refused), r.losses.lost+r.losses.damaged+r.losses.duplicated)
			failed = failed || len(r.refused) > 0 || r.losses.any()
		}
		ratios = append(ratios, pair[1].rate()/pair[0].rate())
	}
	tw.Flush()
	if busy {
		fmt.Fprintln(out, report.BusyWarning)
	}
	var each []string
	for _, r := range ratios {
		each = append(each, fmt.Sprintf("%.1f %%", 100*r))
	}
	sorted := slices.Sorted(slices.Values(ratios))
	median := sorted[len(sorted)/2]
	if len(sorted)%2 == 0 {
		median = (sorted[len(sorted)/2-1] + sorted[len(sorted)/2]) / 2
	}
	fmt.Fprintf(out, "filter/pass-through: %.1f %% of the messages/s (median of %s; spread %.1f points) (target ≥ %.0f %%: %s)\n",
		100*median, strings.Join(each, ", "), 100*(sorted[len(sorted)-1]-sorted[0]), 100*targetRatio, report.Verdict(median >= targetRatio))
	for _, pair := range rounds {
		for _, r := range pair {
			reportLosses(out, r.name, r.refused, r.losses)
		}
	}
	return failed
}

// printBursts prints the bursts' table and verdict, and reports whether a
// message was refused or lost.
func printBursts(out io.Writer, rounds [][2]*burstResult) (failed bool) {
	fmt.Fprintln(out, "burst:")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\tserver\tmessages\tin flight\ttime\tslowest end of data\tRSS before\tpeak RSS\tserver CPU\tother CPU\trefused\tlost\t")
	var above int64 // the filter's largest peak above its RSS before
	busy := false
	var peak int64
	var target float64
	for i, pair := range rounds {
		for _, r := range pair {
			// A burst lasts a fraction of a second: a tick or two of
			// another process is no sign of a busy machine.
			busy = busy || r.cpu.Cores(r.cpu.Other) > report.BusyOther && r.cpu.Other > 2*proc.Tick
			fmt.Fprintf(tw, "%d\t%s\t%d\t%.0f MB\t%.2f s\t%s\t%.1f MB\t%.1f MB\t%.2f s\t%.2f s\t%d\t%d\t\n",
				i+1, r.name, r.messages, float64(r.inFlight)/mb, r.wall.Seconds(), report.Latency(r.slowest),
				float64(r.idle.RSS)/mb, float64(r.mem.Peak)/mb, r.cpu.Server.Seconds(), r.cpu.Other.Seconds(),
				len(r.refused), r.losses.lost+r.losses.damaged+r.losses.duplicated)
			failed = failed || len(r.refused) > 0 || r.losses.any()
		}
		peak = max(peak, pair[1].mem.Peak)
		above = max(above, pair[1].mem.Peak-pair[1].idle.RSS)
		target = targetRSSBase + targetRSSPer*float64(pair[1].inFlight)
	}
	tw.Flush()
	if busy {
		fmt.Fprintln(out, report.BusyWarning)
	}
	r := rounds[0][1]
	fmt.Fprintf(out, "filter peak RSS with %d × %.0f MB in flight: %.1f MB, the largest of %d rounds (target ≤ 64 MB + 3 × %.0f MB = %.0f MB: %s)\n",
		r.messages, float64(r.inFlight)/float64(r.messages)/mb, float64(peak)/mb, len(rounds), float64(r.inFlight)/mb, target/mb,
		report.Verdict(float64(peak) <= target))
	fmt.Fprintf(out, "  the burst added at most %.1f MB to the filter's RSS: %.2f MB per message in flight (spool_threshold of etc/: 1 MiB held in memory per message at most)\n",
		float64(above)/mb, float64(above)/float64(r.messages)/mb)
	for _, pair := range rounds {
		for _, r := range pair {
			reportLosses(out, r.name, r.refused, r.losses)
		}
	}
	return failed
}

func reportLosses(out io.Writer, name string, refused []string, l losses) {
	if len(refused) > 0 {
		fmt.Fprintf(out, "%s refused %d messages, e.g.:\n  %s\n", name, len(refused), strings.Join(refused[:min(3, len(refused))], "\n  "))
	}
	if l.any() {
		fmt.Fprintf(out, "%s: %d lost, %d duplicated, %d damaged, %d unsigned, %d arrived unaccepted, e.g.:\n  %s\n",
			name, l.lost, l.duplicated, l.damaged, l.unsigned, l.unexpected, strings.Join(l.examples, "\n  "))
	}
}
