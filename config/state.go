package config

import (
	"fmt"
	"os/user"
	"strings"
	"time"

	"relayguard/reply"
)

// The configuration of policyd's state: the store, the admin API, Dovecot's
// auth policy service, and the counting rules (R4, R10-R13).

// Store is where counters, blocks and decisions live.
type Store struct {
	Backend       string        `toml:"backend"` // "badger"
	Dir           string        `toml:"dir"`
	FlushInterval time.Duration `toml:"flush_interval"`
	GCInterval    time.Duration `toml:"gc_interval"`
}

// Admin is the support desk's API, on a unix socket only.
type Admin struct {
	Socket            string        `toml:"socket"`
	SocketMode        string        `toml:"socket_mode"`
	SocketGroup       string        `toml:"socket_group"`
	DecisionRetention time.Duration `toml:"decision_retention"`
}

// AuthPolicy is the HTTP service Dovecot's auth_policy_server_url points at.
type AuthPolicy struct {
	Listen    string `toml:"listen"`
	APIHeader string `toml:"api_header"`
	APIKey    string `toml:"api_key"`
}

// AuthFailures is R4: too many failed authentications from one address.
type AuthFailures struct {
	Rule
	Threshold  int           `toml:"threshold"` // refused past this many failures
	Window     time.Duration `toml:"window"`
	BlockFor   time.Duration `toml:"block_for"`
	Counting   string        `toml:"counting"` // "attempts" or "distinct-passwords"
	IPv6Prefix int           `toml:"ipv6_prefix"`
}

// RateWindow is one window of R10.
type RateWindow struct {
	Window time.Duration `toml:"window"`
	Max    int           `toml:"max"`
}

// Rate is R10: per account and per client address.
type Rate struct {
	Rule
	Unit       string       `toml:"unit"` // "recipients" or "messages"
	Windows    []RateWindow `toml:"windows"`
	Buckets    int          `toml:"buckets"`
	IPv6Prefix int          `toml:"ipv6_prefix"`
}

// Count is R11 and R12: a maximum per message or per session.
type Count struct {
	Rule
	Max int `toml:"max"`
}

// DomainGroup is one destination group of R13.
type DomainGroup struct {
	Name    string        `toml:"name"`
	Domains []string      `toml:"domains"`
	Size    int           `toml:"size"` // bytes: a message larger than this is big
	Max     int           `toml:"max"`
	Window  time.Duration `toml:"window"`
}

// BigMessages is R13.
type BigMessages struct {
	Rule
	Groups     []DomainGroup `toml:"groups"`
	Buckets    int           `toml:"buckets"`
	IPv6Prefix int           `toml:"ipv6_prefix"`
}

func defaultState(c *Config) {
	c.Store = Store{Backend: "badger", Dir: "/var/lib/relayguard/state", FlushInterval: time.Second, GCInterval: 10 * time.Minute}
	c.Admin = Admin{Socket: "/run/relayguard/admin.sock", SocketMode: "0660", DecisionRetention: 7 * 24 * time.Hour}
	c.AuthPolicy = AuthPolicy{Listen: "127.0.0.1:10042", APIHeader: "X-API-Key"}
	c.Rules.AuthFailures = AuthFailures{
		Rule:      rule("421 4.7.0 {id} Connection refused from {ip}. Too many authorization failures from this IP, try again later."),
		Threshold: 10, Window: time.Hour, BlockFor: time.Hour, Counting: "attempts", IPv6Prefix: 64,
	}
	c.Rules.Rate = Rate{
		Rule: rule("450 4.7.1 {id} policy violation"),
		Unit: "recipients",
		Windows: []RateWindow{
			{Window: time.Minute, Max: 250},
			{Window: time.Hour, Max: 1000},
			{Window: 24 * time.Hour, Max: 20000},
		},
		Buckets: 60, IPv6Prefix: 64,
	}
	c.Rules.SpamAllowance = SpamAllowance{Rule: rule("550 5.7.1 {id} policy violation"), Allowance: 10,
		Window: 24 * time.Hour, BlockFor: 24 * time.Hour, IPv6Prefix: 64}
	c.Rules.RecipientsPerMessage = Count{Rule: rule("452 4.5.3 {id} too many recipients"), Max: 250}
	c.Rules.MessagesPerSession = Count{Rule: rule("421 4.7.0 {id} too many messages per session, try again later"), Max: 250}
	c.Rules.BigMessages = BigMessages{
		Rule: rule("450 4.7.1 {id} too many big messages to {group}"),
		Groups: []DomainGroup{{
			Name: "Seznam.cz", Domains: []string{"seznam.cz", "email.cz", "post.cz"},
			Size: 1000000, Max: 30, Window: 3 * time.Minute,
		}},
		Buckets: 30, IPv6Prefix: 64,
	}
}

