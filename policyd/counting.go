package policyd

import (
	"context"
	"fmt"
	"strconv"

	"relayguard/authpolicy"
	"relayguard/config"
	"relayguard/limits"
	"relayguard/mailaddr"
	"relayguard/subject"
)

// The counting rules: R4 (blocked after failed authentications, counted by
// the Dovecot auth policy service), R10 (rate), R11 (recipients per
// message), R12 (messages per session), R13 (big messages to a domain
// group). Their counters live in the store; what one transaction or session
// did lives in the tracker.

// storeFailure is the outcome when the store cannot answer: temporary.
func storeFailure(e *Engine, err error) outcome {
	return outcome{reply: &e.cfg.Policyd.FailReply, reason: "store: " + err.Error()}
}

// R4: an address blocked for failed authentications is refused at connect.
func authFailures(c *config.AuthFailures) func(context.Context, *Engine, *facts) outcome {
	return func(ctx context.Context, e *Engine, f *facts) outcome {
		if f.ipErr != nil {
			return pass("client address is not an IP address")
		}
		b, blocked, err := e.deps.Store.Blocked(ctx, authpolicy.BlockKey(f.ip, c.IPv6Prefix), f.now)
		switch {
		case err != nil:
			return storeFailure(e, err)
		case !blocked:
			return pass("")
		}
		return outcome{reply: &c.Reply, reason: fmt.Sprintf("blocked until %s: %s", b.Until.UTC().Format("2006-01-02 15:04:05Z"), b.Reason),
			counters: map[string]int64{"failures": b.Count}}
	}
}

// R12: at most Max messages per SMTP session; the next MAIL (or RCPT) of the
// session gets the 421, which ends it. A new session may go on.
func messagesPerSession(c *config.Count) func(context.Context, *Engine, *facts) outcome {
	return func(_ context.Context, e *Engine, f *facts) outcome {
		if n := e.tracker.messages(f.session, f.now); n >= c.Max {
			return outcome{reply: &c.Reply, reason: fmt.Sprintf("%d messages in this session, at most %d", n, c.Max),
				counters: map[string]int64{"messages": int64(n)}}
		}
		return pass("")
	}
}

// R11: at most Max recipients per message; a repeated recipient counts once.
func recipientsPerMessage(c *config.Count) func(context.Context, *Engine, *facts) outcome {
	return func(_ context.Context, e *Engine, f *facts) outcome {
		n, has := e.tracker.recipients(f.instance, f.recipientKey(), f.now)
		if !has && n >= c.Max {
			return outcome{reply: &c.Reply, reason: fmt.Sprintf("%d recipients accepted, at most %d", n, c.Max),
				counters: map[string]int64{"recipients": int64(n)}}
		}
		return pass("")
	}
}

// rateLimits are R10's (key, limit) pairs for the request's subjects.
func rateLimits(c *config.Rate, f *facts) []limits.KeyLimit {
	if f.memo != nil && f.memo.rate != nil {
		return f.memo.rate
	}
	subjects := make([]string, 0, 2)
	if f.login != "" {
		subjects = append(subjects, subject.Key("r10", "account", subject.Account(f.login)))
	}
	if f.ipErr == nil {
		subjects = append(subjects, subject.Key("r10", "ip", subject.IP(f.ip, c.IPv6Prefix)))
	}
	kl := make([]limits.KeyLimit, 0, len(subjects)*len(c.Windows))
	for _, k := range subjects {
		for _, w := range c.Windows {
			kl = append(kl, limits.KeyLimit{Key: k, Limit: limits.Limit{Window: limits.Window{Length: w.Window, Buckets: c.Buckets}, Max: int64(w.Max)}})
		}
	}
	if f.memo != nil {
		f.memo.rate = kl
	}
	return kl
}

// refusal is the outcome of a limit the store refused.
func refusal(r *config.Rule, d limits.Decision, n int64) outcome {
	reason := fmt.Sprintf("%s: %d counted, %d more would pass %s", d.Refused.Key, d.Count, n, d.Refused.Limit)
	if !d.FreeAt.IsZero() {
		reason += ", frees at " + d.FreeAt.UTC().Format("2006-01-02 15:04:05Z")
	}
	return outcome{reply: &r.Reply, reason: reason, counters: map[string]int64{d.Refused.Key + " " + d.Refused.Limit.String(): d.Count}}
}

