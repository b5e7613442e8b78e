package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"

	"relayguard/reply"
)

// Config is relayguard.toml. Every key is documented in etc/relayguard.toml.
type Config struct {
	Log        Log        `toml:"log"`
	Policyd    Policyd    `toml:"policyd"`
	Milter     Milter     `toml:"milter"`
	DNS        DNS        `toml:"dns"`
	Store      Store      `toml:"store"`
	Admin      Admin      `toml:"admin"`
	AuthPolicy AuthPolicy `toml:"auth_policy"`
	Rules      Rules      `toml:"rules"`

	ContentFilter ContentFilter `toml:"contentfilter"`
}

// Log selects the log level and format.
type Log struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

// Policyd is the policy-delegation server.
type Policyd struct {
	Listen         string         `toml:"listen"`
	Socket         string         `toml:"socket"`
	SocketMode     string         `toml:"socket_mode"`
	Directory      string         `toml:"directory"`
	IdleTimeout    time.Duration  `toml:"idle_timeout"`
	RequestTimeout time.Duration  `toml:"request_timeout"`
	MaxLine        int            `toml:"max_line"`
	MaxRequest     int            `toml:"max_request"`
	MaxAttributes  int            `toml:"max_attributes"`
	FailReply      reply.Template `toml:"fail_reply"`
}

// Milter is policyd's milter listener, through which Postfix gives the
// customer policyd's replies exactly as configured (a policy service's reply
// gets a prefix from Postfix). Both listeners off: replies go back through
// the policy protocol.
type Milter struct {
	Listen     string `toml:"listen"`
	Socket     string `toml:"socket"`
	SocketMode string `toml:"socket_mode"`
}

// DNS is the resolver the domain and DNSBL checks ask.
type DNS struct {
	Servers     []string      `toml:"servers"`
	Timeout     time.Duration `toml:"timeout"`
	CacheSize   int           `toml:"cache_size"`
	MaxTTL      time.Duration `toml:"max_ttl"`
	NegativeTTL time.Duration `toml:"negative_ttl"`
}

// Rule is what every rule has.
type Rule struct {
	Mode   Mode           `toml:"mode"`
	Exempt Networks       `toml:"exempt"`
	Reply  reply.Template `toml:"reply"`
}

// Rules are the rules of DESIGN.md that policyd enforces, by name.
type Rules struct {
	AuthRequired    Rule         `toml:"auth_required"`    // R1
	LoginFormat     Rule         `toml:"login_format"`     // R2
	AccountDisabled Rule         `toml:"account_disabled"` // R3
	SenderDomain    SenderDomain `toml:"sender_domain"`    // R5, R6
	SenderDNS       DomainDNS    `toml:"sender_dns"`       // R7
	RecipientDNS    DomainDNS    `toml:"recipient_dns"`    // R8
	GeoIP           GeoIP        `toml:"geoip"`            // R9
	SBL             SBL          `toml:"sbl"`              // R18

	AuthFailures         AuthFailures  `toml:"auth_failures"`          // R4
	Rate                 Rate          `toml:"rate"`                   // R10
	RecipientsPerMessage Count         `toml:"recipients_per_message"` // R11
	MessagesPerSession   Count         `toml:"messages_per_session"`   // R12
	BigMessages          BigMessages   `toml:"big_messages"`           // R13
	SpamAllowance        SpamAllowance `toml:"spam_allowance"`         // R15
}

// SenderDomain is R5 with R6's webmail exemption.
type SenderDomain struct {
	Rule
	NullSender string `toml:"null_sender"` // "accept" or "reject"
}

// DomainDNS is R7 or R8.
type DomainDNS struct {
	Rule
	TempfailReply reply.Template `toml:"tempfail_reply"`
}

// GeoIP is R9.
type GeoIP struct {
	Rule
	Database         string   `toml:"database"`
	AllowedCountries []string `toml:"allowed_countries"`
	Unknown          string   `toml:"unknown"` // "allow" or "reject"
}

// SBL is R18.
type SBL struct {
	Rule
	Zone          string         `toml:"zone"`
	Listed        []string       `toml:"listed"`
	PBL           []string       `toml:"pbl"`
	Fail          string         `toml:"fail"` // "open" or "closed"
	TempfailReply reply.Template `toml:"tempfail_reply"`
}

// DefaultCountries are the EU and EEA member states, Switzerland and the United Kingdom.
var DefaultCountries = []string{
	"AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV", "LT",
	"LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", // EU
	"IS", "LI", "NO", // EEA
	"CH", "GB",
}

func rule(text string) Rule {
	return Rule{Mode: Enforce, Reply: reply.MustParse(text)}
}

// Default is the configuration before the file is read: DESIGN.md's defaults.
func Default() Config {
	c := defaults()
	defaultState(&c)
	defaultContentFilter(&c)
	return c
}

