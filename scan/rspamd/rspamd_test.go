package rspamd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"relayguard/scan"
)

const gtubeReply = `{"is_skipped":true,"score":15.0,"required_score":15.0,"action":"reject",` +
	`"symbols":{"GTUBE":{"name":"GTUBE","score":0.0,"metric_score":0.0}},` +
	`"messages":{"smtp_message":"Gtube pattern"},"message-id":"1@example.test","time_real":0.04}`

const hamReply = `{"is_skipped":false,"score":-0.100000,"required_score":15.0,"action":"no action",` +
	`"symbols":{"MIME_GOOD":{"name":"MIME_GOOD","score":-0.1},"ARC_NA":{"name":"ARC_NA","score":0.0}},` +
	`"messages":{},"milter":{"remove_headers":{"X-Spam":0}}}`

// request is what the fake rspamd received.
type request struct {
	method, path  string
	header        http.Header
	body          string
	contentLength int64
	chunked       bool
}

// fake starts an rspamd that records each request and answers with
// handle, or with hamReply.
func fake(t *testing.T, handle http.HandlerFunc) (*Client, func() []request) {
	t.Helper()
	var mu sync.Mutex
	var reqs []request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		reqs = append(reqs, request{r.Method, r.URL.Path, r.Header.Clone(), string(body), r.ContentLength,
			slices.Contains(r.TransferEncoding, "chunked")})
		mu.Unlock()
		if handle != nil {
			handle(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, hamReply)
	}))
	t.Cleanup(srv.Close)
	return &Client{URL: srv.URL, Timeout: 5 * time.Second}, func() []request {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(reqs)
	}
}

const message = "From: a@example.test\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nHello\r\n"

func TestCheckRequest(t *testing.T) {
	c, reqs := fake(t, nil)
	c.Password = "q1"
	meta := Meta{
		IP:       netip.MustParseAddr("::ffff:192.0.2.7"),
		Hostname: "client.example.test",
		Helo:     "helo.example.test",
		User:     "user@example.test",
		From:     "a@example.test",
		Rcpt:     []string{"b@example.net", "c@example.org"},
		QueueID:  "4F2A11C0B3",
	}
	v, err := c.Check(context.Background(), strings.NewReader(message), int64(len(message)), meta)
	if err != nil {
		t.Fatal(err)
	}
	want := Verdict{Action: NoAction, Score: -0.1, Required: 15, Symbols: []string{"ARC_NA", "MIME_GOOD"}}
	if fmt.Sprint(v) != fmt.Sprint(want) {
		t.Errorf("verdict %+v, want %+v", v, want)
	}
	r := reqs()[0]
	if r.method != http.MethodPost || r.path != "/checkv2" {
		t.Errorf("request %s %s, want POST /checkv2", r.method, r.path)
	}
	if r.body != message || r.contentLength != int64(len(message)) || r.chunked {
		t.Errorf("body %q, Content-Length %d, chunked %v", r.body, r.contentLength, r.chunked)
	}
	for name, want := range map[string][]string{
		"Ip":         {"192.0.2.7"},
		"Hostname":   {"client.example.test"},
		"Helo":       {"helo.example.test"},
		"User":       {"user@example.test"},
		"From":       {"a@example.test"},
		"Rcpt":       {"b@example.net", "c@example.org"},
		"Queue-Id":   {"4F2A11C0B3"},
		"Password":   {"q1"},
		"User-Agent": {"relayguard"},
	} {
		if got := r.header.Values(name); !slices.Equal(got, want) {
			t.Errorf("header %s: %q, want %q", name, got, want)
		}
	}
}

func TestCheckMinimalRequest(t *testing.T) {
	c, reqs := fake(t, nil)
	c.URL += "/"
	if _, err := c.Check(context.Background(), strings.NewReader(message), -1, Meta{}); err != nil {
		t.Fatal(err)
	}
	r := reqs()[0]
	if r.path != "/checkv2" {
		t.Errorf("path %q", r.path)
	}
	if r.body != message || !r.chunked {
		t.Errorf("body %q, chunked %v: want the message, chunked", r.body, r.chunked)
	}
	// The null sender; nothing else.
	if got := r.header.Values("From"); !slices.Equal(got, []string{"<>"}) {
		t.Errorf("From %q, want <>", got)
	}
	for _, name := range []string{"Ip", "Hostname", "Helo", "User", "Rcpt", "Queue-Id", "Password"} {
		if v, ok := r.header[name]; ok {
			t.Errorf("header %s sent: %q", name, v)
		}
	}
}

