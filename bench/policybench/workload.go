package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"time"
)

// The workload: who sends, from where, to whom, and the requests that Postfix
// 3.7 sends policyd for one SMTP session on the services of
// etc/postfix/master.cf (smtpd_delay_reject = no; the client, sender,
// recipient, data and end-of-data restriction lists call the policy service,
// so a session is CONNECT, then per message MAIL, RCPT per recipient, DATA and
// END-OF-MESSAGE). The attributes and their values per stage are those that
// ../shared/lab/LAB.md §3a recorded from a real Postfix 3.7.11.

// stage is a protocol_state.
type stage int

const (
	stageConnect stage = iota
	stageMail
	stageRcpt
	stageData
	stageEOM
	numStages
)

var stageNames = [numStages]string{"CONNECT", "MAIL", "RCPT", "DATA", "END-OF-MESSAGE"}

func (s stage) String() string { return stageNames[s] }

// postfixAttributes are the 29 attributes Postfix 3.7 sends at every stage,
// in its order (LAB.md §3a; compatibility_level and mail_version came in 3.8).
var postfixAttributes = []string{
	"request", "protocol_state", "protocol_name", "client_address", "client_name",
	"client_port", "reverse_client_name", "server_address", "server_port", "helo_name",
	"sender", "recipient", "recipient_count", "queue_id", "instance", "size",
	"etrn_domain", "stress", "sasl_method", "sasl_username", "sasl_sender",
	"ccert_subject", "ccert_issuer", "ccert_fingerprint", "ccert_pubkey_fingerprint",
	"encryption_protocol", "encryption_cipher", "encryption_keysize", "policy_context",
}

// workload is the population the load is drawn from: accounts spread over
// hosted domains (some with an alias domain), the client addresses they send
// from, and the recipients' domains.
type workload struct {
	accounts    int
	domains     int
	ipv4, ipv6  int
	rcptDomains []string // most popular first
	stride      int      // walks the accounts in a scattered order, each once per round
}

// aliasEvery: every tenth hosted domain has an alias domain (R5 accepts it).
const aliasEvery = 10

// popularDomains lead the recipients' domains; the Seznam group is R13's.
var popularDomains = []string{"seznam.cz", "gmail.test", "email.cz", "centrum.test", "outlook.test", "post.cz", "yahoo.test", "atlas.test"}

