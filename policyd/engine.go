package policyd

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"relayguard/config"
	"relayguard/decisions"
	"relayguard/dnscheck"
	"relayguard/limits"
	"relayguard/reply"
)

// Resolver is what the DNS rules (R7, R8, R18) ask; *dnscheck.Checker is one.
type Resolver interface {
	Domain(ctx context.Context, domain string) dnscheck.Verdict
	DNSBL(ctx context.Context, zone string, ip netip.Addr) ([]netip.Addr, error)
}

// CountryReader maps an address to its country (R9); *geoip.Reader is one.
type CountryReader interface {
	Country(ip netip.Addr) (cc string, found bool, err error)
}

// Deps are the engine's dependencies, passed in so that tests can replace them.
type Deps struct {
	DNS       Resolver
	GeoIP     CountryReader // nil when R9 is off
	Store     limits.Store  // counters and blocks; nil when every counting rule is off
	Decisions decisions.Log // refusals by id, for `relayguard explain`; may be nil
	Log       *slog.Logger
	Now       func() time.Time // nil: time.Now
	NewID     func() string    // nil: NewID
}

// Engine turns a request into a decision: the rules of DESIGN.md evaluated
// against the request, the domain directory and the dependencies. It keeps
// no per-connection state and is safe for concurrent use.
type Engine struct {
	cfg     *config.Config
	dir     atomic.Pointer[config.Directory]
	deps    Deps
	rules   []*rule
	tracker *tracker
}