func defaults() Config {
	dnsTemp := reply.MustParse("451 4.4.3 {id} temporary DNS failure, try again later")
	return Config{
		Log: Log{Level: "info", Format: "text"},
		Policyd: Policyd{
			Listen:         "127.0.0.1:10040",
			SocketMode:     "0660",
			IdleTimeout:    330 * time.Second,
			RequestTimeout: 5 * time.Second,
			MaxLine:        4096,
			MaxRequest:     32768,
			MaxAttributes:  128,
			FailReply:      reply.MustParse("451 4.3.0 {id} temporary failure, try again later"),
		},
		Milter: Milter{Listen: "127.0.0.1:10041", SocketMode: "0660"},
		DNS: DNS{
			Servers:     []string{"127.0.0.1:53"},
			Timeout:     2 * time.Second,
			CacheSize:   100000,
			MaxTTL:      time.Hour,
			NegativeTTL: 5 * time.Minute,
		},
		Rules: Rules{
			AuthRequired:    rule("530 5.7.0 {id} authentication required"),
			LoginFormat:     rule("535 5.7.8 {id} authentication rejected"),
			AccountDisabled: rule("535 5.7.8 {id} authentication rejected access disabled"),
			SenderDomain:    SenderDomain{Rule: rule("550 5.1.0 <{sender}> sender rejected"), NullSender: "accept"},
			SenderDNS:       DomainDNS{Rule: rule("550 5.1.0 {id} invalid domain"), TempfailReply: dnsTemp},
			RecipientDNS:    DomainDNS{Rule: rule("550 5.1.1 {id} invalid destination domain <{recipient}>"), TempfailReply: dnsTemp},
			GeoIP: GeoIP{
				Rule:             rule("550 5.1.0 <{sender}> sender rejected GeoIP {domain}:{ip}:{country}"),
				AllowedCountries: DefaultCountries,
				Unknown:          "allow",
			},
			SBL: SBL{
				Rule:          rule("554 5.7.1 {id} Service unavailable; client [{ip}] blocked using sbl.spamhaus.org"),
				Zone:          "sbl.spamhaus.org",
				Listed:        []string{"127.0.0.2", "127.0.0.3", "127.0.0.9"},
				PBL:           []string{"127.0.0.10", "127.0.0.11"},
				Fail:          "open",
				TempfailReply: reply.MustParse("451 4.4.3 {id} temporary DNS failure, try again later"),
			},
		},
	}
}

// Load reads and checks the configuration file. The error, when not nil,
// is an Errors listing every problem with its file:line.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse is Load of data already read; name is used in error messages.
func Parse(name string, data []byte) (*Config, error) {
	c := Default()
	d := decode(name, data, &c)
	if !d.syntax {
		c.validate(d)
	}
	if err := d.err(); err != nil {
		return nil, err
	}
	return &c, nil
}

func oneOf(d *doc, path, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	d.errorf(path, "%q is not one of %q", v, allowed)
}

func positive(d *doc, path string, v time.Duration) {
	if v <= 0 {
		d.errorf(path, "must be longer than 0s")
	}
}

func atLeast(d *doc, path string, v, min int) {
	if v < min {
		d.errorf(path, "must be at least %d", min)
	}
}

func hostPort(d *doc, path, v string) {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		d.errorf(path, "%q is not host:port", v)
		return
	}
	if _, err := netip.ParseAddr(host); err != nil && host != "localhost" {
		d.errorf(path, "%q: the host must be an IP address", v)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		d.errorf(path, "%q: port must be a number from 1 to 65535", v)
	}
}

func socketMode(d *doc, path, v string) {
	if m, err := strconv.ParseUint(v, 8, 32); err != nil || m > 0o777 {
		d.errorf(path, "%q is not an octal file mode such as \"0660\"", v)
	}
}

func placeholders(d *doc, path string, t reply.Template, allowed ...string) {
	if err := t.Check(allowed...); err != nil {
		d.errorf(path, "%v", err)
	}
}

