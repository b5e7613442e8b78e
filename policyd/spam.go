package policyd

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"relayguard/config"
	"relayguard/limits"
	"relayguard/subject"
)

// R15: the content filter reports each message it judges spam; an account
// and a client address may send allowance of them per window, and past it
// all their mail is refused until the block ends.

func spamKeys(c *config.SpamAllowance, login string, ip netip.Addr) []string {
	var keys []string
	if login != "" {
		keys = append(keys, subject.Key("r15", "account", subject.Account(login)))
	}
	if ip.IsValid() {
		keys = append(keys, subject.Key("r15", "ip", subject.IP(ip, c.IPv6Prefix)))
	}
	return keys
}

// spamAllowance refuses, at MAIL and RCPT, an account or address whose
// allowance is spent.
func spamAllowance(c *config.SpamAllowance) func(context.Context, *Engine, *facts) outcome {
	return func(ctx context.Context, e *Engine, f *facts) outcome {
		var keys []string
		if f.memo != nil && f.memo.spam != nil {
			keys = f.memo.spam
		} else {
			var ip netip.Addr
			if f.ipErr == nil {
				ip = f.ip
			}
			keys = spamKeys(c, f.login, ip)
			if f.memo != nil {
				f.memo.spam = keys
			}
		}
		for _, key := range keys {
			b, blocked, err := e.deps.Store.Blocked(ctx, key, f.now)
			if err != nil {
				return storeFailure(e, err)
			}
			if blocked {
				return outcome{reply: &c.Reply, reason: fmt.Sprintf("%s blocked until %s: %s", key, b.Until.UTC().Format("2006-01-02 15:04:05Z"), b.Reason),
					counters: map[string]int64{"spam": b.Count}}
			}
		}
		return pass("")
	}
}

// SpamReport is what policyd answers the filter about a spam message.
type SpamReport struct {
	Login string // the account that sent it, "" when unknown
	Spent bool   // the allowance is spent: refuse the message
}

// spamLimit is the allowance of one subject.
func spamLimit(c *config.SpamAllowance) limits.Limit {
	return limits.Limit{Window: limits.Window{Length: c.Window, Buckets: 24}, Max: int64(c.Allowance)}
}

// ReportSpam counts a spam message against the account and against the
// address, each on its own, and blocks each one whose allowance is spent:
// an account's spam spends the allowance of a shared address (an office's
// NAT, a webmail) only as far as that address's own count goes.
func ReportSpam(ctx context.Context, s limits.Store, c *config.SpamAllowance, login string, ip netip.Addr, now time.Time) (bool, error) {
	if c.Mode == config.Off || (ip.IsValid() && c.Exempt.Contains(ip)) {
		return false, nil
	}
	reason := fmt.Sprintf("spam allowance of %d per %s spent", c.Allowance, c.Window)
	spent := false
	for _, k := range spamKeys(c, login, ip) {
		d, err := s.CheckAdd(ctx, now, 1, limits.KeyLimit{Key: k, Limit: spamLimit(c)})
		if err != nil {
			return false, err
		}
		if d.Allowed {
			continue
		}
		if err := s.Block(ctx, k, now.Add(c.BlockFor), reason, d.Count+1); err != nil {
			return false, err
		}
		spent = true
	}
	return spent && c.Mode == config.Enforce, nil
}
