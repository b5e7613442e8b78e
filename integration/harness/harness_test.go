package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"relayguard/contentfilter"
	"relayguard/milter"
)

// The stub policy server's scripted answers, keyed by client address (each test connects from its
// own loopback address) and by sender.
const (
	refusedIP   = "127.0.0.9"  // CONNECT answers connectRefusal
	silentIP    = "127.0.0.12" // the stub hangs up without answering
	foreignFrom = "jan@foreign.test"

	connectRefusal = "421 4.7.0 TESTID Connection refused from 127.0.0.9. Too many authorization failures from this IP, try again later."
	senderRefusal  = "550 5.1.0 <jan@foreign.test> sender rejected"
)

var (
	lab    *Lab
	policy *policyStub
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if policy, err = startPolicyStub(decide); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer policy.close()
	// A milter that lets every stage continue: etc/ sets smtpd_milters, and
	// Postfix refuses mail temporarily when its milter is unreachable.
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ms := &milter.Server{Handler: func(*milter.Session, string) string { return "" }, Log: slog.New(slog.DiscardHandler)}
	go ms.Serve(ml)
	defer ms.Close()
	// A content filter that passes every message to the reinjection service.
	fl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	reinject, err := freePorts(1)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	reinjectAddr := fmt.Sprintf("127.0.0.1:%d", reinject[0])
	fs := &contentfilter.Server{Hostname: "filter.test", NextHop: reinjectAddr, MaxSize: 64 << 20, SpoolDir: os.TempDir(),
		SpoolThreshold: 1 << 20, Timeout: time.Minute, Log: slog.New(slog.DiscardHandler)}
	go fs.Serve(fl)
	defer fs.Close(context.Background())
	repo, err := filepath.Abs("../..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	t0 := time.Now()
	lab, err = Start(Config{
		PolicyAddr: "inet:" + policy.addr,
		MilterAddr: "inet:" + ml.Addr().String(),
		// Nothing listens there: Dovecot goes on without a policy
		// (auth_policy_reject_on_fail = no).
		AuthPolicyURL: "http://127.0.0.1:1/",
		FilterAddr:    fl.Addr().String(),
		ReinjectAddr:  reinjectAddr,
		Users:         map[string]string{"jan@example.test": "secret", "jan": "secret"},
		Repo:          repo,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "harness: lab started in %v\n", time.Since(t0).Round(time.Millisecond))
	code := m.Run()
	if code != 0 {
		fmt.Fprintln(os.Stderr, lab.Logs())
	}
	t0 = time.Now()
	if err := lab.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "harness: lab closed in %v\n", time.Since(t0).Round(time.Millisecond))
	return code
}

func decide(req map[string]string) (action string, answer bool) {
	switch {
	case req["client_address"] == silentIP:
		return "", false
	case req["client_address"] == refusedIP && req["protocol_state"] == "CONNECT":
		return connectRefusal, true
	case req["protocol_state"] == "MAIL" && req["sender"] == foreignFrom:
		return senderRefusal, true
	}
	return "DUNNO", true
}

// policyStub is a Postfix policy server (SMTPD_POLICY_README): name=value lines up to an empty
// line, answered by "action=..." and an empty line, many requests per connection.
type policyStub struct {
	addr   string
	ln     net.Listener
	decide func(map[string]string) (string, bool)
	mu     sync.Mutex
	reqs   []map[string]string
}

func startPolicyStub(decide func(map[string]string) (string, bool)) (*policyStub, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &policyStub{addr: ln.Addr().String(), ln: ln, decide: decide}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(conn)
		}
	}()
	return p, nil
}

func (p *policyStub) serve(conn net.Conn) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	req := map[string]string{}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\n")
		if line != "" {
			name, value, _ := strings.Cut(line, "=")
			req[name] = value
			continue
		}
		p.mu.Lock()
		p.reqs = append(p.reqs, req)
		p.mu.Unlock()
		action, answer := p.decide(req)
		if !answer {
			return
		}
		if _, err := fmt.Fprintf(conn, "action=%s\n\n", action); err != nil {
			return
		}
		req = map[string]string{}
	}
}

