package authpolicy

import (
	"context"
	"fmt"
	"time"

	"relayguard/config"
	"relayguard/decisions"
	"relayguard/limits"
	"relayguard/mailaddr"
	"relayguard/reply"
	"relayguard/subject"
)

// maxBuckets is how finely R4's window is cut: 60 buckets make a minute of
// the default hour. The count at t covers the failures since the start of
// the bucket one window before t, so a failure is remembered for the window
// and at most one bucket more (at most 61 minutes of an hour), and a
// password hash for at most the window. Memory does not limit the choice:
// R4's counter is reset when it blocks, so it never holds more than
// threshold non-empty buckets, and a hash key holds one.
const maxBuckets = 60

// buckets returns the number of buckets of w: the largest count up to
// maxBuckets that cuts w into equal whole nanoseconds (60 for any whole
// number of minutes, 50 or more for any whole number of seconds).
func buckets(w time.Duration) int {
	for n := maxBuckets; n > 1; n-- {
		if w%time.Duration(n) == 0 {
			return n
		}
	}
	return 1
}

// FailureLimit is R4's limit on an address's failure counter (BlockKey):
// threshold failures within the window.
func FailureLimit(f *config.AuthFailures) limits.Limit {
	return limits.Limit{Window: limits.Window{Length: f.Window, Buckets: buckets(f.Window)}, Max: int64(f.Threshold)}
}

// rule is one rule that allow checks.
type rule struct {
	id, name string
	cfg      *config.Rule
	check    func(ctx context.Context, r *request, now time.Time) (outcome, error)
}

// outcome is what a check found: no reply means the rule passes.
type outcome struct {
	reply    *reply.Template
	reason   string           // for the log line and the record
	counters map[string]int64 // what R4 counted, for `relayguard explain`
}

// allow answers command=allow: R4, then R2, then R3. It changes nothing but
// the log and the decisions, so Dovecot may ask twice for one login.
func (s *Server) allow(ctx context.Context, r *request) (response, error) {
	now := s.now()
	rules := []rule{
		{id: "R4", name: "auth_failures", cfg: &s.Failures.Rule, check: s.blocked},
		{id: "R2", name: "login_format", cfg: s.LoginFormat, check: s.loginFormat},
		{id: "R3", name: "account_disabled", cfg: s.AccountDisabled, check: s.accountDisabled},
	}
	for _, ru := range rules {
		if ru.cfg.Mode == config.Off || ru.cfg.Exempt.Contains(r.ip) {
			continue
		}
		o, err := ru.check(ctx, r, now)
		if err != nil {
			return response{}, fmt.Errorf("rule %s %s: %w", ru.id, ru.name, err)
		}
		if o.reply == nil {
			continue
		}
		msg := s.refuse(ctx, ru, r, o, now)
		if ru.cfg.Mode == config.LogOnly {
			continue
		}
		return response{Status: statusRefuse, Msg: msg}, nil
	}
	return response{Status: statusAllow}, nil
}

// refuse renders, logs and records a refusal, and returns its text: the
// reply without its codes, since Dovecot and Postfix add their own.
func (s *Server) refuse(ctx context.Context, ru rule, r *request, o outcome, now time.Time) string {
	id := s.NewID()
	msg := o.reply.Text("id", id, "ip", r.ip.String(), "login", r.Login)
	attrs := []any{"id", id, "stage", "AUTH", "rule", ru.id, "name", ru.name, "client", r.ip.String(),
		"login", r.Login, "protocol", r.Protocol, "reason", o.reason, "reply", msg}
	if r.SessionID != "" {
		attrs = append(attrs, "session", r.SessionID)
	}
	logMsg := "reject"
	if ru.cfg.Mode == config.LogOnly {
		logMsg = "would reject (log-only)"
	}
	s.log().Info(logMsg, attrs...)
	if s.Decisions != nil {
		rec := decisions.Record{
			ID: id, Time: now, Stage: "AUTH", Rule: ru.id, Name: ru.name, Mode: string(ru.cfg.Mode),
			Client: r.ip.String(), Login: r.Login, Reason: o.reason, Reply: msg, Counters: o.counters,
		}
		if err := s.Decisions.Put(ctx, rec); err != nil {
			s.log().Warn("decision not recorded: it cannot be explained later", "id", id, "error", err)
		}
	}
	return msg
}

