package scantest

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"relayguard/internal/dnstest"
	"relayguard/scan"
	"relayguard/scan/clamd"
	"relayguard/scan/rspamd"
)

// realScanners is the variable that turns on the tests against the real
// daemons (clamav-daemon and rspamd installed).
const realScanners = "RELAYGUARD_REAL_SCANNERS"

func needReal(t *testing.T) {
	t.Helper()
	if os.Getenv(realScanners) != "1" {
		t.Skipf("set %s=1 to run against a real clamd and rspamd", realScanners)
	}
}

func TestTestStrings(t *testing.T) {
	if n := len(EICAR()); n != 68 {
		t.Errorf("EICAR is %d bytes, want 68", n)
	}
	if n := len(GTUBE()); n != 68 {
		t.Errorf("GTUBE is %d bytes, want 68", n)
	}
}

// mail returns a small RFC 5322 message.
func mail(subject, body string) []byte {
	return []byte("From: Alice <alice@example.test>\r\n" +
		"To: Bob <bob@example.net>\r\n" +
		"Subject: " + subject + "\r\n" +
		"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n" +
		"Message-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@example.test>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"\r\n" + body + "\r\n")
}

// attachment returns a message with data attached in base64 as name.
func attachment(name string, data []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(data)
	var lines []string
	for len(enc) > 76 {
		lines, enc = append(lines, enc[:76]), enc[76:]
	}
	lines = append(lines, enc)
	return []byte("From: alice@example.test\r\nTo: bob@example.net\r\nSubject: attachment\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n" +
		"--b1\r\nContent-Type: application/octet-stream; name=\"" + name + "\"\r\n" +
		"Content-Disposition: attachment; filename=\"" + name + "\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + strings.Join(lines, "\r\n") + "\r\n--b1--\r\n")
}

func TestRealClamd(t *testing.T) {
	needReal(t)
	start := time.Now()
	d, err := StartClamd(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("clamd ready in %v", time.Since(start).Round(time.Millisecond))
	defer func() {
		if t.Failed() {
			t.Logf("clamd's log:\n%s", d.Log())
		}
	}()
	ctx := context.Background()
	check := func(c *clamd.Client, name string, msg []byte, want clamd.Result) {
		t.Helper()
		got, err := c.Scan(ctx, bytes.NewReader(msg))
		if err != nil {
			t.Errorf("%s: %v", name, err)
		} else if got != want {
			t.Errorf("%s: got %+v, want %+v", name, got, want)
		}
	}
	infected := clamd.Result{Infected: true, Signature: EICARSignature}
	for _, c := range []*clamd.Client{d.Client(), d.UnixClient()} {
		check(c, c.Network+" EICAR alone", EICAR(), infected)
		check(c, c.Network+" clean mail", mail("hello", "Hi Bob, lunch at noon?"), clamd.Result{})
		check(c, c.Network+" EICAR attached", attachment("eicar.com", EICAR()), infected)
		check(c, c.Network+" empty", nil, clamd.Result{})
	}

	c := d.Client()
	c.ChunkSize = 16 // EICAR spans five chunks
	check(c, "EICAR across chunks", append([]byte("0123456789"), EICAR()...), infected)

	// Around clamd's StreamMaxLength: exactly at it, the whole message is
	// scanned; one byte more, the client sends StreamMaxLength bytes and
	// says TooLarge; a client that does not know the limit gets clamd's
	// refusal, also TooLarge.
	big := make([]byte, StreamMaxLength+1)
	copy(big, EICAR())
	c = d.Client()
	t0 := time.Now()
	check(c, "StreamMaxLength bytes", big[:StreamMaxLength], infected)
	t.Logf("a %d MiB scan took %v", StreamMaxLength>>20, time.Since(t0).Round(time.Millisecond))
	check(c, "StreamMaxLength+1 bytes", big, clamd.Result{Infected: true, Signature: EICARSignature, TooLarge: true})
	c.MaxStream = 2 * StreamMaxLength
	check(c, "clamd's own limit", append(big, make([]byte, 1<<20)...), clamd.Result{TooLarge: true})

	if _, err := os.Stat(filepath.Join(ClamAVTestFiles, "clam.exe")); err == nil {
		for _, f := range []string{"clam.exe", "clam.zip", "clam.7z", "clam.tar.gz", "clam.mail", "clam-upx.exe"} {
			data, err := os.ReadFile(filepath.Join(ClamAVTestFiles, f))
			if err != nil {
				t.Fatal(err)
			}
			check(d.Client(), f, data, clamd.Result{Infected: true, Signature: ClamExeSignature})
		}
	} else {
		t.Logf("clamav-testfiles not installed: %v", err)
	}

	// Latency, and scans in parallel.
	const n = 100
	msg := attachment("eicar.com", EICAR())
	t0 = time.Now()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range n / 4 {
				check(d.Client(), "parallel", msg, infected)
			}
		})
	}
	wg.Wait()
	t.Logf("%d scans of a %d-byte mail, 4 at a time: %v per scan", n, len(msg), (time.Since(t0) / n).Round(time.Microsecond))
	t0 = time.Now()
	for range n {
		if err := d.Client().Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("PING: %v", (time.Since(t0) / n).Round(time.Microsecond))

	unavailable := func(when string) {
		t.Helper()
		for _, c := range []*clamd.Client{d.Client(), d.UnixClient()} {
			if _, err := c.Scan(ctx, bytes.NewReader(EICAR())); !errors.Is(err, scan.ErrUnavailable) {
				t.Errorf("%s %s: got %v, want scan.ErrUnavailable", c.Network, when, err)
			}
		}
	}
	// A hang: paused, clamd answers nothing; resumed, it answers again.
	if err := d.Pause(); err != nil {
		t.Fatal(err)
	}
	hung, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	if err := d.Client().Ping(hung); err == nil {
		t.Error("a paused clamd answered PING")
	}
	cancel()
	if err := d.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := d.Client().Ping(ctx); err != nil {
		t.Errorf("PING after Resume: %v", err)
	}
	// An outage: after Stop nothing answers; Start brings clamd back on the
	// same addresses.
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	unavailable("after Stop")
	t0 = time.Now()
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("clamd restarted in %v", time.Since(t0).Round(time.Millisecond))
	for _, c := range []*clamd.Client{d.Client(), d.UnixClient()} {
		check(c, c.Network+" EICAR after Start", EICAR(), infected)
	}

	t0 = time.Now()
	if err := d.Close(); err != nil {
		t.Error(err)
	}
	t.Logf("clamd stopped in %v", time.Since(t0).Round(time.Millisecond))
	unavailable("after Close")
}

func TestRealRspamd(t *testing.T) {
	needReal(t)
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	start := time.Now()
	d, err := StartRspamd(t.TempDir(), dns.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rspamd ready in %v (hyperscan cache in %s)", time.Since(start).Round(time.Millisecond), RspamdCacheDir)
	defer func() {
		if t.Failed() {
			t.Logf("rspamd's log:\n%s", d.Log())
		}
	}()
	c := &rspamd.Client{URL: d.URL}
	ctx := context.Background()
	meta := rspamd.Meta{
		IP:       netip.MustParseAddr("127.0.0.1"),
		Hostname: "localhost",
		Helo:     "client.example.test",
		User:     "alice@example.test",
		From:     "alice@example.test",
		Rcpt:     []string{"bob@example.net", "carol@example.org"},
		QueueID:  "4F2A11C0B3",
	}
	check := func(name string, msg []byte, size int64, wantAction rspamd.Action, wantSpam bool) rspamd.Verdict {
		t.Helper()
		v, err := c.Check(ctx, bytes.NewReader(msg), size, meta)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if v.Action != wantAction || v.Spam(rspamd.AddHeader) != wantSpam {
			t.Errorf("%s: %+v, want action %q", name, v, wantAction)
		}
		return v
	}
	gtube := mail("offer", "Buy now: "+string(GTUBE()))
	v := check("GTUBE", gtube, int64(len(gtube)), rspamd.Reject, true)
	if v.Message != "Gtube pattern" || v.Score < v.Required || fmt.Sprint(v.Symbols) != "[GTUBE]" {
		t.Errorf("GTUBE: %+v", v)
	}
	ham := mail("lunch", "Hi Bob, lunch at noon? Alice")
	v = check("ham", ham, int64(len(ham)), rspamd.NoAction, false)
	check("ham, chunked", ham, -1, rspamd.NoAction, false)
	t.Logf("ham: score %.1f/%.1f, symbols %v", v.Score, v.Required, v.Symbols)

	// rspamd logs the envelope it got from the headers.
	logged := d.Log()
	for _, want := range []string{"qid: <4F2A11C0B3>", "ip: 127.0.0.1", "user: alice@example.test",
		"from: <alice@example.test>", "rcpts: <bob@example.net,carol@example.org>"} {
		if !strings.Contains(logged, want) {
			t.Errorf("rspamd's log does not have %q", want)
		}
	}

	// Latency.
	const n = 50
	t0 := time.Now()
	for i := range n {
		msg := ham
		if i%2 == 0 {
			msg = gtube
		}
		if _, err := c.Check(ctx, bytes.NewReader(msg), int64(len(msg)), meta); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d checks, GTUBE and ham: %v per check", n, (time.Since(t0) / n).Round(time.Microsecond))

	// rspamd's max_message: one byte more, and rspamd drops the
	// connection without a reply, so the client does not send it. (A
	// message of exactly max_message, 50 MiB of text, keeps rspamd busy
	// for 30 s, past its own task_timeout and past the client's.)
	over := append(mail("big", ""), bytes.Repeat([]byte("0123456789abcde\n"), rspamd.DefaultMaxMessage/16)...)[:rspamd.DefaultMaxMessage+1]
	if _, err := c.Check(ctx, bytes.NewReader(over), int64(len(over)), meta); err != rspamd.ErrTooLarge {
		t.Errorf("max_message+1 bytes: got %v, want rspamd.ErrTooLarge", err)
	}
	unaware := &rspamd.Client{URL: d.URL, MaxMessage: 2 * rspamd.DefaultMaxMessage}
	t0 = time.Now()
	if _, err := unaware.Check(ctx, bytes.NewReader(over), int64(len(over)), meta); !errors.Is(err, scan.ErrUnavailable) {
		t.Errorf("max_message+1 bytes sent: got %v, want scan.ErrUnavailable", err)
	}
	t.Logf("max_message+1 bytes sent: no reply, after %v", time.Since(t0).Round(time.Millisecond))

	// A path rspamd does not serve: its 500 is an outage.
	bad := &rspamd.Client{URL: d.URL + "/nowhere"}
	if _, err := bad.Check(ctx, bytes.NewReader(ham), int64(len(ham)), meta); !errors.Is(err, scan.ErrUnavailable) {
		t.Errorf("unknown path: got %v, want scan.ErrUnavailable", err)
	}

	t0 = time.Now()
	if err := d.Close(); err != nil {
		t.Error(err)
	}
	t.Logf("rspamd stopped in %v", time.Since(t0).Round(time.Millisecond))
	if _, err := c.Check(ctx, bytes.NewReader(ham), int64(len(ham)), meta); !errors.Is(err, scan.ErrUnavailable) {
		t.Errorf("after Close: got %v, want scan.ErrUnavailable", err)
	}
}