func (c *Config) validateState(d *doc) {
	oneOf(d, "store.backend", c.Store.Backend, "badger")
	if c.Store.Backend == "badger" && c.Store.Dir == "" {
		d.errorf("store.dir", "required: the directory of the embedded store")
	}
	positive(d, "store.flush_interval", c.Store.FlushInterval)
	positive(d, "store.gc_interval", c.Store.GCInterval)

	socketMode(d, "admin.socket_mode", c.Admin.SocketMode)
	if g := c.Admin.SocketGroup; g != "" {
		if _, err := user.LookupGroup(g); err != nil {
			d.errorf("admin.socket_group", "no group %q on this system", g)
		}
	}
	positive(d, "admin.decision_retention", c.Admin.DecisionRetention)

	if c.AuthPolicy.Listen != "" {
		hostPort(d, "auth_policy.listen", c.AuthPolicy.Listen)
	}
	if c.AuthPolicy.APIKey != "" && c.AuthPolicy.APIHeader == "" {
		d.errorf("auth_policy.api_header", "required with api_key: the header Dovecot sends the key in")
	}

	r := &c.Rules
	a := &r.AuthFailures
	placeholders(d, "rules.auth_failures.reply", a.Reply, "id", "ip")
	atLeast(d, "rules.auth_failures.threshold", a.Threshold, 1)
	positive(d, "rules.auth_failures.window", a.Window)
	positive(d, "rules.auth_failures.block_for", a.BlockFor)
	oneOf(d, "rules.auth_failures.counting", a.Counting, "attempts", "distinct-passwords")
	prefixBits(d, "rules.auth_failures.ipv6_prefix", a.IPv6Prefix)

	rt := &r.Rate
	placeholders(d, "rules.rate.reply", rt.Reply, "id", "ip", "login", "sender", "recipient")
	oneOf(d, "rules.rate.unit", rt.Unit, "recipients", "messages")
	atLeast(d, "rules.rate.buckets", rt.Buckets, 1)
	prefixBits(d, "rules.rate.ipv6_prefix", rt.IPv6Prefix)
	if len(rt.Windows) == 0 && rt.Mode != Off {
		d.errorf("rules.rate.windows", "at least one window unless mode = \"off\"")
	}
	for i, w := range rt.Windows {
		path := fmt.Sprintf("rules.rate.windows[%d]", i)
		window(d, path+".window", w.Window, rt.Buckets)
		atLeast(d, path+".max", w.Max, 0)
	}

	sa := &r.SpamAllowance
	placeholders(d, "rules.spam_allowance.reply", sa.Reply, "id", "ip", "login", "sender", "recipient")
	atLeast(d, "rules.spam_allowance.allowance", sa.Allowance, 0)
	window(d, "rules.spam_allowance.window", sa.Window, 24)
	positive(d, "rules.spam_allowance.block_for", sa.BlockFor)
	prefixBits(d, "rules.spam_allowance.ipv6_prefix", sa.IPv6Prefix)

	placeholders(d, "rules.recipients_per_message.reply", r.RecipientsPerMessage.Reply, "id", "ip", "login", "sender", "recipient")
	atLeast(d, "rules.recipients_per_message.max", r.RecipientsPerMessage.Max, 1)
	placeholders(d, "rules.messages_per_session.reply", r.MessagesPerSession.Reply, "id", "ip", "login", "sender")
	atLeast(d, "rules.messages_per_session.max", r.MessagesPerSession.Max, 1)

	b := &r.BigMessages
	placeholders(d, "rules.big_messages.reply", b.Reply, "id", "ip", "login", "sender", "group")
	atLeast(d, "rules.big_messages.buckets", b.Buckets, 1)
	prefixBits(d, "rules.big_messages.ipv6_prefix", b.IPv6Prefix)
	seen := map[string]string{}
	for i, g := range b.Groups {
		path := fmt.Sprintf("rules.big_messages.groups[%d]", i)
		if g.Name == "" {
			d.errorf(path+".name", "required: the name the reply shows")
		}
		if len(g.Domains) == 0 {
			d.errorf(path+".domains", "at least one domain")
		}
		for j, dom := range g.Domains {
			if other, dup := seen[dom]; dup {
				d.errorf(fmt.Sprintf("%s.domains[%d]", path, j), "%s is already in group %s", dom, other)
			}
			seen[dom] = g.Name
		}
		atLeast(d, path+".size", g.Size, 1)
		atLeast(d, path+".max", g.Max, 0)
		window(d, path+".window", g.Window, b.Buckets)
	}
}

