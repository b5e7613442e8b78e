package contentfilter

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"relayguard/admin"
	"relayguard/attachments"
	"relayguard/config"
	"relayguard/scan/clamd"
	"relayguard/scan/rspamd"
)

// Checks are the filter's rules, in order: R17 (banned attachments, local
// and cheap), R16 (viruses, clamd), then spam (rspamd). Each has its mode
// and exempt networks; a scanner that gives no verdict follows its fail
// mode, written in the configuration.
type Checks struct {
	Config      *config.ContentFilter
	Attachments *attachments.Inspector
	Clamd       *clamd.Client
	Rspamd      *rspamd.Client
	Threshold   rspamd.Action
	// Reporter counts spam against its sender in policyd (R15): nil to
	// only tag spam.
	Reporter SpamReporter
	// Replies, before the queue, is policyd's END-OF-MESSAGE decision
	// (R13, R10), which the filter speaks: nil when policyd speaks it
	// through the policy protocol, prefixed by Postfix.
	Replies EndOfMessageReplies
	NewID   func() string
	Log     *slog.Logger
}

// SpamReporter is policyd's admin API, as the filter uses it.
type SpamReporter interface {
	Spam(ctx context.Context, client netip.AddrPort, queueID string) (admin.SpamReport, error)
}

// EndOfMessageReplies is policyd's admin API, as the filter speaks its
// END-OF-MESSAGE replies: Postfix asks policyd about the end of data before
// it sends the end of data to the filter, so policyd leaves the reply of a
// transaction the filter announced for the filter to give word for word.
type EndOfMessageReplies interface {
	Filtering(ctx context.Context, client netip.AddrPort) error
	EndOfMessage(ctx context.Context, client netip.AddrPort) (string, error)
}

// NewChecks builds the checks a configuration asks for.
func NewChecks(c *config.ContentFilter, newID func() string, log *slog.Logger) (*Checks, error) {
	k := &Checks{Config: c, NewID: newID, Log: log}
	r := &c.Rules
	var err error
	if r.Attachments.Mode != config.Off {
		if k.Attachments, err = attachments.NewInspector(r.Attachments.Extensions); err != nil {
			return nil, err
		}
	}
	if r.Virus.Mode != config.Off {
		network := "tcp"
		if strings.HasPrefix(r.Virus.Clamd, "/") {
			network = "unix"
		}
		k.Clamd = &clamd.Client{Network: network, Address: r.Virus.Clamd, Timeout: r.Virus.Timeout, MaxStream: int64(r.Virus.MaxStream)}
	}
	if r.Spam.Mode != config.Off {
		if k.Threshold, err = rspamd.ParseAction(r.Spam.Threshold); err != nil {
			return nil, err
		}
		k.Rspamd = &rspamd.Client{URL: r.Spam.Rspamd, Timeout: r.Spam.Timeout}
	}
	return k, nil
}

// spent reports a spam message to policyd and says whether its sender's
// allowance is spent. Without an answer the message passes, tagged.
func (k *Checks) spent(ctx context.Context, m *Message, logAttrs []any) bool {
	if k.Reporter == nil {
		return false
	}
	client, err := netip.ParseAddrPort(net.JoinHostPort(m.ClientAddr, m.ClientPort))
	if err != nil {
		k.Log.Warn("spam not reported: the client's address and port are unknown", logAttrs...)
		return false
	}
	rep, err := k.Reporter.Spam(ctx, client, m.Ident)
	if err != nil {
		k.Log.Warn("spam not reported to policyd, the message passes tagged", append(logAttrs, "error", err)...)
		return false
	}
	k.Log.Info("spam reported", append(logAttrs, "login", rep.Login, "spent", rep.Spent)...)
	return rep.Spent
}

// Begin announces a transaction to policyd, before the filter accepts its
// MAIL command. If policyd does not hear it, it gives its END-OF-MESSAGE
// reply itself, prefixed by Postfix: nothing passes unjudged.
func (k *Checks) Begin(ctx context.Context, clientAddr, clientPort string) {
	if k.Replies == nil || k.Config.Mode == config.AfterQueue {
		return
	}
	client, err := netip.ParseAddrPort(net.JoinHostPort(clientAddr, clientPort))
	if err != nil {
		return
	}
	if err := k.Replies.Filtering(ctx, client); err != nil {
		k.Log.Warn("policyd not told of the transaction: it will give its END-OF-MESSAGE reply itself, prefixed by Postfix",
			"client", clientAddr, "port", clientPort, "error", err)
	}
}

// endOfMessage asks policyd for the END-OF-MESSAGE reply of a transaction
// it was told of: "" when the message may go on to the filter's checks.
func (k *Checks) endOfMessage(ctx context.Context, m *Message) (string, error) {
	if k.Replies == nil || k.Config.Mode == config.AfterQueue {
		return "", nil
	}
	client, err := netip.ParseAddrPort(net.JoinHostPort(m.ClientAddr, m.ClientPort))
	if err != nil {
		return "", nil
	}
	return k.Replies.EndOfMessage(ctx, client)
}