// NewEngine builds the engine from a checked configuration and directory.
func NewEngine(cfg *config.Config, dir *config.Directory, deps Deps) (*Engine, error) {
	if deps.DNS == nil {
		return nil, fmt.Errorf("policyd: no resolver")
	}
	if deps.GeoIP == nil && cfg.Rules.GeoIP.Mode != config.Off {
		return nil, fmt.Errorf("policyd: rule R9 geoip is %s but no GeoIP database is open", cfg.Rules.GeoIP.Mode)
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	if deps.NewID == nil {
		deps.NewID = NewID
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	e := &Engine{cfg: cfg, deps: deps, rules: rules(cfg), tracker: newTracker(cfg.ContentFilter.Mode == config.AfterQueue)}
	for _, r := range e.rules {
		if r.counts && r.cfg.Mode != config.Off && deps.Store == nil {
			return nil, fmt.Errorf("policyd: rule %s %s counts, but no store is open", r.id, r.name)
		}
	}
	e.dir.Store(dir)
	return e, nil
}

// Directory returns the domain directory in force.
func (e *Engine) Directory() *config.Directory { return e.dir.Load() }

// Spam counts a message the content filter judged spam against its sender
// (R15), found by the queue id or the client's address and port.
func (e *Engine) Spam(ctx context.Context, client netip.AddrPort, queueID string) (SpamReport, error) {
	who, ok := e.tracker.whoSent(keyOf(client), queueID, e.deps.Now())
	if !ok {
		who.ip = client.Addr()
	}
	spent, err := ReportSpam(ctx, e.deps.Store, &e.cfg.Rules.SpamAllowance, who.login, who.ip, e.deps.Now())
	return SpamReport{Login: who.login, Spent: spent}, err
}

// SetDirectory replaces the domain directory (on SIGHUP); requests already
// being decided finish with the old one.
func (e *Engine) SetDirectory(d *config.Directory) { e.dir.Store(d) }

// RuleStatus is one line of the start-up report.
type RuleStatus struct {
	ID, Name string
	Mode     config.Mode
	Why      string
}

// Status says what each rule will do and why, for the start-up log.
func (e *Engine) Status() []RuleStatus {
	var s []RuleStatus
	for _, r := range e.rules {
		why := "mode = " + string(r.cfg.Mode)
		if len(r.cfg.Exempt) > 0 {
			why += fmt.Sprintf(", %d exempt networks", len(r.cfg.Exempt))
		}
		s = append(s, RuleStatus{ID: r.id, Name: r.name, Mode: r.cfg.Mode, Why: why})
	}
	return s
}

const idAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// NewID returns a random 22-character transaction id (about 131 bits), the
// one a customer reads back to support from the reply line.
func NewID() string {
	var b [22]byte
	rand.Read(b[:])
	for i := range b {
		b[i] = idAlphabet[int(b[i])%len(idAlphabet)]
	}
	return string(b[:])
}

// Conn is the engine's side of one policy connection. An smtpd process
// serves one SMTP session at a time and sends the requests of a session in
// order on its one connection to the service; so a request of another
// session, or of another transaction, on a connection means that the
// previous one has ended, and the tracker forgets it at once. A Conn is used
// by one goroutine.
type Conn struct {
	e        *Engine
	session  session
	instance string // the transaction of the last request that had one
	started  bool
	facts    facts // of the request being decided
	read     bool  // facts are the last request's
	memo     memo
}

// NewConn returns the state of a new policy connection.
func (e *Engine) NewConn() *Conn { return &Conn{e: e} }

// Decide answers one request of the connection.
func (c *Conn) Decide(ctx context.Context, req *Request) string {
	return c.e.decide(ctx, req, c)
}

// Speak turns the action decided for the connection's last request into
// its answer, through v (see Voice).
func (c *Conn) Speak(v *Voice, action string) string {
	if !c.read {
		return action
	}
	return v.policy(c.facts.session, c.facts.stage, action)
}

// follow notes the session and transaction of a request, and forgets the
// ones that it shows have ended.
func (c *Conn) follow(f *facts) {
	switch {
	case !c.started:
		c.started = true
	case f.session != c.session:
		c.e.tracker.ended(c.session, c.instance)
		c.instance = ""
	case f.instance != "" && c.instance != "" && f.instance != c.instance:
		c.e.tracker.txEnded(c.instance)
	}
	c.session = f.session
	if f.instance != "" {
		c.instance = f.instance
	}
}

// Decide answers one request with its action ("DUNNO" or a reply line),
// outside any connection: nothing is forgotten before its time.
func (e *Engine) Decide(ctx context.Context, req *Request) string {
	return e.decide(ctx, req, nil)
}

func (e *Engine) decide(ctx context.Context, req *Request, c *Conn) (action string) {
	if c != nil {
		c.read = false
	}
	if t := req.Get("request"); t != "smtpd_access_policy" {
		e.deps.Log.Warn("unknown request type, answered DUNNO", "request", t)
		return "DUNNO"
	}
	var f *facts
	if c != nil {
		f = &c.facts
		f.read(req, e.deps.Now(), e.dir.Load(), &c.memo)
		c.read = true
		c.follow(f)
	} else {
		f = new(facts)
		f.read(req, e.deps.Now(), e.dir.Load(), nil)
	}
	defer func() {
		if p := recover(); p != nil {
			id := e.deps.NewID()
			action = e.cfg.Policyd.FailReply.Render("id", id)
			e.deps.Log.Error("internal error, answered a temporary failure", append(f.logAttrs(), "id", id, "panic", fmt.Sprint(p), "reply", action)...)
		}
	}()
	for _, r := range e.rules {
		if !r.stages[f.stage] || r.cfg.Mode == config.Off {
			continue
		}
		if f.ipErr == nil && r.cfg.Exempt.Contains(f.ip) {
			continue
		}
		o := r.check(ctx, e, f)
		if o.reply == nil {
			if o.reason != "" && e.deps.Log.Enabled(ctx, slog.LevelDebug) {
				e.deps.Log.Debug("pass", append(f.logAttrs(), "rule", r.id, "name", r.name, "reason", o.reason)...)
			}
			continue
		}
		line := e.refuse(ctx, r, f, o)
		if r.cfg.Mode == config.LogOnly {
			continue
		}
		return line
	}
	e.accepted(f)
	return "DUNNO"
}

// refuse renders, logs and records a refusal, and returns its reply line.
func (e *Engine) refuse(ctx context.Context, r *rule, f *facts, o outcome) string {
	id := e.deps.NewID()
	line := o.reply.Render(append(o.vars, "id", id, "ip", f.ipText(), "login", f.login, "sender", f.sender, "recipient", f.recipient)...)
	attrs := append(f.logAttrs(), "id", id, "rule", r.id, "name", r.name, "reason", o.reason, "reply", line)
	msg := "reject"
	if r.cfg.Mode == config.LogOnly {
		msg = "would reject (log-only)"
	}
	e.deps.Log.Info(msg, attrs...)
	if e.deps.Decisions != nil {
		rec := decisions.Record{
			ID: id, Time: f.now, Stage: f.stage, Rule: r.id, Name: r.name, Mode: string(r.cfg.Mode),
			Client: f.ipRaw, Login: f.login, Sender: f.sender, Recipient: f.recipient,
			Reason: o.reason, Reply: line, Counters: o.counters,
		}
		if err := e.deps.Decisions.Put(ctx, rec); err != nil {
			e.deps.Log.Warn("decision not recorded: it cannot be explained later", "id", id, "error", err)
		}
	}
	return line
}

// accepted records what an accepted request changes: a recipient joins its
// transaction; a message is counted once, in its session.
func (e *Engine) accepted(f *facts) {
	if f.stage == "MAIL" || f.stage == "END-OF-MESSAGE" {
		var ip netip.Addr
		if f.ipErr == nil {
			ip = f.ip
		}
		e.tracker.identify(f.session.client, f.queueID, f.login, ip, f.now)
	}
	switch f.stage {
	case "RCPT":
		if f.instance != "" && f.recipient != "" {
			d, _ := domainOf(f.recipient)
			e.tracker.addRecipient(f.instance, f.recipientKey(), d, f.now)
		}
	case "END-OF-MESSAGE":
		if f.instance != "" {
			e.tracker.commit(f.instance, f.session, f.now)
		}
	}
}

// outcome is what a rule check found: no reply means the rule passes.
type outcome struct {
	reply    *reply.Template
	vars     []string         // placeholder values, name then value
	reason   string           // for the log line
	counters map[string]int64 // what a counting rule counted, for `explain`
}

func pass(reason string) outcome { return outcome{reason: reason} }

// rule is one rule of DESIGN.md: where it runs, its configuration (mode,
// exempt networks, reply) and its check.
type rule struct {
	id, name string
	stages   map[string]bool
	cfg      *config.Rule
	counts   bool // needs the store
	check    func(ctx context.Context, e *Engine, f *facts) outcome
}

func stages(s ...string) map[string]bool {
	m := map[string]bool{}
	for _, x := range s {
		m[x] = true
	}
	return m
}
