// Package admintest provides an admin.Backend held in memory, and serves it
// on a unix socket, for the tests of the admin API and of its commands.
package admintest

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"relayguard/admin"
	"relayguard/decisions"
	"relayguard/limits"
	"relayguard/subject"
)

// Backend is an admin.Backend in memory. It blocks an IP as R4 does, under
// the key "r4|ip|SUBJECT" (IPv6 per /64); it unblocks an IP's "r4|ip" and
// "r15|ip" keys and an account's "r15|account" key, as policyd does; it
// knows the accounts given to AddAccount only.
type Backend struct {
	now func() time.Time

	mu        sync.Mutex
	err       error
	blocks    map[string]limits.Block
	accounts  map[string]bool // account → disabled
	usage     map[string][]admin.UsageLine
	decisions map[string]decisions.Record
	// spamReports counts Spam calls.
	spamReports int
	// filtering are the clients announced by Filtering, endOfMessage the
	// reply EndOfMessage gives them.
	filtering    map[netip.AddrPort]bool
	endOfMessage string
}

// New returns an empty Backend whose clock is now.
func New(now func() time.Time) *Backend {
	return &Backend{
		now:       now,
		blocks:    map[string]limits.Block{},
		accounts:  map[string]bool{},
		usage:     map[string][]admin.UsageLine{},
		decisions: map[string]decisions.Record{},
	}
}

// Fail makes every method fail with err from now on (nil: succeed again).
func (b *Backend) Fail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.err = err
}

// AddBlock adds a block.
func (b *Backend) AddBlock(bl limits.Block) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.blocks[bl.Key] = bl
}

// AddAccount makes an account known, enabled.
func (b *Backend) AddAccount(account string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.accounts[account] = false
}

// AddUsage sets the usage lines of a subject.
func (b *Backend) AddUsage(subject string, lines ...admin.UsageLine) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.usage[subject] = lines
}

// AddDecision keeps a decision.
func (b *Backend) AddDecision(r decisions.Record) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.decisions[r.ID] = r
}

// Disabled reports whether an account's SMTP access is off.
func (b *Backend) Disabled(account string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.accounts[account]
}

// Blocks implements admin.Backend: the blocks in force, by key.
func (b *Backend) Blocks(context.Context) ([]limits.Block, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return nil, b.err
	}
	var out []limits.Block
	for _, bl := range b.blocks {
		if bl.Until.After(b.now()) {
			out = append(out, bl)
		}
	}
	slices.SortFunc(out, func(x, y limits.Block) int { return strings.Compare(x.Key, y.Key) })
	return out, nil
}

func ipKey(ip netip.Addr) string { return subject.Key("r4", "ip", subject.IP(ip, 64)) }

// Unblock implements admin.Backend: it lifts the blocks in force of the
// subject's keys, and reports an account's disabled flag.
func (b *Backend) Unblock(_ context.Context, s admin.Subject) ([]limits.Block, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return nil, false, b.err
	}
	keys := []string{subject.Key("r15", "account", s.Account)}
	if s.Account == "" {
		keys = []string{ipKey(s.IP), subject.Key("r15", "ip", subject.IP(s.IP, 64))}
	}
	var lifted []limits.Block
	for _, k := range keys {
		if bl, ok := b.blocks[k]; ok && bl.Until.After(b.now()) {
			lifted = append(lifted, bl)
		}
		delete(b.blocks, k)
	}
	return lifted, b.accounts[s.Account], nil
}

// Block implements admin.Backend.
func (b *Backend) Block(_ context.Context, ip netip.Addr, d time.Duration, reason string) (limits.Block, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return limits.Block{}, b.err
	}
	bl := limits.Block{Key: ipKey(ip), Until: b.now().Add(d), Reason: reason}
	b.blocks[bl.Key] = bl
	return bl, nil
}

// SetAccountDisabled implements admin.Backend.
func (b *Backend) SetAccountDisabled(_ context.Context, account string, disabled bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return b.err
	}
	if _, ok := b.accounts[account]; !ok {
		return fmt.Errorf("%w: no account %s", admin.ErrNotFound, account)
	}
	b.accounts[account] = disabled
	return nil
}

// Usage implements admin.Backend.
func (b *Backend) Usage(_ context.Context, subject string) ([]admin.UsageLine, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return nil, b.err
	}
	return b.usage[subject], nil
}

// Explain implements admin.Backend.
func (b *Backend) Explain(_ context.Context, id string) (decisions.Record, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return decisions.Record{}, false, b.err
	}
	r, ok := b.decisions[id]
	return r, ok, nil
}

// Spam reports every message as sent by "spammer@example.cz", its
// allowance spent after the Spent-th report.
func (b *Backend) Spam(_ context.Context, client netip.AddrPort, queueID string) (admin.SpamReport, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return admin.SpamReport{}, b.err
	}
	b.spamReports++
	return admin.SpamReport{Login: "spammer@example.cz", Spent: b.spamReports > 2}, nil
}

// Filtering notes the client, for EndOfMessage.
func (b *Backend) Filtering(_ context.Context, client netip.AddrPort) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return b.err
	}
	if b.filtering == nil {
		b.filtering = map[netip.AddrPort]bool{}
	}
	b.filtering[client] = true
	return nil
}

// EndOfMessage answers the reply set with SetEndOfMessage for a client
// announced with Filtering, once.
func (b *Backend) EndOfMessage(_ context.Context, client netip.AddrPort) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return "", b.err
	}
	if !b.filtering[client] {
		return "", nil
	}
	delete(b.filtering, client)
	return b.endOfMessage, nil
}

// SetEndOfMessage sets the reply EndOfMessage gives.
func (b *Backend) SetEndOfMessage(reply string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.endOfMessage = reply
}

// Serve serves s on a new unix socket in a temporary directory of t until
// the test ends, and returns the socket's path.
func Serve(t testing.TB, s *admin.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := admin.Listen(path, "0660", "")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return path
}
