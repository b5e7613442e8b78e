package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"

	"relayguard/bench/internal/proc"
	"relayguard/policyd"
)

// serveBare is the floor policyd is measured against: the policy protocol
// and nothing else. It parses every request with policyd's own decoder and
// answers DUNNO, one goroutine per connection as policyd does. It runs until
// its standard input closes (the benchmark holds the other end) or it is
// signalled; it returns only on an error.
func serveBare(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	proc.ExitWhenStdinCloses()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go serveBareConn(c)
	}
}

func serveBareConn(c net.Conn) {
	defer c.Close()
	dec := policyd.NewDecoder(c, policyd.DefaultLimits)
	w := bufio.NewWriter(c)
	var req policyd.Request
	for {
		if err := dec.Decode(&req); err != nil {
			if err != io.EOF {
				fmt.Fprintln(os.Stderr, "bare server:", err)
			}
			return
		}
		if err := policyd.WriteAction(w, "DUNNO"); err != nil {
			return
		}
	}
}