// R10 at RCPT: would this transaction, with this recipient, pass the limits?
// Nothing is counted yet: a refused or abandoned transaction costs nothing.
// R10 at END-OF-MESSAGE: count the message, once, if it still passes.
func rate(c *config.Rate) func(context.Context, *Engine, *facts) outcome {
	return func(ctx context.Context, e *Engine, f *facts) outcome {
		now := f.now
		n := int64(1)
		if f.stage == "RCPT" {
			if c.Unit == "recipients" {
				count, has := e.tracker.recipients(f.instance, f.recipientKey(), now)
				n = int64(count)
				if !has {
					n++
				}
			}
			d, err := e.deps.Store.Check(ctx, now, n, rateLimits(c, f)...)
			if err != nil {
				return storeFailure(e, err)
			}
			if !d.Allowed {
				return refusal(&c.Rule, d, n)
			}
			return pass("")
		}
		if e.tracker.committed(f.instance, f.now) {
			return pass("message already counted")
		}
		if c.Unit == "recipients" {
			// The distinct recipients counted at RCPT (Postfix's
			// recipient_count counts a repeated RCPT twice, and delivers it
			// once); recipient_count when the transaction began before a
			// restart.
			if count, _ := e.tracker.recipients(f.instance, "", now); count > 0 {
				n = int64(count)
			} else {
				n = max(1, int64(f.recipientCount))
			}
		}
		d, err := e.deps.Store.CheckAdd(ctx, now, n, rateLimits(c, f)...)
		if err != nil {
			return storeFailure(e, err)
		}
		if !d.Allowed {
			return refusal(&c.Rule, d, n)
		}
		return pass("counted " + strconv.FormatInt(n, 10))
	}
}

// R13: at most Max messages larger than Size to a destination group per
// window, per account and per client address. Counted at END-OF-MESSAGE,
// where the size is known, with the recipient domains the tracker saw. It is
// checked before R10 counts the message; if R10 then refuses it, this rule
// has counted one message too many, an error on the safe side.
func bigMessages(c *config.BigMessages) func(context.Context, *Engine, *facts) outcome {
	groups := make([][]string, len(c.Groups))
	for i, g := range c.Groups {
		for _, d := range g.Domains {
			if a, err := mailaddr.Domain(d); err == nil {
				groups[i] = append(groups[i], a)
			}
		}
	}
	return func(ctx context.Context, e *Engine, f *facts) outcome {
		if e.tracker.committed(f.instance, f.now) {
			return pass("message already counted")
		}
		domains := e.tracker.domains(f.instance, f.now)
		if f.recipient != "" {
			if d, err := domainOf(f.recipient); err == nil {
				domains = append(domains, d)
			}
		}
		for i, g := range c.Groups {
			if f.size <= g.Size || !anyIn(domains, groups[i]) {
				continue
			}
			var kl []limits.KeyLimit
			l := limits.Limit{Window: limits.Window{Length: g.Window, Buckets: c.Buckets}, Max: int64(g.Max)}
			if f.login != "" {
				kl = append(kl, limits.KeyLimit{Key: subject.Key("r13", "account", subject.Account(f.login)) + "|" + g.Name, Limit: l})
			}
			if f.ipErr == nil {
				kl = append(kl, limits.KeyLimit{Key: subject.Key("r13", "ip", subject.IP(f.ip, c.IPv6Prefix)) + "|" + g.Name, Limit: l})
			}
			d, err := e.deps.Store.CheckAdd(ctx, f.now, 1, kl...)
			if err != nil {
				return storeFailure(e, err)
			}
			if !d.Allowed {
				o := refusal(&c.Rule, d, 1)
				o.vars = []string{"group", g.Name}
				return o
			}
		}
		return pass("")
	}
}

func anyIn(domains, group []string) bool {
	for _, d := range domains {
		for _, g := range group {
			if d == g {
				return true
			}
		}
	}
	return false
}