// requests returns the requests made for the session of c.
func (p *policyStub) requests(c *Client) []map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []map[string]string
	a := c.LocalAddr()
	for _, r := range p.reqs {
		if r["client_address"] == a.IP.String() && r["client_port"] == fmt.Sprint(a.Port) {
			out = append(out, r)
		}
	}
	return out
}

func (p *policyStub) close() {
	p.ln.Close()
}

// table renders the given attributes of each request, one column per request.
func table(reqs []map[string]string, attrs ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| attribute |")
	for _, r := range reqs {
		fmt.Fprintf(&b, " %s |", r["protocol_state"])
	}
	b.WriteString("\n")
	for _, a := range attrs {
		fmt.Fprintf(&b, "| %s |", a)
		for _, r := range reqs {
			v, ok := r[a]
			if !ok {
				v = "(absent)"
			}
			fmt.Fprintf(&b, " %s |", v)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// message returns a message whose subject is unique to this run, and the subject.
func message(name string) ([]byte, string) {
	subject := fmt.Sprintf("%s-%d", name, time.Now().UnixNano())
	return []byte("From: Jan <jan@example.test>\nTo: <rcpt1@example.net>\nSubject: " + subject +
		"\nMessage-ID: <" + subject + "@example.test>\n\nHello.\n.leading dot\n"), subject
}

func waitSubject(t *testing.T, subject string) Msg {
	t.Helper()
	m, err := lab.Sink.WaitFor(func(m Msg) bool {
		return strings.Contains(string(m.Data), "Subject: "+subject+"\r\n")
	}, 10*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, lab.Logs())
	}
	return m
}

// mustOK returns a function that fails the test when a step of c fails, showing c's transcript,
// and otherwise returns the step's reply line: must(c.Mail(from)).
func mustOK(t *testing.T, c *Client) func(string, error) string {
	return func(line string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatalf("%v\n%s", err, c.Transcript())
		}
		return line
	}
}

func TestSubmissionSTARTTLSAuthRelay(t *testing.T) {
	const ip = "127.0.0.7"
	c, err := lab.DialSubmission(ip)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	must := mustOK(t, c)
	if !strings.HasPrefix(c.Greeting, "220 ") {
		t.Fatalf("greeting %q", c.Greeting)
	}
	must(c.Ehlo("client.example.test"))
	if ok, _ := c.Supports("AUTH"); ok {
		t.Errorf("AUTH offered before STARTTLS:\n%s", c.Transcript())
	}
	if line, err := c.Mail("jan@example.test"); err == nil || !strings.HasPrefix(line, "530 5.7.0 ") {
		t.Errorf("MAIL before STARTTLS: %q, %v; want 530 5.7.0 (TLS required)", line, err)
	}
	must(c.StartTLS())
	must(c.Ehlo("client.example.test"))
	if ok, mechs := c.Supports("AUTH"); !ok || mechs != "PLAIN LOGIN" {
		t.Errorf("after STARTTLS: AUTH %v %q, want PLAIN LOGIN", ok, mechs)
	}
	must(c.Auth("jan@example.test", "secret"))
	to := []string{"rcpt1@example.net", "rcpt2@example.org"}
	msg, subject := message("submission-ok")
	final := must(c.Send("jan@example.test", to, msg))
	if !strings.HasPrefix(final, "250 2.0.0 Ok: queued as ") {
		t.Errorf("end of data: %q", final)
	}
	must(c.Quit())

	m := waitSubject(t, subject)
	if m.From != "jan@example.test" || strings.Join(m.To, ",") != strings.Join(to, ",") {
		t.Errorf("sink envelope %q -> %q", m.From, m.To)
	}
	if !strings.Contains(string(m.Data), "(Authenticated sender: jan@example.test)") {
		t.Errorf("no authenticated-sender Received header:\n%s", m.Data)
	}
	if !strings.HasSuffix(string(m.Data), "\r\nHello.\r\n.leading dot\r\n") {
		t.Errorf("body changed on the way (dot-stuffing):\n%q", m.Data)
	}

	reqs := policy.requests(c)
	var states []string
	for _, r := range reqs {
		states = append(states, r["protocol_state"])
	}
	want := "CONNECT MAIL RCPT RCPT DATA END-OF-MESSAGE"
	if strings.Join(states, " ") != want {
		t.Errorf("policy requests %v, want %s", states, want)
	}
	for _, r := range reqs {
		if r["policy_context"] != "submission" || r["request"] != "smtpd_access_policy" {
			t.Errorf("%s: policy_context %q request %q", r["protocol_state"], r["policy_context"], r["request"])
		}
	}
	t.Logf("policy attributes per stage (client %s, submission, STARTTLS, AUTH PLAIN, 2 RCPT):\n%s", ip,
		table(reqs, "protocol_name", "client_address", "client_name", "reverse_client_name", "client_port",
			"server_address", "server_port", "helo_name", "sender", "recipient", "recipient_count",
			"queue_id", "instance", "size", "sasl_method", "sasl_username", "sasl_sender",
			"encryption_protocol", "encryption_cipher", "encryption_keysize", "ccert_subject",
			"stress", "etrn_domain", "policy_context", "compatibility_level", "mail_version"))
	var names []string
	for k := range reqs[len(reqs)-1] {
		names = append(names, k)
	}
	t.Logf("%d attributes at END-OF-MESSAGE: %v", len(names), names)
}

func TestPolicyRejectAtMailReachesClient(t *testing.T) {
	c, err := lab.DialSubmission("127.0.0.8")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	must := mustOK(t, c)
	must(c.Hello("client.example.test"))
	must(c.Auth("jan@example.test", "secret"))
	line, err := c.Mail(foreignFrom)
	var re *ReplyError
	if !errors.As(err, &re) || re.Reply.Code != 550 {
		t.Fatalf("MAIL %s: %q, %v", foreignFrom, line, err)
	}
	t.Logf("policy action %q\nclient saw      %q", senderRefusal, line)
	if want := "550 5.1.0 <jan@foreign.test>: Sender address rejected: <jan@foreign.test> sender rejected"; line != want {
		t.Errorf("MAIL reply %q, want %q", line, want)
	}
	// The session goes on: a customer can correct the sender.
	must(c.Mail("jan@example.test"))
}

func TestConnectRefusalIsTheGreeting(t *testing.T) {
	// Postfix puts its own "<client>: Client host rejected: " before the policy's text and then
	// hangs up (421).
	want := "421 4.7.0 <unknown[127.0.0.9]>: Client host rejected: " + strings.TrimPrefix(connectRefusal, "421 4.7.0 ")
	for _, svc := range []struct {
		name string
		dial func(string) (*Client, error)
	}{{"submission", lab.DialSubmission}, {"submissions", lab.DialSMTPS}, {"smtp", lab.DialSMTP}} {
		c, err := svc.dial(refusedIP)
		var re *ReplyError
		if !errors.As(err, &re) || re.Reply.Code != 421 {
			t.Fatalf("%s: greeting error %v", svc.name, err)
		}
		t.Logf("%s: policy action %q\n  client greeting %q", svc.name, connectRefusal, c.Greeting)
		if c.Greeting != want {
			t.Errorf("%s: greeting %q, want %q", svc.name, c.Greeting, want)
		}
		if line, err := c.Ehlo("client.example.test"); err == nil || line != "" {
			t.Errorf("%s: EHLO after the refusal got %q, %v; want the connection closed", svc.name, line, err)
		}
		c.Close()
	}
}

func TestPolicyServiceDownDefaultAction(t *testing.T) {
	t0 := time.Now()
	c, err := lab.DialSubmission(silentIP)
	var re *ReplyError
	if !errors.As(err, &re) {
		t.Fatalf("greeting error %v", err)
	}
	defer c.Close()
	t.Logf("policy service hangs up: greeting %q after %v", c.Greeting, time.Since(t0).Round(10*time.Millisecond))
	if !strings.HasPrefix(c.Greeting, "451 4.3.5 ") || !strings.HasSuffix(c.Greeting, "Policy service unavailable, try again later") {
		t.Errorf("greeting %q, want the default_action of etc/postfix/main.cf", c.Greeting)
	}
}

func TestSubmissionsImplicitTLS(t *testing.T) {
	const ip = "127.0.0.10"
	c, err := lab.DialSMTPS(ip)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	must := mustOK(t, c)
	if !c.TLS() {
		t.Fatal("no TLS on the submissions service")
	}
	must(c.Hello("client.example.test"))
	if ok, mechs := c.Supports("AUTH"); !ok || mechs != "PLAIN LOGIN" {
		t.Errorf("AUTH %v %q", ok, mechs)
	}
	must(c.Auth("jan", "secret"))
	msg, subject := message("submissions-ok")
	must(c.Send("jan@example.test", []string{"rcpt1@example.net"}, msg))
	must(c.Quit())
	m := waitSubject(t, subject)
	if !strings.Contains(string(m.Data), "(Authenticated sender: jan)") {
		t.Errorf("no authenticated-sender Received header:\n%s", m.Data)
	}
	for _, r := range policy.requests(c) {
		if r["policy_context"] != "submissions" || r["encryption_protocol"] == "" {
			t.Errorf("%s: policy_context %q encryption_protocol %q", r["protocol_state"], r["policy_context"], r["encryption_protocol"])
		}
	}
	t.Logf("submissions, one RCPT, login without domain:\n%s", table(policy.requests(c),
		"sasl_username", "recipient", "recipient_count", "size", "encryption_protocol", "policy_context"))
	if _, err := lab.Postqueue("-j"); err != nil {
		t.Error(err)
	}
}

func TestSMTPPortNeedsTLSForAuthAndAuthForRelay(t *testing.T) {
	const ip = "127.0.0.11"
	c, err := lab.DialSMTP(ip)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	must := mustOK(t, c)
	must(c.Hello("client.example.test"))
	if ok, _ := c.Supports("AUTH"); ok {
		t.Error("AUTH offered without TLS on the smtp service")
	}
	if ok, _ := c.Supports("STARTTLS"); !ok {
		t.Error("STARTTLS not offered on the smtp service")
	}
	must(c.Mail("jan@example.test"))
	line, err := c.Rcpt("rcpt1@example.net")
	if err == nil || !strings.HasPrefix(line, "554 5.7.1 ") {
		t.Errorf("unauthenticated RCPT: %q, %v; want 554 5.7.1 relay access denied", line, err)
	}
	t.Logf("unauthenticated relay on smtp: %q", line)
	must(c.Rset())
	must(c.StartTLS())
	must(c.Ehlo("client.example.test"))
	must(c.Auth("jan@example.test", "secret"))
	msg, subject := message("smtp-ok")
	must(c.Send("jan@example.test", []string{"rcpt1@example.net"}, msg))
	waitSubject(t, subject)
	for _, r := range policy.requests(c) {
		if r["policy_context"] != "smtp" {
			t.Errorf("%s: policy_context %q", r["protocol_state"], r["policy_context"])
		}
	}
}

// The reinjection service goes down and comes back with a reload, the rest of Postfix running on;
// back, it queues and relays what it is given (as the filter gives it, without AUTH).
func TestReinjectStopStart(t *testing.T) {
	if err := lab.StopReinject(); err != nil {
		t.Fatal(err)
	}
	if c, err := Dial(lab.Reinject, "127.0.0.14", Plain); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Errorf("reinjection service stopped: %v; want connection refused", err)
	}
	if err := lab.StartReinject(); err != nil {
		t.Fatal(err)
	}
	c, err := Dial(lab.Reinject, "127.0.0.14", Plain)
	if err != nil {
		t.Fatalf("reinjection service started again: %v", err)
	}
	defer c.Close()
	must := mustOK(t, c)
	must(c.Ehlo("filter.test"))
	msg, subject := message("after-reload")
	must(c.Send("jan@example.test", []string{"rcpt@example.net"}, msg))
	waitSubject(t, subject)
}

