package config

import (
	"os"
	"strings"
	"testing"
)

// The sample configuration that operators install must load as it is.
func TestSampleConfig(t *testing.T) {
	c, err := Load("../etc/relayguard.toml")
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	if c.Policyd.Listen != d.Policyd.Listen || c.Rules.SBL.Zone != d.Rules.SBL.Zone ||
		c.Rules.GeoIP.Reply.String() != d.Rules.GeoIP.Reply.String() ||
		strings.Join(c.Rules.GeoIP.AllowedCountries, ",") != strings.Join(DefaultCountries, ",") {
		t.Errorf("etc/relayguard.toml does not show the defaults")
	}
	if _, err := LoadDirectory("../etc/directory.toml"); err != nil {
		t.Fatal(err)
	}
}

// Every key of Config must be documented in etc/relayguard.toml.
func TestSampleConfigDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile("../etc/relayguard.toml")
	if err != nil {
		t.Fatal(err)
	}
	c := Default()
	d := decode("relayguard.toml", data, &c)
	for _, key := range []string{
		"log.level", "log.format",
		"policyd.listen", "policyd.socket", "policyd.socket_mode", "policyd.directory", "policyd.idle_timeout",
		"policyd.request_timeout", "policyd.max_line", "policyd.max_request", "policyd.max_attributes", "policyd.fail_reply",
		"milter.listen", "milter.socket", "milter.socket_mode",
		"contentfilter.listen", "contentfilter.next_hop", "contentfilter.hostname", "contentfilter.max_size",
		"contentfilter.mode", "contentfilter.spool_dir", "contentfilter.spool_threshold", "contentfilter.timeout", "contentfilter.tempfail_reply",
		"contentfilter.rules.attachments.extensions", "contentfilter.rules.virus.clamd", "contentfilter.rules.virus.timeout",
		"contentfilter.rules.virus.max_stream", "contentfilter.rules.virus.fail", "contentfilter.rules.spam.rspamd",
		"contentfilter.rules.spam.threshold", "contentfilter.rules.spam.max_size", "contentfilter.rules.spam.timeout",
		"contentfilter.rules.spam.fail", "contentfilter.rules.spam.header",
		"store.backend", "store.dir", "store.flush_interval", "store.gc_interval",
		"admin.socket", "admin.socket_mode", "admin.socket_group", "admin.decision_retention",
		"auth_policy.listen", "auth_policy.api_header", "auth_policy.api_key",
		"rules.auth_failures.threshold", "rules.auth_failures.window", "rules.auth_failures.block_for",
		"rules.auth_failures.counting", "rules.auth_failures.ipv6_prefix",
		"rules.rate.unit", "rules.rate.windows", "rules.rate.buckets", "rules.rate.ipv6_prefix",
		"rules.spam_allowance.allowance", "rules.spam_allowance.window", "rules.spam_allowance.block_for",
		"rules.spam_allowance.ipv6_prefix", "rules.recipients_per_message.max", "rules.messages_per_session.max",
		"rules.big_messages.groups", "rules.big_messages.buckets", "rules.big_messages.ipv6_prefix",
		"dns.servers", "dns.timeout", "dns.cache_size", "dns.max_ttl", "dns.negative_ttl",
		"rules.sender_domain.null_sender", "rules.sender_dns.tempfail_reply", "rules.recipient_dns.tempfail_reply",
		"rules.geoip.database", "rules.geoip.allowed_countries", "rules.geoip.unknown",
		"rules.sbl.zone", "rules.sbl.listed", "rules.sbl.pbl", "rules.sbl.fail", "rules.sbl.tempfail_reply",
	} {
		if _, ok := d.lines[key]; !ok {
			t.Errorf("%s is not in etc/relayguard.toml", key)
		}
	}
	for _, table := range []string{"rules.auth_required", "rules.login_format", "rules.account_disabled", "rules.sender_domain",
		"rules.sender_dns", "rules.recipient_dns", "rules.geoip", "rules.sbl", "rules.auth_failures", "rules.rate",
		"rules.recipients_per_message", "rules.messages_per_session", "rules.big_messages", "rules.spam_allowance",
		"contentfilter.rules.attachments", "contentfilter.rules.virus", "contentfilter.rules.spam"} {
		for _, k := range []string{"mode", "exempt", "reply"} {
			if _, ok := d.lines[table+"."+k]; !ok {
				t.Errorf("%s.%s is not in etc/relayguard.toml", table, k)
			}
		}
	}
}

