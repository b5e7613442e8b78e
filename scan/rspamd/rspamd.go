// Package rspamd is a client of rspamd's scanner, for R15 (spam).
//
// It posts a message to a normal worker's /checkv2 (rspamd's "Rspamd
// protocol" documentation), with the envelope in rspamd's request headers,
// so that rspamd does not have to guess it from the message:
//
//	IP        the SMTP client's address
//	Hostname  its verified reverse name (Postfix's client_name)
//	Helo      its HELO/EHLO name
//	User      the SASL login: rspamd treats the message as authenticated
//	From      the envelope sender, "<>" for the null sender
//	Rcpt      one header per envelope recipient
//	Queue-Id  Postfix's queue id, which rspamd logs
//	Password  only when set: the controller worker asks for it
//
// The body is the message as is, streamed: with a Content-Length when its
// size is known, chunked otherwise (rspamd accepts both). rspamd 3.4 closes
// the connection after every reply. The reply is JSON:
//
//	{"is_skipped":false, "score":15.0, "required_score":15.0, "action":"reject",
//	 "symbols":{"GTUBE":{"name":"GTUBE","score":0.0, ...}, ...},
//	 "messages":{"smtp_message":"Gtube pattern"}, ...}
//
// and an error is a non-200 status with {"error": "..."} (500 for an unknown
// path, for example). A message longer than rspamd's max_message option (50
// MiB by default) is not answered: rspamd drops the connection and logs
// "Request entity too large". So the client does not send one: a message
// longer than Client.MaxMessage is ErrTooLarge, for the caller to treat per
// configuration (spamc, for one, skips large messages).
//
// The action is rspamd's recommendation, from its score and its actions
// configuration; Verdict.Spam maps it to spam or ham against a configured
// threshold action.
package rspamd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"relayguard/scan"
)

// DefaultTimeout bounds a check when Client.Timeout is zero. rspamd's own
// task_timeout is 8 s.
const DefaultTimeout = 15 * time.Second

// DefaultMaxMessage is rspamd's default max_message: a message of exactly
// that length is scanned, one byte more is not.
const DefaultMaxMessage = 50 << 20

// maxReply bounds what is read of a reply.
const maxReply = 4 << 20

// ErrTooLarge is returned for a message longer than Client.MaxMessage. It
// does not match scan.ErrUnavailable.
var ErrTooLarge = errors.New("rspamd: message longer than rspamd's max_message")

// Action is rspamd's recommended action for a message.
type Action string

// rspamd's actions (its actions.conf and its "discard" and "quarantine"
// actions, set by rules rather than by score).
const (
	NoAction       Action = "no action"
	Greylist       Action = "greylist"
	AddHeader      Action = "add header"
	RewriteSubject Action = "rewrite subject"
	SoftReject     Action = "soft reject"
	Reject         Action = "reject"
	Discard        Action = "discard"
	Quarantine     Action = "quarantine"
)

// rank orders the actions from ham to spam. "soft reject" is rspamd's
// temporary refusal, which it emits when its greylisting module delays a
// message that reached the greylist score, or when a rate limit is hit: it
// ranks with greylist. "discard" and "quarantine" rank with reject.
var rank = map[Action]int{
	NoAction:       0,
	Greylist:       1,
	SoftReject:     1,
	AddHeader:      2,
	RewriteSubject: 3,
	Reject:         4,
	Discard:        4,
	Quarantine:     4,
}

// ParseAction returns the action named s (for a configured threshold), or
// an error if rspamd has no such action.
func ParseAction(s string) (Action, error) {
	a := Action(s)
	if _, ok := rank[a]; !ok {
		return "", fmt.Errorf("rspamd: unknown action %q", s)
	}
	return a, nil
}

// Verdict is rspamd's answer for a message.
type Verdict struct {
	Action   Action
	Score    float64
	Required float64  // the score of the reject action
	Symbols  []string // the names of the symbols that matched, sorted
	Message  string   // the SMTP text rspamd proposes, if any ("Gtube pattern")
}

