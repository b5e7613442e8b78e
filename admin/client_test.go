package admin_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"relayguard/admin"
	"relayguard/admin/admintest"
)

func TestClient(t *testing.T) {
	b := backend()
	c := admin.NewClient(admintest.Serve(t, &admin.Server{Backend: b}))
	ctx := context.Background()
	check := func(what string, got, want any, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: %v", what, err)
		} else if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", what, got, want)
		}
	}
	checkErr := func(what string, err error, status int, msg string) {
		t.Helper()
		var e *admin.Error
		if !errors.As(err, &e) || e.Status != status || e.Message != msg {
			t.Errorf("%s: error %#v, want %d %q", what, err, status, msg)
		}
	}

	r4 := admin.Block{Subject: "192.0.2.7", Rule: "R4", Key: "r4|ip|192.0.2.7", Until: now.Add(42 * time.Minute), Reason: "11 failed authentications in 1h", Count: 11}
	r15 := admin.Block{Subject: "jan@example.cz", Rule: "R15", Key: "r15|account|jan@example.cz", Until: now.Add(20 * time.Hour), Reason: "spam allowance spent", Count: 12}
	bs, err := c.Blocks(ctx)
	check("Blocks", bs, []admin.Block{
		r15,
		{Subject: "spam@example.cz", Rule: "R15", Key: "r15|account|spam@example.cz", Until: now.Add(5 * time.Hour), Reason: "spam allowance spent", Count: 11},
		{Subject: "203.0.113.5", Rule: "R15", Key: "r15|ip|203.0.113.5", Until: now.Add(3 * time.Hour), Reason: "spam allowance spent", Count: 11},
		r4,
	}, err)

	ip := admin.Subject{IP: netip.MustParseAddr("192.0.2.7")}
	u, err := c.Unblock(ctx, ip)
	check("Unblock", u, admin.Unblocked{IP: "192.0.2.7", Unblocked: true, Lifted: []admin.Block{r4}}, err)
	u, err = c.Unblock(ctx, ip)
	check("Unblock again", u, admin.Unblocked{IP: "192.0.2.7"}, err)
	jan := admin.Subject{Account: "jan@example.cz"}
	u, err = c.Unblock(ctx, jan)
	check("Unblock account", u, admin.Unblocked{Account: "jan@example.cz", Unblocked: true, Lifted: []admin.Block{r15}}, err)
	u, err = c.Unblock(ctx, jan)
	check("Unblock account again", u, admin.Unblocked{Account: "jan@example.cz"}, err)
	_, err = c.Unblock(ctx, admin.Subject{Account: "off@example.cz"})
	checkErr("Unblock disabled account", err, 409, `off@example.cz is not blocked, but its SMTP access is disabled (R3), which unblock does not change: "relayguard account enable off@example.cz" turns it on`)
	_, err = c.Unblock(ctx, admin.Subject{})
	checkErr("Unblock nothing", err, 400, `invalid request: give "ip" (an IP address) or "account" (a full e-mail address)`)

	bl, err := c.Block(ctx, netip.MustParseAddr("2001:db8:1:2::99"), 90*time.Minute, "")
	check("Block", bl, admin.Block{Subject: "2001:db8:1:2::/64", Rule: "R4", Key: "r4|ip|2001:db8:1:2::/64", Until: now.Add(90 * time.Minute), Reason: admin.DefaultReason}, err)
	_, err = c.Block(ctx, netip.MustParseAddr("192.0.2.7"), -time.Minute, "")
	checkErr("Block -1m", err, 400, `invalid duration "-1m0s": must be longer than 0s`)

	err = c.SetAccountDisabled(ctx, "jan@example.cz", true)
	check("SetAccountDisabled", b.Disabled("jan@example.cz"), true, err)
	err = c.SetAccountDisabled(ctx, "jan@example.cz", false)
	check("SetAccountDisabled false", b.Disabled("jan@example.cz"), false, err)
	checkErr("SetAccountDisabled unknown", c.SetAccountDisabled(ctx, "nobody@example.cz", true), 404, "not found: no account nobody@example.cz")

	lines, err := c.Usage(ctx, "jan@example.cz")
	check("Usage", lines, []admin.UsageLine{
		{Rule: "R10", Subject: "jan@example.cz", Window: "1m", Used: 12, Limit: 250},
		{Rule: "R10", Subject: "jan@example.cz", Window: "1h", Used: 1000, Limit: 1000, FreesAt: now.Add(42 * time.Minute)},
	}, err)
	_, err = c.Usage(ctx, "jan&subject=x")
	checkErr("Usage jan&subject=x", err, 400, `invalid subject: "jan&subject=x" is neither an account (a full e-mail address) nor an IP address`)

	want, _, _ := b.Explain(ctx, knownID)
	rec, ok, err := c.Explain(ctx, knownID)
	check("Explain", []any{rec, ok}, []any{want, true}, err)
	_, ok, err = c.Explain(ctx, "AAAAAAAAAAAAAAAAAAAAAA")
	check("Explain unknown", ok, false, err)
	_, _, err = c.Explain(ctx, "../blocks")
	checkErr("Explain ../blocks", err, 400, `invalid id "../blocks": a reply's id is 22 letters and digits`)

	b.Fail(errors.New("store closed"))
	_, err = c.Blocks(ctx)
	checkErr("Blocks failing", err, 500, "store closed")
}

func TestClientNotRunning(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()

	check := func(socket, want string) {
		t.Helper()
		_, err := admin.NewClient(socket).Blocks(context.Background())
		if err == nil || err.Error() != want {
			t.Errorf("%s: error %v\nwant %s", socket, err, want)
		}
	}
	const how = `(check "systemctl status relayguard-policyd", or the admin.socket setting)`
	check(filepath.Join(dir, "none.sock"), "policyd is not running: there is no socket "+filepath.Join(dir, "none.sock")+" "+how)
	check(stale, "policyd is not listening on "+stale+" "+how)
}

func TestClientPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root passes permission checks; TestDescribeDialError covers the message")
	}
	socket := admintest.Serve(t, &admin.Server{Backend: backend()})
	if err := os.Chmod(socket, 0); err != nil {
		t.Fatal(err)
	}
	_, err := admin.NewClient(socket).Blocks(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "permission denied on "+socket+": you must be in the socket's group") {
		t.Errorf("error %v", err)
	}
}
