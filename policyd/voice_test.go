package policyd

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"relayguard/milter"
)

func TestVoice(t *testing.T) {
	var logs bytes.Buffer
	v := &Voice{Log: slog.New(slog.NewTextHandler(&logs, nil)), Now: time.Now}
	req := func(stage, port string) *Request {
		r := request(stage, "127.0.0.9", "jan@example.cz", "jan@example.cz", "a@example.net")
		r.Set("client_port", port)
		r.Set("server_address", "127.0.0.1")
		r.Set("server_port", "587")
		return r
	}
	ms := func(port uint16) *milter.Session {
		return &milter.Session{Client: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.9"), port), Server: netip.MustParseAddrPort("127.0.0.1:587")}
	}
	// policy answers a request as the server does: facts read, then spoken.
	policy := func(r *Request, action string) string {
		var f facts
		f.read(r, time.Now(), nil, nil)
		return v.policy(f.session, f.stage, action)
	}
	check := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s: %q, want %q", what, got, want)
		}
	}
	const reject = "550 5.1.0 <jan@example.cz> sender rejected"
	const refuse = "421 4.7.0 ID Connection refused from 127.0.0.9. Too many authorization failures from this IP, try again later."

	// A session that a milter follows: the policy answer is DUNNO and the
	// milter speaks the reply at the same stage; a CONNECT decision at EHLO.
	s := ms(1000)
	check("policy CONNECT", policy(req("CONNECT", "1000"), refuse), "DUNNO")
	check("milter CONNECT", v.Milter(s, milter.Connect), "")
	check("milter EHLO", v.Milter(s, milter.Helo), refuse)
	check("milter EHLO again", v.Milter(s, milter.Helo), "")
	check("policy MAIL", policy(req("MAIL", "1000"), reject), "DUNNO")
	check("milter MAIL", v.Milter(s, milter.Mail), reject)
	check("policy RCPT pass", policy(req("RCPT", "1000"), "DUNNO"), "DUNNO")
	check("milter RCPT", v.Milter(s, milter.Rcpt), "")

	// END-OF-MESSAGE replies go through the policy protocol, unless the
	// before-queue filter announced the transaction: then it speaks them.
	const big = "450 4.7.1 ID too many big messages to Seznam.cz"
	check("policy END-OF-MESSAGE", policy(req("END-OF-MESSAGE", "1000"), big), big)
	check("milter END-OF-MESSAGE", v.Milter(s, milter.EndOfMessage), "")
	client := netip.MustParseAddrPort("127.0.0.9:1000")
	check("filter, nothing announced", v.EndOfMessage(client), "")
	v.Filtering(netip.MustParseAddrPort("[::ffff:127.0.0.9]:1000"))
	check("filtered END-OF-MESSAGE", policy(req("END-OF-MESSAGE", "1000"), big), "DUNNO")
	check("filter asks", v.EndOfMessage(client), big)
	check("filter asks again", v.EndOfMessage(client), "")
	v.Filtering(client)
	check("filtered END-OF-MESSAGE passes", policy(req("END-OF-MESSAGE", "1000"), "DUNNO"), "DUNNO")
	check("filter asks, nothing to say", v.EndOfMessage(client), "")
	check("next transaction, not announced", policy(req("END-OF-MESSAGE", "1000"), big), big)

	// Another session on another port is another session.
	other := ms(1001)
	check("other milter CONNECT", v.Milter(other, milter.Connect), "")
	check("other policy MAIL", policy(req("MAIL", "1001"), reject), "DUNNO")
	check("first session's milter MAIL", v.Milter(s, milter.Mail), "")
	check("other milter MAIL", v.Milter(other, milter.Mail), reject)

	// No milter follows: replies go through the policy protocol; a CONNECT
	// decision waits for the next request, then is given there.
	check("no milter MAIL", policy(req("MAIL", "2000"), reject), reject)
	check("no milter CONNECT", policy(req("CONNECT", "2001"), refuse), "DUNNO")
	check("no milter, next request", policy(req("MAIL", "2001"), "DUNNO"), refuse)
	if !strings.Contains(logs.String(), "no milter follows this session") {
		t.Errorf("the missing milter was not logged:\n%s", logs.String())
	}
	// A request without a usable session key is answered as it is.
	bad := req("MAIL", "x")
	check("no port", policy(bad, reject), reject)
}