// Spam reports whether the verdict's action is at least threshold, in the
// order no action < greylist = soft reject < add header < rewrite subject <
// reject = discard = quarantine. With the threshold "add header", a message
// that rspamd would tag or refuse is spam.
func (v Verdict) Spam(threshold Action) bool {
	r, ok := rank[v.Action]
	t, tok := rank[threshold]
	return ok && tok && r >= t
}

// Meta is the envelope of a message, sent as rspamd's request headers.
// Empty fields are not sent, except From.
type Meta struct {
	IP       netip.Addr // the SMTP client's address
	Hostname string     // its verified reverse name
	Helo     string
	User     string   // the SASL login
	From     string   // the envelope sender, without <>; "" is the null sender
	Rcpt     []string // the envelope recipients
	QueueID  string
}

// Client checks messages with one rspamd. URL is required; the zero values
// of the other fields mean their defaults. A Client is safe for concurrent
// use.
type Client struct {
	URL      string // the worker's base URL, "http://127.0.0.1:11333"
	Password string // sent as the Password header when set
	Timeout  time.Duration

	// MaxMessage is rspamd's max_message option. Default
	// DefaultMaxMessage.
	MaxMessage int64

	// HTTP is the client used for the requests. The default one uses no
	// proxy, whatever the environment says, and follows no redirect. Set
	// one with a Transport of its own to reach rspamd on a unix socket.
	HTTP *http.Client
}

// defaultHTTP uses no proxy and follows no redirect (rspamd sends none: a
// 3xx is not its protocol).
var defaultHTTP = &http.Client{
	Transport: &http.Transport{
		DialContext:         (&net.Dialer{}).DialContext,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
	},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// StatusError is rspamd's refusal of a request, with the HTTP status and
// rspamd's error text. A 5xx error is wrapped in a *scan.Error and so
// matches scan.ErrUnavailable; a 4xx error (a wrong password, a request
// rspamd cannot parse) is returned as is and does not.
type StatusError struct {
	Status  int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("rspamd answered %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Check sends the message that msg yields, size bytes long (-1 if not known)
// with its envelope to rspamd and returns rspamd's verdict.
//
// An error that matches scan.ErrUnavailable means that there is no verdict:
// rspamd could not be reached, did not answer in time (scan.ErrTimeout),
// answered a 5xx status, or something that is not its protocol. Other
// errors: the message is longer than MaxMessage (ErrTooLarge; when size is
// not known, that is found once MaxMessage bytes are sent), msg failed or
// did not yield size bytes, a Meta field cannot be sent as a header, rspamd
// answered a 4xx *StatusError.
func (c *Client) Check(ctx context.Context, msg io.Reader, size int64, meta Meta) (Verdict, error) {
	if size > c.maxMessage() {
		return Verdict{}, ErrTooLarge
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	body := &body{r: msg, limit: c.maxMessage()}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.URL, "/")+"/checkv2", body)
	if err != nil {
		return Verdict{}, fmt.Errorf("rspamd: %w", err)
	}
	req.ContentLength = max(size, -1)
	if size == 0 {
		req.Body = http.NoBody
	}
	if err := c.setHeaders(req.Header, meta); err != nil {
		return Verdict{}, err
	}
	resp, err := c.client().Do(req)
	if err != nil {
		if berr := body.failure(size); errors.Is(berr, ErrTooLarge) {
			return Verdict{}, ErrTooLarge
		} else if berr != nil {
			return Verdict{}, fmt.Errorf("rspamd: reading the message: %w", berr)
		}
		return Verdict{}, scan.Unavailable(ctx, "rspamd", "request", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReply+1))
	if err != nil {
		return Verdict{}, scan.Unavailable(ctx, "rspamd", "reply", err)
	}
	if len(data) > maxReply {
		return Verdict{}, scan.Unavailable(ctx, "rspamd", "reply", fmt.Errorf("reply longer than %d bytes", maxReply))
	}
	if resp.StatusCode != http.StatusOK {
		serr := &StatusError{Status: resp.StatusCode, Message: errorText(data)}
		if resp.StatusCode >= 400 && resp.StatusCode < 500 {
			return Verdict{}, serr
		}
		return Verdict{}, scan.Unavailable(ctx, "rspamd", "reply", serr)
	}
	v, err := parseReply(data)
	if err != nil {
		return Verdict{}, scan.Unavailable(ctx, "rspamd", "reply", err)
	}
	return v, nil
}

func (c *Client) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

func (c *Client) maxMessage() int64 {
	if c.MaxMessage > 0 {
		return c.MaxMessage
	}
	return DefaultMaxMessage
}

func (c *Client) client() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return defaultHTTP
}

// setHeaders sets rspamd's request headers from meta, refusing values that
// cannot be sent in a header.
func (c *Client) setHeaders(h http.Header, meta Meta) error {
	from := meta.From
	if from == "" {
		from = "<>"
	}
	fields := []header{
		{"Hostname", meta.Hostname},
		{"Helo", meta.Helo},
		{"User", meta.User},
		{"From", from},
		{"Queue-Id", meta.QueueID},
		{"Password", c.Password},
	}
	if meta.IP.IsValid() {
		fields = append(fields, header{"IP", meta.IP.Unmap().String()})
	}
	for _, r := range meta.Rcpt {
		fields = append(fields, header{"Rcpt", r})
	}
	for _, f := range fields {
		if f.value == "" {
			continue
		}
		if i := strings.IndexFunc(f.value, func(r rune) bool { return r < ' ' || r == 0x7f }); i >= 0 {
			return fmt.Errorf("rspamd: %s header: control character in %q", f.name, f.value)
		}
		h.Add(f.name, f.value)
	}
	h.Set("User-Agent", "relayguard")
	return nil
}

type header struct{ name, value string }

// body is the request body: it remembers how much of the message it read
// and how reading it failed, to tell the message's faults from rspamd's,
// and fails with ErrTooLarge past limit bytes. The transport reads it in
// its own goroutine.
type body struct {
	r     io.Reader
	limit int64

	mu  sync.Mutex
	n   int64
	err error
	eof bool
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n += int64(n)
	switch {
	case b.n > b.limit:
		b.err = ErrTooLarge
		return 0, ErrTooLarge
	case err == io.EOF:
		b.eof = true
	case err != nil:
		b.err = err
	}
	return n, err
}

// failure returns the message's fault, if any, once a request failed: a
// read error, or an end before size bytes.
func (b *body) failure(size int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.err != nil:
		return b.err
	case b.eof && size >= 0 && b.n < size:
		return fmt.Errorf("the message ended after %d of its %d bytes", b.n, size)
	}
	return nil
}

