package policyd

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"relayguard/config"
	"relayguard/dnscheck"
	"relayguard/limits"
	"relayguard/mailaddr"
	"relayguard/subject"
)

// rules lists the rules in the order they are checked at each stage: cheap
// checks on the request first, then the directory, then GeoIP, then DNS,
// then the store.
func rules(c *config.Config) []*rule {
	r := &c.Rules
	listed, pbl := addrSet(r.SBL.Listed), addrSet(r.SBL.PBL)
	allowed := map[string]bool{}
	for _, cc := range r.GeoIP.AllowedCountries {
		allowed[cc] = true
	}
	return []*rule{
		{id: "R4", name: "auth_failures", stages: stages("CONNECT"), cfg: &r.AuthFailures.Rule, counts: true, check: authFailures(&r.AuthFailures)},
		{id: "R1", name: "auth_required", stages: stages("MAIL"), cfg: &r.AuthRequired, check: authRequired},
		{id: "R18", name: "sbl", stages: stages("CONNECT", "MAIL"), cfg: &r.SBL.Rule, check: sbl(&r.SBL, listed, pbl)},
		{id: "R15", name: "spam_allowance", stages: stages("MAIL", "RCPT"), cfg: &r.SpamAllowance.Rule, counts: true, check: spamAllowance(&r.SpamAllowance)},
		{id: "R12", name: "messages_per_session", stages: stages("MAIL", "RCPT"), cfg: &r.MessagesPerSession.Rule, check: messagesPerSession(&r.MessagesPerSession)},
		{id: "R2", name: "login_format", stages: stages("MAIL"), cfg: &r.LoginFormat, check: loginFormat},
		{id: "R3", name: "account_disabled", stages: stages("MAIL"), cfg: &r.AccountDisabled, check: accountDisabled},
		{id: "R5", name: "sender_domain", stages: stages("MAIL"), cfg: &r.SenderDomain.Rule, check: senderDomain(&r.SenderDomain)},
		{id: "R9", name: "geoip", stages: stages("MAIL"), cfg: &r.GeoIP.Rule, check: geoIP(&r.GeoIP, allowed)},
		{id: "R7", name: "sender_dns", stages: stages("MAIL"), cfg: &r.SenderDNS.Rule, check: senderDNS(&r.SenderDNS)},
		{id: "R11", name: "recipients_per_message", stages: stages("RCPT"), cfg: &r.RecipientsPerMessage.Rule, check: recipientsPerMessage(&r.RecipientsPerMessage)},
		{id: "R8", name: "recipient_dns", stages: stages("RCPT"), cfg: &r.RecipientDNS.Rule, check: recipientDNS(&r.RecipientDNS)},
		{id: "R13", name: "big_messages", stages: stages("END-OF-MESSAGE"), cfg: &r.BigMessages.Rule, counts: true, check: bigMessages(&r.BigMessages)},
		// R10 last: at END-OF-MESSAGE it counts the message, which must then be accepted.
		{id: "R10", name: "rate", stages: stages("RCPT", "END-OF-MESSAGE"), cfg: &r.Rate.Rule, counts: true, check: rate(&r.Rate)},
	}
}

func addrSet(list []string) map[netip.Addr]bool {
	m := map[netip.Addr]bool{}
	for _, s := range list {
		m[netip.MustParseAddr(s)] = true // checked by config
	}
	return m
}

// R1: SASL authentication is required on submission.
func authRequired(_ context.Context, e *Engine, f *facts) outcome {
	if f.login == "" {
		return outcome{reply: &e.cfg.Rules.AuthRequired.Reply, reason: "no SASL login"}
	}
	return pass("")
}

// R2: the login must be a full e-mail address.
func loginFormat(_ context.Context, e *Engine, f *facts) outcome {
	if f.login == "" {
		return pass("")
	}
	if _, _, err := mailaddr.Split(f.login); err != nil {
		return outcome{reply: &e.cfg.Rules.LoginFormat.Reply, vars: []string{"login", f.login}, reason: err.Error()}
	}
	return pass("")
}

// R3: support can disable an account's SMTP access, in the directory or
// with `relayguard account disable`.
func accountDisabled(ctx context.Context, e *Engine, f *facts) outcome {
	if f.login == "" {
		return pass("")
	}
	if a := f.account(); a != nil && a.Disabled {
		return outcome{reply: &e.cfg.Rules.AccountDisabled.Reply, reason: "account disabled in the directory"}
	}
	if e.deps.Store == nil {
		return pass("")
	}
	disabled, err := AccountDisabled(ctx, e.deps.Store, f.login, f.now)
	if err != nil {
		return storeFailure(e, err)
	}
	if disabled {
		return outcome{reply: &e.cfg.Rules.AccountDisabled.Reply, reason: "account disabled by support"}
	}
	return pass("")
}

