package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"relayguard/bench/internal/proc"
)

// serveBare is the floor the filter is measured against: an SMTP relay
// that parses nothing. For each connection it connects to the next hop and
// passes each command line on and each reply back, as the filter does, and
// streams the message data through as it comes (the filter holds it whole,
// checks it and signs it before it sends it on). It runs until its standard
// input closes (the benchmark holds the other end) or it is signalled; it
// returns only on an error.
func serveBare(addr, next string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	proc.ExitWhenStdinCloses()
	return serveRelay(ln, next)
}

// serveRelay relays the connections that ln accepts to next until ln
// fails.
func serveRelay(ln net.Listener, next string) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			if err := relay(c, next); err != nil {
				fmt.Fprintln(os.Stderr, "bare relay:", err)
			}
		}()
	}
}

// relay serves one connection.
func relay(c net.Conn, next string) error {
	defer c.Close()
	cr, cw := bigReaders.Get(c), smallWriters.Get(c)
	defer bigReaders.Put(cr)
	defer smallWriters.Put(cw)
	n, err := net.Dial("tcp", next)
	if err != nil {
		cw.WriteString("421 4.4.1 next hop unavailable\r\n")
		cw.Flush()
		return err
	}
	defer n.Close()
	nr, nw := smallReaders.Get(n), bigWriters.Get(n)
	defer smallReaders.Put(nr)
	defer bigWriters.Put(nw)
	if _, err := passReply(nr, cw); err != nil {
		return err
	}
	for {
		line, err := cr.ReadSlice('\n')
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		nw.Write(line)
		if err := nw.Flush(); err != nil {
			return err
		}
		code, err := passReply(nr, cw)
		if err != nil {
			return err
		}
		verb, _, _ := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(" "))
		switch {
		case bytes.EqualFold(verb, []byte("QUIT")):
			return nil
		case bytes.EqualFold(verb, []byte("DATA")) && code == 354:
			if err := passData(cr, nw); err != nil {
				return err
			}
			if _, err := passReply(nr, cw); err != nil {
				return err
			}
		}
	}
}

// passReply copies one reply, all its lines, and returns its code.
func passReply(r *bufio.Reader, w *bufio.Writer) (int, error) {
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return 0, fmt.Errorf("reading a reply: %w", err)
		}
		w.Write(line)
		if len(line) < 4 || line[3] != '-' {
			if err := w.Flush(); err != nil {
				return 0, err
			}
			code := 0
			for _, c := range line[:min(3, len(line))] {
				code = 10*code + int(c-'0')
			}
			return code, nil
		}
	}
}

// passData copies message data, still dot-stuffed, up to and including the
// lone ".".
func passData(r *bufio.Reader, w *bufio.Writer) error {
	lineStart := true
	for {
		chunk, err := r.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return fmt.Errorf("reading the data: %w", err)
		}
		w.Write(chunk)
		if lineStart && (bytes.Equal(chunk, []byte(".\r\n")) || bytes.Equal(chunk, []byte(".\n"))) {
			return w.Flush()
		}
		lineStart = err == nil
	}
}