func (c *Config) validate(d *doc) {
	c.validateState(d)
	c.validateContentFilter(d)
	oneOf(d, "log.level", c.Log.Level, "debug", "info", "warn", "error")
	oneOf(d, "log.format", c.Log.Format, "text", "json")

	p := &c.Policyd
	if p.Listen == "" && p.Socket == "" {
		d.errorf("policyd", "set listen, socket or both: the policy service must listen somewhere")
	}
	if p.Listen != "" {
		hostPort(d, "policyd.listen", p.Listen)
	}
	socketMode(d, "policyd.socket_mode", p.SocketMode)
	if c.Milter.Listen != "" {
		hostPort(d, "milter.listen", c.Milter.Listen)
	}
	socketMode(d, "milter.socket_mode", c.Milter.SocketMode)
	if p.Directory == "" {
		d.errorf("policyd.directory", "required: the path of the domain directory file")
	}
	positive(d, "policyd.idle_timeout", p.IdleTimeout)
	positive(d, "policyd.request_timeout", p.RequestTimeout)
	atLeast(d, "policyd.max_line", p.MaxLine, 256)
	atLeast(d, "policyd.max_request", p.MaxRequest, p.MaxLine)
	atLeast(d, "policyd.max_attributes", p.MaxAttributes, 32)
	if !p.FailReply.Temporary() {
		d.errorf("policyd.fail_reply", "must be a 4xx reply: policyd's own failure is temporary")
	}
	placeholders(d, "policyd.fail_reply", p.FailReply, "id")

	if len(c.DNS.Servers) == 0 {
		d.errorf("dns.servers", "at least one resolver is required")
	}
	for i, s := range c.DNS.Servers {
		hostPort(d, fmt.Sprintf("dns.servers[%d]", i), s)
	}
	positive(d, "dns.timeout", c.DNS.Timeout)
	atLeast(d, "dns.cache_size", c.DNS.CacheSize, 0)
	positive(d, "dns.max_ttl", c.DNS.MaxTTL)
	positive(d, "dns.negative_ttl", c.DNS.NegativeTTL)

	r := &c.Rules
	placeholders(d, "rules.auth_required.reply", r.AuthRequired.Reply, "id", "ip")
	placeholders(d, "rules.login_format.reply", r.LoginFormat.Reply, "id", "ip", "login")
	placeholders(d, "rules.account_disabled.reply", r.AccountDisabled.Reply, "id", "ip", "login")
	placeholders(d, "rules.sender_domain.reply", r.SenderDomain.Reply, "id", "ip", "login", "sender", "domain")
	oneOf(d, "rules.sender_domain.null_sender", r.SenderDomain.NullSender, "accept", "reject")
	for _, nx := range []struct {
		name string
		x    DomainDNS
	}{{"sender_dns", r.SenderDNS}, {"recipient_dns", r.RecipientDNS}} {
		name, x := nx.name, nx.x
		placeholders(d, "rules."+name+".reply", x.Reply, "id", "ip", "sender", "recipient", "domain")
		placeholders(d, "rules."+name+".tempfail_reply", x.TempfailReply, "id", "ip", "sender", "recipient", "domain")
		if !x.TempfailReply.Temporary() {
			d.errorf("rules."+name+".tempfail_reply", "must be a 4xx reply: a DNS failure is temporary")
		}
	}

	g := &r.GeoIP
	placeholders(d, "rules.geoip.reply", g.Reply, "id", "ip", "login", "sender", "domain", "country")
	if g.Mode != Off && g.Database == "" {
		d.errorf("rules.geoip.database", "required unless mode = \"off\": the path of a country database (make geoip fetches one)")
	}
	for i, cc := range g.AllowedCountries {
		if !countryCode(cc) {
			d.errorf(fmt.Sprintf("rules.geoip.allowed_countries[%d]", i), "%q is not an upper-case ISO 3166 country code such as \"CZ\"", cc)
		}
	}
	oneOf(d, "rules.geoip.unknown", g.Unknown, "allow", "reject")

	s := &r.SBL
	placeholders(d, "rules.sbl.reply", s.Reply, "id", "ip")
	placeholders(d, "rules.sbl.tempfail_reply", s.TempfailReply, "id", "ip")
	if !s.TempfailReply.Temporary() {
		d.errorf("rules.sbl.tempfail_reply", "must be a 4xx reply: a DNS failure is temporary")
	}
	if s.Mode != Off && s.Zone == "" {
		d.errorf("rules.sbl.zone", "required unless mode = \"off\"")
	}
	oneOf(d, "rules.sbl.fail", s.Fail, "open", "closed")
	seen := map[string]string{}
	for _, kl := range []struct {
		key  string
		list []string
	}{{"listed", s.Listed}, {"pbl", s.PBL}} {
		key, list := kl.key, kl.list
		for i, a := range list {
			path := fmt.Sprintf("rules.sbl.%s[%d]", key, i)
			ip, err := netip.ParseAddr(a)
			if err != nil || !ip.Is4() || !netip.MustParsePrefix("127.0.0.0/8").Contains(ip) {
				d.errorf(path, "%q is not a DNSBL answer in 127.0.0.0/8", a)
				continue
			}
			if ip.As4()[1] == 255 && ip.As4()[2] == 255 {
				d.errorf(path, "%s is a DNSBL error code, never a listing", a)
			}
			if other, dup := seen[a]; dup && other != key {
				d.errorf(path, "%s is in both listed and pbl", a)
			}
			seen[a] = key
		}
	}
}

func countryCode(s string) bool {
	return len(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z'
}
