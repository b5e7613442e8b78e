package policyd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"relayguard/admin"
	"relayguard/authpolicy"
	"relayguard/config"
	"relayguard/decisions"
	"relayguard/limits"
	"relayguard/subject"
)

// Support is what the support desk's API (admin) serves: the store and the
// decisions, read and changed as the rules read them.
type Support struct {
	Engine    *Engine
	Config    *config.Config
	Store     limits.Store
	Decisions decisions.Log
	Now       func() time.Time
	// Voice, when not nil, lets the before-queue filter speak
	// END-OF-MESSAGE replies.
	Voice *Voice
}

var _ admin.Backend = (*Support)(nil)

// Blocks returns every block in force: addresses (R4 and support's), and
// accounts disabled by support (R3).
func (s *Support) Blocks(ctx context.Context) ([]limits.Block, error) {
	return s.Store.ListBlocks(ctx, s.Now(), "")
}

// r4Key is the key of an address's R4 block and failure counter.
func (s *Support) r4Key(ip netip.Addr) string {
	return authpolicy.BlockKey(ip, s.Config.Rules.AuthFailures.IPv6Prefix)
}

// Unblock lifts the blocks of an address (R4's, which support's Block
// makes too, and R15's) or of an account (R15's), and forgets the counts
// behind them (failed authentications, spam messages): the next typo or
// spam message does not block again at once. It returns the blocks that
// were in force. An account's R3 flag is never lifted here, only reported:
// SetAccountDisabled gives the access back.
func (s *Support) Unblock(ctx context.Context, subj admin.Subject) ([]limits.Block, bool, error) {
	r := &s.Config.Rules
	var keys []string
	switch {
	case subj.Account != "":
		keys = spamKeys(&r.SpamAllowance, subj.Account, netip.Addr{})
	case subj.IP.IsValid():
		keys = append([]string{s.r4Key(subj.IP)}, spamKeys(&r.SpamAllowance, "", subj.IP)...)
	default:
		return nil, false, errors.New("unblock: neither an account nor an address")
	}
	now := s.Now()
	var lifted []limits.Block
	for _, key := range keys {
		b, blocked, err := s.Store.Blocked(ctx, key, now)
		if err != nil {
			return nil, false, err
		}
		if blocked {
			lifted = append(lifted, b)
		}
		// An expired block, which the store keeps until its clean-up,
		// goes too, unreported.
		if _, err := s.Store.Unblock(ctx, key); err != nil {
			return nil, false, err
		}
		if err := s.Store.Reset(ctx, key); err != nil {
			return nil, false, err
		}
	}
	if subj.Account == "" {
		return lifted, false, nil
	}
	disabled, err := AccountDisabled(ctx, s.Store, subj.Account, now)
	return lifted, disabled, err
}

// Block refuses an address at connect (R4's reply) for d.
func (s *Support) Block(ctx context.Context, ip netip.Addr, d time.Duration, reason string) (limits.Block, error) {
	key := s.r4Key(ip)
	b := limits.Block{Key: key, Until: s.Now().Add(d), Reason: reason}
	return b, s.Store.Block(ctx, key, b.Until, reason, 0)
}

// SetAccountDisabled sets support's R3 flag.
func (s *Support) SetAccountDisabled(ctx context.Context, account string, disabled bool) error {
	return SetAccountDisabled(ctx, s.Store, account, disabled, s.Now())
}

// Usage returns each limit on an account or an address: used, limit, and
// when a full one frees up.
func (s *Support) Usage(ctx context.Context, subj string) ([]admin.UsageLine, error) {
	r := &s.Config.Rules
	type counter struct {
		rule, subject, key string
		limit              limits.Limit
	}
	var cs []counter
	rateWindows := func(key, shown string) {
		for _, w := range r.Rate.Windows {
			cs = append(cs, counter{"R10", shown, key, limits.Limit{Window: limits.Window{Length: w.Window, Buckets: r.Rate.Buckets}, Max: int64(w.Max)}})
		}
	}
	bigGroups := func(kind, shown string) {
		for _, g := range r.BigMessages.Groups {
			cs = append(cs, counter{"R13", shown + " to " + g.Name, subject.Key("r13", kind, shown) + "|" + g.Name,
				limits.Limit{Window: limits.Window{Length: g.Window, Buckets: r.BigMessages.Buckets}, Max: int64(g.Max)}})
		}
	}
	spam := func(key, shown string) {
		cs = append(cs, counter{"R15", shown, key, spamLimit(&r.SpamAllowance)})
	}
	if strings.Contains(subj, "@") {
		a := subject.Account(subj)
		rateWindows(subject.Key("r10", "account", a), a)
		bigGroups("account", a)
		spam(subject.Key("r15", "account", a), a)
	} else {
		ip, err := admin.ParseIP(subj)
		if err != nil {
			return nil, err
		}
		shown := subject.IP(ip, r.Rate.IPv6Prefix)
		rateWindows(subject.Key("r10", "ip", shown), shown)
		bigGroups("ip", subject.IP(ip, r.BigMessages.IPv6Prefix))
		spamIP := subject.IP(ip, r.SpamAllowance.IPv6Prefix)
		spam(subject.Key("r15", "ip", spamIP), spamIP)
		a := &r.AuthFailures
		cs = append(cs, counter{"R4", subject.IP(ip, a.IPv6Prefix), s.r4Key(ip), authpolicy.FailureLimit(a)})
	}
	now := s.Now()
	lines := make([]admin.UsageLine, 0, len(cs))
	for _, c := range cs {
		used, freeAt, err := s.Store.Get(ctx, now, c.key, c.limit)
		if err != nil {
			return nil, fmt.Errorf("usage of %s: %w", c.key, err)
		}
		l := admin.UsageLine{Rule: c.rule, Subject: c.subject, Window: shortDuration(c.limit.Length), Used: used, Limit: c.limit.Max}
		if freeAt.After(now) {
			l.FreesAt = freeAt
		}
		lines = append(lines, l)
	}
	return lines, nil
}

// shortDuration prints 1m, 3m, 1h, 24h rather than 1m0s, 3m0s, 1h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	s = strings.TrimSuffix(s, "0s")
	return strings.TrimSuffix(s, "0m")
}

// Spam counts a spam message against its sender (R15).
func (s *Support) Spam(ctx context.Context, client netip.AddrPort, queueID string) (admin.SpamReport, error) {
	r, err := s.Engine.Spam(ctx, client, queueID)
	return admin.SpamReport{Login: r.Login, Spent: r.Spent}, err
}

// Filtering notes a transaction that the before-queue filter carries.
func (s *Support) Filtering(_ context.Context, client netip.AddrPort) error {
	if s.Voice != nil {
		s.Voice.Filtering(client)
	}
	return nil
}

// EndOfMessage returns the END-OF-MESSAGE reply left for the filter.
func (s *Support) EndOfMessage(_ context.Context, client netip.AddrPort) (string, error) {
	if s.Voice == nil {
		return "", nil
	}
	return s.Voice.EndOfMessage(client), nil
}

// Explain returns the decision with a reply id.
func (s *Support) Explain(ctx context.Context, id string) (decisions.Record, bool, error) {
	return s.Decisions.Get(ctx, id)
}
