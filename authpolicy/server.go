// Package authpolicy serves Dovecot's auth policy protocol
// (auth_policy_server_url) for policyd: R4, too many failed authentications
// from one client address, and the Dovecot side of R2 (the login must be a
// full address) and R3 (the account's SMTP access is disabled).
//
// # The protocol
//
// Postfix hands SMTP AUTH to Dovecot; Dovecot POSTs a JSON object to
// /?command=allow before it checks the password, and again after a good one
// (auth_policy_check_before_auth and auth_policy_check_after_auth), then
// /?command=report with the result ("success") and whether the policy had
// refused the login ("policy_reject"). The answer is {"status":0} to go on
// or {"status":-1,"msg":"..."} to refuse; Dovecot then fails the login
// without consulting the passdb and the client reads
// "535 5.7.8 Error: authentication failed: msg". A report is answered
// {"status":0}. With auth_policy.api_key set, every request must carry it in
// the auth_policy.api_header header (Dovecot:
// auth_policy_server_api_header = X-API-Key: KEY).
//
// An allow changes nothing, so Dovecot may repeat it: it checks, in order,
// R4 (the client's address is blocked), R2 and R3, each in its mode (enforce,
// log-only: log "would reject" and go on, off) and outside its exempt
// networks. Each refusal gets a fresh transaction id, one log line and a
// decisions.Record.
//
// # Counting failures (R4)
//
// A report of a wrong password (success false, policy_reject false) counts
// one failure for the client's address (an IPv6 address as its prefix of
// ipv6_prefix bits) in a sliding window (limits.Store.CheckAdd with Max =
// threshold). The failure that the window refuses, the threshold+1-th within
// it, blocks the address for block_for and resets its counter, so that once
// the block expires or support lifts it (`relayguard unblock`) the address
// starts afresh. policyd refuses a blocked address at CONNECT under the same
// key (BlockKey); Dovecot refuses it at allow. Reports of refused logins
// (policy_reject) count nothing: a blocked client's further attempts do not
// prolong its block.
//
// With counting = "distinct-passwords", a failure counts only when its
// pwhash (Dovecot's truncated hash of nonce, login and password) was not
// seen from that address within the window, so a mail client retrying one
// stale password counts once. The store keeps the hash under its own key
// whose TTL ends at most one window after the hash was stored. A report
// without a pwhash counts as in "attempts".
//
// # Failures of relayguard's own
//
// A request that is not the protocol (wrong method, no or unknown command,
// another content type, a body over 64 KiB, bad JSON, a remote that is not
// an IP address) is answered 4xx and logged. When the store, or support's
// Disabled flag, cannot answer, the request is answered 500 and Dovecot's
// auth_policy_reject_on_fail chooses: "no" (the default) lets the login go
// on, failing open; "yes" refuses it.
package authpolicy

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"time"

	"relayguard/config"
	"relayguard/decisions"
	"relayguard/limits"
	"relayguard/subject"
)

// maxBody bounds a request body; Dovecot's are a few hundred bytes.
const maxBody = 64 << 10

// Server is the auth policy service, an http.Handler, safe for concurrent
// use. The fields are set once before it serves and not changed after;
// Validate checks them.
type Server struct {
	Config          config.AuthPolicy    // the API key and its header
	Failures        *config.AuthFailures // R4
	LoginFormat     *config.Rule         // R2
	AccountDisabled *config.Rule         // R3
	Store           limits.Store         // counters and blocks; may be nil only when R4 is off

	// Directory returns the current domain directory (it is reloaded on
	// SIGHUP); nil, or a nil directory, lists no account.
	Directory func() *config.Directory
	// Disabled reports whether support disabled the account's SMTP access
	// at run time; R3 refuses an account that the directory or Disabled
	// calls disabled. May be nil.
	Disabled func(ctx context.Context, account string) (bool, error)

	Decisions decisions.Log    // every refusal with an id; may be nil
	Now       func() time.Time // nil: time.Now
	NewID     func() string    // the transaction ids of refusals: policyd.NewID
	Log       *slog.Logger     // nil: slog.Default()
}

