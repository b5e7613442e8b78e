// Package integration is relayguard's end-to-end suite: real Postfix and
// Dovecot running the operator's files of etc/, relayguard policyd built from
// this tree, a DNS server and a GeoIP database of the tests' own, all on
// loopback, driven over SMTP the way a customer's mail client does.
package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"relayguard/dkim"
	"relayguard/geoip/geoiptest"
	"relayguard/integration/harness"
	"relayguard/internal/dnstest"
	"relayguard/internal/etcconf"
	"relayguard/scan/scantest"
)

// env is the running lab shared by the tests: the main stack, whose filter
// runs before the queue as etc/ recommends, and a second one after the queue.
var env struct {
	*stack           // before the queue; most tests use only this one
	aq        *stack // after the queue: its own Postfix, Dovecot, policyd and filter
	dns       *dnstest.Server
	clamd     *scantest.Clamd // both filters' clamd
	directory string          // path of the main policyd's directory file
	bin       string          // relayguard, for the support commands
	dkimTXT   string          // the TXT record of example.cz's DKIM key
}

// stack is one Postfix and Dovecot (a harness lab) with the relayguard
// policyd and contentfilter it calls, which read one configuration.
type stack struct {
	lab     *harness.Lab
	policyd *daemon // relayguard policyd
	filter  *daemon // relayguard contentfilter
	config  string  // their configuration
	edits   []edit  // what the tests change in etc/relayguard.toml
	spool   string  // the filter's spool_dir
}

const password = "secret"

// Dovecot's accounts (all with password).
var users = []string{
	"jan@example.cz", "jan", "off@example.cz", "petr@example.com", "u@nomx.test", "u@nullmx.test",
	"u@servfail.test", "x@granted.test", "rate@example.cz", "rate2@example.cz", "many@example.cz",
	"session@example.cz", "big@example.cz", "spam@example.cz", "other@example.cz",
}

var directory = `
webmail_networks = ["127.0.0.60"]

[[domain]]
name = "example.cz"
aliases = ["example.com", "příklad.cz"]

[[domain]]
name = "granted.test"
geoip_countries = ["CN"]

[[account]]
address = "off@example.cz"
disabled = true

[[account]]
address = "jan@example.cz"
alternative_sender = "jan.novak@foreign.test"
`