func prefixBits(d *doc, path string, v int) {
	if v < 1 || v > 128 {
		d.errorf(path, "must be from 1 to 128 (bits of an IPv6 prefix)")
	}
}

// window checks that a window splits into whole buckets.
func window(d *doc, path string, w time.Duration, buckets int) {
	switch {
	case w <= 0:
		d.errorf(path, "must be longer than 0s")
	case buckets > 0 && w%time.Duration(buckets) != 0:
		d.errorf(path, "%v does not split into %d equal buckets", w, buckets)
	}
}

// The modes of the content filter.
const (
	BeforeQueue = "before-queue"
	AfterQueue  = "after-queue"
)

// ContentFilter is `relayguard contentfilter`: the SMTP filter between
// Postfix and its reinjection service.
type ContentFilter struct {
	// Mode is how Postfix hands messages to the filter: BeforeQueue
	// (smtpd_proxy_filter) or AfterQueue (content_filter).
	Mode           string        `toml:"mode"`
	Listen         string        `toml:"listen"`
	NextHop        string        `toml:"next_hop"`
	Hostname       string        `toml:"hostname"`
	MaxSize        int           `toml:"max_size"`
	SpoolDir       string        `toml:"spool_dir"`
	SpoolThreshold int           `toml:"spool_threshold"`
	Timeout        time.Duration `toml:"timeout"`
	// TempfailReply is the reply when a check cannot decide (fail = "tempfail").
	TempfailReply reply.Template `toml:"tempfail_reply"`
	Rules         FilterRules    `toml:"rules"`
}

func defaultContentFilter(c *Config) {
	c.ContentFilter = ContentFilter{
		Mode: BeforeQueue, Listen: "127.0.0.1:10025", NextHop: "127.0.0.1:10026", MaxSize: 52428800,
		SpoolDir: "/var/lib/relayguard/spool", SpoolThreshold: 1048576, Timeout: 5 * time.Minute,
	}
	defaultFilterRules(c)
}

func (c *Config) validateContentFilter(d *doc) {
	f := &c.ContentFilter
	oneOf(d, "contentfilter.mode", f.Mode, BeforeQueue, AfterQueue)
	hostPort(d, "contentfilter.listen", f.Listen)
	hostPort(d, "contentfilter.next_hop", f.NextHop)
	if f.Listen == f.NextHop {
		d.errorf("contentfilter.next_hop", "is the filter's own address: mail would loop")
	}
	atLeast(d, "contentfilter.max_size", f.MaxSize, 1024)
	if f.SpoolDir == "" {
		d.errorf("contentfilter.spool_dir", "required: where messages larger than spool_threshold are written while checked")
	}
	atLeast(d, "contentfilter.spool_threshold", f.SpoolThreshold, 0)
	positive(d, "contentfilter.timeout", f.Timeout)
	c.validateFilterRules(d)
}

// SpamAllowance is R15: a daily allowance of spam messages per account and
// per client address; past it, their mail is refused until the block ends.
type SpamAllowance struct {
	Rule
	Allowance  int           `toml:"allowance"`
	Window     time.Duration `toml:"window"`
	BlockFor   time.Duration `toml:"block_for"`
	IPv6Prefix int           `toml:"ipv6_prefix"`
}

// FilterRules are the content filter's checks.
type FilterRules struct {
	Attachments Attachments `toml:"attachments"` // R17
	Virus       Virus       `toml:"virus"`       // R16
	Spam        Spam        `toml:"spam"`        // R15 (the filter's side)
}

// Attachments is R17.
type Attachments struct {
	Rule
	Extensions []string `toml:"extensions"`
}

