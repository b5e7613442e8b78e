package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"relayguard/geoip/geoiptest"
	"relayguard/internal/dnstest"
	"relayguard/internal/etcconf"
)

// lab is what policyd runs against: an in-process DNS server that knows
// every domain of the workload, a GeoIP database, the domain directory and
// the configuration of etc/ with its addresses and paths moved to loopback
// and a temporary directory.
type lab struct {
	dns          *dnstest.Server
	config       string
	policy       string   // policyd's policy service address
	milter, auth string   // its other listeners
	admin        string   // its admin socket
	env          []string // Environment= of etc/systemd/relayguard-policyd.service
}

// rateWindows are R10's windows of etc/relayguard.toml, with maxima that
// the load never reaches: the counters are kept and checked exactly as with
// the defaults, and no request is refused.
var rateWindows = [][2]string{
	{`  { window = "1m", max = 250 },`, `  { window = "1m", max = 100000000 },`},
	{`  { window = "1h", max = 1000 },`, `  { window = "1h", max = 1000000000 },`},
	{`  { window = "24h", max = 20000 },`, `  { window = "24h", max = 10000000000 },`},
}

func setupLab(w *workload, etc, dir string) (*lab, error) {
	l := &lab{}
	var err error
	if l.dns, err = dnstest.Start(); err != nil {
		return nil, err
	}
	if err := l.dns.Add(w.zone()...); err != nil {
		l.dns.Close()
		return nil, err
	}
	l.dns.SetSOA("test.", 300, 300)
	l.dns.SetSOA("sbl.spamhaus.org.", 300, 300) // every client: NXDOMAIN, not listed

	fail := func(err error) (*lab, error) {
		l.dns.Close()
		return nil, err
	}
	db := filepath.Join(dir, "country.mmdb")
	if err := geoiptest.Write(db, geoiptest.MaxMind, map[string]string{
		"198.18.0.0/16": "CZ",
		"198.19.0.0/16": "SK",
		"2001:db8::/32": "CZ",
	}); err != nil {
		return fail(err)
	}
	directory := filepath.Join(dir, "directory.toml")
	if err := os.WriteFile(directory, w.directory(), 0o644); err != nil {
		return fail(err)
	}
	addrs := make([]string, 3)
	for i := range addrs {
		if addrs[i], err = etcconf.FreeAddr(); err != nil {
			return fail(err)
		}
	}
	l.policy, l.milter, l.auth = addrs[0], addrs[1], addrs[2]
	l.admin = filepath.Join(dir, "admin.sock")
	edits := []etcconf.Edit{
		etcconf.Replace("policyd", `listen = "127.0.0.1:10040"`, fmt.Sprintf("listen = %q", l.policy)),
		etcconf.Replace("policyd", `directory = "/etc/relayguard/directory.toml"`, fmt.Sprintf("directory = %q", directory)),
		etcconf.Replace("milter", `listen = "127.0.0.1:10041"`, fmt.Sprintf("listen = %q", l.milter)),
		etcconf.Replace("dns", `servers = ["127.0.0.1:53"]`, fmt.Sprintf("servers = [%q]", l.dns.Addr())),
		etcconf.Replace("auth_policy", `listen = "127.0.0.1:10042"`, fmt.Sprintf("listen = %q", l.auth)),
		etcconf.Replace("admin", `socket = "/run/relayguard/admin.sock"`, fmt.Sprintf("socket = %q", l.admin)),
		etcconf.Replace("store", `dir = "/var/lib/relayguard/state"`, fmt.Sprintf("dir = %q", filepath.Join(dir, "state"))),
		etcconf.Replace("rules.geoip", `database = "/var/lib/relayguard/country.mmdb"`, fmt.Sprintf("database = %q", db)),
	}
	for _, r := range rateWindows {
		edits = append(edits, etcconf.Replace("rules.rate", r[0], r[1]))
	}
	l.config = filepath.Join(dir, "relayguard.toml")
	if err := etcconf.Write(filepath.Join(etc, "relayguard.toml"), l.config, edits); err != nil {
		return fail(fmt.Errorf("%w (run from the module's root, as make bench does, or set -etc)", err))
	}
	if l.env, err = etcconf.UnitEnvironment(filepath.Join(etc, "systemd", "relayguard-policyd.service")); err != nil {
		return fail(err)
	}
	return l, nil
}

func (l *lab) close() { l.dns.Close() }

// zone is what the DNS server answers: an MX for every hosted domain, alias
// and recipient domain.
func (w *workload) zone() []string {
	var rrs []string
	mx := func(d string) { rrs = append(rrs, d+". 300 IN MX 10 mx."+d+".") }
	for i := range w.domains {
		mx(w.domain(i))
		if w.hasAlias(i) {
			mx(w.alias(i))
		}
	}
	for _, d := range w.rcptDomains {
		mx(d)
	}
	return rrs
}

// directory is the domain directory: the hosted domains with their alias
// domains, and a webmail network and a few accounts with settings, as a
// provider's directory has.
func (w *workload) directory() []byte {
	var b strings.Builder
	b.WriteString("webmail_networks = [\"192.0.2.10/32\"]\n")
	for i := range w.domains {
		fmt.Fprintf(&b, "\n[[domain]]\nname = %q\n", w.domain(i))
		if w.hasAlias(i) {
			fmt.Fprintf(&b, "aliases = [%q]\n", w.alias(i))
		}
	}
	for a := 0; a < w.accounts; a += 100 {
		fmt.Fprintf(&b, "\n[[account]]\naddress = %q\nalternative_sender = \"user%d@example.org\"\n", w.login(a), a)
	}
	return []byte(b.String())
}
