package limits

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Counters and blocks survive Close and reopening; what expired meanwhile,
// was reset or was unblocked does not come back.
func TestBadgerRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clk := newFakeClock()
	t0 := clk.Now()
	b := openBadger(t, dir, clk, 0)
	add := func(key string, at time.Duration, n int64, kl ...KeyLimit) {
		t.Helper()
		if d, err := b.CheckAdd(ctx, t0.Add(at), n, kl...); err != nil || !d.Allowed {
			t.Fatalf("CheckAdd(%s): %+v, %v", key, d, err)
		}
	}
	block := func(key string, until time.Duration) {
		t.Helper()
		if err := b.Block(ctx, key, t0.Add(until), "auth failures", 11); err != nil {
			t.Fatal(err)
		}
	}
	add("a", 0, 3, r10("a")...)
	add("a", 30*time.Second, 1, r10("a")...)
	add("c", 0, 2, r10("c")...)
	block("ip1", time.Hour)
	block("ip2", 10*time.Minute)
	block("ip3", time.Hour)
	// d: written by a flush, then reset and counted in the day window only
	// before the next one: its old minute and hour counters must go.
	add("d", 0, 4, r10("d")...)
	if err := b.flush(); err != nil {
		t.Fatal(err)
	}
	if err := b.Reset(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	add("d", 0, 1, KeyLimit{"d", perDay})
	if err := b.Reset(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Unblock(ctx, "ip3"); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	checkUsage := func(at time.Duration, want ...Usage) {
		t.Helper()
		got, err := b.List(ctx, t0.Add(at), "")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("after reopening at +%v: List = %v, want %v", at, got, want)
		}
	}
	checkBlocks := func(at time.Duration, keys ...string) {
		t.Helper()
		got, err := b.ListBlocks(ctx, t0.Add(at), "")
		if err != nil {
			t.Fatal(err)
		}
		var gotKeys []string
		for _, bl := range got {
			gotKeys = append(gotKeys, bl.Key)
			if bl.Reason != "auth failures" || bl.Count != 11 {
				t.Errorf("block %+v lost its reason or count", bl)
			}
		}
		if !slices.Equal(gotKeys, keys) {
			t.Errorf("after reopening at +%v: blocks %v, want %v", at, gotKeys, keys)
		}
	}
	inMemory := func() int {
		n := 0
		for i := range b.mem.shards {
			for _, cs := range b.mem.shards[i].counters {
				n += cs.len()
			}
		}
		return n
	}

	clk.Advance(40 * time.Second)
	b = openBadger(t, dir, clk, 0)
	checkUsage(40*time.Second,
		Usage{"a", perMinute.Window, 4}, Usage{"a", perHour.Window, 4}, Usage{"a", perDay.Window, 4},
		Usage{"d", perDay.Window, 1})
	checkBlocks(40*time.Second, "ip1", "ip2")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	// The minute counters and ip2 have expired, the hour ones not yet.
	clk.Advance(20 * time.Minute)
	b = openBadger(t, dir, clk, 0)
	checkUsage(20*time.Minute+40*time.Second,
		Usage{"a", perHour.Window, 4}, Usage{"a", perDay.Window, 4}, Usage{"d", perDay.Window, 1})
	checkBlocks(20*time.Minute+40*time.Second, "ip1")
	if n := inMemory(); n != 3 {
		t.Errorf("%d counters loaded, want 3", n)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	clk.Advance(2 * time.Hour)
	b = openBadger(t, dir, clk, 0)
	defer b.Close()
	now := clk.Now().Sub(t0)
	checkUsage(now, Usage{"a", perDay.Window, 4}, Usage{"d", perDay.Window, 1})
	checkBlocks(now)
	if n := inMemory(); n != 2 {
		t.Errorf("%d counters loaded, want 2", n)
	}
}

// The flush timer writes changes without Close: a crash loses at most one
// FlushInterval.
func TestBadgerFlushesOnTimer(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock()
	b := openBadger(t, t.TempDir(), clk, 10*time.Millisecond)
	defer b.Close()
	if _, err := b.CheckAdd(ctx, clk.Now(), 3, KeyLimit{"a", perHour}); err != nil {
		t.Fatal(err)
	}
	if err := b.Block(ctx, "ip", clk.Now().Add(time.Hour), "r4", 11); err != nil {
		t.Fatal(err)
	}
	stored := func() (cs entry, blocked bool) {
		err := b.db.View(func(txn *badger.Txn) error {
			if item, err := txn.Get(counterKey("a")); err == nil {
				v, err := item.ValueCopy(nil)
				if err != nil {
					return err
				}
				if _, cs, err = decodeCounters(item.Key(), v); err != nil {
					return err
				}
			}
			_, err := txn.Get(blockKey("ip"))
			blocked = err == nil
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return cs, blocked
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		cs, blocked := stored()
		if c, _, ok := cs.find(perHour.Window); ok && cs.len() == 1 && c.count(clk.Now()) == 3 && blocked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not written after 5s: %v %v", cs, blocked)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBadgerRefusesOtherFormat(t *testing.T) {
	dir := t.TempDir()
	db, err := badger.Open(BadgerOptions(dir, quietLog()))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error { return txn.Set(formatKey, []byte("2")) })
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, err = OpenBadger(BadgerConfig{Dir: dir, Log: quietLog()})
	if err == nil || !strings.Contains(err.Error(), "format") {
		t.Fatalf("OpenBadger = %v, want a format error", err)
	}
}

// An entry that cannot be decoded is logged and skipped; the rest loads.
func TestBadgerSkipsCorruptEntries(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clk := newFakeClock()
	b := openBadger(t, dir, clk, 0)
	if _, err := b.CheckAdd(ctx, clk.Now(), 2, KeyLimit{"a", perHour}); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := badger.Open(BadgerOptions(dir, quietLog()))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		return errors.Join(
			txn.Set(counterKey("b"), []byte{5, 1}),
			txn.Set(counterKey("c"), []byte{1, 0, 1, 0}),
			txn.Set(blockKey("ip"), nil),
			txn.Set([]byte("x"), nil),
		)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	b, err = OpenBadger(BadgerConfig{Dir: dir, Log: slog.New(slog.NewTextHandler(&logs, nil)), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if c, _, err := b.Get(ctx, clk.Now(), "a", perHour); err != nil || c != 2 {
		t.Errorf("Get(a) = %d, %v; want 2", c, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(logs.String(), "cannot be decoded"); got != 4 {
		t.Errorf("%d entries reported, want 4:\n%s", got, logs.String())
	}
}

// Badger's own messages reach slog, tagged with the component.
func TestBadgerLogsThroughSlog(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b, err := OpenBadger(BadgerConfig{Dir: t.TempDir(), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "component=badger") {
		t.Errorf("no message from Badger:\n%s", logs.String())
	}
}

// A database that an earlier version, whose memtables were larger, left
// with a memtable's write-ahead log (it crashed, or was killed) opens, and
// loses nothing: Badger alone would exit the process, unable to replay the
// log into a smaller memtable.
func TestBadgerReplaysLargerLogs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clk := newFakeClock()
	// The earlier version: 4 MiB memtables. Its handle stays open, as a
	// crashed process's would have been (the lock guard is bypassed so that
	// OpenBadger can open the directory beside it).
	old, err := badger.Open(BadgerOptions(dir, quietLog()).WithMemTableSize(4 << 20).WithBypassLockGuard(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { old.Close() })
	crashed := &Badger{mem: newMemory(true), db: old, log: quietLog(), now: clk.Now}
	if err := crashed.checkFormat(); err != nil {
		t.Fatal(err)
	}
	const keys = 40_000 // more than a 2 MiB memtable holds
	for i := range keys {
		if _, err := crashed.mem.CheckAdd(ctx, clk.Now(), 1, KeyLimit{fmt.Sprintf("r10|account|user%d@example.cz", i), perHour}); err != nil {
			t.Fatal(err)
		}
	}
	if err := crashed.flush(); err != nil {
		t.Fatal(err)
	}
	logs, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
	var largest int64
	for _, name := range logs {
		if fi, err := os.Stat(name); err == nil {
			largest = max(largest, fi.Size())
		}
	}
	if largest != 8<<20 {
		t.Fatalf("write-ahead logs %v, largest %d bytes: want one of a 4 MiB memtable", logs, largest)
	}

	var logged bytes.Buffer
	b, err := OpenBadger(BadgerConfig{Dir: dir, Log: slog.New(slog.NewTextHandler(&logged, nil)), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !strings.Contains(logged.String(), "replaying write-ahead logs") {
		t.Errorf("log %q: want the replay", logged.String())
	}
	got, err := b.List(ctx, clk.Now(), "r10|account|")
	if err != nil || len(got) != keys {
		t.Fatalf("List = %d counters, %v; want %d", len(got), err, keys)
	}
}
