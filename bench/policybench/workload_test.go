package main

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"relayguard/policyd"
)

// TestSessions renders sessions as the load sends them and reads them back
// with policyd's decoder: every request carries Postfix 3.7's 29 attributes
// in its order, with the values that LAB.md §3a recorded at each stage.
func TestSessions(t *testing.T) {
	w, err := newWorkload(1000, 50, 200, 20, 100)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	p := &smtpd{pid: 4242}
	stages := map[stage]int{}
	var v6 int
	for n := range 500 {
		s := w.newSession(rng, w.account(uint64(n)), p, n%5 == 0)
		var wire bytes.Buffer
		var order []stage
		c := newCursor(s)
		for {
			buf, st, ok := c.next(nil)
			if !ok {
				break
			}
			checkOrder(t, buf)
			wire.Write(buf)
			order = append(order, st)
			stages[st]++
		}
		dec := policyd.NewDecoder(&wire, policyd.DefaultLimits)
		var reqs []*policyd.Request
		for {
			var r policyd.Request
			if err := dec.Decode(&r); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("session %d: %v", n, err)
			}
			reqs = append(reqs, &r)
		}
		if len(reqs) != len(order) {
			t.Fatalf("session %d: %d requests rendered, %d decoded", n, len(order), len(reqs))
		}
		checkSession(t, s, order, reqs)
		if ip := netip.MustParseAddr(s.clientAddr); ip.Is6() {
			v6++
		}
	}
	for st := range numStages {
		if stages[st] == 0 {
			t.Errorf("no %s request in 500 sessions", st)
		}
	}
	if stages[stageRcpt] <= stages[stageMail]+stages[stageData]+stages[stageEOM] {
		t.Errorf("RCPT requests should be most of the load: %v", stages)
	}
	if v6 == 0 || v6 > 250 {
		t.Errorf("%d of 500 sessions from IPv6 clients: want some, fewer than IPv4", v6)
	}
}

// checkOrder: the attributes of one request, in Postfix's order.
func checkOrder(t *testing.T, req []byte) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(string(req), "\n\n"), "\n")
	var names []string
	for _, l := range lines {
		name, _, _ := strings.Cut(l, "=")
		names = append(names, name)
	}
	if !slices.Equal(names, postfixAttributes) {
		t.Fatalf("attributes %v, want %v", names, postfixAttributes)
	}
}

