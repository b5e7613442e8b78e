package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"relayguard/dkim"
	"relayguard/mailaddr"
)

// The domain directory is its own file (directory.toml), reloaded on SIGHUP:
// the hosted domains with their aliases and GeoIP grants, the accounts that
// have an alternative sender, external accounts or a disabled flag, and the
// webmail networks.
type directoryFile struct {
	WebmailNetworks Networks       `toml:"webmail_networks"`
	Domains         []domainEntry  `toml:"domain"`
	Accounts        []accountEntry `toml:"account"`
}

type domainEntry struct {
	Name           string   `toml:"name"`
	Aliases        []string `toml:"aliases"`
	GeoIPCountries []string `toml:"geoip_countries"`
	DKIMSelector   string   `toml:"dkim_selector"`
	DKIMKey        string   `toml:"dkim_key"`
}

type accountEntry struct {
	Address           string   `toml:"address"`
	Disabled          bool     `toml:"disabled"`
	AlternativeSender string   `toml:"alternative_sender"`
	ExternalAccounts  []string `toml:"external_accounts"`
}

// MaxExternalAccounts is how many external accounts webmail may send as (R6).
const MaxExternalAccounts = 4

// Group is a hosted domain and its aliases: any of them may be the sender's
// domain of an account in any of them (R5).
type Group struct {
	Name      string   // the domain as listed, ASCII
	Domains   []string // Name first, then the aliases, ASCII
	Countries []string // GeoIP countries granted to the group (R9)
	// DKIM key of the domain (R19): selector and key file; both empty when
	// the domain signs nothing. The content filter loads the key; policyd
	// never reads it.
	DKIMSelector, DKIMKey string
	// DKIMLine is the line of dkim_key in the file, for the errors of
	// loading the key.
	DKIMLine int
}

// Account is an entry of the directory.
type Account struct {
	Address  string
	Disabled bool                // R3
	Webmail  map[string]struct{} // alternative sender and external accounts, normalised (R6)
}

// Directory answers the rules' questions about domains and accounts. It is
// read-only once loaded; a reload builds a new one.
type Directory struct {
	webmail  Networks
	groups   map[string]*Group
	accounts map[string]*Account
}

// LoadDirectory reads and checks a directory file; the error lists every
// problem with its file:line.
func LoadDirectory(path string) (*Directory, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseDirectory(path, data)
}

// ParseDirectory is LoadDirectory of data already read.
func ParseDirectory(name string, data []byte) (*Directory, error) {
	var f directoryFile
	d := decode(name, data, &f)
	dir := &Directory{webmail: f.WebmailNetworks, groups: map[string]*Group{}, accounts: map[string]*Account{}}
	for i, e := range f.Domains {
		path := fmt.Sprintf("domain[%d]", i)
		name, err := mailaddr.Domain(e.Name)
		if err != nil {
			d.errorf(path+".name", "%v", err)
			continue
		}
		g := &Group{Name: name, DKIMSelector: e.DKIMSelector, DKIMKey: e.DKIMKey, DKIMLine: d.line(path + ".dkim_key")}
		switch {
		case (e.DKIMSelector == "") != (e.DKIMKey == ""):
			d.errorf(path+".dkim_key", "dkim_selector and dkim_key go together")
		case e.DKIMSelector != "":
			if err := dkim.CheckSelector(e.DKIMSelector); err != nil {
				d.errorf(path+".dkim_selector", "%v", err)
			}
			if !filepath.IsAbs(e.DKIMKey) {
				d.errorf(path+".dkim_key", "%q: give the key file's absolute path", e.DKIMKey)
			}
		}
		for j, cc := range e.GeoIPCountries {
			if !countryCode(cc) {
				d.errorf(fmt.Sprintf("%s.geoip_countries[%d]", path, j), "%q is not an upper-case ISO 3166 country code such as \"US\"", cc)
			}
			g.Countries = append(g.Countries, cc)
		}
		add := func(p, dom string) {
			if other, dup := dir.groups[dom]; dup {
				d.errorf(p, "%s is already listed with domain %s", dom, other.Name)
				return
			}
			dir.groups[dom] = g
			g.Domains = append(g.Domains, dom)
		}
		add(path+".name", name)
		for j, a := range e.Aliases {
			p := fmt.Sprintf("%s.aliases[%d]", path, j)
			alias, err := mailaddr.Domain(a)
			if err != nil {
				d.errorf(p, "%v", err)
				continue
			}
			add(p, alias)
		}
	}
	for i, e := range f.Accounts {
		path := fmt.Sprintf("account[%d]", i)
		addr, err := mailaddr.Normalize(e.Address)
		if err != nil {
			d.errorf(path+".address", "%v", err)
			continue
		}
		if _, dup := dir.accounts[addr]; dup {
			d.errorf(path+".address", "account %s is listed twice", addr)
			continue
		}
		a := &Account{Address: addr, Disabled: e.Disabled, Webmail: map[string]struct{}{}}
		if len(e.ExternalAccounts) > MaxExternalAccounts {
			d.errorf(path+".external_accounts", "%d external accounts; webmail allows at most %d", len(e.ExternalAccounts), MaxExternalAccounts)
		}
		addSender := func(p, s string) {
			n, err := mailaddr.Normalize(s)
			if err != nil {
				d.errorf(p, "%v", err)
				return
			}
			a.Webmail[n] = struct{}{}
		}
		if e.AlternativeSender != "" {
			addSender(path+".alternative_sender", e.AlternativeSender)
		}
		for j, s := range e.ExternalAccounts {
			addSender(fmt.Sprintf("%s.external_accounts[%d]", path, j), s)
		}
		dir.accounts[addr] = a
	}
	if err := d.err(); err != nil {
		return nil, err
	}
	return dir, nil
}

// Group returns the group of an ASCII domain, or nil when it is not hosted.
func (d *Directory) Group(domain string) *Group { return d.groups[domain] }

// SameOwner reports whether the ASCII domains a and b are the same domain or
// belong to one group. A third-level domain is its own domain, never its parent's.
func (d *Directory) SameOwner(a, b string) bool {
	if a == b {
		return true
	}
	g := d.groups[a]
	return g != nil && g == d.groups[b]
}

// Groups returns each group once, in no particular order.
func (d *Directory) Groups() []*Group {
	seen := map[*Group]bool{}
	var gs []*Group
	for _, g := range d.groups {
		if !seen[g] {
			seen[g] = true
			gs = append(gs, g)
		}
	}
	return gs
}

// Account returns the entry for a normalised address, or nil.
func (d *Directory) Account(addr string) *Account { return d.accounts[addr] }

// Webmail reports whether ip is in a webmail network (R6).
func (d *Directory) Webmail(ip netip.Addr) bool { return d.webmail.Contains(ip) }

// Summary is a line for the log after a (re)load.
func (d *Directory) Summary() string {
	groups := d.Groups()
	nets := make([]string, len(d.webmail))
	for i, n := range d.webmail {
		nets[i] = n.String()
	}
	return fmt.Sprintf("%d domains (%d names with aliases), %d accounts, webmail networks [%s]",
		len(groups), len(d.groups), len(d.accounts), strings.Join(nets, " "))
}
