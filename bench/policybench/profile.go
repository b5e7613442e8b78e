package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// maxProfile is the longest CPU profile policyd's admin API serves within
// its write timeout.
const maxProfile = 25 * time.Second

// profile fetches, through policyd's admin socket, a CPU profile of the
// first d (at most maxProfile) and then the heap, into dir as cpu.pb.gz and
// heap.pb.gz (go tool pprof reads them).
func profile(socket, dir string, d time.Duration) <-chan error {
	done := make(chan error, 1)
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", socket)
		},
	}}
	secs := int(min(d, maxProfile) / time.Second)
	go func() {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			done <- err
			return
		}
		err := fetch(hc, fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(secs, 1)), filepath.Join(dir, "cpu.pb.gz"))
		if err == nil {
			err = fetch(hc, "/debug/pprof/heap", filepath.Join(dir, "heap.pb.gz"))
		}
		if err == nil {
			fmt.Printf("policyd: profiles in %s (go tool pprof %s)\n", dir, filepath.Join(dir, "cpu.pb.gz"))
		}
		done <- err
	}()
	return done
}

func fetch(hc *http.Client, path, file string) error {
	resp, err := hc.Get("http://policyd" + path)
	if err != nil {
		return fmt.Errorf("profile %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("profile %s: %s: %s", path, resp.Status, body)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("profile %s: %w", path, err)
	}
	return f.Close()
}