func TestSubstitutionsFailLoudly(t *testing.T) {
	if _, err := substitute("main.cf", "relayguard_policy = check_policy_service inet:127.0.0.1:9999\n",
		substitution{"policy service address", etcPolicyAddr, "inet:127.0.0.1:1"}); err == nil ||
		!strings.Contains(err.Error(), `main.cf: policy service address: "inet:127.0.0.1:10040" not found`) {
		t.Errorf("substitute: %v", err)
	}
	if _, err := renameService("master.cf", "smtp inet n - n - - smtpd\nsmtp inet n - n - - smtpd\n", "smtp", "127.0.0.1:1"); err == nil {
		t.Error("renameService accepted two smtp services")
	}
	if _, err := renameService("master.cf", "submission unix n - n - - smtpd\n", "submission", "127.0.0.1:1"); err == nil {
		t.Error("renameService accepted a missing inet service")
	}
	got, err := renameService("master.cf", "smtp      inet  n\nsubmission inet n\nsubmissions inet n\n", "submission", "127.0.0.1:1")
	if err != nil || got != "smtp      inet  n\n127.0.0.1:1 inet n\nsubmissions inet n\n" {
		t.Errorf("renameService: %q, %v", got, err)
	}
	master := "a inet n - n - - smtpd\n  -o x=1\n# comment\n127.0.0.1:1 inet n - n - 20 smtpd\n  -o y=2\n\t-o z=3\n#\nb unix - - n - - smtp\n  -o w=4\n"
	got, err = withoutService("master.cf", master, "127.0.0.1:1")
	if want := "a inet n - n - - smtpd\n  -o x=1\n# comment\n#\nb unix - - n - - smtp\n  -o w=4\n"; err != nil || got != want {
		t.Errorf("withoutService: %q, %v\nwant %q", got, err, want)
	}
	if _, err := withoutService("master.cf", master, "127.0.0.1:2"); err == nil {
		t.Error("withoutService accepted a missing service")
	}
	if err := require("main.cf", "smtpd_sasl_path = /run/x\n", "SASL socket", etcSASLPath); err == nil {
		t.Error("require accepted a missing line")
	}
}