// R4: an address blocked for failed authentications is refused before any
// password is checked.
func (s *Server) blocked(ctx context.Context, r *request, now time.Time) (outcome, error) {
	b, blocked, err := s.Store.Blocked(ctx, BlockKey(r.ip, s.Failures.IPv6Prefix), now)
	if err != nil || !blocked {
		return outcome{}, err
	}
	return outcome{reply: &s.Failures.Reply,
		reason:   fmt.Sprintf("blocked until %s: %s", b.Until.UTC().Format("2006-01-02 15:04:05Z"), b.Reason),
		counters: map[string]int64{"failures": b.Count}}, nil
}

// R2: the login must be a full e-mail address.
func (s *Server) loginFormat(_ context.Context, r *request, _ time.Time) (outcome, error) {
	if _, _, err := mailaddr.Split(r.Login); err != nil {
		return outcome{reply: &s.LoginFormat.Reply, reason: err.Error()}, nil
	}
	return outcome{}, nil
}

// R3: support can disable an account's SMTP access, in the directory or at
// run time.
func (s *Server) accountDisabled(ctx context.Context, r *request, _ time.Time) (outcome, error) {
	account := subject.Account(r.Login)
	if s.Directory != nil {
		if d := s.Directory(); d != nil {
			if a := d.Account(account); a != nil && a.Disabled {
				return outcome{reply: &s.AccountDisabled.Reply, reason: "account disabled in the directory"}, nil
			}
		}
	}
	if s.Disabled == nil {
		return outcome{}, nil
	}
	disabled, err := s.Disabled(ctx, account)
	if err != nil || !disabled {
		return outcome{}, err
	}
	return outcome{reply: &s.AccountDisabled.Reply, reason: "account disabled by support"}, nil
}

// report counts a wrong password for R4 (see the package comment); other
// reports count nothing.
func (s *Server) report(ctx context.Context, r *request) error {
	f := s.Failures
	if *r.Success || r.PolicyReject || f.Mode == config.Off || f.Exempt.Contains(r.ip) {
		return nil
	}
	now := s.now()
	n := buckets(f.Window)
	ipSubject := subject.IP(r.ip, f.IPv6Prefix)
	if f.Counting == "distinct-passwords" && r.PwHash != "" {
		// One bucket shorter than the window, in buckets of the same width:
		// the key expires when its bucket leaves this window, at most the
		// window after the hash was stored.
		seen := limits.Window{Length: f.Window - f.Window/time.Duration(n), Buckets: n - 1}
		key := subject.Key("r4", "password", ipSubject+"|"+r.PwHash)
		d, err := s.Store.CheckAdd(ctx, now, 1, limits.KeyLimit{Key: key, Limit: limits.Limit{Window: seen, Max: 1}})
		if err != nil {
			return err
		}
		if !d.Allowed {
			s.log().Debug("auth failure with a password already counted", "rule", "R4", "client", r.ip.String(), "login", r.Login)
			return nil
		}
	}
	key := BlockKey(r.ip, f.IPv6Prefix)
	d, err := s.Store.CheckAdd(ctx, now, 1, limits.KeyLimit{Key: key, Limit: FailureLimit(f)})
	if err != nil {
		return err
	}
	if d.Allowed {
		s.log().Debug("auth failure counted", "rule", "R4", "client", r.ip.String(), "login", r.Login, "failures", d.Counts[0])
		return nil
	}
	count := d.Count + 1
	until := now.Add(f.BlockFor)
	reason := fmt.Sprintf("%d failed authentications within %s", count, f.Window)
	if err := s.Store.Block(ctx, key, until, reason, count); err != nil {
		return err
	}
	if err := s.Store.Reset(ctx, key); err != nil {
		return err
	}
	logMsg := "block"
	if f.Mode == config.LogOnly {
		logMsg = "would block (log-only)"
	}
	s.log().Warn(logMsg, "rule", "R4", "name", "auth_failures", "client", r.ip.String(), "subject", ipSubject,
		"login", r.Login, "until", until, "reason", reason)
	return nil
}