var zone = []string{
	"example.cz. 300 IN MX 10 mx.example.cz.",
	"example.com. 300 IN MX 10 mx.example.cz.",
	"xn--pklad-zsa96e.cz. 300 IN MX 10 mx.example.cz.",
	"mail.example.cz. 300 IN A 192.0.2.1",
	"foreign.test. 300 IN MX 10 mx.foreign.test.",
	"granted.test. 300 IN MX 10 mx.granted.test.",
	"dest.test. 300 IN MX 10 mx.dest.test.",
	"seznam.cz. 300 IN MX 10 mx.seznam.cz.",
	"email.cz. 300 IN MX 10 mx.seznam.cz.",
	"post.cz. 300 IN MX 10 mx.seznam.cz.",
	"aaaa.test. 300 IN AAAA 2001:db8::25",
	"nomx.test. 300 IN TXT \"no mail\"",
	"nullmx.test. 300 IN MX 0 .",
	// SBL test points: 127.0.0.2 listed, 127.0.0.4 answers a query error.
	"2.0.0.127.sbl.spamhaus.org. 300 IN A 127.0.0.2",
	"4.0.0.127.sbl.spamhaus.org. 300 IN A 127.255.255.254",
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "relayguard-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	stop, err := setup(dir)
	defer stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "end-to-end set-up failed:", err)
		return 1
	}
	code := m.Run()
	if code != 0 {
		for _, st := range []struct {
			name string
			s    *stack
		}{{"before-queue", env.stack}, {"after-queue", env.aq}} {
			q, _ := st.s.lab.Postqueue("-j")
			fmt.Fprintf(os.Stderr, "==== %s stack\n---- policyd log\n%s\n---- contentfilter log\n%s\n---- queue\n%s\n---- lab logs\n%s\n",
				st.name, readFile(st.s.policyd.log), readFile(st.s.filter.log), q, st.s.lab.Logs())
		}
	}
	return code
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// setup starts everything; stop undoes what was started, also after an error.
func setup(dir string) (stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	if err := harness.EnsureInstalled(); err != nil {
		return stop, err
	}

	env.dns, err = dnstest.Start()
	if err != nil {
		return stop, err
	}
	stops = append(stops, func() { env.dns.Close() })
	if err := env.dns.Add(zone...); err != nil {
		return stop, err
	}
	env.dns.SetSOA("test.", 300, 60)
	env.dns.SetSOA("sbl.spamhaus.org.", 300, 60)
	env.dns.SetRcode("servfail.test", dns.RcodeServerFailure)

	// The scanners the content filters ask: clamd with a signature database
	// of its own (EICAR), rspamd with this suite's DNS server.
	env.clamd, err = scantest.StartClamd(filepath.Join(dir, "clamd"))
	if err != nil {
		return stop, err
	}
	stops = append(stops, func() { env.clamd.Close() })
	rspamdLab, err := scantest.StartRspamd(filepath.Join(dir, "rspamd"), env.dns.Addr())
	if err != nil {
		return stop, err
	}
	stops = append(stops, func() { rspamdLab.Close() })

	db := filepath.Join(dir, "country.mmdb")
	if err := geoiptest.Write(db, geoiptest.MaxMind, map[string]string{
		"127.0.0.0/8": "CZ",
		"127.0.0.50":  "CN",
		"127.0.0.60":  "CN", // the webmail network: exempt from GeoIP
	}); err != nil {
		return stop, err
	}
	// A DKIM key for example.cz (R19), as `relayguard dkim keygen` makes one.
	key, pemKey, err := dkim.Generate("ed25519", 0)
	if err != nil {
		return stop, err
	}
	keyFile := filepath.Join(dir, "example.cz.e2e.key")
	if err := os.WriteFile(keyFile, pemKey, 0o600); err != nil {
		return stop, err
	}
	env.dkimTXT = dkimTXTValue(dkim.TXTRecord("e2e", "example.cz", key.Public()))
	directory = strings.Replace(directory, `aliases = ["example.com", "příklad.cz"]`,
		fmt.Sprintf("aliases = [\"example.com\", \"příklad.cz\"]\ndkim_selector = \"e2e\"\ndkim_key = %q", keyFile), 1)

	env.bin = filepath.Join(dir, "relayguard")
	build := exec.Command("go", "build", "-o", env.bin, "./cmd/relayguard")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		return stop, fmt.Errorf("go build: %v\n%s", err, out)
	}
	shared := []edit{
		{"dns", `servers = ["127.0.0.1:53"]`, fmt.Sprintf("servers = [%q]", env.dns.Addr())},
		{"contentfilter.rules.virus", `clamd = "127.0.0.1:3310"`, fmt.Sprintf("clamd = %q", env.clamd.Addr)},
		{"contentfilter.rules.spam", `rspamd = "http://127.0.0.1:11333"`, fmt.Sprintf("rspamd = %q", rspamdLab.URL)},
		{"rules.geoip", `database = "/var/lib/relayguard/country.mmdb"`, fmt.Sprintf("database = %q", db)},
		// Small limits, and addresses where they do not apply, so that
		// each test counts on its own.
		{"rules.spam_allowance", `allowance = 10`, `allowance = 2`},
		{"rules.rate", `exempt = []`, `exempt = ["127.0.0.0/24", "127.0.1.0/24"]`},
		{"rules.rate", `  { window = "1m", max = 250 },`, `  { window = "1m", max = 12 },`},
		{"rules.rate", `  { window = "1h", max = 1000 },`, `  { window = "1h", max = 20 },`},
		{"rules.big_messages", `  { name = "Seznam.cz", domains = ["seznam.cz", "email.cz", "post.cz"], size = 1000000, max = 30, window = "3m" },`,
			`  { name = "Seznam.cz", domains = ["seznam.cz", "email.cz", "post.cz"], size = 1000000, max = 3, window = "3m" },`},
	}
	bq, stopBQ, err := startStack(dir, false, shared)
	stops = append(stops, stopBQ)
	if err != nil {
		return stop, err
	}
	env.stack = bq
	env.directory = filepath.Join(dir, "directory.toml")
	// The after-queue stack: contentfilter.mode set as an operator sets it
	// for etc/postfix/main.cf's after-queue filter.
	aq, stopAQ, err := startStack(filepath.Join(dir, "aq"), true,
		append(shared, edit{"contentfilter", `mode = "before-queue"`, `mode = "after-queue"`}))
	stops = append(stops, stopAQ)
	if err != nil {
		return stop, err
	}
	env.aq = aq
	return stop, nil
}