func TestEnsureInstalled(t *testing.T) {
	missing := func(name string) (string, error) { return "", errors.New("not found") }
	var ran []string
	fake := installer{
		lookPath: missing,
		euid:     1000,
		run: func(env []string, name string, args ...string) error {
			ran = append(ran, name+" "+strings.Join(args, " "))
			return nil
		},
		lockFile: filepath.Join(t.TempDir(), "lock"),
		rcd:      filepath.Join(t.TempDir(), "policy-rc.d"),
	}
	if err := fake.ensure(); err == nil || !strings.Contains(err.Error(), "apt-get install -y --no-install-recommends postfix dovecot-core") {
		t.Errorf("not root: %v", err)
	}
	if len(ran) != 0 {
		t.Errorf("not root ran %v", ran)
	}

	fake.euid = 0
	installed := false
	fake.lookPath = func(name string) (string, error) {
		if installed {
			return "/usr/sbin/" + name, nil
		}
		return "", errors.New("not found")
	}
	fake.run = func(env []string, name string, args ...string) error {
		if b, err := os.ReadFile(fake.rcd); err != nil || string(b) != "#!/bin/sh\nexit 101\n" {
			t.Errorf("%s ran without policy-rc.d: %q %v", name, b, err)
		}
		if !strings.Contains(strings.Join(env, "\n"), "DEBIAN_FRONTEND=noninteractive") {
			t.Errorf("%s ran without DEBIAN_FRONTEND", name)
		}
		ran = append(ran, name+" "+strings.Join(args, " "))
		installed = strings.Contains(strings.Join(args, " "), "install")
		return nil
	}
	if err := fake.ensure(); err != nil {
		t.Fatal(err)
	}
	want := "apt-get update|apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends postfix dovecot-core clamav-daemon clamav-testfiles rspamd"
	if strings.Join(ran, "|") != want {
		t.Errorf("ran %q, want %q", ran, want)
	}
	if _, err := os.Stat(fake.rcd); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("policy-rc.d left behind: %v", err)
	}
}