// accountFlagKey is where `relayguard account disable` keeps its flag: a
// block without end in the store, so that every node sees it and it
// survives restarts.
func accountFlagKey(login string) string { return subject.Key("r3", "account", subject.Account(login)) }

// AccountDisabled reports whether support disabled the account in the store.
func AccountDisabled(ctx context.Context, s limits.Store, login string, now time.Time) (bool, error) {
	_, disabled, err := s.Blocked(ctx, accountFlagKey(login), now)
	return disabled, err
}

// SetAccountDisabled sets or clears support's flag on an account.
func SetAccountDisabled(ctx context.Context, s limits.Store, login string, disabled bool, now time.Time) error {
	if !disabled {
		_, err := s.Unblock(ctx, accountFlagKey(login))
		return err
	}
	return s.Block(ctx, accountFlagKey(login), now.AddDate(100, 0, 0), "SMTP access disabled by support", 0)
}

// R5: the sender's domain is the account's domain or one of its aliases
// (a third-level domain is a domain of its own); relaying foreign senders is
// forbidden even after AUTH. R6: from a webmail network, the account's
// alternative sender and external accounts are allowed too.
//
// The null sender <> carries no domain to compare. By default an
// authenticated account may use it (delivery and read receipts, vacation
// replies); every limit still counts against the account. null_sender =
// "reject" refuses it with this rule's reply.
func senderDomain(c *config.SenderDomain) func(context.Context, *Engine, *facts) outcome {
	return func(_ context.Context, _ *Engine, f *facts) outcome {
		reject := func(reason string) outcome {
			d, _ := domainOf(f.sender)
			return outcome{reply: &c.Reply, vars: []string{"sender", f.sender, "login", f.login, "domain", d}, reason: reason}
		}
		if f.login == "" {
			return pass("unauthenticated: nothing to compare")
		}
		if f.sender == "" {
			if c.NullSender == "accept" {
				return pass("null sender accepted")
			}
			return reject("null sender refused (null_sender = reject)")
		}
		loginDomain, err := domainOf(f.login)
		if err != nil {
			return reject("login is not a full address: " + err.Error())
		}
		sd, err := domainOf(f.sender)
		if err != nil {
			return reject("sender: " + err.Error())
		}
		if f.dir.SameOwner(loginDomain, sd) {
			return pass("sender domain " + sd + " belongs to " + loginDomain)
		}
		if f.ipErr == nil && f.dir.Webmail(f.ip) {
			if a := f.account(); a != nil {
				if n, err := mailaddr.Normalize(f.sender); err == nil {
					if _, ok := a.Webmail[n]; ok {
						return pass("webmail alternative sender of " + a.Address + " (R6)")
					}
				}
			}
		}
		return reject(fmt.Sprintf("sender domain %s is not %s or an alias of it", sd, loginDomain))
	}
}

// R9: the client's country must be allowed: the default list plus the
// countries granted to the sender's domain. Webmail is exempt (R6).
func geoIP(c *config.GeoIP, allowed map[string]bool) func(context.Context, *Engine, *facts) outcome {
	return func(_ context.Context, e *Engine, f *facts) outcome {
		if f.ipErr == nil && f.dir.Webmail(f.ip) {
			return pass("webmail network: exempt (R6)")
		}
		addr := f.sender
		if addr == "" {
			addr = f.login
		}
		domain, _ := domainOf(addr)
		reject := func(cc, reason string) outcome {
			return outcome{reply: &c.Reply, vars: []string{"sender", f.sender, "login", f.login, "domain", domain, "country", cc}, reason: reason}
		}
		var cc string
		found := false
		if f.ipErr == nil {
			var err error
			cc, found, err = e.deps.GeoIP.Country(f.ip)
			if err != nil {
				return outcome{reply: &e.cfg.Policyd.FailReply, reason: "GeoIP lookup: " + err.Error()}
			}
		}
		if !found {
			if c.Unknown == "allow" {
				return pass("address not in the GeoIP database: allowed (unknown = allow)")
			}
			return reject("--", "address not in the GeoIP database (unknown = reject)")
		}
		if allowed[cc] {
			return pass("country " + cc + " allowed")
		}
		if g := f.dir.Group(domain); g != nil {
			for _, x := range g.Countries {
				if x == cc {
					return pass("country " + cc + " granted to " + g.Name)
				}
			}
		}
		return reject(cc, "country "+cc+" not allowed for "+domain)
	}
}

