package integration

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"relayguard/integration/harness"
)

// tx is one mail transaction as a customer's mail client makes it.
type tx struct {
	service string           // address of the Postfix service; the submission port when empty
	sec     harness.Security // how the client protects the session; STARTTLS when service is empty
	local   string           // the client's source address, 127.0.0.x
	login   string           // SASL login; no AUTH when empty
	from    string
	to      []string
}

var serial atomic.Int64

// run makes the transaction and returns the stage and line of the first
// reply that refused it, or "" and the reply to the end of DATA when the
// message was accepted; subject is the message's unique Subject.
func (x tx) run(t *testing.T) (stage, line, subject string) {
	t.Helper()
	service, sec := x.service, x.sec
	if service == "" {
		service, sec = env.lab.Submission, harness.StartTLS
	}
	c, err := harness.Dial(service, x.local, sec)
	if c == nil {
		t.Fatalf("connect from %s: %v", x.local, err)
	}
	defer c.Close()
	if err != nil {
		return "CONNECT", c.Greeting, ""
	}
	if line, err := c.Hello("client.example.test"); err != nil {
		return "EHLO", line, ""
	}
	if x.login != "" {
		if line, err := c.Auth(x.login, password); err != nil {
			return "AUTH", line, ""
		}
	}
	if line, err := c.Mail(x.from); err != nil {
		return "MAIL", line, ""
	}
	for _, to := range x.to {
		if line, err := c.Rcpt(to); err != nil {
			return "RCPT", line, ""
		}
	}
	subject = fmt.Sprintf("relayguard e2e %d %s", serial.Add(1), t.Name())
	msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%d@client.example.test>\r\n\r\nHello.\r\n",
		x.from, strings.Join(x.to, ">, <"), subject, time.Now().Format(time.RFC1123Z), serial.Load())
	line, err = c.Data([]byte(msg))
	if err != nil {
		return "DATA", line, ""
	}
	c.Quit()
	return "", line, subject
}

// refused asserts that x is refused at stage with exactly the reply want,
// in which {id} stands for the 22-character transaction id; the id must be
// in policyd's log line of the decision, with the rule.
func refused(t *testing.T, x tx, stage, want, rule string) {
	t.Helper()
	gotStage, line, _ := x.run(t)
	id, ok := matchReply(line, want)
	if gotStage != stage || !ok {
		t.Fatalf("from %s, login %q, sender %q, rcpt %v:\n got %s: %q\nwant %s: %q", x.local, x.login, x.from, x.to, gotStage, line, stage, want)
	}
	if id != "" {
		if lines := logLinesWith("msg=reject", "id="+id, "rule="+rule); len(lines) != 1 {
			t.Errorf("policyd logged %d reject lines with id %s and rule %s, want 1", len(lines), id, rule)
		}
	}
}

// matchReply reports whether line is want, in which {id} stands for a
// 22-character transaction id, and returns the id.
func matchReply(line, want string) (id string, ok bool) {
	pattern := "^" + strings.ReplaceAll(regexp.QuoteMeta(want), `\{id\}`, `([0-9A-Za-z]{22})`) + "$"
	m := regexp.MustCompile(pattern).FindStringSubmatch(line)
	if m == nil {
		return "", false
	}
	if len(m) > 1 {
		id = m[1]
	}
	return id, true
}

// delivered asserts that x is accepted and reaches the next hop.
func delivered(t *testing.T, x tx) {
	t.Helper()
	stage, line, subject := x.run(t)
	if stage != "" {
		t.Fatalf("from %s, login %q, sender %q, rcpt %v: refused at %s: %q", x.local, x.login, x.from, x.to, stage, line)
	}
	if _, err := env.lab.Sink.WaitFor(func(m harness.Msg) bool {
		return m.From == x.from && strings.Contains(string(m.Data), "Subject: "+subject+"\r\n")
	}, 30*time.Second); err != nil {
		t.Fatalf("accepted (%q) but not relayed: %v", line, err)
	}
}

var rcpt = []string{"someone@dest.test"}