// BlockKey is the store key of R4's counter and block for a client address,
// an IPv6 address counted as its prefix of v6bits bits: "r4|ip|192.0.2.7",
// "r4|ip|2001:db8:1:2::/64". policyd's CONNECT check reads the same key.
func BlockKey(ip netip.Addr, v6bits int) string {
	return subject.Key("r4", "ip", subject.IP(ip, v6bits))
}

// Validate reports what would keep s from serving: a missing rule or
// dependency, or an R4 window that does not split into equal buckets.
func (s *Server) Validate() error {
	switch {
	case s.Failures == nil || s.LoginFormat == nil || s.AccountDisabled == nil:
		return errors.New("authpolicy: the configuration of R2, R3 or R4 is missing")
	case s.NewID == nil:
		return errors.New("authpolicy: no transaction id generator")
	case s.Failures.Mode != config.Off && s.Store == nil:
		return fmt.Errorf("authpolicy: rule R4 auth_failures is %s, but no store is open", s.Failures.Mode)
	case s.Failures.Window <= 0 || buckets(s.Failures.Window) < 2:
		return fmt.Errorf("authpolicy: rules.auth_failures.window %v does not split into equal buckets", s.Failures.Window)
	}
	return nil
}

// ServeHTTP answers one request of the auth policy protocol.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r) {
		s.refuseHTTP(w, r, http.StatusUnauthorized, "missing or wrong API key in header "+s.Config.APIHeader)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.refuseHTTP(w, r, http.StatusMethodNotAllowed, "method "+r.Method+", not POST")
		return
	}
	command := r.URL.Query().Get("command")
	if command != commandAllow && command != commandReport {
		s.refuseHTTP(w, r, http.StatusBadRequest, fmt.Sprintf("command %q is neither allow nor report", command))
		return
	}
	// Requiring JSON also keeps browsers out: a cross-origin POST of JSON
	// needs a CORS preflight, which this server does not answer.
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		s.refuseHTTP(w, r, http.StatusUnsupportedMediaType, fmt.Sprintf("content type %q, not application/json", r.Header.Get("Content-Type")))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
			s.refuseHTTP(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", maxBody))
		} else {
			s.refuseHTTP(w, r, http.StatusBadRequest, "reading the body: "+err.Error())
		}
		return
	}
	req, err := parseRequest(command, body)
	if err != nil {
		s.refuseHTTP(w, r, http.StatusBadRequest, err.Error())
		return
	}
	var resp response
	if command == commandAllow {
		resp, err = s.allow(r.Context(), req)
	} else {
		err = s.report(r.Context(), req)
	}
	if err != nil {
		s.log().Error("auth policy: no answer, Dovecot's auth_policy_reject_on_fail decides",
			"command", command, "client", req.ip.String(), "login", req.Login, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	// No newline after the object: the answer is exactly what Dovecot's
	// JSON parser reads, as the lab's verified test double sent it.
	out, _ := json.Marshal(resp) // an int and a string always encode
	w.Header().Set("Content-Type", "application/json")
	w.Write(out) // a write error means Dovecot hung up; it logs that itself
}

// authorized compares the API key in constant time; hashing both sides
// first hides the key's length too.
func (s *Server) authorized(r *http.Request) bool {
	if s.Config.APIKey == "" {
		return true
	}
	got := sha256.Sum256([]byte(r.Header.Get(s.Config.APIHeader)))
	want := sha256.Sum256([]byte(s.Config.APIKey))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// refuseHTTP answers a request that is not the protocol, and logs why.
func (s *Server) refuseHTTP(w http.ResponseWriter, r *http.Request, status int, reason string) {
	s.log().Warn("auth policy: request refused", "status", status, "peer", r.RemoteAddr,
		"method", r.Method, "uri", r.RequestURI, "reason", reason)
	http.Error(w, http.StatusText(status), status)
}

func (s *Server) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}
