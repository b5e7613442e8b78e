package decisions

import (
	"context"
	"os"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) Now() time.Time { return c.t }

func testLog(t *testing.T, name string, l Log, clk *clock) {
	ctx := context.Background()
	check := func(id string, want bool) {
		t.Helper()
		r, ok, err := l.Get(ctx, id)
		if err != nil || ok != want || (ok && r.ID != id) {
			t.Errorf("%s: Get(%s) = %+v, %v, %v; want found=%v", name, id, r, ok, err, want)
		}
	}
	put := func(id string) {
		t.Helper()
		if err := l.Put(ctx, Record{ID: id, Time: clk.Now(), Stage: "RCPT", Rule: "R10", Reply: "450 4.7.1 " + id + " policy violation",
			Counters: map[string]int64{"r10|account|jan@example.cz 250 per 1m0s/60": 250}}); err != nil {
			t.Fatalf("%s: Put: %v", name, err)
		}
	}
	put("aaaaaaaaaaaaaaaaaaaaa1")
	clk.t = clk.t.Add(25 * time.Hour)
	put("aaaaaaaaaaaaaaaaaaaaa2")
	check("aaaaaaaaaaaaaaaaaaaaa1", true)
	check("aaaaaaaaaaaaaaaaaaaaa2", true)
	check("aaaaaaaaaaaaaaaaaaaaa3", false)
	r, _, _ := l.Get(ctx, "aaaaaaaaaaaaaaaaaaaaa2")
	if r.Counters["r10|account|jan@example.cz 250 per 1m0s/60"] != 250 || r.Rule != "R10" {
		t.Errorf("%s: record not kept whole: %+v", name, r)
	}
	clk.t = clk.t.Add(7*24*time.Hour - time.Hour)
	check("aaaaaaaaaaaaaaaaaaaaa1", false) // older than the retention
	check("aaaaaaaaaaaaaaaaaaaaa2", true)
}

func TestMemory(t *testing.T) {
	clk := &clock{time.Date(2026, 11, 22, 23, 0, 0, 0, time.UTC)}
	testLog(t, "Memory", &Memory{Retention: 7 * 24 * time.Hour, Max: 100, Now: clk.Now}, clk)
	m := &Memory{Retention: time.Hour, Max: 2, Now: clk.Now}
	for _, id := range []string{"a", "b", "c"} {
		m.Put(context.Background(), Record{ID: id, Time: clk.Now()})
	}
	if _, ok, _ := m.Get(context.Background(), "a"); ok {
		t.Error("Memory kept more than Max records")
	}
}

func TestFiles(t *testing.T) {
	clk := &clock{time.Date(2026, 11, 22, 23, 0, 0, 0, time.UTC)}
	dir := t.TempDir()
	f := &Files{Dir: dir, Retention: 7 * 24 * time.Hour, Now: clk.Now}
	defer f.Close()
	testLog(t, "Files", f, clk)
	// A new day's write deletes the files past the retention.
	clk.t = clk.t.Add(2 * 24 * time.Hour)
	f.Put(context.Background(), Record{ID: "x", Time: clk.Now()})
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("files after the retention: %v", names)
	}
	// Records survive a reopen (a restart of policyd).
	f.Close()
	g := &Files{Dir: dir, Retention: 7 * 24 * time.Hour, Now: clk.Now}
	if _, ok, err := g.Get(context.Background(), "x"); !ok || err != nil {
		t.Errorf("after reopen: %v %v", ok, err)
	}
}
