// Package admin is the support desk's way into policyd: a small JSON API
// over HTTP on a unix socket, which the `relayguard blocks`, `unblock`,
// `block`, `account`, `usage` and `explain` commands talk to. policyd owns
// the store (DESIGN.md, "State"); the commands never open it.
//
// # Exposure
//
// The API listens on a unix socket only, never on TCP (Listen). Whoever can
// open the socket can unblock addresses and disable accounts, and the API
// asks nothing more: access is the socket file's mode (0660 by default) and
// group (admin.socket_group, e.g. the support group).
//
// # Endpoints
//
//	GET  /blocks                                          → [Block]
//	POST /unblock  {"ip"} or {"account"}                  → Unblocked; 404 if not blocked, 409 (see Unblock)
//	POST /block    {"ip", "duration": "2h", "reason"}     → Block
//	POST /account  {"account", "disabled": true|false}    → AccountState
//	GET  /usage?subject=ACCOUNT|IP                        → [UsageLine]
//	GET  /explain/{id}                                    → decisions.Record; 404 if unknown or expired
//	POST /filtering      {"client": "ip:port"}            → {} (the filter: a transaction begins)
//	POST /end-of-message {"client": "ip:port"}            → {"reply": ""|line} (the filter: the end of data)
//	GET  /debug/pprof/...                                 → the runtime's profiles (net/http/pprof)
//
// An IP is an IPv4 or IPv6 address, or an IPv6 prefix as Blocks shows it
// (ParseIP); an account is a full e-mail address, normalised as policyd
// counts it; a duration is Go's ("90m", "2h"); an id is a reply's
// 22 letters and digits. A failure is {"error": "..."} with 400 for invalid
// input, 404 for what does not exist, 405 for a wrong method, 409 for what
// the request cannot change, and 500 when the Backend fails.
//
// # Unblock
//
// POST /unblock takes exactly one of "ip" and "account", and lifts every
// block of that subject that support may lift: for an address, R4's (failed
// authentications, and support's own POST /block) and R15's (spam
// allowance spent); for an account, R15's. It forgets the counts behind
// them, so that the next failure or spam message does not block again at
// once. The answer lists the blocks lifted:
//
//	{"account": "jan@example.cz", "unblocked": true, "lifted": [Block]}
//
// It never gives back an account's SMTP access that support turned off
// (R3): that is POST /account {"disabled": false}. An account that has no
// block to lift but is disabled gets 409 saying so; one that had a block
// lifted and stays disabled has "disabled": true in the answer.
//
// The profiles are for measuring the daemon where it runs, e.g. its heap:
//
//	curl --unix-socket /run/relayguard/admin.sock -o heap.pb.gz http://admin/debug/pprof/heap
//	go tool pprof -sample_index=inuse_space heap.pb.gz
//
// A CPU profile (/debug/pprof/profile?seconds=N) must end within the
// server's write timeout, 30 s.
package admin

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"relayguard/decisions"
	"relayguard/limits"
	"relayguard/mailaddr"
)

// Backend is what the API serves; policyd implements it over its store.
type Backend interface {
	// Blocks returns the blocks in force.
	Blocks(ctx context.Context) ([]limits.Block, error)
	// Unblock lifts every block of s that support may lift: for an
	// address (its prefix, for IPv6), R4's and R15's; for an account,
	// R15's. It forgets the counts that led to them, and returns the
	// blocks in force that it lifted: none when s was not blocked. It
	// never turns an account's SMTP access back on (R3,
	// SetAccountDisabled); disabled reports that it stays off.
	Unblock(ctx context.Context, s Subject) (lifted []limits.Block, disabled bool, err error)
	// Block refuses ip (its prefix, for IPv6) for d, for the given reason.
	Block(ctx context.Context, ip netip.Addr, d time.Duration, reason string) (limits.Block, error)
	// SetAccountDisabled turns an account's SMTP access off or on (R3).
	// The account is a normalised full address.
	SetAccountDisabled(ctx context.Context, account string, disabled bool) error
	// Usage returns every limit on subject: a normalised account (it has
	// an '@') or an IP address.
	Usage(ctx context.Context, subject string) ([]UsageLine, error)
	// Explain returns the decision whose reply carried id, if it is still
	// kept.
	Explain(ctx context.Context, id string) (decisions.Record, bool, error)
	// Spam counts a message the content filter judged spam against its
	// sender (R15), found by its queue id or the client's address and port.
	Spam(ctx context.Context, client netip.AddrPort, queueID string) (SpamReport, error)
	// Filtering says that the before-queue content filter carries the
	// transaction the client (address and port) has begun, and will speak
	// its END-OF-MESSAGE reply.
	Filtering(ctx context.Context, client netip.AddrPort) error
	// EndOfMessage returns the END-OF-MESSAGE reply for that transaction,
	// "" when the message may pass.
	EndOfMessage(ctx context.Context, client netip.AddrPort) (string, error)
}

