package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/user"
	"strconv"
	"syscall"
	"time"

	"relayguard/decisions"
)

// Client calls the API on policyd's unix socket. Its methods mirror the
// Backend's; the API's failures are *Error.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client of the API on the unix socket at path. A call
// gives up after 30 seconds, or sooner when its context ends.
func NewClient(socket string) *Client {
	tr := &http.Transport{ // no Proxy: the request never leaves the socket
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}
	return &Client{socket: socket, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// Blocks returns the blocks in force.
func (c *Client) Blocks(ctx context.Context) ([]Block, error) {
	var bs []Block
	err := c.call(ctx, http.MethodGet, "/blocks", nil, &bs)
	return bs, err
}

// Unblock lifts the blocks of s that support may lift (see the package
// comment). Its answer's Unblocked is false when s was not blocked; an
// account that was not blocked but is disabled (R3) is an *Error, 409.
func (c *Client) Unblock(ctx context.Context, s Subject) (Unblocked, error) {
	req := map[string]string{}
	switch {
	case s.Account != "":
		req["account"] = s.Account
	case s.IP.IsValid():
		req["ip"] = s.IP.String()
	}
	var u Unblocked
	err := c.call(ctx, http.MethodPost, "/unblock", req, &u)
	if e := (*Error)(nil); errors.As(err, &e) && e.Status == http.StatusNotFound {
		return Unblocked{IP: req["ip"], Account: s.Account}, nil
	}
	return u, err
}

// Block refuses ip for d, for reason ("" for DefaultReason).
func (c *Client) Block(ctx context.Context, ip netip.Addr, d time.Duration, reason string) (Block, error) {
	var b Block
	err := c.call(ctx, http.MethodPost, "/block", map[string]string{"ip": ip.String(), "duration": d.String(), "reason": reason}, &b)
	return b, err
}

// SetAccountDisabled turns an account's SMTP access off or on.
func (c *Client) SetAccountDisabled(ctx context.Context, account string, disabled bool) error {
	req := struct {
		Account  string `json:"account"`
		Disabled bool   `json:"disabled"`
	}{account, disabled}
	return c.call(ctx, http.MethodPost, "/account", req, &AccountState{})
}

// Usage returns every limit on subject, an account or an IP.
func (c *Client) Usage(ctx context.Context, subject string) ([]UsageLine, error) {
	var lines []UsageLine
	err := c.call(ctx, http.MethodGet, "/usage?subject="+url.QueryEscape(subject), nil, &lines)
	return lines, err
}

// Explain returns the decision whose reply carried id, if it is still kept.
func (c *Client) Explain(ctx context.Context, id string) (decisions.Record, bool, error) {
	var rec decisions.Record
	err := c.call(ctx, http.MethodGet, "/explain/"+url.PathEscape(id), nil, &rec)
	if e := (*Error)(nil); errors.As(err, &e) && e.Status == http.StatusNotFound {
		return decisions.Record{}, false, nil
	}
	return rec, err == nil, err
}

// Spam reports a message the content filter judged spam (R15).
func (c *Client) Spam(ctx context.Context, client netip.AddrPort, queueID string) (SpamReport, error) {
	var rep SpamReport
	err := c.call(ctx, http.MethodPost, "/spam", map[string]string{"client": client.String(), "queue_id": queueID}, &rep)
	return rep, err
}

// Filtering tells policyd that the before-queue filter carries the
// transaction client has begun.
func (c *Client) Filtering(ctx context.Context, client netip.AddrPort) error {
	return c.call(ctx, http.MethodPost, "/filtering", map[string]string{"client": client.String()}, nil)
}

// EndOfMessage asks policyd for the END-OF-MESSAGE reply of client's
// transaction: "" when the message may pass.
func (c *Client) EndOfMessage(ctx context.Context, client netip.AddrPort) (string, error) {
	var rep EndOfMessage
	err := c.call(ctx, http.MethodPost, "/end-of-message", map[string]string{"client": client.String()}, &rep)
	return rep.Reply, err
}

// call sends one request, with body as JSON when not nil, and decodes the
// answer into out.
func (c *Client) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://policyd"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.dialError(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("reading policyd's answer on %s: %w", c.socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			return &Error{resp.StatusCode, fmt.Sprintf("unexpected answer on %s: %s", c.socket, resp.Status)}
		}
		return &Error{resp.StatusCode, e.Error}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("unreadable answer on %s: %w", c.socket, err)
	}
	return nil
}

// dialError explains a failed call, naming the socket's group when
// permission was denied.
func (c *Client) dialError(err error) error {
	group := ""
	if fi, serr := os.Stat(c.socket); serr == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			group = strconv.FormatUint(uint64(st.Gid), 10)
			if g, gerr := user.LookupGroupId(group); gerr == nil {
				group = g.Name
			}
		}
	}
	return describeDialError(c.socket, group, err)
}

// describeDialError says why policyd could not be reached on socket, whose
// group is group ("" if unknown), and how to check.
func describeDialError(socket, group string, err error) error {
	const check = `check "systemctl status relayguard-policyd", or the admin.socket setting`
	switch {
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("policyd is not running: there is no socket %s (%s)", socket, check)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("policyd is not listening on %s (%s)", socket, check)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		if group != "" {
			return fmt.Errorf("permission denied on %s: you must be in the socket's group %q", socket, group)
		}
		return fmt.Errorf("permission denied on %s: you must be in the socket's group", socket)
	}
	return fmt.Errorf("talking to policyd on %s: %w", socket, err)
}
