package integration

import (
	"fmt"
	"strings"
	"testing"

	"relayguard/integration/harness"
)

// session is one authenticated SMTP session on the submission port.
func session(t *testing.T, local, login string) *harness.Client {
	t.Helper()
	return sessionOn(t, env.lab, local, login)
}

// sessionOn is session on the submission port of lab.
func sessionOn(t *testing.T, lab *harness.Lab, local, login string) *harness.Client {
	t.Helper()
	c, err := harness.Dial(lab.Submission, local, harness.StartTLS)
	if err != nil {
		t.Fatalf("connect from %s: %v", local, err)
	}
	t.Cleanup(func() { c.Close() })
	if line, err := c.Hello("client.example.test"); err != nil {
		t.Fatalf("EHLO from %s: %q", local, line)
	}
	if line, err := c.Auth(login, password); err != nil {
		t.Fatalf("AUTH %s: %q", login, line)
	}
	return c
}

// send sends one message in an open session and returns the stage and line
// of the first refusal, or "" and the reply to the end of DATA.
func send(c *harness.Client, from string, to []string, body string) (stage, line string) {
	if line, err := c.Mail(from); err != nil {
		return "MAIL", line
	}
	for _, r := range to {
		if line, err := c.Rcpt(r); err != nil {
			return "RCPT", line
		}
	}
	msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: limits %d\r\n\r\n%s\r\n", from, to[0], serial.Add(1), body)
	if line, err := c.Data([]byte(msg)); err != nil {
		return "DATA", line
	}
	return "", ""
}

// expect asserts a refusal with exactly the reply want ({id}: any id).
func expect(t *testing.T, stage, line, wantStage, want, rule string) {
	t.Helper()
	id, ok := matchReply(line, want)
	if stage != wantStage || !ok {
		t.Fatalf("got %s %q, want %s %q", stage, line, wantStage, want)
	}
	if id != "" {
		if lines := logLinesWith("msg=reject", "id="+id, "rule="+rule); len(lines) != 1 {
			t.Errorf("policyd logged %d reject lines with id %s and rule %s, want 1", len(lines), id, rule)
		}
	}
}

func recipients(n int, domain string) []string {
	r := make([]string, n)
	for i := range r {
		r[i] = fmt.Sprintf("r%d@%s", i, domain)
	}
	return r
}

// R10 per account and per client address, across sessions, and after a
// restart of policyd (limits in the test configuration: 12 a minute).
func TestRateLimitsAcrossSessionsAndRestart(t *testing.T) {
	for i := range 3 {
		c := session(t, "127.0.2.81", "rate@example.cz")
		if stage, line := send(c, "rate@example.cz", recipients(4, "dest.test"), "hello"); stage != "" {
			t.Fatalf("session %d: refused at %s: %q", i+1, stage, line)
		}
		c.Quit()
	}
	const violation = "450 4.7.1 {id} policy violation"
	stage, line := send(session(t, "127.0.2.81", "rate@example.cz"), "rate@example.cz", recipients(1, "dest.test"), "13th")
	expect(t, stage, line, "RCPT", violation, "R10")
	// The account is over its limit from any address...
	stage, line = send(session(t, "127.0.2.82", "rate@example.cz"), "rate@example.cz", recipients(1, "dest.test"), "other address")
	expect(t, stage, line, "RCPT", violation, "R10")
	// ...and the address for any account.
	stage, line = send(session(t, "127.0.2.81", "rate2@example.cz"), "rate2@example.cz", recipients(1, "dest.test"), "other account")
	expect(t, stage, line, "RCPT", violation, "R10")

	env.policyd.stop()
	if err := env.policyd.start(); err != nil {
		t.Fatal(err)
	}
	stage, line = send(session(t, "127.0.2.81", "rate@example.cz"), "rate@example.cz", recipients(1, "dest.test"), "after restart")
	expect(t, stage, line, "RCPT", violation, "R10")
}

// R11: the 251st recipient of a message.
func TestRecipientsPerMessageE2E(t *testing.T) {
	c := session(t, "127.0.1.11", "many@example.cz")
	stage, line := send(c, "many@example.cz", recipients(251, "dest.test"), "many")
	expect(t, stage, line, "RCPT", "452 4.5.3 {id} too many recipients", "R11")
	c.Rset()
	if stage, line := send(c, "many@example.cz", recipients(250, "dest.test"), "250"); stage != "" {
		t.Fatalf("250 recipients refused at %s: %q", stage, line)
	}
}

// R12: the 251st message of a session; a new session goes on.
func TestMessagesPerSessionE2E(t *testing.T) {
	c := session(t, "127.0.1.12", "session@example.cz")
	for i := range 250 {
		if stage, line := send(c, "session@example.cz", []string{"a@dest.test"}, "m"); stage != "" {
			t.Fatalf("message %d refused at %s: %q", i+1, stage, line)
		}
	}
	stage, line := send(c, "session@example.cz", []string{"a@dest.test"}, "251st")
	expect(t, stage, line, "MAIL", "421 4.7.0 {id} too many messages per session, try again later", "R12")
	if stage, line := send(session(t, "127.0.1.12", "session@example.cz"), "session@example.cz", []string{"a@dest.test"}, "new session"); stage != "" {
		t.Fatalf("a new session refused at %s: %q", stage, line)
	}
}

// R13: more than 3 (test configuration) messages over 1 MB to the Seznam.cz
// group within 3 minutes; smaller messages and other domains pass.
func TestBigMessagesE2E(t *testing.T) {
	big := strings.Repeat(strings.Repeat("x", 76)+"\r\n", 1_000_000/78+10)
	c := session(t, "127.0.1.13", "big@example.cz")
	for i := range 3 {
		if stage, line := send(c, "big@example.cz", []string{"a@seznam.cz", "b@dest.test"}, big); stage != "" {
			t.Fatalf("big message %d refused at %s: %q", i+1, stage, line)
		}
	}
	if stage, line := send(c, "big@example.cz", []string{"a@dest.test"}, big); stage != "" {
		t.Fatalf("a big message elsewhere refused at %s: %q", stage, line)
	}
	if stage, line := send(c, "big@example.cz", []string{"a@email.cz"}, "small"); stage != "" {
		t.Fatalf("a small message refused at %s: %q", stage, line)
	}
	stage, line := send(c, "big@example.cz", []string{"a@email.cz", "b@post.cz"}, big)
	expect(t, stage, line, "DATA", "450 4.7.1 {id} too many big messages to Seznam.cz", "R13")
}