// SpamReport is the answer to a spam report: who sent the message, and
// whether their allowance is spent (the filter then refuses the message).
type SpamReport struct {
	Login string `json:"login,omitempty"`
	Spent bool   `json:"spent"`
}

// ErrNotFound, wrapped in a Backend's error, makes the API answer 404 with
// the error's text: fmt.Errorf("%w: no account %s", admin.ErrNotFound, a).
var ErrNotFound = errors.New("not found")

// Block is a block as the API shows it.
type Block struct {
	Subject string    `json:"subject"` // "192.0.2.7", "2001:db8:1:2::/64", "jan@example.cz"
	Rule    string    `json:"rule"`    // "R4"
	Key     string    `json:"key"`     // the store's key, "r4|ip|192.0.2.7"
	Until   time.Time `json:"until"`
	Reason  string    `json:"reason"`
	Count   int64     `json:"count"` // the count that caused it
}

// blockOf shows a store block, whose key is "rule|kind|subject".
func blockOf(b limits.Block) Block {
	out := Block{Subject: b.Key, Key: b.Key, Until: b.Until, Reason: b.Reason, Count: b.Count}
	if f := strings.SplitN(b.Key, "|", 3); len(f) == 3 {
		out.Rule, out.Subject = strings.ToUpper(f[0]), f[2]
	}
	return out
}

// UsageLine is one limit on a subject.
type UsageLine struct {
	Rule    string `json:"rule"`    // "R10"
	Subject string `json:"subject"` // what is counted: "jan@example.cz", "2001:db8:1:2::/64"
	Window  string `json:"window"`  // "1h"
	Used    int64  `json:"used"`
	Limit   int64  `json:"limit"`
	// FreesAt is when a full limit (Used ≥ Limit) admits an event again.
	// It is the zero time, and left out of the JSON, while the limit
	// admits one now, or if it never will (Limit 0).
	FreesAt time.Time `json:"frees_at,omitzero"`
}

// Unblocked is the answer of POST /unblock.
type Unblocked struct {
	IP        string  `json:"ip,omitempty"`      // the address asked about, or
	Account   string  `json:"account,omitempty"` // the account, normalised
	Unblocked bool    `json:"unblocked"`
	Lifted    []Block `json:"lifted,omitempty"` // the blocks lifted
	// Disabled: the account's SMTP access stays off (R3), which unblock
	// never changes.
	Disabled bool `json:"disabled,omitempty"`
}

// Subject is what Unblock lifts the blocks of: an account or a client
// address, exactly one of them.
type Subject struct {
	Account string     // a normalised full address
	IP      netip.Addr // an address; an IPv6 address stands for its prefix
}

// String writes the account or the address.
func (s Subject) String() string {
	if s.Account != "" {
		return s.Account
	}
	return s.IP.String()
}

// AccountState is the answer of POST /account.
type AccountState struct {
	Account  string `json:"account"`
	Disabled bool   `json:"disabled"`
}

// Error is a failure the API answered: its HTTP status and message.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Message }

// ParseIP reads the IP of an unblock or block: an IPv4 or IPv6 address, or
// an IPv6 prefix as Blocks shows it ("2001:db8:1:2::/64"), which stands
// for its first address. IPv4-mapped IPv6 addresses are IPv4.
func ParseIP(s string) (netip.Addr, error) {
	if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is6() && !p.Addr().Is4In6() {
		return p.Masked().Addr(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	return a.Unmap(), nil
}

// ParseSubject reads an account (it has an '@': a full e-mail address,
// normalised) or an IP address as ParseIP reads it.
func ParseSubject(s string) (Subject, error) {
	if strings.Contains(s, "@") {
		a, err := mailaddr.Normalize(s)
		return Subject{Account: a}, err
	}
	a, err := ParseIP(s)
	if err != nil {
		return Subject{}, fmt.Errorf("%q is neither an account (a full e-mail address) nor an IP address", s)
	}
	return Subject{IP: a}, nil
}

// validID reports whether id has the form of a reply's transaction id:
// 22 ASCII letters and digits.
func validID(id string) bool {
	if len(id) != 22 {
		return false
	}
	for _, c := range []byte(id) {
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}
