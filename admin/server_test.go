package admin_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"relayguard/admin"
	"relayguard/admin/admintest"
	"relayguard/decisions"
	"relayguard/limits"
)

var now = time.Date(2026, 5, 4, 12, 0, 0, 0, time.UTC)

const knownID = "7HqT2mK9xLp4Rb8ZsN3wVa"

// backend returns a Backend with blocks of an address (R4, R15) and of
// accounts (R15), an expired block, accounts (two of them disabled, R3),
// the usage of one and one decision.
func backend() *admintest.Backend {
	b := admintest.New(func() time.Time { return now })
	b.AddBlock(limits.Block{Key: "r4|ip|192.0.2.7", Until: now.Add(42 * time.Minute), Reason: "11 failed authentications in 1h", Count: 11})
	b.AddBlock(limits.Block{Key: "r15|account|jan@example.cz", Until: now.Add(20 * time.Hour), Reason: "spam allowance spent", Count: 12})
	b.AddBlock(limits.Block{Key: "r4|ip|198.51.100.1", Until: now.Add(-time.Minute), Reason: "expired", Count: 11})
	b.AddBlock(limits.Block{Key: "r15|ip|203.0.113.5", Until: now.Add(3 * time.Hour), Reason: "spam allowance spent", Count: 11})
	b.AddBlock(limits.Block{Key: "r15|account|spam@example.cz", Until: now.Add(5 * time.Hour), Reason: "spam allowance spent", Count: 11})
	for _, a := range []string{"jan@example.cz", "eva@example.cz", "off@example.cz", "spam@example.cz"} {
		b.AddAccount(a)
	}
	for _, a := range []string{"off@example.cz", "spam@example.cz"} {
		if err := b.SetAccountDisabled(context.Background(), a, true); err != nil {
			panic(err)
		}
	}
	b.AddUsage("jan@example.cz",
		admin.UsageLine{Rule: "R10", Subject: "jan@example.cz", Window: "1m", Used: 12, Limit: 250},
		admin.UsageLine{Rule: "R10", Subject: "jan@example.cz", Window: "1h", Used: 1000, Limit: 1000, FreesAt: now.Add(42 * time.Minute)},
	)
	b.AddDecision(decisions.Record{
		ID: knownID, Time: now.Add(-2 * time.Hour), Stage: "RCPT", Rule: "R10", Name: "rate", Mode: "enforce",
		Client: "192.0.2.7", Login: "jan@example.cz", Sender: "jan@example.cz", Recipient: "eva@example.org",
		Reason: "1001 recipients in 1h, limit 1000", Reply: "450 4.7.1 " + knownID + " policy violation",
		Counters: map[string]int64{"r10|account|jan@example.cz|1h": 1001},
	})
	return b
}

// httpClient talks HTTP on a unix socket, as any client of the API may.
func httpClient(socket string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
}