func TestCheckVerdict(t *testing.T) {
	c, _ := fake(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, gtubeReply) })
	v, err := c.Check(context.Background(), strings.NewReader(message), int64(len(message)), Meta{})
	if err != nil {
		t.Fatal(err)
	}
	want := Verdict{Action: Reject, Score: 15, Required: 15, Symbols: []string{"GTUBE"}, Message: "Gtube pattern"}
	if fmt.Sprint(v) != fmt.Sprint(want) {
		t.Errorf("verdict %+v, want %+v", v, want)
	}
	if !v.Spam(AddHeader) {
		t.Error("reject is not spam at the add header threshold")
	}
}

func TestCheckUnavailable(t *testing.T) {
	check := func(name string, handle http.HandlerFunc, wantTimeout bool, wantText string) {
		t.Helper()
		c, _ := fake(t, handle)
		c.Timeout = 200 * time.Millisecond
		_, err := c.Check(context.Background(), strings.NewReader(message), int64(len(message)), Meta{})
		if !errors.Is(err, scan.ErrUnavailable) {
			t.Fatalf("%s: got %v, want scan.ErrUnavailable", name, err)
		}
		if errors.Is(err, scan.ErrTimeout) != wantTimeout {
			t.Errorf("%s: errors.Is(%v, ErrTimeout) = %v, want %v", name, err, !wantTimeout, wantTimeout)
		}
		if !strings.Contains(err.Error(), wantText) {
			t.Errorf("%s: error %q does not say %q", name, err, wantText)
		}
	}
	reply := func(status int, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(status)
			io.WriteString(w, body)
		}
	}
	check("500", reply(500, `{"error":"invalid command","error_domain":"protocol-error"}`), false, "500 Internal Server Error: invalid command")
	check("503 not JSON", reply(503, "busy"), false, `503 Service Unavailable: "busy"`)
	check("redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	}, false, "302")
	check("not JSON", reply(200, "<html>hello</html>"), false, "not rspamd's JSON")
	check("truncated JSON", reply(200, gtubeReply[:40]), false, "not rspamd's JSON")
	check("no action", reply(200, `{"score":1.0}`), false, "no action")
	check("unknown action", reply(200, `{"action":"panic"}`), false, `unknown action "panic"`)
	check("endless reply", func(w http.ResponseWriter, r *http.Request) {
		chunk := strings.Repeat(" ", 64<<10)
		for range (maxReply / len(chunk)) + 2 {
			io.WriteString(w, chunk)
		}
	}, false, "longer than")
	check("slow", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}, true, "deadline exceeded")
	check("hijacked and closed", func(w http.ResponseWriter, r *http.Request) {
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
	}, false, "EOF")
}

