package integration

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"relayguard/scan/scantest"
)

// The after-queue stack (env.aq) runs etc/postfix/main.cf's after-queue
// filter with contentfilter.mode = "after-queue". There Postfix accepts
// every message first ("250 2.0.0 Ok: queued as ID") and hands it to the
// filter from its queue through the relayguard-scan transport, with
// XFORWARD IDENT=ID; what the filter refuses, Postfix bounces to the sender,
// and what it cannot decide stays deferred in Postfix's queue.

// modeMismatch begins the filter's error line for a message whose XFORWARD
// IDENT contradicts contentfilter.mode.
const modeMismatch = "contentfilter.mode is "

// noModeMismatch asserts that s's filter found Postfix in the mode it was
// configured for.
func noModeMismatch(t *testing.T, s *stack) {
	t.Helper()
	if lines := linesWith(s.filter.log, modeMismatch); len(lines) > 0 {
		t.Errorf("the filter logged a mode mismatch:\n%s", strings.Join(lines, "\n"))
	}
}

// filterRefused asserts that reply, a refusal by s's filter, is want ({id}:
// any id) and that the filter logged the refusal with its id and, after the
// queue, the message's queue id.
func filterRefused(t *testing.T, s *stack, reply, want, queueID string) {
	t.Helper()
	id, ok := matchReply(reply, want)
	if !ok {
		t.Fatalf("got %q, want %q", reply, want)
	}
	parts := []string{"id=" + id}
	if queueID != "" {
		parts = append(parts, "ident="+queueID)
	}
	if lines := linesWith(s.filter.log, parts...); len(lines) != 1 {
		t.Errorf("the filter logged %d lines with %v, want 1", len(lines), parts)
	}
}

// A clean message is delivered once, signed as before the queue; the filter
// had it with the queue id the customer was given.
func TestAfterQueueClean(t *testing.T) {
	l := newLetter("jan@example.cz", "aq-clean@dest.test", plainText("jan@example.cz", "aq-clean@dest.test", "Hello after the queue.\r\n"))
	stage, line := l.submit(t, env.aq.lab, "127.0.0.131")
	if stage != "" {
		t.Fatalf("refused at %s: %q", stage, line)
	}
	queueID := queuedAs(t, line)
	m := l.deliveredOnce(t, env.aq.lab)
	verifyDKIM(t, m.Data)
	if bytes.Contains(m.Data, []byte("\r\nX-Spam:")) {
		t.Errorf("a clean message tagged as spam:\n%s", m.Data)
	}
	if lines := linesWith(env.aq.filter.log, "msg=message", "ident="+queueID, "sender=jan@example.cz"); len(lines) != 1 {
		t.Errorf("the filter logged %d deliveries of queue id %s, want 1", len(lines), queueID)
	}
	noModeMismatch(t, env.aq)
}

// What the filter refuses after the queue, Postfix bounces: the customer's
// client got 250, the report goes to the sender with the filter's reply as
// its Diagnostic-Code, and the recipient gets nothing.
func TestAfterQueueRefusalsBounce(t *testing.T) {
	for _, c := range []struct {
		name, rcpt, msg, want string
	}{
		{"R16 virus", "aq-virus@dest.test",
			withAttachment(`attachment; filename="readme.txt"`, "text/plain", scantest.EICAR()), "554 5.7.1 {id} virus detected"},
		{"R17 banned attachment", "aq-exe@dest.test",
			withAttachment(`attachment; filename="invoice.exe"`, "application/octet-stream", []byte("MZ")), "554 5.7.1 {id} Bad attachment"},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := newLetter("jan@example.cz", c.rcpt, c.msg)
			stage, line := l.submit(t, env.aq.lab, "127.0.0.132")
			if stage != "" {
				t.Fatalf("refused at %s: %q", stage, line)
			}
			queueID := queuedAs(t, line)
			filterRefused(t, env.aq, bounce(t, env.aq.lab, "jan@example.cz", queueID), c.want, queueID)
			l.notDelivered(t, env.aq.lab)
		})
	}
	noModeMismatch(t, env.aq)
}

// R15 after the queue: the filter reports spam by the queue id, and policyd
// charges the account that sent it, not only the address. Each message
// comes from another address, so that only the account reaches the
// allowance (2 in the suite's configuration).
func TestAfterQueueSpamCountedForLogin(t *testing.T) {
	const login = "spam@example.cz"
	spam := func(rcpt string) letter {
		return newLetter(login, rcpt, plainText(login, rcpt, string(scantest.GTUBE())+"\r\n"))
	}
	for i, local := range []string{"127.0.0.141", "127.0.0.142"} {
		l := spam(fmt.Sprintf("aq-spam%d@dest.test", i+1))
		stage, line := l.submit(t, env.aq.lab, local)
		if stage != "" {
			t.Fatalf("spam %d refused at %s: %q", i+1, stage, line)
		}
		queueID := queuedAs(t, line)
		if m := l.deliveredOnce(t, env.aq.lab); !bytes.Contains(m.Data, []byte("\r\nX-Spam: Yes\r\n")) {
			t.Errorf("spam %d, within the allowance, not tagged:\n%s", i+1, m.Data[:min(len(m.Data), 600)])
		}
		if lines := linesWith(env.aq.policyd.log, `msg="admin API: spam reported"`, "queue_id="+queueID, "login="+login); len(lines) != 1 {
			t.Errorf("policyd logged %d reports of queue id %s charged to %s, want 1", len(lines), queueID, login)
		}
	}
	// The third is past the account's allowance: refused by the filter,
	// bounced by Postfix.
	l := spam("aq-spam3@dest.test")
	stage, line := l.submit(t, env.aq.lab, "127.0.0.143")
	if stage != "" {
		t.Fatalf("spam 3 refused at %s: %q", stage, line)
	}
	queueID := queuedAs(t, line)
	filterRefused(t, env.aq, bounce(t, env.aq.lab, login, queueID), "550 5.7.1 {id} spam detected", queueID)
	l.notDelivered(t, env.aq.lab)

	// The account is blocked: a clean message from a fourth address is
	// refused at MAIL. Of the addresses, only the one whose message went past
	// the allowance is blocked with it (policyd blocks every subject of that
	// message); the first two stay free.
	clean := newLetter(login, "aq-spam4@dest.test", plainText(login, "aq-spam4@dest.test", "Hello.\r\n"))
	stage, line = clean.submit(t, env.aq.lab, "127.0.0.144")
	id, ok := matchReply(line, "550 5.7.1 {id} policy violation")
	if stage != "MAIL" || !ok {
		t.Fatalf("the account past its allowance, from another address: %s %q", stage, line)
	}
	if lines := linesWith(env.aq.policyd.log, "msg=reject", "id="+id, "rule=R15", "login="+login); len(lines) != 1 {
		t.Errorf("policyd logged %d R15 refusals of %s with id %s, want 1", len(lines), login, id)
	}
	blocks := env.aq.relayguard(t, "blocks")
	if !strings.Contains(blocks, login) || !strings.Contains(blocks, "spam allowance") {
		t.Errorf("relayguard blocks does not list %s:\n%s", login, blocks)
	}
	for _, ip := range []string{"127.0.0.141", "127.0.0.142"} {
		if strings.Contains(blocks, ip) {
			t.Errorf("relayguard blocks lists %s, which sent one spam within the allowance:\n%s", ip, blocks)
		}
	}
	noModeMismatch(t, env.aq)
}
