package contentfilter

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"relayguard/config"
	"relayguard/dkim"
	"relayguard/internal/testmail"
	"relayguard/mailaddr"
)

// discardHop is a next hop that accepts every message and keeps nothing.
func discardHop(b *testing.B) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r, w := bufio.NewReaderSize(c, 64<<10), bufio.NewWriter(c)
				say := func(s string) error { w.WriteString(s + "\r\n"); return w.Flush() }
				say("220 hop ESMTP")
				for {
					line, err := readLine(r)
					if err != nil {
						return
					}
					switch line {
					case "DATA":
						say("354 go ahead")
						if readData(r, io.Discard, 1<<30) != nil {
							return
						}
						err = say("250 2.0.0 Ok: queued")
					case "QUIT":
						say("221 bye")
						return
					default:
						if len(line) >= 4 && line[:4] == "EHLO" {
							err = say("250-hop\r\n250-PIPELINING\r\n250 XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT")
						} else {
							err = say("250 2.0.0 Ok")
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

// benchSigner is R19 as relayguard contentfilter wires it, with a new key
// of kind ("rsa", "ed25519") for the sender's domain; nil for "off".
func benchSigner(b *testing.B, kind string) func(io.Writer, io.Reader, *Message) error {
	if kind == "off" {
		return nil
	}
	bits := 0
	if kind == "rsa" {
		bits = dkim.MinRSABits
	}
	_, pemKey, err := dkim.Generate(kind, bits)
	if err != nil {
		b.Fatal(err)
	}
	path := b.TempDir() + "/key.pem"
	if err := os.WriteFile(path, pemKey, 0o600); err != nil {
		b.Fatal(err)
	}
	key, err := dkim.LoadKey(testmail.SenderDomain, "bench", path)
	if err != nil {
		b.Fatal(err)
	}
	signer := dkim.NewSigner([]*dkim.Key{key})
	return func(w io.Writer, r io.Reader, m *Message) error {
		_, d, _ := mailaddr.Split(m.Sender)
		_, err := signer.Sign(w, r, d)
		return err
	}
}

// BenchmarkFilter is the path that bench/filterbench measures, in one
// process so that go test -cpuprofile shows it: 16 connections each
// handing the filter one 50 KB message with a PDF, as Postfix's
// smtpd_proxy_filter does, R17 enforcing, no scanner, DKIM signing with
// each kind of key, to a next hop that discards the message. The client
// and the next hop are in the profile too (readData, testmail).
func BenchmarkFilter(b *testing.B) {
	for _, kind := range []string{"off", "ed25519", "rsa"} {
		b.Run("dkim="+kind, func(b *testing.B) { benchmarkFilter(b, kind, 50_000) })
	}
}

// BenchmarkFilterLarge is one connection at a time with a 10 MB message:
// what one message past spool_threshold costs.
func BenchmarkFilterLarge(b *testing.B) {
	benchmarkFilter(b, "rsa", 10_000_000)
}

func benchmarkFilter(b *testing.B, kind string, size int) {
	c := config.Default().ContentFilter
	c.Rules.Virus.Mode, c.Rules.Spam.Mode = config.Off, config.Off
	checks, err := NewChecks(&c, func() string { return "ID" }, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	addr := startBenchFilter(b, discardHop(b), checks, func(s *Server) {
		s.Sign = benchSigner(b, kind)
		s.SpoolThreshold = int64(c.SpoolThreshold)
		s.MaxSize = int64(c.MaxSize)
	})
	m := testmail.New(size, 1)
	var n atomic.Uint64
	b.SetBytes(int64(m.Size))
	b.ReportAllocs()
	if size <= 1<<20 {
		b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0))) // 16 connections
	} else {
		b.SetParallelism(1)
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := benchSession(addr, m, testmail.ID("b", n.Add(1))); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func startBenchFilter(b *testing.B, hop string, c Checker, edit func(*Server)) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{Hostname: "filter.bench", NextHop: hop, Checker: c, SpoolDir: b.TempDir(),
		Timeout: time.Minute, Log: slog.New(slog.DiscardHandler)}
	edit(s)
	go s.Serve(l)
	b.Cleanup(func() { s.Close(b.Context()) })
	return l.Addr().String()
}

// benchSession is one message on a connection of its own.
func benchSession(addr string, m *testmail.Message, id string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	r, w := bufio.NewReader(c), bufio.NewWriterSize(c, 64<<10)
	expect := func(code int) error {
		rep, err := readReply(r)
		if err == nil && rep.code != code {
			err = fmt.Errorf("%s, want %d", rep, code)
		}
		return err
	}
	if err := expect(220); err != nil {
		return err
	}
	for _, cmd := range []struct {
		line string
		code int
	}{
		{"EHLO mail.hosting.bench", 250},
		{"XFORWARD NAME=client.example.net ADDR=198.51.100.7 PORT=40000 PROTO=ESMTP HELO=client.example.net IDENT=[UNAVAILABLE] SOURCE=REMOTE", 250},
		{"MAIL FROM:<" + testmail.Sender + "> SIZE=" + strconv.Itoa(m.Size) + " BODY=8BITMIME", 250},
		{"RCPT TO:<" + testmail.Recipient + ">", 250},
		{"DATA", 354},
	} {
		w.WriteString(cmd.line + "\r\n")
		if err := w.Flush(); err != nil {
			return err
		}
		if err := expect(cmd.code); err != nil {
			return fmt.Errorf("%s: %w", cmd.line, err)
		}
	}
	if err := m.WriteData(w, id); err != nil {
		return err
	}
	if err := expect(250); err != nil {
		return fmt.Errorf("end of data: %w", err)
	}
	w.WriteString("QUIT\r\n")
	w.Flush()
	return expect(221)
}
