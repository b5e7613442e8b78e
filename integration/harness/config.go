package harness

import (
	"fmt"
	"regexp"
	"strings"
)

// The values etc/ files hold that the lab must change. Each substitution fails when its target is
// missing, so the operator files cannot drift from what the tests run.
const (
	etcPolicyAddr    = "inet:127.0.0.1:10040"
	etcMilterAddr    = "inet:127.0.0.1:10041"
	etcAuthPolicyURL = "http://127.0.0.1:10042/"
	etcProxyFilter   = "relayguard_proxy_filter = 127.0.0.1:10025"
	etcContentFilter = "relayguard_content_filter ="
	etcReinject      = "127.0.0.1:10026"
	etcTLSCert       = "/etc/relayguard/tls/cert.pem"
	etcTLSKey        = "/etc/relayguard/tls/key.pem"
	etcDovecotSocket = "/var/spool/postfix/private/auth"
	// etcSASLPath is kept as it is: it is relative to queue_directory, which the lab sets to its own
	// spool, where Dovecot's socket is moved to.
	etcSASLPath = "smtpd_sasl_path = private/auth"
)

type substitution struct {
	what, old, new string
}

// substitute replaces every occurrence of each old text; a substitution whose old text does not
// occur is an error naming the file.
func substitute(file, text string, subs ...substitution) (string, error) {
	for _, s := range subs {
		if !strings.Contains(text, s.old) {
			return "", fmt.Errorf("harness: %s: %s: %q not found", file, s.what, s.old)
		}
		text = strings.ReplaceAll(text, s.old, s.new)
	}
	return text, nil
}

// require fails when text lacks a line the lab depends on but does not change.
func require(file, text, what, line string) error {
	for _, l := range strings.Split(text, "\n") {
		if strings.TrimSpace(l) == line {
			return nil
		}
	}
	return fmt.Errorf("harness: %s: %s: line %q not found", file, what, line)
}

// renameService replaces the name of the master.cf service "name inet ..." by addr (host:port),
// which makes Postfix listen there. Exactly one such line must exist.
func renameService(file, text, name, addr string) (string, error) {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `([ \t]+inet[ \t])`)
	n := len(re.FindAllStringIndex(text, -1))
	if n != 1 {
		return "", fmt.Errorf("harness: %s: want exactly one %q inet service, found %d", file, name, n)
	}
	return re.ReplaceAllString(text, addr+"$1"), nil
}

// withoutService removes the master.cf service "name inet ...", with its continuation lines (those
// that start with white space), from text. Exactly one such service must exist.
func withoutService(file, text, name string) (string, error) {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `[ \t]+inet[ \t].*\n(?:[ \t]+\S.*\n)*`)
	if n := len(re.FindAllStringIndex(text, -1)); n != 1 {
		return "", fmt.Errorf("harness: %s: want exactly one %q inet service, found %d", file, name, n)
	}
	return re.ReplaceAllString(text, ""), nil
}

// postfixMainCF is the lab part of main.cf; the etc/postfix/main.cf fragment follows it, so the
// fragment's settings win where both set a parameter.
func postfixMainCF(lab *Lab) string {
	return fmt.Sprintf(`# relayguard integration lab: loopback only, no DNS, everything relayed to the test sink.
compatibility_level = 3.6
queue_directory = %[1]s/spool
data_directory = %[1]s/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = %[1]s/postfix.log
maillog_file_prefixes = %[1]s
myhostname = relayguard-lab.example.test
mydomain = example.test
myorigin = $mydomain
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
local_transport = error:5.1.1 local delivery disabled in the lab
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:%[2]d
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
smtpd_peername_lookup = no
smtp_tls_security_level = none
smtp_connect_timeout = 5s
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 5s
biff = no
smtpd_banner = $myhostname ESMTP relayguard-lab

`, lab.postfixDir, lab.Sink.port)
}

// postfixMasterCF holds the lab's internal services, unchrooted because the queue is in the lab.
const postfixMasterCF = `# relayguard integration lab: internal services (no chroot), then etc/postfix/master.cf.
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd

`

// dovecotConf is the lab's Dovecot: the SASL service only, then etc/dovecot/95-relayguard.conf.
// disable_plaintext_auth keeps Dovecot's default (yes), as on an operator's machine: PLAIN and
// LOGIN then work only because Postfix marks sessions after STARTTLS or on 465 as secured.
func dovecotConf(lab *Lab, users, fragment string) string {
	return fmt.Sprintf(`# relayguard integration lab: Dovecot as Postfix's SASL server only.
base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
protocols = none
listen = 127.0.0.1
ssl = no
auth_verbose = yes
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%u %[2]s
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}
!include %[3]s
`, lab.dovecotDir, users, fragment)
}