// applies reports whether a rule runs for the message's client.
func applies(r *config.Rule, m *Message) bool {
	if r.Mode == config.Off {
		return false
	}
	ip, err := netip.ParseAddr(m.ClientAddr)
	return err != nil || !r.Exempt.Contains(ip)
}

// Check runs the rules on a message.
func (k *Checks) Check(ctx context.Context, m *Message) Verdict {
	r := &k.Config.Rules
	logAttrs := []any{"client", m.ClientAddr, "port", m.ClientPort, "ident", m.Ident, "sender", m.Sender, "size", m.Spool.Size()}
	refuse := func(rule *config.Rule, id, reason string, vars ...string) (Verdict, bool) {
		line := rule.Reply.Render(append(vars, "id", id, "ip", m.ClientAddr)...)
		if rule.Mode == config.LogOnly {
			k.Log.Info("would reject (log-only)", append(logAttrs, "id", id, "reason", reason, "reply", line)...)
			return Verdict{}, false
		}
		k.Log.Info("reject", append(logAttrs, "id", id, "reason", reason, "reply", line)...)
		return Verdict{Reply: line}, true
	}
	tempfail := func(what string, err error) Verdict {
		id := k.NewID()
		line := k.Config.TempfailReply.Render("id", id, "ip", m.ClientAddr)
		k.Log.Warn("no verdict, Postfix keeps the message (fail = tempfail)", append(logAttrs, "id", id, "check", what, "error", err, "reply", line)...)
		return Verdict{Reply: line}
	}

	switch line, err := k.endOfMessage(ctx, m); {
	case err != nil:
		return tempfail("policyd", err)
	case line != "":
		k.Log.Info("reject: policyd's END-OF-MESSAGE decision", append(logAttrs, "reply", line)...)
		return Verdict{Reply: line}
	}

	if k.Attachments != nil && applies(&r.Attachments.Rule, m) {
		res, err := k.Attachments.Inspect(m.Spool.Reader())
		if err != nil {
			return tempfail("attachments", err)
		}
		if len(res.Problems) > 0 {
			k.Log.Warn("MIME damaged, judged on what could be parsed", append(logAttrs, "problems", strings.Join(res.Problems, "; "))...)
		}
		if len(res.Banned) > 0 {
			f := res.Banned[0]
			if v, ok := refuse(&r.Attachments.Rule, k.NewID(), "R17 banned attachment "+f.Name+" ("+f.Path+")", "name", f.Name); ok {
				return v
			}
		}
	}

	if k.Clamd != nil && applies(&r.Virus.Rule, m) {
		res, err := k.Clamd.Scan(ctx, m.Spool.Reader())
		switch {
		case err != nil && r.Virus.Fail == "tempfail":
			return tempfail("clamd", err)
		case err != nil:
			k.Log.Warn("clamd gave no verdict, message passes unscanned (fail = accept)", append(logAttrs, "error", err)...)
		case res.Infected:
			if v, ok := refuse(&r.Virus.Rule, k.NewID(), "R16 virus "+res.Signature, "virus", res.Signature); ok {
				return v
			}
		case res.TooLarge:
			k.Log.Warn("message longer than clamd's stream limit: scanned in part", append(logAttrs, "max_stream", r.Virus.MaxStream)...)
		}
	}

	var v Verdict
	if k.Rspamd != nil && applies(&r.Spam.Rule, m) {
		if m.Spool.Size() > int64(r.Spam.MaxSize) {
			k.Log.Info("message not scanned for spam: larger than max_size", logAttrs...)
			return v
		}
		meta := rspamd.Meta{Helo: m.Helo, From: m.Sender, Rcpt: m.Recipients, QueueID: m.Ident}
		if ip, err := netip.ParseAddr(m.ClientAddr); err == nil {
			meta.IP = ip
		}
		verdict, err := k.Rspamd.Check(ctx, m.Spool.Reader(), m.Spool.Size(), meta)
		switch {
		case err != nil && r.Spam.Fail == "tempfail":
			return tempfail("rspamd", err)
		case err != nil:
			k.Log.Warn("rspamd gave no verdict, message passes (fail = accept)", append(logAttrs, "error", err)...)
		case verdict.Spam(k.Threshold):
			k.Log.Info("spam", append(logAttrs, "action", string(verdict.Action), "score", verdict.Score, "symbols", strings.Join(verdict.Symbols, ","))...)
			if k.spent(ctx, m, logAttrs) {
				if v, ok := refuse(&r.Spam.Rule, k.NewID(), "R15 spam past the daily allowance"); ok {
					return v
				}
			}
			if r.Spam.Header != "" && r.Spam.Mode == config.Enforce {
				v.Headers = append(v.Headers, r.Spam.Header)
			}
		}
	}
	return v
}