func TestAuthentication(t *testing.T) {
	t.Run("R1 no AUTH", func(t *testing.T) {
		refused(t, tx{local: "127.0.0.11", from: "jan@example.cz", to: rcpt}, "MAIL", "530 5.7.0 {id} authentication required", "R1")
	})
	// R2 and R3 are refused by Dovecot's auth policy before the password is
	// checked; Postfix puts its SASL prefix before the text, which no
	// setting changes.
	t.Run("R2 login not a full address", func(t *testing.T) {
		refused(t, tx{local: "127.0.0.12", login: "jan", from: "jan@example.cz", to: rcpt}, "AUTH", "535 5.7.8 Error: authentication failed: {id} authentication rejected", "R2")
	})
	t.Run("R3 disabled account", func(t *testing.T) {
		refused(t, tx{local: "127.0.0.13", login: "off@example.cz", from: "off@example.cz", to: rcpt}, "AUTH", "535 5.7.8 Error: authentication failed: {id} authentication rejected access disabled", "R3")
	})
	t.Run("accepted on every service", func(t *testing.T) {
		delivered(t, tx{local: "127.0.0.14", login: "jan@example.cz", from: "jan@example.cz", to: rcpt})
		delivered(t, tx{service: env.lab.SMTPS, sec: harness.ImplicitTLS, local: "127.0.0.14", login: "jan@example.cz", from: "jan@example.cz", to: rcpt})
		delivered(t, tx{service: env.lab.SMTP, sec: harness.StartTLS, local: "127.0.0.14", login: "jan@example.cz", from: "jan@example.cz", to: rcpt})
	})
}

func TestSenderDomain(t *testing.T) {
	t.Run("R5 foreign sender domain", func(t *testing.T) {
		refused(t, tx{local: "127.0.0.21", login: "jan@example.cz", from: "jan@foreign.test", to: rcpt}, "MAIL", "550 5.1.0 <jan@foreign.test> sender rejected", "R5")
	})
	t.Run("alias domain accepted", func(t *testing.T) {
		delivered(t, tx{local: "127.0.0.22", login: "jan@example.cz", from: "jan@example.com", to: rcpt})
		delivered(t, tx{local: "127.0.0.22", login: "petr@example.com", from: "petr@EXAMPLE.CZ", to: rcpt})
	})
	t.Run("R5 third-level domain", func(t *testing.T) {
		refused(t, tx{local: "127.0.0.23", login: "jan@example.cz", from: "jan@mail.example.cz", to: rcpt}, "MAIL", "550 5.1.0 <jan@mail.example.cz> sender rejected", "R5")
	})
	t.Run("R6 webmail alternative sender", func(t *testing.T) {
		delivered(t, tx{local: "127.0.0.60", login: "jan@example.cz", from: "jan.novak@foreign.test", to: rcpt})
		refused(t, tx{local: "127.0.0.24", login: "jan@example.cz", from: "jan.novak@foreign.test", to: rcpt}, "MAIL", "550 5.1.0 <jan.novak@foreign.test> sender rejected", "R5")
	})
}

// A UTF-8 sender under SMTPUTF8 and its punycode form are the same domain.
func TestInternationalizedSender(t *testing.T) {
	for _, from := range []string{"jan@příklad.cz", "jan@xn--pklad-zsa96e.cz", "jan@PŘÍKLAD.cz"} {
		c, err := harness.Dial(env.lab.Submission, "127.0.0.25", harness.StartTLS)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Hello("client.example.test"); err != nil {
			t.Fatal(err)
		}
		if line, err := c.Auth("jan@example.cz", password); err != nil {
			t.Fatalf("AUTH: %q", line)
		}
		rep, err := c.Cmd("MAIL FROM:<" + from + "> SMTPUTF8")
		if err != nil || rep.Code != 250 {
			t.Errorf("MAIL FROM:<%s> SMTPUTF8: %q %v", from, rep.Last(), err)
		}
		if line, err := c.Rcpt("someone@dest.test"); err != nil {
			t.Errorf("RCPT after MAIL FROM:<%s>: %q", from, line)
		}
		c.Close()
	}
}

// SIGHUP reloads the directory; a broken file keeps the previous one.
func TestDirectoryReload(t *testing.T) {
	foreign := tx{local: "127.0.0.71", login: "jan@example.cz", from: "jan@foreign.test", to: rcpt}
	alias := tx{local: "127.0.0.71", login: "jan@example.cz", from: "jan@example.com", to: rcpt}
	t.Cleanup(func() { reload(t, directory, "directory reloaded") })

	refused(t, foreign, "MAIL", "550 5.1.0 <jan@foreign.test> sender rejected", "R5")
	reload(t, directory+"\n[[domain]\n", "directory reload failed, keeping the previous directory")
	refused(t, foreign, "MAIL", "550 5.1.0 <jan@foreign.test> sender rejected", "R5")
	delivered(t, alias)
	reload(t, strings.Replace(directory, `aliases = ["example.com", "příklad.cz"]`, `aliases = ["example.com", "příklad.cz", "foreign.test"]`, 1), "directory reloaded")
	delivered(t, foreign)
}