// A broken configuration fails with every error, each with its file:line.
func TestBadConfig(t *testing.T) {
	check := func(name, input string, want ...string) {
		t.Helper()
		_, err := Parse("bad.toml", []byte(input))
		if err == nil {
			t.Errorf("%s: accepted", name)
			return
		}
		got := strings.Split(err.Error(), "\n")
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s:\n got: %s\nwant: %s", name, strings.Join(got, "\n      "), strings.Join(want, "\n      "))
		}
	}
	const dir = "[policyd]\ndirectory = \"d.toml\"\n"
	check("syntax", "[policyd\n", "bad.toml:1: TOML syntax: expected ']' to close table name")
	check("everything at once", dir+`
listen = 10040
idle_timeout = "forever"
bogus = 1

[rules.geoip]
mode = "enforced"
allowed_countries = ["CZ", "cz"]
reply = "550 4.1.0 nope"

[rules.sbl]
listed = ["127.0.0.2", "127.255.255.254", "10.0.0.1"]
pbl = ["127.0.0.2"]
fail = "maybe"

[nonsense]
`,
		`bad.toml:4: policyd.listen: expected a string, found an integer`,
		`bad.toml:5: policyd.idle_timeout: "forever" is not a duration such as "30s" or "1h"`,
		`bad.toml:6: unknown key policyd.bogus`,
		`bad.toml:8: rules.geoip.database: required unless mode = "off": the path of a country database (make geoip fetches one)`,
		`bad.toml:9: rules.geoip.mode: mode "enforced": must be "enforce", "log-only" or "off"`,
		`bad.toml:10: rules.geoip.allowed_countries[1]: "cz" is not an upper-case ISO 3166 country code such as "CZ"`,
		`bad.toml:11: rules.geoip.reply: reply "550 4.1.0 nope": code 550 is permanent (5xx) but enhanced code 4.1.0 is not`,
		`bad.toml:14: rules.sbl.listed[1]: 127.255.255.254 is a DNSBL error code, never a listing`,
		`bad.toml:14: rules.sbl.listed[2]: "10.0.0.1" is not a DNSBL answer in 127.0.0.0/8`,
		`bad.toml:15: rules.sbl.pbl[0]: 127.0.0.2 is in both listed and pbl`,
		`bad.toml:16: rules.sbl.fail: "maybe" is not one of ["open" "closed"]`,
		`bad.toml:18: unknown table [nonsense]`,
	)
	check("missing directory and listener", "[policyd]\nlisten = \"\"\n[rules.geoip]\nmode = \"off\"\n",
		`bad.toml:1: policyd: set listen, socket or both: the policy service must listen somewhere`,
		`bad.toml:1: policyd.directory: required: the path of the domain directory file`,
	)
	check("replies", dir+`[rules.geoip]
mode = "off"
[rules.auth_required]
reply = "250 2.0.0 fine"
[rules.recipient_dns]
reply = "550 5.1.1 {id} bad <{rcpt}>"
tempfail_reply = "550 5.4.3 {id} dns"
[policyd]
`,
		`bad.toml:6: rules.auth_required.reply: reply "250 2.0.0 fine": must start with a 4xx or 5xx code, a space, an enhanced status code and a text`,
		`bad.toml:8: rules.recipient_dns.reply: reply "550 5.1.1 {id} bad <{rcpt}>": unknown placeholder {rcpt}; this reply knows {id}, {ip}, {sender}, {recipient}, {domain}`,
		`bad.toml:9: rules.recipient_dns.tempfail_reply: must be a 4xx reply: a DNS failure is temporary`,
		`bad.toml:10: table [policyd] defined twice`,
	)
	check("dns", dir+"[rules.geoip]\nmode = \"off\"\n[dns]\nservers = [\"resolver:53\", \"127.0.0.1\"]\ncache_size = -1\ntimeout = \"0s\"\n",
		`bad.toml:6: dns.servers[0]: "resolver:53": the host must be an IP address`,
		`bad.toml:6: dns.servers[1]: "127.0.0.1" is not host:port`,
		`bad.toml:7: dns.cache_size: must be at least 0`,
		`bad.toml:8: dns.timeout: must be longer than 0s`,
	)
	check("state", dir+`[rules.geoip]
mode = "off"
[rules.rate]
unit = "mails"
windows = [{ window = "1m", max = 250 }, { window = "7s", max = -1 }]
[rules.big_messages]
groups = [{ name = "", domains = ["seznam.cz"], size = 0, max = 30, window = "3m" }, { name = "B", domains = ["seznam.cz"], size = 1, max = 1, window = "3m" }]
[rules.auth_failures]
counting = "passwords"
ipv6_prefix = 129
[auth_policy]
api_header = ""
api_key = "secret"
`,
		`bad.toml:6: rules.rate.unit: "mails" is not one of ["recipients" "messages"]`,
		`bad.toml:7: rules.rate.windows[1].window: 7s does not split into 60 equal buckets`,
		`bad.toml:7: rules.rate.windows[1].max: must be at least 0`,
		`bad.toml:9: rules.big_messages.groups[0].name: required: the name the reply shows`,
		`bad.toml:9: rules.big_messages.groups[0].size: must be at least 1`,
		`bad.toml:9: rules.big_messages.groups[1].domains[0]: seznam.cz is already in group `,
		`bad.toml:11: rules.auth_failures.counting: "passwords" is not one of ["attempts" "distinct-passwords"]`,
		`bad.toml:12: rules.auth_failures.ipv6_prefix: must be from 1 to 128 (bits of an IPv6 prefix)`,
		`bad.toml:14: auth_policy.api_header: required with api_key: the header Dovecot sends the key in`,
	)
	check("duplicate key", dir+"directory = \"e.toml\"\n[rules.geoip]\nmode = \"off\"\n", `bad.toml:3: policyd.directory: defined twice`)
}

