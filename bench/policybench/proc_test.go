package main

import (
	"os"
	"testing"
	"time"
)

// TestProc reads this process's figures as the benchmark reads the
// servers'.
func TestProc(t *testing.T) {
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) { // some CPU time to see
	}
	m, err := readMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.rss <= 0 || m.peak < m.rss {
		t.Errorf("RSS %d, peak %d: want 0 < RSS <= peak", m.rss, m.peak)
	}
	cpu, err := readCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	all, err := machineCPU()
	if err != nil {
		t.Fatal(err)
	}
	if cpu <= 0 || all < cpu {
		t.Errorf("this process used %v, the machine %v: want 0 < process <= machine", cpu, all)
	}
}