// dnsOutcome maps a domain check to the rule's replies: permanent for a
// domain without usable MX, A or AAAA records, temporary for a DNS failure.
func dnsOutcome(c *config.DomainDNS, v dnscheck.Verdict, vars []string) outcome {
	switch v.Result {
	case dnscheck.Valid:
		return pass(v.Reason)
	case dnscheck.Invalid:
		return outcome{reply: &c.Reply, vars: vars, reason: v.Reason}
	default:
		return outcome{reply: &c.TempfailReply, vars: vars, reason: v.Reason}
	}
}

// R7: the sender's domain must have a valid MX or A/AAAA record.
func senderDNS(c *config.DomainDNS) func(context.Context, *Engine, *facts) outcome {
	return func(ctx context.Context, e *Engine, f *facts) outcome {
		if f.sender == "" {
			return pass("null sender: no domain")
		}
		d, err := domainOf(f.sender)
		if err != nil {
			return outcome{reply: &c.Reply, vars: []string{"sender", f.sender}, reason: err.Error()}
		}
		v := e.deps.DNS.Domain(ctx, d)
		if v.Result == dnscheck.Valid {
			return pass(v.Reason)
		}
		return dnsOutcome(c, v, []string{"sender", f.sender, "domain", d})
	}
}

// R8: the recipient's domain must have a valid MX or A/AAAA record.
func recipientDNS(c *config.DomainDNS) func(context.Context, *Engine, *facts) outcome {
	return func(ctx context.Context, e *Engine, f *facts) outcome {
		d, err := domainOf(f.recipient)
		if err != nil {
			return outcome{reply: &c.Reply, vars: []string{"sender", f.sender, "recipient", f.recipient}, reason: err.Error()}
		}
		v := e.deps.DNS.Domain(ctx, d)
		if v.Result == dnscheck.Valid {
			return pass(v.Reason)
		}
		return dnsOutcome(c, v, []string{"sender", f.sender, "recipient", f.recipient, "domain", d})
	}
}

// R18: the client must not be listed on Spamhaus SBL. Which answers count as
// a listing is configured (SBL's 127.0.0.2, .3 and .9 by default). PBL answers
// (127.0.0.10, .11, returned by zen) list the end-user ranges customers send
// from: they never refuse an authenticated submission, so they count only at
// MAIL for a client that did not authenticate. 127.255.255.x answers are
// errors of the query (RFC 5782 §2.1 leaves them to the list; Spamhaus uses
// them for refused or malformed queries): logged loudly, never a refusal.
func sbl(c *config.SBL, listed, pbl map[netip.Addr]bool) func(context.Context, *Engine, *facts) outcome {
	return func(ctx context.Context, e *Engine, f *facts) outcome {
		if f.ipErr != nil {
			return pass("client address is not an IP address")
		}
		answers, err := e.deps.DNS.DNSBL(ctx, c.Zone, f.ip)
		if err != nil {
			if c.Fail == "closed" {
				return outcome{reply: &c.TempfailReply, reason: "DNSBL " + c.Zone + ": " + err.Error() + " (fail = closed)"}
			}
			e.deps.Log.Warn("DNSBL lookup failed, client not checked (fail = open)", "zone", c.Zone, "client", f.ipRaw, "error", err)
			return pass("")
		}
		var hit []string
		for _, a := range answers {
			b := a.As4()
			switch {
			case !a.Is4():
				e.deps.Log.Error("DNSBL answered a non-IPv4 address, ignored", "zone", c.Zone, "client", f.ipRaw, "answer", a)
			case b[0] == 127 && b[1] == 255 && b[2] == 255:
				e.deps.Log.Error("DNSBL answered an error code, not a listing: check the zone, the key and the resolver",
					"zone", c.Zone, "client", f.ipRaw, "answer", a)
			case listed[a]:
				hit = append(hit, a.String())
			case pbl[a] && f.stage == "MAIL" && f.login == "":
				hit = append(hit, a.String()+" (PBL, unauthenticated)")
			case pbl[a]:
				e.deps.Log.Debug("PBL answer: an end-user range, not refused", "zone", c.Zone, "client", f.ipRaw, "answer", a)
			default:
				e.deps.Log.Info("DNSBL answer not counted as a listing", "zone", c.Zone, "client", f.ipRaw, "answer", a)
			}
		}
		if len(hit) > 0 {
			return outcome{reply: &c.Reply, reason: "listed in " + c.Zone + ": " + strings.Join(hit, ", ")}
		}
		return pass("")
	}
}