// reload writes the directory file, sends SIGHUP and waits for policyd's log line.
func reload(t *testing.T, content, logged string) {
	t.Helper()
	before := len(logLinesWith(logged))
	if err := os.WriteFile(env.directory, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := env.policyd.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(logLinesWith(logged)) == before {
		if time.Now().After(deadline) {
			t.Fatalf("policyd did not log %q after SIGHUP", logged)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDomainDNS(t *testing.T) {
	t.Run("R7 sender domain without MX or A", func(t *testing.T) {
		refused(t, tx{local: "127.0.0.31", login: "u@nomx.test", from: "u@nomx.test", to: rcpt}, "MAIL", "550 5.1.0 {id} invalid domain", "R7")
	})
	t.Run("R8 recipient domain without MX or A", func(t *testing.T) {
		refused(t, tx{local: "127.0.0.32", login: "jan@example.cz", from: "jan@example.cz", to: []string{"petr.novak@nomx.test"}}, "RCPT", "550 5.1.1 {id} invalid destination domain <petr.novak@nomx.test>", "R8")
	})
	t.Run("R8 null MX recipient", func(t *testing.T) {
		refused(t, tx{local: "127.0.0.33", login: "jan@example.cz", from: "jan@example.cz", to: []string{"a@nullmx.test"}}, "RCPT", "550 5.1.1 {id} invalid destination domain <a@nullmx.test>", "R8")
	})
	t.Run("R8 recipient domain that does not exist", func(t *testing.T) {
		refused(t, tx{local: "127.0.0.33", login: "jan@example.cz", from: "jan@example.cz", to: []string{"a@nxdomain.test"}}, "RCPT", "550 5.1.1 {id} invalid destination domain <a@nxdomain.test>", "R8")
	})
	t.Run("AAAA-only recipient domain accepted", func(t *testing.T) {
		delivered(t, tx{local: "127.0.0.34", login: "jan@example.cz", from: "jan@example.cz", to: []string{"a@aaaa.test"}})
	})
	t.Run("R7 SERVFAIL is temporary", func(t *testing.T) {
		refused(t, tx{local: "127.0.0.35", login: "u@servfail.test", from: "u@servfail.test", to: rcpt}, "MAIL", "451 4.4.3 {id} temporary DNS failure, try again later", "R7")
	})
	t.Run("R8 SERVFAIL is temporary", func(t *testing.T) {
		refused(t, tx{local: "127.0.0.35", login: "jan@example.cz", from: "jan@example.cz", to: []string{"a@servfail.test"}}, "RCPT", "451 4.4.3 {id} temporary DNS failure, try again later", "R8")
	})
}

func TestGeoIP(t *testing.T) {
	t.Run("R9 disallowed country", func(t *testing.T) {
		refused(t, tx{local: "127.0.0.50", login: "jan@example.cz", from: "jan@example.cz", to: rcpt}, "MAIL", "550 5.1.0 <jan@example.cz> sender rejected GeoIP example.cz:127.0.0.50:CN", "R9")
	})
	t.Run("country granted to the domain", func(t *testing.T) {
		delivered(t, tx{local: "127.0.0.50", login: "x@granted.test", from: "x@granted.test", to: rcpt})
	})
	t.Run("webmail exempt", func(t *testing.T) {
		delivered(t, tx{local: "127.0.0.60", login: "jan@example.cz", from: "jan@example.cz", to: rcpt})
	})
}

func TestSBL(t *testing.T) {
	t.Run("R18 listed client refused from the first command after EHLO", func(t *testing.T) {
		refused(t, tx{local: "127.0.0.2", login: "jan@example.cz", from: "jan@example.cz", to: rcpt}, "EHLO", "554 5.7.1 {id} Service unavailable; client [127.0.0.2] blocked using sbl.spamhaus.org", "R18")
	})
	t.Run("error answer 127.255.255.254 does not refuse", func(t *testing.T) {
		delivered(t, tx{local: "127.0.0.4", login: "jan@example.cz", from: "jan@example.cz", to: rcpt})
		if lines := logLinesWith("level=ERROR", "DNSBL answered an error code", "client=127.0.0.4", "answer=127.255.255.254"); len(lines) == 0 {
			t.Error("the 127.255.255.254 answer was not logged as an error")
		}
	})
}
