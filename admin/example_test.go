package admin_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"relayguard/admin"
	"relayguard/admin/admintest"
	"relayguard/limits"
)

// policyd serves the API on the socket of [admin]; the commands call it
// with a Client.
func Example() {
	dir, _ := os.MkdirTemp("", "relayguard")
	defer os.RemoveAll(dir)
	socket := filepath.Join(dir, "admin.sock")

	backend := admintest.New(time.Now) // policyd's store, in policyd
	backend.AddBlock(limits.Block{Key: "r4|ip|192.0.2.7", Until: time.Now().Add(time.Hour), Reason: "11 failed authentications in 1h", Count: 11})
	ln, err := admin.Listen(socket, "0660", "") // admin.socket, socket_mode, socket_group
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := &http.Server{Handler: &admin.Server{Backend: backend, Retention: 7 * 24 * time.Hour}, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()

	c := admin.NewClient(socket)
	blocks, err := c.Blocks(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, b := range blocks {
		fmt.Println(b.Subject, b.Rule, b.Reason)
	}
	_, ok, err := c.Explain(context.Background(), "7HqT2mK9xLp4Rb8ZsN3wVa")
	fmt.Println(ok, err)
	// Output:
	// 192.0.2.7 R4 11 failed authentications in 1h
	// false <nil>
}