// startStack starts a stack with its files in dir: relayguard with the
// shared edits of its configuration, and a lab whose filter runs after the
// queue or before it. stop undoes what was started, also after an error.
func startStack(dir string, afterQueue bool, shared []edit) (s *stack, stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, stop, err
	}
	// Each policyd reads its own copy of the directory: TestDirectoryReload
	// rewrites the main one.
	dirFile := filepath.Join(dir, "directory.toml")
	if err := os.WriteFile(dirFile, []byte(directory), 0o644); err != nil {
		return nil, stop, err
	}
	addrs, err := freeAddrs(5) // policy, milter, auth policy, filter, reinjection
	if err != nil {
		return nil, stop, err
	}
	policyAddr, milterAddr, authAddr, filterAddr, reinjectAddr := addrs[0], addrs[1], addrs[2], addrs[3], addrs[4]
	s = &stack{config: filepath.Join(dir, "relayguard.toml"), spool: filepath.Join(dir, "spool")}
	s.edits = append([]edit{
		{"policyd", `listen = "127.0.0.1:10040"`, fmt.Sprintf("listen = %q", policyAddr)},
		{"policyd", `directory = "/etc/relayguard/directory.toml"`, fmt.Sprintf("directory = %q", dirFile)},
		{"milter", `listen = "127.0.0.1:10041"`, fmt.Sprintf("listen = %q", milterAddr)},
		{"auth_policy", `listen = "127.0.0.1:10042"`, fmt.Sprintf("listen = %q", authAddr)},
		{"admin", `socket = "/run/relayguard/admin.sock"`, fmt.Sprintf("socket = %q", filepath.Join(dir, "admin.sock"))},
		{"contentfilter", `listen = "127.0.0.1:10025"`, fmt.Sprintf("listen = %q", filterAddr)},
		{"contentfilter", `next_hop = "127.0.0.1:10026"`, fmt.Sprintf("next_hop = %q", reinjectAddr)},
		{"contentfilter", `spool_dir = "/var/lib/relayguard/spool"`, fmt.Sprintf("spool_dir = %q", s.spool)},
		{"store", `dir = "/var/lib/relayguard/state"`, fmt.Sprintf("dir = %q", filepath.Join(dir, "state"))},
	}, shared...)
	if err := writeConfig(s.config, s.edits); err != nil {
		return nil, stop, err
	}
	s.policyd = &daemon{name: "policyd", args: []string{env.bin, "policyd", "--config", s.config},
		log: filepath.Join(dir, "policyd.log"), addrs: []string{policyAddr, milterAddr, authAddr}}
	if err := s.policyd.start(); err != nil {
		return nil, stop, err
	}
	stops = append(stops, s.policyd.stop)
	s.filter = &daemon{name: "contentfilter", args: []string{env.bin, "contentfilter", "--config", s.config},
		log: filepath.Join(dir, "contentfilter.log"), addrs: []string{filterAddr}}
	if err := s.filter.start(); err != nil {
		return nil, stop, err
	}
	stops = append(stops, s.filter.stop)

	accounts := map[string]string{}
	for _, u := range users {
		accounts[u] = password
	}
	s.lab, err = harness.Start(harness.Config{
		PolicyAddr: "inet:" + policyAddr, MilterAddr: "inet:" + milterAddr, AuthPolicyURL: "http://" + authAddr + "/",
		FilterAddr: filterAddr, ReinjectAddr: reinjectAddr, AfterQueue: afterQueue,
		Users: accounts, Repo: "..",
	})
	if err != nil {
		return nil, stop, err
	}
	stops = append(stops, func() { s.lab.Close() })
	return s, stop, nil
}

// dkimTXTValue takes the text of a zone line's TXT character-strings.
func dkimTXTValue(zoneLine string) string {
	var b strings.Builder
	for i, part := range strings.Split(zoneLine, `"`) {
		if i%2 == 1 {
			b.WriteString(part)
		}
	}
	return b.String()
}

// edit replaces one line of a table of etc/relayguard.toml.
type edit struct{ table, old, new string }

// writeConfig writes etc/relayguard.toml with some lines replaced; each line
// must be found as documented in its table, so that the tests run the very
// file an operator installs.
func writeConfig(path string, edits []edit) error {
	es := make([]etcconf.Edit, len(edits))
	for i, e := range edits {
		es[i] = etcconf.Replace(e.table, e.old, e.new)
	}
	return etcconf.Write("../etc/relayguard.toml", path, es)
}

// withConfig restarts policyd with more edits of its configuration, and
// with the suite's configuration again when the test ends.
func withConfig(t *testing.T, more ...edit) {
	t.Helper()
	variant := env.config + ".variant"
	if err := writeConfig(variant, append(append([]edit(nil), env.edits...), more...)); err != nil {
		t.Fatal(err)
	}
	restart := func(cfg string) error {
		env.policyd.stop()
		env.policyd.args[len(env.policyd.args)-1] = cfg
		return env.policyd.start()
	}
	if err := restart(variant); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := restart(env.config); err != nil {
			t.Fatal(err)
		}
	})
}

// daemon is a relayguard process of the suite.
type daemon struct {
	name  string
	args  []string
	log   string   // its output, appended across restarts
	addrs []string // where it listens once ready
	cmd   *exec.Cmd
	done  chan struct{}
}

// start starts the daemon and waits until it listens.
func (d *daemon) start() error {
	logFile, err := os.OpenFile(d.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(d.args[0], d.args[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logFile.Close(); close(done) }()
	d.cmd, d.done = cmd, done
	for _, addr := range d.addrs {
		if err := waitListening(addr, done); err != nil {
			return fmt.Errorf("%s: %v\n%s", d.name, err, readFile(d.log))
		}
	}
	return nil
}

// stop stops the daemon as systemd would (SIGTERM) and waits for it.
func (d *daemon) stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
}

// freeAddrs returns n distinct addresses 127.0.0.1:port that were free a
// moment ago (all held at once, so that no port comes twice).
func freeAddrs(n int) ([]string, error) {
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

func waitListening(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("exited at start-up")
		default:
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not listening on %s after 20s", addr)
}

// logLinesWith returns policyd's log lines that contain every one of parts.
func logLinesWith(parts ...string) []string {
	return linesWith(env.policyd.log, parts...)
}

// linesWith returns the lines of a daemon's log that contain every one of parts.
func linesWith(log string, parts ...string) []string {
	var out []string
	for _, line := range strings.Split(readFile(log), "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok && line != "" {
			out = append(out, line)
		}
	}
	return out
}
