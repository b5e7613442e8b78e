package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"relayguard/admin"
	"relayguard/admin/admintest"
	"relayguard/decisions"
	"relayguard/limits"
)

var supportNow = time.Date(2026, 5, 4, 12, 0, 0, 0, time.UTC)

// supportServer serves a Backend with the blocks of an address (R4, R15)
// and of two accounts (R15), three accounts (two disabled, R3), the usage
// of one and one decision, and returns it with its socket.
func supportServer(t *testing.T) (*admintest.Backend, string) {
	now := supportNow
	b := admintest.New(func() time.Time { return now })
	b.AddBlock(limits.Block{Key: "r4|ip|192.0.2.7", Until: now.Add(42 * time.Minute), Reason: "11 failed authentications in 1h", Count: 11})
	b.AddBlock(limits.Block{Key: "r15|ip|192.0.2.7", Until: now.Add(23 * time.Hour), Reason: "spam allowance of 10 per 24h0m0s spent", Count: 11})
	b.AddBlock(limits.Block{Key: "r15|account|jan@example.cz", Until: now.Add(20*time.Hour + 30*time.Minute), Reason: "spam allowance spent", Count: 12})
	b.AddBlock(limits.Block{Key: "r15|account|spam@example.cz", Until: now.Add(5 * time.Hour), Reason: "spam allowance of 10 per 24h0m0s spent", Count: 11})
	for _, a := range []string{"jan@example.cz", "off@example.cz", "spam@example.cz"} {
		b.AddAccount(a)
	}
	for _, a := range []string{"off@example.cz", "spam@example.cz"} {
		if err := b.SetAccountDisabled(context.Background(), a, true); err != nil {
			t.Fatal(err)
		}
	}
	b.AddUsage("jan@example.cz",
		admin.UsageLine{Rule: "R10", Subject: "jan@example.cz", Window: "1m", Used: 12, Limit: 250},
		admin.UsageLine{Rule: "R10", Subject: "jan@example.cz", Window: "1h", Used: 1000, Limit: 1000, FreesAt: now.Add(42 * time.Minute)},
		admin.UsageLine{Rule: "R13", Subject: "jan@example.cz", Window: "3m", Used: 0, Limit: 0},
	)
	b.AddDecision(decisions.Record{
		ID: "7HqT2mK9xLp4Rb8ZsN3wVa", Time: now.Add(-2 * time.Hour), Stage: "RCPT", Rule: "R10", Name: "rate", Mode: "enforce",
		Client: "192.0.2.7", Login: "jan@example.cz", Sender: "jan@example.cz", Recipient: "eva@example.org",
		Reason: "1001 recipients in 1h, limit 1000", Reply: "450 4.7.1 7HqT2mK9xLp4Rb8ZsN3wVa policy violation",
		Counters: map[string]int64{"r10|ip|192.0.2.7|1h": 1001, "r10|account|jan@example.cz|1h": 1001},
	})
	return b, admintest.Serve(t, &admin.Server{Backend: b})
}

// runSupport runs the support commands with args, at supportNow in UTC+2,
// and returns what they printed.
func runSupport(args ...string) (string, error) {
	var out bytes.Buffer
	s := supportCLI{now: func() time.Time { return supportNow }, loc: time.FixedZone("CEST", 2*3600)}
	app := &cli.App{Name: "relayguard", Commands: s.commands(), Writer: &out, ErrWriter: io.Discard}
	err := app.Run(append([]string{"relayguard"}, args...))
	return out.String(), err
}