// Virus is R16, through clamd.
type Virus struct {
	Rule
	Clamd     string        `toml:"clamd"` // "127.0.0.1:3310" or a unix socket path
	Timeout   time.Duration `toml:"timeout"`
	MaxStream int           `toml:"max_stream"`
	Fail      string        `toml:"fail"` // "tempfail" or "accept"
}

// Spam is the filter's side of R15, through rspamd.
type Spam struct {
	Rule
	Rspamd    string        `toml:"rspamd"`    // base URL
	Threshold string        `toml:"threshold"` // the least rspamd action that is spam
	MaxSize   int           `toml:"max_size"`  // larger messages are not scanned
	Timeout   time.Duration `toml:"timeout"`
	Fail      string        `toml:"fail"` // "accept" or "tempfail"
	Header    string        `toml:"header"`
}

func defaultFilterRules(c *Config) {
	c.ContentFilter.TempfailReply = reply.MustParse("451 4.7.1 {id} temporary failure, try again later")
	c.ContentFilter.Rules = FilterRules{
		Attachments: Attachments{Rule: rule("554 5.7.1 {id} Bad attachment"), Extensions: []string{
			"com", "exe", "pif", "bat", "scr", "cpl", "cmd", "dll", "lnk", "inf", "msi", "sct", "vbs", "vb", "vbe", "js", "wsf", "iso"}},
		Virus: Virus{Rule: rule("554 5.7.1 {id} virus detected"), Clamd: "127.0.0.1:3310", Timeout: 60 * time.Second,
			MaxStream: 26214400, Fail: "tempfail"},
		Spam: Spam{Rule: rule("550 5.7.1 {id} spam detected"), Rspamd: "http://127.0.0.1:11333", Threshold: "add header",
			MaxSize: 10485760, Timeout: 30 * time.Second, Fail: "accept", Header: "X-Spam: Yes"},
	}
}

func (c *Config) validateFilterRules(d *doc) {
	f := &c.ContentFilter
	placeholders(d, "contentfilter.tempfail_reply", f.TempfailReply, "id", "ip")
	if !f.TempfailReply.Temporary() {
		d.errorf("contentfilter.tempfail_reply", "must be a 4xx reply")
	}
	r := &f.Rules
	placeholders(d, "contentfilter.attachments.reply", r.Attachments.Reply, "id", "ip", "name")
	if len(r.Attachments.Extensions) == 0 && r.Attachments.Mode != Off {
		d.errorf("contentfilter.attachments.extensions", "at least one extension unless mode = \"off\"")
	}
	for i, e := range r.Attachments.Extensions {
		if e == "" || strings.ContainsAny(e, ". \t") {
			d.errorf(fmt.Sprintf("contentfilter.attachments.extensions[%d]", i), "%q: write the extension without its dot, such as \"exe\"", e)
		}
	}
	v := &r.Virus
	placeholders(d, "contentfilter.virus.reply", v.Reply, "id", "ip", "virus")
	if v.Mode != Off && v.Clamd == "" {
		d.errorf("contentfilter.virus.clamd", "required unless mode = \"off\": clamd's TCP address or unix socket")
	}
	positive(d, "contentfilter.virus.timeout", v.Timeout)
	atLeast(d, "contentfilter.virus.max_stream", v.MaxStream, 1024)
	oneOf(d, "contentfilter.virus.fail", v.Fail, "tempfail", "accept")
	s := &r.Spam
	placeholders(d, "contentfilter.spam.reply", s.Reply, "id", "ip")
	if s.Mode != Off && !strings.HasPrefix(s.Rspamd, "http://") && !strings.HasPrefix(s.Rspamd, "https://") {
		d.errorf("contentfilter.spam.rspamd", "%q: rspamd's URL, such as \"http://127.0.0.1:11333\"", s.Rspamd)
	}
	oneOf(d, "contentfilter.spam.threshold", s.Threshold, "greylist", "soft reject", "add header", "rewrite subject", "reject")
	atLeast(d, "contentfilter.spam.max_size", s.MaxSize, 1024)
	positive(d, "contentfilter.spam.timeout", s.Timeout)
	oneOf(d, "contentfilter.spam.fail", s.Fail, "accept", "tempfail")
	if name, _, ok := strings.Cut(s.Header, ":"); s.Header != "" && (!ok || name == "" || strings.ContainsAny(name, " \t")) {
		d.errorf("contentfilter.spam.header", "%q is not a header field such as \"X-Spam: Yes\"", s.Header)
	}
}
