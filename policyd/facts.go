package policyd

import (
	"net/netip"
	"strconv"
	"time"

	"relayguard/config"
	"relayguard/limits"
	"relayguard/mailaddr"
	"relayguard/subject"
)

// facts are the attributes of one request that the rules use, parsed once.
type facts struct {
	now       time.Time // of the decision: one reading of the clock per request
	stage     string    // protocol_state: CONNECT, EHLO, MAIL, RCPT, DATA, END-OF-MESSAGE
	ipRaw     string
	ip        netip.Addr
	ipErr     error
	login     string // sasl_username: empty when the client did not authenticate
	sender    string // envelope sender: empty for the null sender <>
	recipient string
	session   session // client and server address and port
	instance  string  // one mail transaction
	queueID   string
	size      int // message size at END-OF-MESSAGE
	// recipientCount is the recipients accepted, at DATA and END-OF-MESSAGE.
	recipientCount int
	dir            *config.Directory
	memo           *memo  // the connection's; nil outside one
	rcptKey        string // recipientKey, once computed
	rcptKeyOK      bool
}

// read fills f from a request.
func (f *facts) read(req *Request, now time.Time, dir *config.Directory, m *memo) {
	*f = facts{now: now, dir: dir, memo: m}
	var clientPort, serverAddr, serverPort, size, count string
	// One pass over the attributes: a Get per attribute scanned them all
	// each time, a fifth of the engine's time.
	for i, name := range req.names {
		v := req.values[i]
		switch name {
		case "protocol_state":
			f.stage = v
		case "client_address":
			f.ipRaw = v
		case "client_port":
			clientPort = v
		case "server_address":
			serverAddr = v
		case "server_port":
			serverPort = v
		case "sasl_username":
			f.login = v
		case "sender":
			f.sender = v
		case "recipient":
			f.recipient = v
		case "instance":
			f.instance = v
		case "queue_id":
			f.queueID = v
		case "size":
			size = v
		case "recipient_count":
			count = v
		}
	}
	f.ip, f.ipErr = netip.ParseAddr(f.ipRaw)
	f.ip = f.ip.Unmap()
	f.session = session{addrPort(f.ipRaw, clientPort), addrPort(serverAddr, serverPort)}
	f.size, _ = strconv.Atoi(size)
	f.recipientCount, _ = strconv.Atoi(count)
	if m != nil {
		m.follow(f)
	}
}

// memo is what a connection derives from the attributes that repeat
// through a session, the login and the client's address: the store keys of
// the counting rules, built once per session rather than at every request.
type memo struct {
	login, ip string            // what the keys below were derived from
	rate      []limits.KeyLimit // R10's
	spam      []string          // R15's
}

// follow empties the memo when the request has another login or address.
func (m *memo) follow(f *facts) {
	if m.login != f.login || m.ip != f.ipRaw {
		*m = memo{login: f.login, ip: f.ipRaw}
	}
}

// recipientKey is the recipient as the tracker counts it.
func (f *facts) recipientKey() string {
	if !f.rcptKeyOK {
		f.rcptKey, f.rcptKeyOK = subject.Account(f.recipient), true
	}
	return f.rcptKey
}

func (f *facts) ipText() string { return f.ipRaw }

// logAttrs are the subjects of a decision for its log line.
func (f *facts) logAttrs() []any {
	a := []any{"stage", f.stage, "client", f.ipRaw}
	if f.login != "" {
		a = append(a, "login", f.login)
	}
	if f.stage != "CONNECT" && f.stage != "EHLO" {
		a = append(a, "sender", f.sender)
	}
	if f.recipient != "" {
		a = append(a, "recipient", f.recipient)
	}
	return a
}

// account is the directory entry of the authenticated login, or nil.
func (f *facts) account() *config.Account {
	n, err := mailaddr.Normalize(f.login)
	if err != nil {
		return nil
	}
	return f.dir.Account(n)
}

// domainOf returns the ASCII domain of a full address.
func domainOf(addr string) (string, error) {
	_, d, err := mailaddr.Split(addr)
	return d, err
}