// reply is the part of rspamd's /checkv2 reply that a Verdict holds.
type reply struct {
	Action   *string                    `json:"action"`
	Score    float64                    `json:"score"`
	Required float64                    `json:"required_score"`
	Symbols  map[string]json.RawMessage `json:"symbols"`
	Messages map[string]json.RawMessage `json:"messages"`
}

func parseReply(data []byte) (Verdict, error) {
	var r reply
	if err := json.Unmarshal(data, &r); err != nil {
		return Verdict{}, fmt.Errorf("reply is not rspamd's JSON: %w", err)
	}
	if r.Action == nil {
		return Verdict{}, errors.New("reply has no action")
	}
	a := Action(*r.Action)
	if _, ok := rank[a]; !ok {
		return Verdict{}, fmt.Errorf("unknown action %q", a)
	}
	v := Verdict{Action: a, Score: r.Score, Required: r.Required}
	for name := range r.Symbols {
		v.Symbols = append(v.Symbols, name)
	}
	slices.Sort(v.Symbols)
	// A string; anything else is not a message to show.
	var text string
	if json.Unmarshal(r.Messages["smtp_message"], &text) == nil {
		v.Message = text
	}
	return v, nil
}

// errorText returns the text of rspamd's error reply, {"error": "..."}, or
// the start of whatever else it is.
func errorText(data []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return e.Error
	}
	const limit = 200
	if len(data) > limit {
		data = data[:limit]
	}
	return fmt.Sprintf("%q", data)
}