func TestSupportCommands(t *testing.T) {
	b, sock := supportServer(t)
	check := func(args []string, want, wantErr string) {
		t.Helper()
		out, err := runSupport(append(args, "--socket", sock)...)
		if got := errString(err); got != wantErr {
			t.Errorf("%q: error %q\nwant %q", args, got, wantErr)
		}
		if out != want {
			t.Errorf("%q:\n got:\n%s\nwant:\n%s", args, out, want)
		}
	}
	tests := []struct {
		args      []string
		out, fail string
	}{
		{[]string{"blocks"}, `
SUBJECT          RULE  REASON                                  COUNT  EXPIRES
jan@example.cz   R15   spam allowance spent                    12     2026-05-05 10:30 CEST (in 20h30m)
spam@example.cz  R15   spam allowance of 10 per 24h0m0s spent  11     2026-05-04 19:00 CEST (in 5h)
192.0.2.7        R15   spam allowance of 10 per 24h0m0s spent  11     2026-05-05 13:00 CEST (in 23h)
192.0.2.7        R4    11 failed authentications in 1h         11     2026-05-04 14:42 CEST (in 42m)
`, ""},
		{[]string{"blocks", "--json"}, `
[
  {
    "subject": "jan@example.cz",
    "rule": "R15",
    "key": "r15|account|jan@example.cz",
    "until": "2026-05-05T08:30:00Z",
    "reason": "spam allowance spent",
    "count": 12
  },
  {
    "subject": "spam@example.cz",
    "rule": "R15",
    "key": "r15|account|spam@example.cz",
    "until": "2026-05-04T17:00:00Z",
    "reason": "spam allowance of 10 per 24h0m0s spent",
    "count": 11
  },
  {
    "subject": "192.0.2.7",
    "rule": "R15",
    "key": "r15|ip|192.0.2.7",
    "until": "2026-05-05T11:00:00Z",
    "reason": "spam allowance of 10 per 24h0m0s spent",
    "count": 11
  },
  {
    "subject": "192.0.2.7",
    "rule": "R4",
    "key": "r4|ip|192.0.2.7",
    "until": "2026-05-04T12:42:00Z",
    "reason": "11 failed authentications in 1h",
    "count": 11
  }
]
`, ""},
		{[]string{"blocks", "192.0.2.7"}, "", "usage: relayguard blocks "},

		// unblock IP lifts R4 and R15; unblock ACCOUNT lifts R15, never R3.
		{[]string{"unblock", "192.0.2.7"}, `
192.0.2.7 unblocked:
  R4   11 failed authentications in 1h         would have ended 2026-05-04 14:42 CEST (in 42m)
  R15  spam allowance of 10 per 24h0m0s spent  would have ended 2026-05-05 13:00 CEST (in 23h)
`, ""},
		{[]string{"unblock", "192.0.2.7"}, "", "192.0.2.7 is not blocked"},
		{[]string{"unblock", "--json", "192.0.2.7"}, "", "192.0.2.7 is not blocked"},
		{[]string{"unblock", "Jan@Example.CZ"}, `
jan@example.cz unblocked:
  R15  spam allowance spent  would have ended 2026-05-05 10:30 CEST (in 20h30m)
`, ""},
		{[]string{"unblock", "jan@example.cz"}, "", "jan@example.cz is not blocked"},
		{[]string{"unblock", "spam@example.cz"}, `
spam@example.cz unblocked:
  R15  spam allowance of 10 per 24h0m0s spent  would have ended 2026-05-04 19:00 CEST (in 5h)
spam@example.cz: SMTP access stays disabled (R3): "relayguard account enable spam@example.cz" turns it on
`, ""},
		{[]string{"unblock", "off@example.cz"}, "", `off@example.cz is not blocked, but its SMTP access is disabled (R3), which unblock does not change: "relayguard account enable off@example.cz" turns it on`},
		{[]string{"unblock", "192.0.2"}, "", `"192.0.2" is neither an account (a full e-mail address) nor an IP address`},
		{[]string{"unblock", "jan@"}, "", `"jan@" is not a full address (local@domain)`},
		{[]string{"unblock"}, "", "usage: relayguard unblock IP|ACCOUNT"},
		{[]string{"unblock", "192.0.2.7", "jan@example.cz"}, "", "usage: relayguard unblock IP|ACCOUNT"},

		{[]string{"block", "203.0.113.9", "--for", "2h", "--reason", "phishing run"}, "\n203.0.113.9 blocked until 2026-05-04 16:00 CEST (in 2h): phishing run\n", ""},
		{[]string{"block", "--for", "90m", "2001:db8:1:2::99"}, "\n2001:db8:1:2::/64 blocked until 2026-05-04 15:30 CEST (in 1h30m): blocked by support\n", ""},
		{[]string{"block", "--json", "198.51.100.4", "--for=30m"}, `
{
  "subject": "198.51.100.4",
  "rule": "R4",
  "key": "r4|ip|198.51.100.4",
  "until": "2026-05-04T12:30:00Z",
  "reason": "blocked by support",
  "count": 0
}
`, ""},
		{[]string{"block", "203.0.113.9"}, "", "usage: relayguard block IP --for DURATION [--reason TEXT]: --for is required"},
		{[]string{"block", "203.0.113.9", "--for", "-5m"}, "", `invalid duration "-5m0s": must be longer than 0s`},
		{[]string{"block", "203.0.113.9", "--for", "2d"}, "", `invalid value "2d" for flag -for: parse error`},
		{[]string{"block", "203.0.113.9", "--for", "1h", "--reason", "a\tb"}, "", "invalid reason: one line of text, without control characters"},
		{[]string{"blocks"}, `
SUBJECT            RULE  REASON              COUNT  EXPIRES
198.51.100.4       R4    blocked by support  -      2026-05-04 14:30 CEST (in 30m)
2001:db8:1:2::/64  R4    blocked by support  -      2026-05-04 15:30 CEST (in 1h30m)
203.0.113.9        R4    phishing run        -      2026-05-04 16:00 CEST (in 2h)
`, ""},
		{[]string{"unblock", "--json", "2001:db8:1:2::/64"}, `
{
  "ip": "2001:db8:1:2::",
  "unblocked": true,
  "lifted": [
    {
      "subject": "2001:db8:1:2::/64",
      "rule": "R4",
      "key": "r4|ip|2001:db8:1:2::/64",
      "until": "2026-05-04T13:30:00Z",
      "reason": "blocked by support",
      "count": 0
    }
  ]
}
`, ""},
		{[]string{"unblock", "2001:db8:1:2::99"}, "", "2001:db8:1:2::99 is not blocked"},

		{[]string{"account", "disable", "Jan@Example.CZ"}, "\njan@example.cz: SMTP access disabled\n", ""},
		{[]string{"account", "enable", "--json", "jan@example.cz"}, "\n{\n  \"account\": \"jan@example.cz\",\n  \"disabled\": false\n}\n", ""},
		{[]string{"account", "disable", "eva@example.cz"}, "", "not found: no account eva@example.cz"},
		{[]string{"account", "disable", "jan"}, "", `invalid account: "jan" is not a full address (local@domain)`},
		{[]string{"account", "disable"}, "", "usage: relayguard account disable ADDRESS"},

		{[]string{"usage", "jan@example.cz"}, `
RULE  SUBJECT         WINDOW  USED  LIMIT  FREES
R10   jan@example.cz  1m      12    250    now
R10   jan@example.cz  1h      1000  1000   2026-05-04 14:42 CEST (in 42m)
R13   jan@example.cz  3m      0     0      never
`, ""},
		{[]string{"usage", "--json", "jan@example.cz"}, `
[
  {
    "rule": "R10",
    "subject": "jan@example.cz",
    "window": "1m",
    "used": 12,
    "limit": 250
  },
  {
    "rule": "R10",
    "subject": "jan@example.cz",
    "window": "1h",
    "used": 1000,
    "limit": 1000,
    "frees_at": "2026-05-04T12:42:00Z"
  },
  {
    "rule": "R13",
    "subject": "jan@example.cz",
    "window": "3m",
    "used": 0,
    "limit": 0
  }
]
`, ""},
		{[]string{"usage", "192.0.2.7"}, "\nnothing is counted for 192.0.2.7\n", ""},
		{[]string{"usage", "--json", "192.0.2.7"}, "\n[]\n", ""},
		{[]string{"usage", "mail.example.cz"}, "", `invalid subject: "mail.example.cz" is neither an account (a full e-mail address) nor an IP address`},

		{[]string{"explain", "7HqT2mK9xLp4Rb8ZsN3wVa"}, `
id:         7HqT2mK9xLp4Rb8ZsN3wVa
time:       2026-05-04 12:00:00 CEST (2h ago)
stage:      RCPT
rule:       R10 (rate)
mode:       enforce
client:     192.0.2.7
login:      jan@example.cz
sender:     jan@example.cz
recipient:  eva@example.org
reason:     1001 recipients in 1h, limit 1000
reply:      450 4.7.1 7HqT2mK9xLp4Rb8ZsN3wVa policy violation
counters:   r10|account|jan@example.cz|1h = 1001
            r10|ip|192.0.2.7|1h = 1001
`, ""},
		{[]string{"explain", "--json", "7HqT2mK9xLp4Rb8ZsN3wVa"}, `
{
  "id": "7HqT2mK9xLp4Rb8ZsN3wVa",
  "time": "2026-05-04T10:00:00Z",
  "stage": "RCPT",
  "rule": "R10",
  "name": "rate",
  "mode": "enforce",
  "client": "192.0.2.7",
  "login": "jan@example.cz",
  "sender": "jan@example.cz",
  "recipient": "eva@example.org",
  "reason": "1001 recipients in 1h, limit 1000",
  "reply": "450 4.7.1 7HqT2mK9xLp4Rb8ZsN3wVa policy violation",
  "counters": {
    "r10|account|jan@example.cz|1h": 1001,
    "r10|ip|192.0.2.7|1h": 1001
  }
}
`, ""},
		{[]string{"explain", "AAAAAAAAAAAAAAAAAAAAAA"}, "", "no decision AAAAAAAAAAAAAAAAAAAAAA: the id is unknown, or older than admin.decision_retention (7 days by default)"},
		{[]string{"explain", "7HqT2mK9"}, "", `invalid id "7HqT2mK9": a reply's id is 22 letters and digits`},
	}
	for _, tt := range tests {
		check(tt.args, strings.TrimPrefix(tt.out, "\n"), tt.fail)
	}
	if b.Disabled("jan@example.cz") {
		t.Error("jan@example.cz left disabled")
	}
	if !b.Disabled("off@example.cz") || !b.Disabled("spam@example.cz") {
		t.Error("unblock enabled a disabled account")
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestSupportSocket: the socket comes from --socket, or else from the
// configuration; the failures are one line each.
func TestSupportSocket(t *testing.T) {
	_, sock := supportServer(t)
	dir := t.TempDir()
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := write("good.toml", "[policyd]\ndirectory = \"/etc/relayguard/directory.toml\"\n[rules.geoip]\nmode = \"off\"\n[admin]\nsocket = \""+sock+"\"\n")
	broken := write("broken.toml", "[policyd]\ndirectory = \"/etc/relayguard/directory.toml\"\n[rules.geoip]\nmode = \"off\"\n[admin]\nsocket_mode = \"rw\"\ndecision_retention = \"0s\"\n")
	missing := filepath.Join(dir, "missing.toml")
	none := filepath.Join(dir, "none.sock")
	const table = "\nnothing is counted for 192.0.2.9\n"

	check := func(want, wantErr string, args ...string) {
		t.Helper()
		out, err := runSupport(append([]string{"usage", "192.0.2.9"}, args...)...)
		if got := errString(err); got != wantErr {
			t.Errorf("%q: error %q\nwant %q", args, got, wantErr)
		}
		if out != strings.TrimPrefix(want, "\n") {
			t.Errorf("%q: printed %q, want %q", args, out, want)
		}
		if strings.Contains(errString(err), "\n") {
			t.Errorf("%q: error of several lines", args)
		}
	}
	check(table, "", "--config", good)
	check(table, "", "-c", missing, "--socket", sock)
	check(table, "", "--config", broken, "--socket", sock)
	check(table, "", "--config", good, "--socket", sock)
	check("", "open "+missing+": no such file or directory (the admin socket is read from this configuration; or give --socket PATH)", "--config", missing)
	check("", broken+":6: admin.socket_mode: \"rw\" is not an octal file mode such as \"0660\"; "+broken+":7: admin.decision_retention: must be longer than 0s (the admin socket is read from this configuration; or give --socket PATH)", "--config", broken)
	check("", `policyd is not running: there is no socket `+none+` (check "systemctl status relayguard-policyd", or the admin.socket setting)`, "--socket", none)
}

func TestSupportTime(t *testing.T) {
	s := supportCLI{now: func() time.Time { return supportNow }, loc: time.UTC}
	check := func(d time.Duration, want string) {
		t.Helper()
		if got := s.at(supportNow.Add(d), "15:04"); got != want {
			t.Errorf("%v: %q, want %q", d, got, want)
		}
	}
	check(0, "12:00 (now)")
	check(999*time.Millisecond, "12:00 (now)")
	check(42*time.Second, "12:00 (in 42s)")
	check(42*time.Minute+59*time.Second, "12:42 (in 42m)")
	check(5*time.Hour, "17:00 (in 5h)")
	check(5*time.Hour+12*time.Minute, "17:12 (in 5h12m)")
	check(47*time.Hour+59*time.Minute, "11:59 (in 47h59m)")
	check(72*time.Hour+30*time.Minute, "12:30 (in 3d)")
	check(76*time.Hour, "16:00 (in 3d4h)")
	check(-2*time.Hour, "10:00 (2h ago)")
	check(-8*24*time.Hour, "12:00 (8d ago)")
}
