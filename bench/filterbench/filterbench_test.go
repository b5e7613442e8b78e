package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"relayguard/config"
	"relayguard/internal/testmail"
)

// startRelay runs the pass-through relay in this process, in front of
// next.
func startRelay(t *testing.T, next string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go serveRelay(ln, next)
	return ln.Addr().String()
}

// TestThroughRelay drives the steady load and a burst through the
// pass-through relay to the sink: every message arrives whole and once.
func TestThroughRelay(t *testing.T) {
	s, err := startSink()
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	relay := startRelay(t, s.addr())
	m := testmail.New(20_000, 1)
	res, err := drive("pass-through", "t1", relay, os.Getpid(), m, loadConfig{conns: 4, warmup: 50 * time.Millisecond, duration: 200 * time.Millisecond, timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	res.losses = check(res.accepted, int64(m.Size), false, s.take("t1-"), "t1-")
	if res.messages == 0 || res.latency.N != res.messages || len(res.refused) > 0 || res.losses.any() || s.withoutID() > 0 {
		t.Errorf("%d measured (%d latencies), %d accepted, refused %v, losses %+v, %d without id",
			res.messages, res.latency.N, len(res.accepted), res.refused, res.losses, s.withoutID())
	}
	if left := s.take("t1-"); len(left) > 0 {
		t.Errorf("%d arrivals left after take", len(left))
	}

	big := testmail.New(300_000, 2)
	b, err := burst("pass-through", "t2", relay, os.Getpid(), 3, big, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	b.losses = check(b.accepted, int64(big.Size), false, s.take("t2-"), "t2-")
	if len(b.accepted) != 3 || b.losses.any() || b.inFlight != 3*int64(big.Size) || b.mem.Peak <= 0 {
		t.Errorf("burst: %+v", b)
	}
}

// TestCheck shows each way a message can go missing.
func TestCheck(t *testing.T) {
	got := map[string]arrival{
		"r-1": {count: 1, size: 100, signed: true, complete: true},
		"r-2": {count: 2, size: 100, signed: true, complete: true},
		"r-3": {count: 1, size: 99, signed: true, complete: true},
		"r-4": {count: 1, size: 100, signed: true, complete: false},
		"r-5": {count: 1, size: 100, signed: false, complete: true},
		"r-6": {count: 1, size: 100, signed: true, complete: true},
		"q-1": {count: 1, size: 100, signed: true, complete: true},
	}
	l := check([]string{"r-1", "r-2", "r-3", "r-4", "r-5", "r-7"}, 100, true, got, "r-")
	if l.lost != 1 || l.duplicated != 1 || l.damaged != 2 || l.unsigned != 1 || l.unexpected != 1 || !l.any() {
		t.Errorf("%+v", l)
	}
	if l := check([]string{"r-1", "q-1"}, 100, true, got, "none-"); l.any() {
		t.Errorf("all arrived: %+v", l)
	}
}

// TestSinkData reads what a filter sends: a DKIM-Signature field first,
// stuffed lines, and the id; the signature is not counted in the size.
func TestSinkData(t *testing.T) {
	s := &sink{got: map[string]*arrival{}}
	id := testmail.ID("t", 1)
	msg := "DKIM-Signature: v=1; a=rsa-sha256;\r\n\tb=abc\r\nFrom: a@b\r\n" + testmail.IDHeader + ": " + id + "\r\n\r\n..dot\r\n" + testmail.LastLine(id) + "\r\n"
	s.keepNext()
	if err := s.data(bufio.NewReader(strings.NewReader(msg + ".\r\n"))); err != nil {
		t.Fatal(err)
	}
	got := s.take("t-")
	want := arrival{count: 1, size: int64(len(msg) - len("DKIM-Signature: v=1; a=rsa-sha256;\r\n\tb=abc\r\n") - 1), signed: true, complete: true}
	if got[id] != want {
		t.Errorf("%+v, want %+v", got[id], want)
	}
	if kept := string(s.keptMessage()); kept != strings.Replace(msg, "..dot", ".dot", 1) {
		t.Errorf("kept %q", kept)
	}
	if err := s.data(bufio.NewReader(strings.NewReader("Subject: cut\r\n"))); err == nil {
		t.Error("a message cut before its end was taken")
	}
}

// TestRefused counts a refusal as such, not as an error of the run.
func TestRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				fmt.Fprint(c, "220 x\r\n")
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if strings.HasPrefix(line, "MAIL") {
						fmt.Fprint(c, "451 4.7.1 ID temporary failure, try again later\r\n")
					} else {
						fmt.Fprint(c, "250 ok\r\n")
					}
				}
			}()
		}
	}()
	var w worker
	if err := w.session(ln.Addr().String(), testmail.New(10_000, 1), "x", nil, time.Second); err != nil {
		t.Fatal(err)
	}
	if len(w.refused) != 1 || w.refused[0] != "MAIL: 451 4.7.1 ID temporary failure, try again later" || len(w.accepted) != 0 {
		t.Errorf("refused %q, accepted %q", w.refused, w.accepted)
	}
}

// TestLab writes the configuration of etc/ with the filter's lines
// replaced and a DKIM key whose signature verifies.
func TestLab(t *testing.T) {
	dir := t.TempDir()
	l, err := setupLab("../../etc", dir, "127.0.0.1:2525", "ed25519")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(l.config)
	if err != nil {
		t.Fatal(err)
	}
	f := cfg.ContentFilter
	if f.NextHop != "127.0.0.1:2525" || f.Listen != l.filter || f.SpoolDir != filepath.Join(dir, "spool") ||
		f.Rules.Virus.Mode != config.Off || f.Rules.Spam.Mode != config.Off || f.Rules.Attachments.Mode != config.Enforce {
		t.Errorf("the filter's configuration: %+v", f)
	}
	d, err := config.LoadDirectory(cfg.Policyd.Directory)
	if err != nil {
		t.Fatal(err)
	}
	if g := d.Groups(); len(g) != 1 || g[0].DKIMKey == "" {
		t.Errorf("directory: %+v", g)
	}
	if cost, err := l.signCost(); err != nil || cost < 0 {
		t.Errorf("signCost: %v, %v", cost, err)
	}
	if err := l.verify([]byte("From: a@example.cz\r\n\r\nunsigned\r\n")); err == nil {
		t.Error("an unsigned message verifies")
	}
}