func checkSession(t *testing.T, s *session, order []stage, reqs []*policyd.Request) {
	t.Helper()
	fail := func(i int, format string, args ...any) {
		t.Helper()
		t.Fatalf("request %d (%s) of session %s:%s: "+format, append([]any{i, order[i], s.clientAddr, s.clientPort}, args...)...)
	}
	if order[0] != stageConnect {
		fail(0, "a session begins with CONNECT")
	}
	msg, rcpts, instance := -1, 0, ""
	for i, r := range reqs {
		get := r.Get
		if r.Len() != 29 || get("request") != "smtpd_access_policy" || get("protocol_state") != order[i].String() {
			fail(i, "%d attributes, request %q, protocol_state %q", r.Len(), get("request"), get("protocol_state"))
		}
		if get("client_address") != s.clientAddr || get("client_port") != s.clientPort || get("server_port") != s.serverPort || get("server_address") == "" {
			fail(i, "the session's addresses and ports change")
		}
		if get("policy_context") == "" {
			fail(i, "no policy_context")
		}
		switch order[i] {
		case stageConnect:
			if get("sasl_username") != "" || get("helo_name") != "" || get("protocol_name") != "SMTP" || get("sender") != "" {
				fail(i, "a CONNECT request knows no login, HELO or sender")
			}
			continue
		case stageMail:
			msg, rcpts, instance = msg+1, 0, ""
			if get("instance") != "" || get("queue_id") != "" || get("recipient") != "" {
				fail(i, "at MAIL, instance, queue_id and recipient are empty")
			}
		case stageRcpt:
			rcpts++
			if instance == "" {
				instance = get("instance")
			}
			if get("recipient") != s.messages[msg].rcpts[rcpts-1] || get("recipient_count") != "0" {
				fail(i, "recipient %q, recipient_count %q", get("recipient"), get("recipient_count"))
			}
			if (rcpts == 1) != (get("queue_id") == "") {
				fail(i, "queue_id %q at recipient %d: empty at the first only", get("queue_id"), rcpts)
			}
		case stageData, stageEOM:
			m := s.messages[msg]
			if get("recipient_count") != strconv.Itoa(len(m.rcpts)) || (len(m.rcpts) > 1) != (get("recipient") == "") {
				fail(i, "recipient %q and recipient_count %q for %d recipients", get("recipient"), get("recipient_count"), len(m.rcpts))
			}
			if order[i] == stageEOM && get("size") != strconv.Itoa(m.size) {
				fail(i, "size %q, want the message's %d", get("size"), m.size)
			}
		}
		if order[i] != stageMail && (get("instance") == "" || get("instance") != instance) {
			fail(i, "instance %q, want the transaction's %q", get("instance"), instance)
		}
		if get("sasl_username") != s.login || get("sasl_method") == "" || get("protocol_name") != "ESMTP" || get("encryption_protocol") == "" {
			fail(i, "after AUTH and TLS: login %q, method %q, protocol %q, TLS %q",
				get("sasl_username"), get("sasl_method"), get("protocol_name"), get("encryption_protocol"))
		}
	}
	if msg != len(s.messages)-1 {
		t.Fatalf("session %s: %d messages sent, %d planned", s.clientAddr, msg+1, len(s.messages))
	}
}

// TestAccounts: a round of the walk names every account once, and the
// accounts are distinct logins in distinct hosted domains.
func TestAccounts(t *testing.T) {
	for _, n := range []int{1, 7919, 100_000, 123_457} {
		w, err := newWorkload(n, 3000, 10, 1, 10)
		if err != nil {
			t.Fatal(err)
		}
		seen := make([]bool, n)
		for i := range uint64(n) {
			a := w.account(i)
			if seen[a] {
				t.Fatalf("%d accounts: account %d named twice in one round", n, a)
			}
			seen[a] = true
			if w.account(i+uint64(n)) != a {
				t.Fatalf("%d accounts: the second round differs", n)
			}
		}
	}
	w, _ := newWorkload(100_000, 3000, 10, 1, 10)
	logins := map[string]bool{}
	domains := map[string]bool{}
	for a := range w.accounts {
		l := w.login(a)
		logins[l] = true
		domains[l[strings.IndexByte(l, '@')+1:]] = true
	}
	if len(logins) != 100_000 || len(domains) != 3000 {
		t.Errorf("%d logins in %d domains, want 100000 in 3000", len(logins), len(domains))
	}
}

func TestClientIPs(t *testing.T) {
	w, err := newWorkload(10, 10, 5000, 1000, 10)
	if err != nil {
		t.Fatal(err)
	}
	v4 := netip.MustParsePrefix("198.18.0.0/15")
	v6 := netip.MustParsePrefix("2001:db8::/32")
	nets := map[netip.Prefix]bool{}
	for i := range w.ipv4 + w.ipv6 {
		ip := w.clientIP(i, uint64(i)*0x9e3779b97f4a7c15)
		if !v4.Contains(ip) && !v6.Contains(ip) {
			t.Fatalf("client %d: %s is outside 198.18.0.0/15 and 2001:db8::/32", i, ip)
		}
		p, _ := ip.Prefix(64)
		if ip.Is4() {
			p, _ = ip.Prefix(32)
		}
		nets[p] = true
	}
	if len(nets) != 6000 {
		t.Errorf("%d distinct subjects (IPv4 addresses and IPv6 /64), want 6000", len(nets))
	}
}
