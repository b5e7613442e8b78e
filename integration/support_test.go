package integration

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"relayguard/integration/harness"
)

// relayguard runs a support command against the running policyd.
func relayguard(t *testing.T, args ...string) string {
	t.Helper()
	return env.relayguard(t, args...)
}

// relayguard runs a support command against the stack's policyd.
func (s *stack) relayguard(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(env.bin, append(args, "--config", s.config)...).CombinedOutput()
	if err != nil {
		t.Fatalf("relayguard %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// failAuth makes n authentications with a wrong password from local, at once
// (Dovecot delays each failure by 2 s), and returns the replies.
func failAuth(t *testing.T, local, login, pass string, n int) []string {
	t.Helper()
	var mu sync.Mutex
	var replies []string
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := harness.Dial(env.lab.Submission, local, harness.StartTLS)
			if err != nil {
				t.Errorf("connect: %v", err)
				return
			}
			defer c.Close()
			if line, err := c.Hello("client.example.test"); err != nil {
				t.Errorf("EHLO: %q", line)
				return
			}
			line, _ := c.Auth(login, pass)
			mu.Lock()
			replies = append(replies, line)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return replies
}

// R4: eleven wrong passwords from one address, then that address is refused
// at connect (spoken at EHLO) while another still sends; `relayguard
// unblock` lets it in again; `relayguard explain` finds the decision.
func TestAuthFailureWall(t *testing.T) {
	for _, r := range failAuth(t, "127.0.0.91", "jan@example.cz", "wrong", 11) {
		if !strings.HasPrefix(r, "535 5.7.8 Error: authentication failed") {
			t.Fatalf("a wrong password: %q", r)
		}
	}
	const wall = "421 4.7.0 {id} Connection refused from 127.0.0.91. Too many authorization failures from this IP, try again later."
	stage, line, _ := tx{local: "127.0.0.91", login: "jan@example.cz", from: "jan@example.cz", to: rcpt}.run(t)
	id, ok := matchReply(line, wall)
	if stage != "EHLO" || !ok {
		t.Fatalf("after 11 failures: %s %q, want EHLO %q", stage, line, wall)
	}
	delivered(t, tx{local: "127.0.0.92", login: "jan@example.cz", from: "jan@example.cz", to: rcpt})

	blocks := relayguard(t, "blocks")
	if !strings.Contains(blocks, "127.0.0.91") || !strings.Contains(blocks, "11 failed authentications") {
		t.Errorf("relayguard blocks:\n%s", blocks)
	}
	explained := relayguard(t, "explain", id)
	for _, want := range []string{"R4", "CONNECT", "127.0.0.91", "failures"} {
		if !strings.Contains(explained, want) {
			t.Errorf("relayguard explain %s lacks %q:\n%s", id, want, explained)
		}
	}
	relayguard(t, "unblock", "127.0.0.91")
	delivered(t, tx{local: "127.0.0.91", login: "jan@example.cz", from: "jan@example.cz", to: rcpt})
}

// distinct-passwords: a client repeating one stale password counts once; as
// many distinct wrong passwords as the threshold and one more still block.
func TestAuthFailureDistinctPasswords(t *testing.T) {
	withConfig(t, edit{"rules.auth_failures", `counting = "attempts"`, `counting = "distinct-passwords"`})
	failAuth(t, "127.0.0.96", "jan@example.cz", "stale-password", 15)
	delivered(t, tx{local: "127.0.0.96", login: "jan@example.cz", from: "jan@example.cz", to: rcpt})
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := failAuth(t, "127.0.0.97", "jan@example.cz", fmt.Sprintf("guess-%d", i), 1)
			mu.Lock()
			defer mu.Unlock()
			if len(r) != 1 || !strings.HasPrefix(r[0], "535 5.7.8 Error: authentication failed") {
				t.Errorf("guess %d: %q", i, r)
			}
		}()
	}
	wg.Wait()
	stage, line, _ := tx{local: "127.0.0.97", login: "jan@example.cz", from: "jan@example.cz", to: rcpt}.run(t)
	if _, ok := matchReply(line, "421 4.7.0 {id} Connection refused from 127.0.0.97. Too many authorization failures from this IP, try again later."); stage != "EHLO" || !ok {
		t.Fatalf("after 12 distinct wrong passwords: %s %q", stage, line)
	}
}

// Support disables an account during its session: the next MAIL FROM gets
// R3's exact line; enabling it lets it send again.
func TestAccountDisabledBySupport(t *testing.T) {
	c := session(t, "127.0.0.94", "petr@example.com")
	relayguard(t, "account", "disable", "petr@example.com")
	stage, line := send(c, "petr@example.com", rcpt, "after disable")
	expect(t, stage, line, "MAIL", "535 5.7.8 {id} authentication rejected access disabled", "R3")
	refused(t, tx{local: "127.0.0.94", login: "petr@example.com", from: "petr@example.com", to: rcpt}, "AUTH",
		"535 5.7.8 Error: authentication failed: {id} authentication rejected access disabled", "R3")
	relayguard(t, "account", "enable", "petr@example.com")
	delivered(t, tx{local: "127.0.0.94", login: "petr@example.com", from: "petr@example.com", to: rcpt})
}

// `relayguard usage` shows R10's windows for an account.
func TestUsage(t *testing.T) {
	delivered(t, tx{local: "127.0.2.95", login: "rate2@example.cz", from: "rate2@example.cz", to: []string{"a@dest.test", "b@dest.test"}})
	out := relayguard(t, "usage", "rate2@example.cz", "--json")
	if !strings.Contains(out, `"rule": "R10"`) || !strings.Contains(out, `"limit": 12`) {
		t.Errorf("relayguard usage --json:\n%s", out)
	}
	table := relayguard(t, "usage", "rate2@example.cz")
	if !strings.Contains(table, "RULE") || !strings.Contains(table, "rate2@example.cz") {
		t.Errorf("relayguard usage:\n%s", table)
	}
}
