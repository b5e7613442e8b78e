package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"relayguard/integration/harness"
)

// What the delivery tests count: each message carries a unique Message-ID
// and goes to a recipient of its own, so that the sink's copies of it and
// Postfix's queue entries for it can be told from every other test's.

// letter is one message of a delivery test.
type letter struct {
	from, rcpt string
	id         string // its Message-ID, without <>
	data       []byte
}

// newLetter puts a new Message-ID on top of msg (a whole message, CRLF
// line ends), to be sent from from to rcpt.
func newLetter(from, rcpt, msg string) letter {
	id := fmt.Sprintf("%d.%d@client.example.test", time.Now().UnixNano(), serial.Add(1))
	return letter{from: from, rcpt: rcpt, id: id, data: []byte("Message-ID: <" + id + ">\r\n" + msg)}
}

// plainText is a plain text message with body.
func plainText(from, to, body string) string {
	return fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: delivery %d\r\nDate: %s\r\n\r\n%s",
		from, to, serial.Add(1), time.Now().Format(time.RFC1123Z), body)
}

// is reports whether m is a copy of the letter for its recipient (a bounce
// quotes the Message-ID too, but goes to the sender).
func (l letter) is(m harness.Msg) bool {
	return slices.Contains(m.To, l.rcpt) && bytes.Contains(m.Data, []byte("\r\nMessage-ID: <"+l.id+">\r\n"))
}

// copies counts the letters the lab's Postfix delivered to the sink.
func (l letter) copies(lab *harness.Lab) int {
	n := 0
	for _, m := range lab.Sink.Messages() {
		if l.is(m) {
			n++
		}
	}
	return n
}

// send sends the letter in the client's session, as from logs in, and
// returns the stage and line of a refusal, or "" and the reply to the end
// of DATA.
func (l letter) send(c *harness.Client) (stage, line string) {
	if line, err := c.Mail(l.from); err != nil {
		return "MAIL", line
	}
	if line, err := c.Rcpt(l.rcpt); err != nil {
		return "RCPT", line
	}
	line, err := c.Data(l.data)
	if err != nil {
		return "DATA", line
	}
	return "", line
}

// submit sends the letter in a new session on lab's submission port.
func (l letter) submit(t *testing.T, lab *harness.Lab, local string) (stage, line string) {
	t.Helper()
	c := sessionOn(t, lab, local, l.from)
	defer c.Quit()
	return l.send(c)
}

// queuedAs returns the queue id of Postfix's "250 2.0.0 Ok: queued as ID".
func queuedAs(t *testing.T, line string) string {
	t.Helper()
	id, ok := strings.CutPrefix(line, "250 2.0.0 Ok: queued as ")
	if !ok || id == "" {
		t.Fatalf("not queued: %q", line)
	}
	return id
}

// deliveredOnce waits until the letter reached the sink and no longer
// waits in lab's queue; it must then be there exactly once. With nothing
// queued for it, no later copy can come.
func (l letter) deliveredOnce(t *testing.T, lab *harness.Lab) harness.Msg {
	t.Helper()
	m, err := lab.Sink.WaitFor(l.is, 30*time.Second)
	if err != nil {
		t.Fatalf("Message-ID <%s> not delivered: %v", l.id, err)
	}
	l.settled(t, lab)
	if n := l.copies(lab); n != 1 {
		t.Fatalf("Message-ID <%s> delivered %d times", l.id, n)
	}
	return m
}

// notDelivered asserts that the letter is not in the sink, nor queued.
func (l letter) notDelivered(t *testing.T, lab *harness.Lab) {
	t.Helper()
	l.settled(t, lab)
	if n := l.copies(lab); n != 0 {
		t.Fatalf("Message-ID <%s> delivered %d times, want none", l.id, n)
	}
}

// queueEntry is one message of `postqueue -j` (showq(8)).
type queueEntry struct {
	Queue      string `json:"queue_name"` // incoming, active, deferred, hold
	ID         string `json:"queue_id"`
	Sender     string `json:"sender"`
	Recipients []struct {
		Address     string `json:"address"`
		DelayReason string `json:"delay_reason"`
	} `json:"recipients"`
}

// queue lists lab's queue.
func queue(t *testing.T, lab *harness.Lab) []queueEntry {
	t.Helper()
	out, err := lab.Postqueue("-j")
	if err != nil {
		t.Fatal(err)
	}
	var q []queueEntry
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var e queueEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("postqueue -j: %v: %q", err, line)
		}
		q = append(q, e)
	}
	return q
}

// waitQueue polls lab's queue until found returns true.
func waitQueue(t *testing.T, lab *harness.Lab, what string, found func([]queueEntry) bool) []queueEntry {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		q := queue(t, lab)
		if found(q) {
			return q
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 30s; queue: %+v", what, q)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// settled waits until nothing waits in lab's queue for the letter's recipient.
func (l letter) settled(t *testing.T, lab *harness.Lab) {
	t.Helper()
	waitQueue(t, lab, "queue empty for "+l.rcpt, func(q []queueEntry) bool {
		for _, e := range q {
			for _, r := range e.Recipients {
				if r.Address == l.rcpt {
					return false
				}
			}
		}
		return true
	})
}

// bounce waits for the non-delivery report of the message Postfix queued
// as id, sent to its sender, and returns its Diagnostic-Code (RFC 3464):
// the reply that refused the message.
func bounce(t *testing.T, lab *harness.Lab, sender, id string) string {
	t.Helper()
	m, err := lab.Sink.WaitFor(func(m harness.Msg) bool {
		return m.From == "" && slices.Equal(m.To, []string{sender}) &&
			bytes.Contains(m.Data, []byte("\r\nX-Postfix-Queue-ID: "+id+"\r\n"))
	}, 30*time.Second)
	if err != nil {
		t.Fatalf("no bounce of %s to %s: %v", id, sender, err)
	}
	code := regexp.MustCompile(`\r\nDiagnostic-Code: smtp; (.*)\r\n`).FindSubmatch(m.Data)
	if code == nil {
		t.Fatalf("bounce of %s without a Diagnostic-Code:\n%s", id, m.Data)
	}
	return string(code[1])
}