func TestCheckRefused(t *testing.T) {
	c, _ := fake(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"Unauthorized"}`)
	})
	_, err := c.Check(context.Background(), strings.NewReader(message), int64(len(message)), Meta{})
	var se *StatusError
	if !errors.As(err, &se) || se.Status != 401 || se.Message != "Unauthorized" || errors.Is(err, scan.ErrUnavailable) {
		t.Errorf("got %v, want a 401 *StatusError that is not scan.ErrUnavailable", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	c = &Client{URL: url}
	_, err = c.Check(context.Background(), strings.NewReader(message), -1, Meta{})
	if !errors.Is(err, scan.ErrUnavailable) || errors.Is(err, scan.ErrTimeout) {
		t.Errorf("connection refused: got %v, want scan.ErrUnavailable", err)
	}
}

func TestCheckCanceled(t *testing.T) {
	c, _ := fake(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := c.Check(ctx, strings.NewReader(message), -1, Meta{})
	if !errors.Is(err, context.Canceled) || errors.Is(err, scan.ErrUnavailable) {
		t.Errorf("got %v, want context.Canceled and not scan.ErrUnavailable", err)
	}
}

// failing yields some bytes and then an error.
type failing struct {
	data string
	err  error
}

func (f *failing) Read(p []byte) (int, error) {
	if f.data == "" {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

func TestCheckMessageFaults(t *testing.T) {
	c, reqs := fake(t, nil)
	errDisk := errors.New("disk on fire")
	for _, size := range []int64{-1, 100} {
		_, err := c.Check(context.Background(), &failing{data: "From: a\r\n", err: errDisk}, size, Meta{})
		if !errors.Is(err, errDisk) || errors.Is(err, scan.ErrUnavailable) {
			t.Errorf("size %d: got %v, want the reader's error and not scan.ErrUnavailable", size, err)
		}
	}
	_, err := c.Check(context.Background(), strings.NewReader(message), int64(len(message))+10, Meta{})
	if err == nil || errors.Is(err, scan.ErrUnavailable) || !strings.Contains(err.Error(), "ended after") {
		t.Errorf("short message: got %v", err)
	}
	_, err = c.Check(context.Background(), strings.NewReader(message), -1, Meta{Helo: "evil\r\nX-Injected: 1"})
	if err == nil || errors.Is(err, scan.ErrUnavailable) || !strings.Contains(err.Error(), "Helo header") {
		t.Errorf("CRLF in Helo: got %v", err)
	}
	// The short message's request above may be recorded only now (the
	// server reads it to its end after the client gave up): count the
	// requests that carry the Helo, not all of them.
	n := 0
	for _, r := range reqs() {
		if strings.HasPrefix(r.header.Get("Helo"), "evil") {
			n++
		}
	}
	if n != 0 {
		t.Errorf("CRLF in Helo: %d requests reached rspamd, want none", n)
	}
}

func TestCheckTooLarge(t *testing.T) {
	c, reqs := fake(t, nil)
	c.MaxMessage = 100
	msg := strings.Repeat("x", 101)
	if _, err := c.Check(context.Background(), strings.NewReader(msg), 101, Meta{}); err != ErrTooLarge {
		t.Errorf("known size: got %v, want ErrTooLarge", err)
	}
	if n := len(reqs()); n != 0 {
		t.Errorf("known size: %d requests reached rspamd, want none", n)
	}
	_, err := c.Check(context.Background(), strings.NewReader(msg), -1, Meta{})
	if err != ErrTooLarge || errors.Is(err, scan.ErrUnavailable) {
		t.Errorf("chunked: got %v, want ErrTooLarge", err)
	}
	if _, err := c.Check(context.Background(), strings.NewReader(msg[:100]), -1, Meta{}); err != nil {
		t.Errorf("MaxMessage bytes, chunked: %v", err)
	}
	if _, err := c.Check(context.Background(), strings.NewReader(msg[:100]), 100, Meta{}); err != nil {
		t.Errorf("MaxMessage bytes: %v", err)
	}
}

func TestCheckEmptyMessage(t *testing.T) {
	c, reqs := fake(t, nil)
	if _, err := c.Check(context.Background(), strings.NewReader(""), 0, Meta{}); err != nil {
		t.Fatal(err)
	}
	if r := reqs()[0]; r.body != "" || r.contentLength != 0 || r.chunked {
		t.Errorf("body %q, Content-Length %d, chunked %v", r.body, r.contentLength, r.chunked)
	}
}

func TestSpam(t *testing.T) {
	actions := []Action{NoAction, Greylist, SoftReject, AddHeader, RewriteSubject, Reject, Discard, Quarantine}
	want := map[Action][]Action{ // threshold: the actions that are spam
		NoAction:       actions,
		Greylist:       actions[1:],
		SoftReject:     actions[1:],
		AddHeader:      actions[3:],
		RewriteSubject: actions[4:],
		Reject:         actions[5:],
	}
	for threshold, spam := range want {
		for _, a := range actions {
			if got := (Verdict{Action: a}).Spam(threshold); got != slices.Contains(spam, a) {
				t.Errorf("action %q at threshold %q: Spam = %v", a, threshold, got)
			}
		}
	}
	if (Verdict{Action: "panic"}).Spam(NoAction) || (Verdict{Action: Reject}).Spam("panic") {
		t.Error("an unknown action ranks")
	}
}

func TestParseAction(t *testing.T) {
	for _, s := range []string{"no action", "greylist", "add header", "rewrite subject", "soft reject", "reject", "discard", "quarantine"} {
		if a, err := ParseAction(s); err != nil || string(a) != s {
			t.Errorf("ParseAction(%q) = %q, %v", s, a, err)
		}
	}
	for _, s := range []string{"", "add_header", "Reject", "spam"} {
		if _, err := ParseAction(s); err == nil {
			t.Errorf("ParseAction(%q) accepted", s)
		}
	}
}

func ExampleVerdict_Spam() {
	threshold, err := ParseAction("add header") // from the configuration
	if err != nil {
		panic(err)
	}
	for _, v := range []Verdict{{Action: NoAction}, {Action: Greylist}, {Action: AddHeader}, {Action: Reject}} {
		fmt.Printf("%s: spam=%v\n", v.Action, v.Spam(threshold))
	}
	// Output:
	// no action: spam=false
	// greylist: spam=false
	// add header: spam=true
	// reject: spam=true
}