func TestBadDirectory(t *testing.T) {
	check := func(name, input string, want ...string) {
		t.Helper()
		_, err := ParseDirectory("dir.toml", []byte(input))
		if err == nil {
			t.Errorf("%s: accepted", name)
			return
		}
		if got := err.Error(); got != strings.Join(want, "\n") {
			t.Errorf("%s:\n got: %s\nwant: %s", name, strings.ReplaceAll(got, "\n", "\n      "), strings.Join(want, "\n      "))
		}
	}
	check("all at once", `webmail_networks = ["10.0.0.0/33", "10.0.0.1/8"]
[[domain]]
name = "example.cz"
aliases = ["EXAMPLE.com", "nodot"]
geoip_countries = ["USA"]
[[domain]]
name = "example.com"
[[account]]
address = "jan"
[[account]]
address = "a@example.cz"
external_accounts = ["1@x.cz", "2@x.cz", "3@x.cz", "4@x.cz", "5@x.cz"]
alternative_sender = "not an address"
[[account]]
address = "A@Example.CZ"
[[accounts]]
[[domain]]
name = "signed.cz"
dkim_selector = "bad selector"
dkim_key = "relative.key"
[[domain]]
name = "half.cz"
dkim_selector = "s1"
`,
		`dir.toml:1: webmail_networks[0]: "10.0.0.0/33" is not an IP address or a CIDR prefix`,
		`dir.toml:1: webmail_networks[1]: "10.0.0.1/8" has host bits set; write 10.0.0.0/8`,
		`dir.toml:4: domain[0].aliases[1]: domain "nodot" has no dot`,
		`dir.toml:5: domain[0].geoip_countries[0]: "USA" is not an upper-case ISO 3166 country code such as "US"`,
		`dir.toml:7: domain[1].name: example.com is already listed with domain example.cz`,
		`dir.toml:9: account[0].address: "jan" is not a full address (local@domain)`,
		`dir.toml:12: account[1].external_accounts: 5 external accounts; webmail allows at most 4`,
		`dir.toml:13: account[1].alternative_sender: "not an address" is not a full address (local@domain)`,
		`dir.toml:15: account[2].address: account a@example.cz is listed twice`,
		`dir.toml:16: unknown table [accounts]`,
		`dir.toml:19: domain[2].dkim_selector: dkim: selector "bad selector": want DNS labels of letters, digits and inner hyphens, such as "s2026"`,
		`dir.toml:20: domain[2].dkim_key: "relative.key": give the key file's absolute path`,
		`dir.toml:21: domain[3].dkim_key: dkim_selector and dkim_key go together`,
	)
}

func TestDirectory(t *testing.T) {
	d, err := ParseDirectory("dir.toml", []byte(`
[[domain]]
name = "Example.CZ."
aliases = ["příklad.cz"]
[[domain]]
name = "other.cz"
`))
	if err != nil {
		t.Fatal(err)
	}
	check := func(a, b string, want bool) {
		t.Helper()
		if got := d.SameOwner(a, b); got != want {
			t.Errorf("SameOwner(%s, %s) = %v", a, b, got)
		}
	}
	check("example.cz", "xn--pklad-zsa96e.cz", true)
	check("xn--pklad-zsa96e.cz", "example.cz", true)
	check("example.cz", "other.cz", false)
	check("mail.example.cz", "example.cz", false)
	check("unlisted.cz", "unlisted.cz", true)
	check("unlisted.cz", "example.cz", false)
}
