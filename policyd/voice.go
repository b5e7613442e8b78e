package policyd

import (
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"relayguard/milter"
)

// Voice carries policyd's replies to the client word for word.
//
// Postfix prefixes every reply of a policy service ("550 5.1.0 <a@b>: Sender
// address rejected: ..."), while it sends a milter's reply as it is. So the
// decision is made on the policy request, as always, and when a milter
// follows the session, the policy answer is DUNNO and the reply waits here
// for the milter event of the same stage, which Postfix sends right after its
// restriction lists (observed on Postfix 3.7: policy request, then milter
// event, at every stage, on the session's one milter connection). A decision
// at CONNECT is spoken at EHLO: Postfix replaces the text of a milter's
// CONNECT reply by its own, but sends a 421 at EHLO verbatim and disconnects,
// and keeps any other EHLO reply for the commands that follow (STARTTLS,
// AUTH, MAIL).
//
// At END-OF-MESSAGE the milter cannot speak: it hears of the end of data
// from cleanup, which a before-queue content filter bypasses. The filter
// speaks instead: Postfix asks the policy service about the end of data
// before it sends the end of data to the filter (smtpd_check_eod comes
// first), so a transaction the filter announced (Filtering) gets DUNNO and
// its reply waits for the filter to ask (EndOfMessage). A transaction that
// no filter announced gets its reply through the policy protocol, prefixed
// by Postfix ("<END-OF-MESSAGE>: End-of-data rejected: ").
//
// Nothing fails open: a session that no milter follows (smtpd_milters not
// set) gets its reply through the policy protocol, prefixed by Postfix, and
// a CONNECT decision that no milter picked up is given at the session's next
// policy request.
type Voice struct {
	Log *slog.Logger
	Now func() time.Time

	mu       sync.Mutex
	sessions map[session]*voiced
	adds     int
	// filtered are the transactions that the before-queue filter carries,
	// by client address and port, with the END-OF-MESSAGE reply left for it.
	filtered map[addrKey]*filteredTx
}

type filteredTx struct {
	at    time.Time
	reply string // "" while there is none
}

type voiced struct {
	milter bool   // a milter connection follows the session
	stage  string // stage of the pending reply; "" when none
	reply  string
	at     time.Time
}

// staleAfter drops what a session left behind when its end was never seen.
const staleAfter = 30 * time.Minute

func (v *Voice) entry(k session) *voiced {
	if v.sessions == nil {
		v.sessions = map[session]*voiced{}
	}
	e := v.sessions[k]
	if e == nil {
		e = &voiced{at: v.Now()}
		v.sessions[k] = e
		if v.adds++; v.adds%1024 == 0 {
			for k, e := range v.sessions {
				if v.Now().Sub(e.at) > staleAfter {
					delete(v.sessions, k)
				}
			}
		}
	}
	return e
}

// policy turns the engine's action for a request of session k at stage
// into the answer on the policy connection: DUNNO when a milter will speak
// the reply.
func (v *Voice) policy(k session, stage, action string) string {
	if !k.client.valid() || !k.server.valid() {
		return action
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	e := v.sessions[k]
	if e != nil && e.stage != "" && e.stage != stage {
		pending := e.reply
		e.stage, e.reply = "", ""
		if !e.milter {
			v.Log.Error("no milter follows this session: a decision is answered through the policy protocol, so Postfix prefixes it; set smtpd_milters as etc/postfix/master.cf does",
				"client", k.client.String(), "stage", stage, "reply", pending)
			return pending
		}
		v.Log.Warn("a reply was not spoken: Postfix ended the stage first", "client", k.client.String(), "reply", pending)
	}
	if stage == "END-OF-MESSAGE" && action != "DUNNO" {
		if t := v.filtered[k.client]; t != nil {
			t.reply = action
			return "DUNNO"
		}
		return action
	}
	if action == "DUNNO" || stage == "END-OF-MESSAGE" {
		return action
	}
	if e == nil {
		if stage != "CONNECT" {
			return action // no milter has seen this session
		}
		e = v.entry(k)
	}
	if !e.milter && stage != "CONNECT" {
		return action
	}
	if e.stage == "" {
		e.stage, e.reply = stage, action
	}
	return "DUNNO"
}

// Milter is the milter handler: it registers the session and speaks the
// reply decided for the stage.
func (v *Voice) Milter(s *milter.Session, stage string) string {
	k := session{keyOf(s.Client), keyOf(s.Server)}
	if !k.client.valid() || !k.server.valid() {
		return ""
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	e := v.entry(k)
	if stage == milter.Connect {
		if !e.milter {
			e.milter = true
			s.OnClose(func() {
				v.mu.Lock()
				delete(v.sessions, k)
				v.mu.Unlock()
			})
		}
		return ""
	}
	want := stage
	if stage == milter.Helo {
		want = "CONNECT"
	}
	if e.stage != want {
		return ""
	}
	reply := e.reply
	e.stage, e.reply = "", ""
	return reply
}

// Filtering notes that the before-queue content filter carries the
// transaction that client has begun: its END-OF-MESSAGE reply is left for
// the filter. The filter says so before it accepts the MAIL command, so
// before Postfix's END-OF-MESSAGE request.
func (v *Voice) Filtering(client netip.AddrPort) {
	k := keyOf(netip.AddrPortFrom(client.Addr().Unmap(), client.Port()))
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.filtered == nil {
		v.filtered = map[addrKey]*filteredTx{}
	}
	now := v.Now()
	if v.adds++; v.adds%1024 == 0 {
		for k, t := range v.filtered {
			if now.Sub(t.at) > staleAfter {
				delete(v.filtered, k)
			}
		}
	}
	v.filtered[k] = &filteredTx{at: now}
}

// EndOfMessage returns the END-OF-MESSAGE reply left for the filter for
// client's transaction, "" when the message may pass, and forgets the
// transaction.
func (v *Voice) EndOfMessage(client netip.AddrPort) string {
	k := keyOf(netip.AddrPortFrom(client.Addr().Unmap(), client.Port()))
	v.mu.Lock()
	defer v.mu.Unlock()
	t := v.filtered[k]
	if t == nil {
		return ""
	}
	delete(v.filtered, k)
	return t.reply
}
