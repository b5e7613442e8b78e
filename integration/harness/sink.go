package harness

import (
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Msg is one message that Postfix relayed to the sink.
type Msg struct {
	From string   // MAIL FROM address
	To   []string // RCPT TO addresses, in order
	Data []byte   // the message as received, headers Postfix added included
}

// Sink is the next hop of the lab's Postfix (its relayhost): an SMTP server on 127.0.0.1 that
// accepts every message and records it.
type Sink struct {
	Addr string // host:port

	port   int
	srv    *smtp.Server
	mu     sync.Mutex
	msgs   []Msg
	change chan struct{} // closed and replaced when a message arrives
}

func startSink() (*Sink, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("harness: sink: %w", err)
	}
	s := &Sink{Addr: l.Addr().String(), port: l.Addr().(*net.TCPAddr).Port, change: make(chan struct{})}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &sinkSession{sink: s}, nil
	}))
	s.srv.Domain = "sink.example.test"
	s.srv.ReadTimeout = time.Minute
	s.srv.WriteTimeout = time.Minute
	s.srv.MaxMessageBytes = 64 << 20
	s.srv.ErrorLog = log.New(io.Discard, "", 0)
	go s.srv.Serve(l)
	return s, nil
}

// Messages returns the messages received so far.
func (s *Sink) Messages() []Msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Msg(nil), s.msgs...)
}

// WaitFor returns the first message, received before or during the wait, for which match returns
// true; after timeout it returns an error.
func (s *Sink) WaitFor(match func(Msg) bool, timeout time.Duration) (Msg, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		msgs, change := s.msgs, s.change
		s.mu.Unlock()
		for _, m := range msgs {
			if match(m) {
				return m, nil
			}
		}
		select {
		case <-change:
		case <-timer.C:
			return Msg{}, fmt.Errorf("harness: sink: no matching message within %v (%d received)", timeout, len(msgs))
		}
	}
}

func (s *Sink) add(m Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	close(s.change)
	s.change = make(chan struct{})
}

func (s *Sink) close() error {
	return s.srv.Close()
}

type sinkSession struct {
	sink *Sink
	msg  Msg
}

func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	ss.msg = Msg{From: from}
	return nil
}

func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.msg.To = append(ss.msg.To, to)
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.msg.Data = b
	ss.sink.add(ss.msg)
	ss.msg = Msg{}
	return nil
}

func (ss *sinkSession) Reset() { ss.msg = Msg{} }

func (ss *sinkSession) Logout() error { return nil }
