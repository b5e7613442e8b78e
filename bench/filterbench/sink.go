package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"

	"relayguard/internal/testmail"
)

// sink is the next hop of both servers under test, in this process: a fast
// SMTP server that answers every command with a 2xx, as Postfix's
// reinjection service does (with the same extensions, XFORWARD included),
// and notes what arrived of each message: how many times, its size, whether
// it was signed and whether it ended as sent.
type sink struct {
	l        net.Listener
	sessions sync.WaitGroup

	mu       sync.Mutex
	got      map[string]*arrival // by X-Bench-Id
	unknown  int                 // messages without an X-Bench-Id
	keep     bool                // keep the next message with a signature
	kept     []byte              // as received, for a signature check
	messages atomic.Uint64
}

// arrival is what the sink got of one message.
type arrival struct {
	count    int
	size     int64 // without the DKIM-Signature field and the stuffing
	signed   bool  // it started with a DKIM-Signature field
	complete bool  // its last line was the template's with its id
}

func startSink() (*sink, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &sink{l: l, got: map[string]*arrival{}}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.sessions.Add(1)
			go func() {
				defer s.sessions.Done()
				s.serve(c)
			}()
		}
	}()
	return s, nil
}

func (s *sink) addr() string { return s.l.Addr().String() }

func (s *sink) close() {
	s.l.Close()
	s.sessions.Wait()
}

// keepNext asks the sink to keep the next signed message it gets.
func (s *sink) keepNext() {
	s.mu.Lock()
	s.keep, s.kept = true, nil
	s.mu.Unlock()
}

func (s *sink) keptMessage() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kept
}

// take returns what arrived of each id that starts with prefix, and
// forgets it: the sink holds one run's arrivals at most, so that its
// garbage collections cost the same in every run.
func (s *sink) take(prefix string) map[string]arrival {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]arrival{}
	for k, v := range s.got {
		if strings.HasPrefix(k, prefix) {
			m[k] = *v
			delete(s.got, k)
		}
	}
	return m
}

// withoutID is how many messages arrived without an X-Bench-Id.
func (s *sink) withoutID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unknown
}

const sinkExtensions = "250-sink.bench\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n" +
	"250-ENHANCEDSTATUSCODES\r\n250 XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE\r\n"

func (s *sink) serve(c net.Conn) {
	defer c.Close()
	r, w := bigReaders.Get(c), smallWriters.Get(c)
	defer bigReaders.Put(r)
	defer smallWriters.Put(w)
	say := func(text string) error {
		w.WriteString(text)
		return w.Flush()
	}
	if say("220 sink.bench ESMTP\r\n") != nil {
		return
	}
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		verb, _, _ := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(" "))
		switch strings.ToUpper(string(verb)) {
		case "EHLO":
			err = say(sinkExtensions)
		case "DATA":
			if err = say("354 End data with <CR><LF>.<CR><LF>\r\n"); err != nil {
				return
			}
			if err = s.data(r); err != nil {
				return
			}
			n := s.messages.Add(1)
			err = say(fmt.Sprintf("250 2.0.0 Ok: queued as S%d\r\n", n))
		case "QUIT":
			say("221 2.0.0 Bye\r\n")
			return
		default:
			err = say("250 2.0.0 Ok\r\n")
		}
		if err != nil {
			return
		}
	}
}

var errLongLine = errors.New("a line longer than 64 KiB")

var lastLinePrefix = []byte(testmail.LastLine(""))

// data reads one message up to the lone "." and notes its arrival.
func (s *sink) data(r *bufio.Reader) error {
	var (
		a                     arrival
		id                    string
		header, first, inDKIM = true, true, false
		last                  []byte
		keep                  *bytes.Buffer
	)
	s.mu.Lock()
	if s.keep {
		keep = &bytes.Buffer{}
	}
	s.mu.Unlock()
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return errLongLine
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if line[0] == '.' {
			if len(line) == 3 && line[1] == '\r' || len(line) == 2 {
				break
			}
			line = line[1:]
		}
		if keep != nil {
			keep.Write(line)
		}
		if header {
			switch {
			case first && hasPrefixFold(line, "DKIM-Signature:"):
				a.signed, inDKIM = true, true
			case inDKIM && (line[0] == ' ' || line[0] == '\t'):
			default:
				inDKIM = false
				if hasPrefixFold(line, testmail.IDHeader+":") {
					id = string(bytes.TrimSpace(line[len(testmail.IDHeader)+1:]))
				}
				header = len(bytes.TrimRight(line, "\r\n")) > 0
			}
			first = false
		}
		if !inDKIM {
			a.size += int64(len(line))
		}
		last = last[:0]
		if bytes.HasPrefix(line, lastLinePrefix) { // copied only when it may be the last line
			last = append(last, line...)
		}
	}
	a.complete = id != "" && string(last) == testmail.LastLine(id)+"\r\n"
	s.mu.Lock()
	defer s.mu.Unlock()
	if keep != nil && a.signed && s.keep {
		s.keep, s.kept = false, keep.Bytes()
	}
	if id == "" {
		s.unknown++
		return nil
	}
	if prev := s.got[id]; prev != nil {
		prev.count++
		return nil
	}
	a.count = 1
	s.got[id] = &a
	return nil
}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && strings.EqualFold(string(b[:len(prefix)]), prefix)
}

// losses compares what the clients saw accepted with what arrived.
type losses struct {
	lost, duplicated, damaged, unsigned, unexpected int
	examples                                        []string
}

func (l *losses) any() bool { return l.lost+l.duplicated+l.damaged+l.unsigned+l.unexpected > 0 }

func (l *losses) example(format string, args ...any) {
	if len(l.examples) < 5 {
		l.examples = append(l.examples, fmt.Sprintf(format, args...))
	}
}

// check compares the ids that the clients saw accepted (2xx at the end of
// data), each of a message of size bytes, with the arrivals of ids that
// start with prefix. A message the clients saw refused may have arrived:
// that is counted as unexpected.
func check(accepted []string, size int64, signed bool, got map[string]arrival, prefix string) losses {
	var l losses
	seen := make(map[string]bool, len(accepted))
	for _, id := range accepted {
		seen[id] = true
		a, ok := got[id]
		switch {
		case !ok:
			l.lost++
			l.example("%s: accepted, never arrived", id)
			continue
		case a.count > 1:
			l.duplicated++
			l.example("%s: arrived %d times", id, a.count)
		case !a.complete || a.size != size:
			l.damaged++
			l.example("%s: arrived with %d bytes (want %d), complete %v", id, a.size, size, a.complete)
		}
		if signed && !a.signed {
			l.unsigned++
			l.example("%s: arrived unsigned", id)
		}
	}
	for id := range got {
		if strings.HasPrefix(id, prefix) && !seen[id] {
			l.unexpected++
			l.example("%s: arrived, but the client did not see it accepted", id)
		}
	}
	return l
}