func TestServer(t *testing.T) {
	const (
		r4      = `{"subject":"192.0.2.7","rule":"R4","key":"r4|ip|192.0.2.7","until":"2026-05-04T12:42:00Z","reason":"11 failed authentications in 1h","count":11}`
		r15jan  = `{"subject":"jan@example.cz","rule":"R15","key":"r15|account|jan@example.cz","until":"2026-05-05T08:00:00Z","reason":"spam allowance spent","count":12}`
		r15spam = `{"subject":"spam@example.cz","rule":"R15","key":"r15|account|spam@example.cz","until":"2026-05-04T17:00:00Z","reason":"spam allowance spent","count":11}`
		r15ip   = `{"subject":"203.0.113.5","rule":"R15","key":"r15|ip|203.0.113.5","until":"2026-05-04T15:00:00Z","reason":"spam allowance spent","count":11}`
		blocks  = `[` + r15jan + `,` + r15spam + `,` + r15ip + `,` + r4 + `]`
		usage   = `[{"rule":"R10","subject":"jan@example.cz","window":"1m","used":12,"limit":250},{"rule":"R10","subject":"jan@example.cz","window":"1h","used":1000,"limit":1000,"frees_at":"2026-05-04T12:42:00Z"}]`
		explain = `{"id":"7HqT2mK9xLp4Rb8ZsN3wVa","time":"2026-05-04T10:00:00Z","stage":"RCPT","rule":"R10","name":"rate","mode":"enforce","client":"192.0.2.7","login":"jan@example.cz","sender":"jan@example.cz","recipient":"eva@example.org","reason":"1001 recipients in 1h, limit 1000","reply":"450 4.7.1 7HqT2mK9xLp4Rb8ZsN3wVa policy violation","counters":{"r10|account|jan@example.cz|1h":1001}}`
	)
	tests := []struct {
		name, method, path, body string
		fail                     error // of the backend
		status                   int
		want                     string
	}{
		{"blocks", "GET", "/blocks", "", nil, 200, blocks},
		{"blocks failing", "GET", "/blocks", "", errors.New("store closed"), 500, `{"error":"store closed"}`},
		{"blocks by POST", "POST", "/blocks", "", nil, 405, `{"error":"/blocks wants GET, not POST"}`},
		{"no endpoint", "GET", "/flush", "", nil, 404, `{"error":"no endpoint /flush"}`},

		{"unblock", "POST", "/unblock", `{"ip":"192.0.2.7"}`, nil, 200, `{"ip":"192.0.2.7","unblocked":true,"lifted":[` + r4 + `]}`},
		{"unblock mapped", "POST", "/unblock", `{"ip":"::ffff:192.0.2.7"}`, nil, 200, `{"ip":"192.0.2.7","unblocked":true,"lifted":[` + r4 + `]}`},
		{"unblock R15 address", "POST", "/unblock", `{"ip":"203.0.113.5"}`, nil, 200, `{"ip":"203.0.113.5","unblocked":true,"lifted":[` + r15ip + `]}`},
		{"unblock account", "POST", "/unblock", `{"account":"Jan@Example.CZ"}`, nil, 200, `{"account":"jan@example.cz","unblocked":true,"lifted":[` + r15jan + `]}`},
		{"unblock account still disabled", "POST", "/unblock", `{"account":"spam@example.cz"}`, nil, 200,
			`{"account":"spam@example.cz","unblocked":true,"lifted":[` + r15spam + `],"disabled":true}`},
		{"unblock account disabled only", "POST", "/unblock", `{"account":"off@example.cz"}`, nil, 409,
			`{"error":"off@example.cz is not blocked, but its SMTP access is disabled (R3), which unblock does not change: \"relayguard account enable off@example.cz\" turns it on"}`},
		{"unblock account not blocked", "POST", "/unblock", `{"account":"eva@example.cz"}`, nil, 404, `{"error":"eva@example.cz is not blocked"}`},
		{"unblock account unknown", "POST", "/unblock", `{"account":"nobody@example.org"}`, nil, 404, `{"error":"nobody@example.org is not blocked"}`},
		{"unblock not blocked", "POST", "/unblock", `{"ip":"192.0.2.8"}`, nil, 404, `{"error":"192.0.2.8 is not blocked"}`},
		{"unblock expired", "POST", "/unblock", `{"ip":"198.51.100.1"}`, nil, 404, `{"error":"198.51.100.1 is not blocked"}`},
		{"unblock no IP", "POST", "/unblock", `{"ip":"192.0.2"}`, nil, 400, `{"error":"invalid ip: \"192.0.2\" is not an IP address"}`},
		{"unblock IPv4 prefix", "POST", "/unblock", `{"ip":"192.0.2.0/24"}`, nil, 400, `{"error":"invalid ip: \"192.0.2.0/24\" is not an IP address"}`},
		{"unblock zone", "POST", "/unblock", `{"ip":"fe80::1%eth0"}`, nil, 400, `{"error":"invalid ip: \"fe80::1%eth0\" is not an IP address"}`},
		{"unblock empty ip", "POST", "/unblock", `{"ip":""}`, nil, 400, `{"error":"invalid ip: \"\" is not an IP address"}`},
		{"unblock account as ip", "POST", "/unblock", `{"ip":"jan@example.cz"}`, nil, 400, `{"error":"invalid ip: \"jan@example.cz\" is an account: give it as \"account\""}`},
		{"unblock ip as account", "POST", "/unblock", `{"account":"192.0.2.7"}`, nil, 400, `{"error":"invalid account: \"192.0.2.7\" is not a full address (local@domain)"}`},
		{"unblock empty account", "POST", "/unblock", `{"account":""}`, nil, 400, `{"error":"invalid account: \"\" is not a full address (local@domain)"}`},
		{"unblock both", "POST", "/unblock", `{"ip":"192.0.2.7","account":"jan@example.cz"}`, nil, 400, `{"error":"invalid request: give \"ip\" or \"account\", not both"}`},
		{"unblock missing", "POST", "/unblock", `{}`, nil, 400, `{"error":"invalid request: give \"ip\" (an IP address) or \"account\" (a full e-mail address)"}`},
		{"unblock null", "POST", "/unblock", `{"ip":null}`, nil, 400, `{"error":"invalid request: give \"ip\" (an IP address) or \"account\" (a full e-mail address)"}`},
		{"unblock unknown field", "POST", "/unblock", `{"ip":"192.0.2.7","all":true}`, nil, 400, `{"error":"invalid request body: json: unknown field \"all\""}`},
		{"unblock not JSON", "POST", "/unblock", `ip=192.0.2.7`, nil, 400, `{"error":"invalid request body: invalid character 'i' looking for beginning of value"}`},
		{"unblock two values", "POST", "/unblock", `{"ip":"192.0.2.7"}{}`, nil, 400, `{"error":"invalid request body: more than one JSON value"}`},
		{"unblock by GET", "GET", "/unblock", "", nil, 405, `{"error":"/unblock wants POST, not GET"}`},
		{"unblock failing", "POST", "/unblock", `{"ip":"192.0.2.7"}`, errors.New("store closed"), 500, `{"error":"store closed"}`},
		{"unblock account failing", "POST", "/unblock", `{"account":"jan@example.cz"}`, errors.New("store closed"), 500, `{"error":"store closed"}`},

		{"block", "POST", "/block", `{"ip":"203.0.113.9","duration":"2h","reason":"phishing run"}`, nil, 200,
			`{"subject":"203.0.113.9","rule":"R4","key":"r4|ip|203.0.113.9","until":"2026-05-04T14:00:00Z","reason":"phishing run","count":0}`},
		{"block IPv6 prefix", "POST", "/block", `{"ip":"2001:db8:1:2::/64","duration":"30m"}`, nil, 200,
			`{"subject":"2001:db8:1:2::/64","rule":"R4","key":"r4|ip|2001:db8:1:2::/64","until":"2026-05-04T12:30:00Z","reason":"blocked by support","count":0}`},
		{"block zero", "POST", "/block", `{"ip":"203.0.113.9","duration":"0s"}`, nil, 400, `{"error":"invalid duration \"0s\": must be longer than 0s"}`},
		{"block negative", "POST", "/block", `{"ip":"203.0.113.9","duration":"-5m"}`, nil, 400, `{"error":"invalid duration \"-5m\": must be longer than 0s"}`},
		{"block no duration", "POST", "/block", `{"ip":"203.0.113.9"}`, nil, 400, `{"error":"invalid duration \"\": want a Go duration such as 90m or 2h"}`},
		{"block days", "POST", "/block", `{"ip":"203.0.113.9","duration":"2d"}`, nil, 400, `{"error":"invalid duration \"2d\": want a Go duration such as 90m or 2h"}`},
		{"block no IP", "POST", "/block", `{"ip":"mail.example.cz","duration":"2h"}`, nil, 400, `{"error":"invalid ip: \"mail.example.cz\" is not an IP address"}`},
		{"block two lines", "POST", "/block", `{"ip":"203.0.113.9","duration":"2h","reason":"a\nb"}`, nil, 400, `{"error":"invalid reason: one line of text, without control characters"}`},
		{"block long reason", "POST", "/block", `{"ip":"203.0.113.9","duration":"2h","reason":"` + strings.Repeat("x", 201) + `"}`, nil, 400, `{"error":"invalid reason: longer than 200 characters"}`},

		{"disable", "POST", "/account", `{"account":"Jan@Example.CZ","disabled":true}`, nil, 200, `{"account":"jan@example.cz","disabled":true}`},
		{"enable", "POST", "/account", `{"account":"jan@example.cz","disabled":false}`, nil, 200, `{"account":"jan@example.cz","disabled":false}`},
		{"account unknown", "POST", "/account", `{"account":"nobody@example.cz","disabled":true}`, nil, 404, `{"error":"not found: no account nobody@example.cz"}`},
		{"account not an address", "POST", "/account", `{"account":"jan","disabled":true}`, nil, 400, `{"error":"invalid account: \"jan\" is not a full address (local@domain)"}`},
		{"account without disabled", "POST", "/account", `{"account":"jan@example.cz"}`, nil, 400, `{"error":"invalid request: \"disabled\" is required (true or false)"}`},

		{"usage", "GET", "/usage?subject=Jan@Example.CZ", "", nil, 200, usage},
		{"usage nothing counted", "GET", "/usage?subject=192.0.2.7", "", nil, 200, `[]`},
		{"usage no subject", "GET", "/usage", "", nil, 400, `{"error":"invalid subject: the query needs ?subject=ACCOUNT or ?subject=IP"}`},
		{"usage bad subject", "GET", "/usage?subject=jan", "", nil, 400, `{"error":"invalid subject: \"jan\" is neither an account (a full e-mail address) nor an IP address"}`},
		{"usage bad account", "GET", "/usage?subject=jan@", "", nil, 400, `{"error":"invalid subject: \"jan@\" is not a full address (local@domain)"}`},

		{"filtering", "POST", "/filtering", `{"client":"192.0.2.7:4000"}`, nil, 200, `{}`},
		{"filtering no port", "POST", "/filtering", `{"client":"192.0.2.7"}`, nil, 400, `{"error":"invalid client: \"192.0.2.7\" is not address:port"}`},
		{"filtering failing", "POST", "/filtering", `{"client":"192.0.2.7:4000"}`, errors.New("store closed"), 500, `{"error":"store closed"}`},
		{"end of message, not announced", "POST", "/end-of-message", `{"client":"192.0.2.7:4000"}`, nil, 200, `{"reply":""}`},
		{"end of message by GET", "GET", "/end-of-message", "", nil, 405, `{"error":"/end-of-message wants POST, not GET"}`},
		{"explain", "GET", "/explain/" + knownID, "", nil, 200, explain},
		{"explain unknown", "GET", "/explain/AAAAAAAAAAAAAAAAAAAAAA", "", nil, 404, `{"error":"no decision AAAAAAAAAAAAAAAAAAAAAA (decisions are kept 7 days)"}`},
		{"explain short", "GET", "/explain/7HqT2mK9", "", nil, 400, `{"error":"invalid id \"7HqT2mK9\": a reply's id is 22 letters and digits"}`},
		{"explain punctuation", "GET", "/explain/7HqT2mK9xLp4Rb8ZsN3w-a", "", nil, 400, `{"error":"invalid id \"7HqT2mK9xLp4Rb8ZsN3w-a\": a reply's id is 22 letters and digits"}`},
		{"explain empty", "GET", "/explain/", "", nil, 400, `{"error":"invalid id \"\": a reply's id is 22 letters and digits"}`},
		{"explain failing", "GET", "/explain/" + knownID, "", errors.New("store closed"), 500, `{"error":"store closed"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := backend()
			b.Fail(tt.fail)
			hc := httpClient(admintest.Serve(t, &admin.Server{Backend: b, Retention: 7 * 24 * time.Hour}))
			check := func(method, path, body string, status int, want string) {
				t.Helper()
				req, err := http.NewRequest(method, "http://policyd"+path, strings.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				resp, err := hc.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				got, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != status || strings.TrimSpace(string(got)) != want {
					t.Errorf("%s %s %s:\n got %d %s\nwant %d %s", method, path, body, resp.StatusCode, got, status, want)
				}
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type %q", ct)
				}
			}
			check(tt.method, tt.path, tt.body, tt.status, tt.want)
		})
	}
}

// TestServerChanges checks that the changes reach the Backend.
func TestServerChanges(t *testing.T) {
	b := backend()
	var log bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
	hc := httpClient(admintest.Serve(t, &admin.Server{Backend: b, Log: logger}))
	check := func(path, body string, status int) {
		t.Helper()
		resp, err := hc.Post("http://policyd"+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != status {
			t.Errorf("%s %s: %d, want %d", path, body, resp.StatusCode, status)
		}
	}
	check("/unblock", `{"ip":"192.0.2.7"}`, 200)
	check("/unblock", `{"ip":"192.0.2.7"}`, 404)
	check("/block", `{"ip":"2001:db8:1:2::5","duration":"1h"}`, 200)
	check("/unblock", `{"ip":"2001:db8:1:2::/64"}`, 200)
	check("/unblock", `{"account":"jan@example.cz"}`, 200)
	check("/unblock", `{"account":"jan@example.cz"}`, 404)
	check("/unblock", `{"account":"spam@example.cz"}`, 200)
	check("/unblock", `{"account":"off@example.cz"}`, 409)
	check("/account", `{"account":"jan@example.cz","disabled":true}`, 200)
	if !b.Disabled("jan@example.cz") {
		t.Error("jan@example.cz not disabled")
	}
	if !b.Disabled("off@example.cz") || !b.Disabled("spam@example.cz") {
		t.Error("unblock enabled a disabled account")
	}
	b.Fail(errors.New("store closed"))
	check("/unblock", `{"ip":"192.0.2.7"}`, 500)
	b.Fail(nil)
	bs, _ := b.Blocks(context.Background())
	if len(bs) != 1 || bs[0].Key != "r15|ip|203.0.113.5" {
		t.Errorf("blocks left: %v", bs)
	}
	const want = `level=INFO msg="admin API: unblocked" ip=192.0.2.7 lifted=r4|ip|192.0.2.7
level=INFO msg="admin API: blocked" ip=2001:db8:1:2::5 for=1h0m0s until=2026-05-04T13:00:00.000Z reason="blocked by support"
level=INFO msg="admin API: unblocked" ip=2001:db8:1:2:: lifted=r4|ip|2001:db8:1:2::/64
level=INFO msg="admin API: unblocked" account=jan@example.cz lifted=r15|account|jan@example.cz
level=INFO msg="admin API: unblocked" account=spam@example.cz lifted=r15|account|spam@example.cz still_disabled=true
level=INFO msg="admin API: account" account=jan@example.cz disabled=true
level=ERROR msg="admin API: backend failed" method=POST path=/unblock error="store closed"
`
	if log.String() != want {
		t.Errorf("log:\n%s\nwant:\n%s", log.String(), want)
	}
}

// TestServerProfiles checks that the runtime's profiles are served, in the
// format go tool pprof reads.
func TestServerProfiles(t *testing.T) {
	hc := httpClient(admintest.Serve(t, &admin.Server{Backend: backend()}))
	for _, path := range []string{"/debug/pprof/heap", "/debug/pprof/goroutine"} {
		resp, err := hc.Get("http://policyd" + path)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		// A profile is gzip-compressed protocol buffers.
		if resp.StatusCode != 200 || !bytes.HasPrefix(body, []byte{0x1f, 0x8b}) {
			t.Errorf("GET %s: %d, %d bytes starting %q; want 200 and a gzip stream", path, resp.StatusCode, len(body), body[:min(len(body), 16)])
		}
	}
}