func newWorkload(accounts, domains, ipv4, ipv6, rcptDomains int) (*workload, error) {
	switch {
	case accounts < 1 || domains < 1 || rcptDomains < 1:
		return nil, fmt.Errorf("accounts, domains and recipient domains must be positive")
	case ipv4 < 1 || ipv6 < 0:
		return nil, fmt.Errorf("at least one IPv4 client address is needed")
	case ipv4 > 2*254*254:
		return nil, fmt.Errorf("at most %d IPv4 client addresses (two /16 of 198.18.0.0/15)", 2*254*254)
	case ipv6 > 0xffff:
		return nil, fmt.Errorf("at most %d IPv6 client networks", 0xffff)
	}
	w := &workload{accounts: accounts, domains: domains, ipv4: ipv4, ipv6: ipv6}
	w.rcptDomains = append(w.rcptDomains, popularDomains...)
	for i := len(w.rcptDomains); i < rcptDomains; i++ {
		w.rcptDomains = append(w.rcptDomains, fmt.Sprintf("dest%d.test", i))
	}
	w.stride = 7919
	for gcd(w.stride, accounts) != 1 {
		w.stride += 2
	}
	return w, nil
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// account returns the n-th account of the walk: n and n+accounts name the
// same account, and any accounts consecutive n name distinct ones.
func (w *workload) account(n uint64) int {
	return int((n % uint64(w.accounts)) * uint64(w.stride) % uint64(w.accounts))
}

func (w *workload) domain(i int) string { return "customer" + strconv.Itoa(i) + ".test" }

func (w *workload) alias(i int) string { return "alias" + strconv.Itoa(i) + ".test" }

func (w *workload) hasAlias(i int) bool { return i%aliasEvery == 0 }

func (w *workload) login(a int) string {
	return "user" + strconv.Itoa(a) + "@" + w.domain(a%w.domains)
}

// clientIP returns client address number i: IPv4 addresses in the
// benchmarking range 198.18.0.0/15 (RFC 2544) first, then IPv6 networks of
// 2001:db8::/32, each a /64 whose interface identifier the caller chooses.
func (w *workload) clientIP(i int, iid uint64) netip.Addr {
	if i < w.ipv4 {
		half := i / 2
		return netip.AddrFrom4([4]byte{198, byte(18 + i%2), byte(1 + half/254), byte(1 + half%254)})
	}
	n := i - w.ipv4
	var b [16]byte
	copy(b[:], []byte{0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, byte(n >> 8), byte(n)})
	for k := range 8 {
		b[8+k] = byte(iid >> (56 - 8*k))
	}
	return netip.AddrFrom16(b)
}

// homeIP is the address an account usually sends from: accounts share
// addresses, as customers behind one office router do.
func (w *workload) homeIP(a int) int { return int(uint64(a) * 2654435761 % uint64(w.ipv4+w.ipv6)) }

// session is one SMTP session as policyd sees it, planned in full.
type session struct {
	login        string
	saslMethod   string
	clientAddr   string
	clientName   string
	clientPort   string
	serverAddr   string
	serverPort   string
	context      string
	helo         string
	tlsAtConnect bool // implicit TLS (465); STARTTLS comes after CONNECT
	tlsProtocol  string
	tlsCipher    string
	messages     []message
}

type message struct {
	sender    string
	rcpts     []string
	size      int // the real size, known at END-OF-MESSAGE
	sizeParam int // the client's SIZE= (0 when it sends none)
	queueID   string
	instance  string
	aborted   bool // RSET after the recipients: no DATA, no END-OF-MESSAGE
}

// smtpd is the Postfix smtpd process behind one policy connection: its
// process id and transaction count make up each message's instance.
type smtpd struct {
	pid int
	seq uint32
}

// newSession plans a session of account a from the smtpd behind the
// connection, with the connection's own rng. A priming session is one
// message to one recipient, so that every account is counted once before the
// measurement.
func (w *workload) newSession(rng *rand.Rand, a int, p *smtpd, prime bool) *session {
	ipIndex := w.homeIP(a)
	if rng.IntN(100) < 15 { // on the move
		ipIndex = rng.IntN(w.ipv4 + w.ipv6)
	}
	ip := w.clientIP(ipIndex, rng.Uint64())
	s := &session{
		login:      w.login(a),
		saslMethod: "PLAIN",
		clientAddr: ip.String(),
		clientName: "unknown",
		clientPort: strconv.Itoa(1024 + rng.IntN(64511)),
		helo:       fmt.Sprintf("DESKTOP-%06X", rng.IntN(1<<24)),
	}
	if rng.IntN(100) < 30 {
		s.saslMethod = "LOGIN"
	}
	if rng.IntN(100) < 80 {
		s.clientName = "host-" + strconv.Itoa(ipIndex) + ".dynamic.isp.test"
	}
	if rng.IntN(100) < 40 {
		s.helo = "[192.168." + strconv.Itoa(rng.IntN(256)) + "." + strconv.Itoa(1+rng.IntN(254)) + "]"
	}
	s.serverAddr = "203.0.113.25"
	if ip.Is6() {
		s.serverAddr = "2001:db8:ffff::25"
	}
	switch p := rng.IntN(100); {
	case p < 60:
		s.serverPort, s.context = "587", "submission"
	case p < 95:
		s.serverPort, s.context, s.tlsAtConnect = "465", "submissions", true
	default:
		s.serverPort, s.context = "25", "smtp"
	}
	s.tlsProtocol, s.tlsCipher = "TLSv1.3", "TLS_AES_256_GCM_SHA384"
	if rng.IntN(100) < 20 {
		s.tlsProtocol, s.tlsCipher = "TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384"
	}

	n := 1
	if !prime {
		n = pick(rng, []weighted{{80, 1, 1}, {15, 2, 5}, {5, 6, 20}})
	}
	start := time.Now()
	for i := range n {
		m := message{sender: w.sender(rng, a), queueID: fmt.Sprintf("%011X", rng.Uint64()>>20)}
		p.seq++
		m.instance = strconv.FormatInt(int64(p.pid), 16) + "." + strconv.FormatInt(start.Unix(), 16) + "." +
			strconv.FormatInt(int64(start.Nanosecond()/1000), 16) + "." + strconv.FormatUint(uint64(p.seq), 16)
		rcpts := 1
		if !prime {
			rcpts = pick(rng, []weighted{{55, 1, 1}, {25, 2, 5}, {15, 6, 30}, {5, 31, 100}})
		}
		for range rcpts {
			m.rcpts = append(m.rcpts, w.recipient(rng))
		}
		m.size = int(math.Min(50e6, math.Exp(10.5+1.5*rng.NormFloat64())))
		if rng.IntN(100) < 60 {
			m.sizeParam = m.size
		}
		m.aborted = i > 0 && rng.IntN(100) < 3
		s.messages = append(s.messages, m)
	}
	return s
}

// weighted is a range [lo, hi] chosen with weight w.
type weighted struct{ w, lo, hi int }

func pick(rng *rand.Rand, choices []weighted) int {
	total := 0
	for _, c := range choices {
		total += c.w
	}
	r := rng.IntN(total)
	i := 0
	for r >= choices[i].w {
		r -= choices[i].w
		i++
	}
	return choices[i].lo + rng.IntN(choices[i].hi-choices[i].lo+1)
}

// sender is mostly the login itself; sometimes another mailbox of its
// domain, the alias domain, or the null sender of a receipt.
func (w *workload) sender(rng *rand.Rand, a int) string {
	d := a % w.domains
	switch p := rng.IntN(100); {
	case p < 1:
		return ""
	case p < 7:
		return "info@" + w.domain(d)
	case p < 12 && w.hasAlias(d):
		return "user" + strconv.Itoa(a) + "@" + w.alias(d)
	}
	return w.login(a)
}

// recipient draws a recipient: a tenth to hosted customers, the rest to
// destination domains of Zipf-like popularity.
func (w *workload) recipient(rng *rand.Rand) string {
	local := "r" + strconv.Itoa(rng.IntN(1_000_000))
	if rng.IntN(10) == 0 {
		return local + "@" + w.domain(rng.IntN(w.domains))
	}
	// P(rank k) ~ 1/(k+1): the inverse of the continuous distribution.
	n := float64(len(w.rcptDomains))
	k := int(math.Exp(rng.Float64()*math.Log(n+1))) - 1
	return local + "@" + w.rcptDomains[min(k, len(w.rcptDomains)-1)]
}

// cursor walks a session's requests in the order Postfix sends them.
type cursor struct {
	s    *session
	msg  int
	step int // 0 MAIL, 1..n RCPT, n+1 DATA, n+2 END-OF-MESSAGE; -1 before CONNECT
}

func newCursor(s *session) cursor { return cursor{s: s, step: -1} }

// next appends the next request of the session to buf and says its stage;
// ok is false when the session is over.
func (c *cursor) next(buf []byte) (out []byte, st stage, ok bool) {
	s := c.s
	if c.step == -1 {
		c.step = 0
		return s.render(buf, stageConnect, nil, 0), stageConnect, true
	}
	if c.msg == len(s.messages) {
		return buf, 0, false
	}
	m := &s.messages[c.msg]
	n := len(m.rcpts)
	i := c.step
	c.step++
	last := i == n+2 || (m.aborted && i == n)
	if last {
		c.msg, c.step = c.msg+1, 0
	}
	switch {
	case i == 0:
		return s.render(buf, stageMail, m, 0), stageMail, true
	case i <= n:
		return s.render(buf, stageRcpt, m, i), stageRcpt, true
	case i == n+1:
		return s.render(buf, stageData, m, 0), stageData, true
	default:
		return s.render(buf, stageEOM, m, 0), stageEOM, true
	}
}

// render appends one request: at RCPT, rcpt is the recipient's number
// (from 1).
func (s *session) render(buf []byte, st stage, m *message, rcpt int) []byte {
	attr := func(name, value string) {
		buf = append(buf, name...)
		buf = append(buf, '=')
		buf = append(buf, value...)
		buf = append(buf, '\n')
	}
	tls := st != stageConnect || s.tlsAtConnect
	protocol, helo, sasl, login := "SMTP", "", "", ""
	var sender, recipient, count, queueID, instance, size string
	count, size = "0", "0"
	if m != nil {
		protocol, helo, sasl, login, sender = "ESMTP", s.helo, s.saslMethod, s.login, m.sender
		size = strconv.Itoa(m.sizeParam)
		switch st {
		case stageRcpt:
			recipient, instance = m.rcpts[rcpt-1], m.instance
			if rcpt > 1 { // the queue file exists once a recipient was accepted
				queueID = m.queueID
			}
		case stageData, stageEOM:
			// One recipient is named; several are not, only counted.
			if len(m.rcpts) == 1 {
				recipient = m.rcpts[0]
			}
			count, queueID, instance = strconv.Itoa(len(m.rcpts)), m.queueID, m.instance
			if st == stageEOM {
				size = strconv.Itoa(m.size)
			}
		}
	}
	attr("request", "smtpd_access_policy")
	attr("protocol_state", st.String())
	attr("protocol_name", protocol)
	attr("client_address", s.clientAddr)
	attr("client_name", s.clientName)
	attr("client_port", s.clientPort)
	attr("reverse_client_name", s.clientName)
	attr("server_address", s.serverAddr)
	attr("server_port", s.serverPort)
	attr("helo_name", helo)
	attr("sender", sender)
	attr("recipient", recipient)
	attr("recipient_count", count)
	attr("queue_id", queueID)
	attr("instance", instance)
	attr("size", size)
	attr("etrn_domain", "")
	attr("stress", "")
	attr("sasl_method", sasl)
	attr("sasl_username", login)
	attr("sasl_sender", "")
	attr("ccert_subject", "")
	attr("ccert_issuer", "")
	attr("ccert_fingerprint", "")
	attr("ccert_pubkey_fingerprint", "")
	if tls {
		attr("encryption_protocol", s.tlsProtocol)
		attr("encryption_cipher", s.tlsCipher)
		attr("encryption_keysize", "256")
	} else {
		attr("encryption_protocol", "")
		attr("encryption_cipher", "")
		attr("encryption_keysize", "0")
	}
	attr("policy_context", s.context)
	return append(buf, '\n')
}
