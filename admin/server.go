package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"relayguard/mailaddr"
)

// DefaultReason is the reason of a block made without one.
const DefaultReason = "blocked by support"

// maxReason is the longest reason a block accepts, in characters: it is
// shown in one table cell and logged.
const maxReason = 200

// Server answers the API's requests (see the package comment) from a
// Backend. Serve it with an http.Server on the listener of Listen.
type Server struct {
	Backend Backend
	// Retention is how long decisions are kept, said in the answer to an
	// unknown id; zero leaves it out.
	Retention time.Duration
	// Log, when not nil, records every change (block, unblock, account)
	// and every failure of the Backend.
	Log *slog.Logger
}

// handler answers one endpoint with a value to encode, or an error: an
// *Error as it is, a Backend's error as 404 (ErrNotFound) or 500.
type handler func(s *Server, r *http.Request) (any, error)

// route returns the method and handler of a path.
func route(path string) (string, handler) {
	switch path {
	case "/blocks":
		return http.MethodGet, (*Server).blocks
	case "/unblock":
		return http.MethodPost, (*Server).unblock
	case "/block":
		return http.MethodPost, (*Server).block
	case "/account":
		return http.MethodPost, (*Server).account
	case "/usage":
		return http.MethodGet, (*Server).usage
	case "/spam":
		return http.MethodPost, (*Server).spam
	case "/filtering":
		return http.MethodPost, (*Server).filtering
	case "/end-of-message":
		return http.MethodPost, (*Server).endOfMessage
	}
	if strings.HasPrefix(path, "/explain/") {
		return http.MethodGet, (*Server).explain
	}
	return "", nil
}

// profiles serves the runtime's profiles under /debug/pprof/ (go tool
// pprof reads them through the socket; see the package comment).
var profiles = func() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}()

// ServeHTTP answers one request of the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/debug/pprof/") {
		profiles.ServeHTTP(w, r)
		return
	}
	method, h := route(r.URL.Path)
	var v any
	var err error
	switch {
	case h == nil:
		err = &Error{http.StatusNotFound, fmt.Sprintf("no endpoint %s", r.URL.Path)}
	case r.Method != method:
		w.Header().Set("Allow", method)
		err = &Error{http.StatusMethodNotAllowed, fmt.Sprintf("%s wants %s, not %s", r.URL.Path, method, r.Method)}
	default:
		v, err = h(s, r)
	}
	if err == nil {
		writeJSON(w, http.StatusOK, v)
		return
	}
	var e *Error
	switch {
	case errors.As(err, &e):
	case errors.Is(err, ErrNotFound):
		e = &Error{http.StatusNotFound, err.Error()}
	default:
		e = &Error{http.StatusInternalServerError, err.Error()}
		if s.Log != nil {
			s.Log.Error("admin API: backend failed", "method", r.Method, "path", r.URL.Path, "error", err.Error())
		}
	}
	writeJSON(w, e.Status, struct {
		Error string `json:"error"`
	}{e.Message})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func badRequest(format string, args ...any) error {
	return &Error{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// decode reads a request's JSON body into v: one object, known fields only.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("invalid request body: %v", err)
	}
	if dec.More() {
		return badRequest("invalid request body: more than one JSON value")
	}
	return nil
}

func (s *Server) info(msg string, args ...any) {
	if s.Log != nil {
		s.Log.Info(msg, args...)
	}
}

func (s *Server) blocks(r *http.Request) (any, error) {
	bs, err := s.Backend.Blocks(r.Context())
	if err != nil {
		return nil, err
	}
	out := make([]Block, len(bs))
	for i, b := range bs {
		out[i] = blockOf(b)
	}
	return out, nil
}

func (s *Server) unblock(r *http.Request) (any, error) {
	var req struct {
		IP      *string `json:"ip"`
		Account *string `json:"account"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	var subj Subject
	switch {
	case req.IP != nil && req.Account != nil:
		return nil, badRequest(`invalid request: give "ip" or "account", not both`)
	case req.IP != nil:
		ip, err := ParseIP(*req.IP)
		if err != nil && strings.Contains(*req.IP, "@") {
			return nil, badRequest(`invalid ip: %q is an account: give it as "account"`, *req.IP)
		}
		if err != nil {
			return nil, badRequest("invalid ip: %v", err)
		}
		subj.IP = ip
	case req.Account != nil:
		account, err := mailaddr.Normalize(*req.Account)
		if err != nil {
			return nil, badRequest("invalid account: %v", err)
		}
		subj.Account = account
	default:
		return nil, badRequest(`invalid request: give "ip" (an IP address) or "account" (a full e-mail address)`)
	}
	lifted, disabled, err := s.Backend.Unblock(r.Context(), subj)
	if err != nil {
		return nil, err
	}
	switch {
	case len(lifted) == 0 && disabled:
		return nil, &Error{http.StatusConflict, fmt.Sprintf("%s is not blocked, but its SMTP access is disabled (R3), "+
			"which unblock does not change: \"relayguard account enable %[1]s\" turns it on", subj)}
	case len(lifted) == 0:
		return nil, &Error{http.StatusNotFound, fmt.Sprintf("%s is not blocked", subj)}
	}
	out := Unblocked{Account: subj.Account, Unblocked: true, Disabled: disabled}
	if subj.IP.IsValid() {
		out.IP = subj.IP.String()
	}
	keys := make([]string, len(lifted))
	for i, b := range lifted {
		out.Lifted = append(out.Lifted, blockOf(b))
		keys[i] = b.Key
	}
	kind := "ip"
	if subj.Account != "" {
		kind = "account"
	}
	args := []any{kind, subj.String(), "lifted", strings.Join(keys, " ")}
	if disabled {
		args = append(args, "still_disabled", true)
	}
	s.info("admin API: unblocked", args...)
	return out, nil
}

func (s *Server) block(r *http.Request) (any, error) {
	var req struct {
		IP       string `json:"ip"`
		Duration string `json:"duration"`
		Reason   string `json:"reason"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	ip, err := ParseIP(req.IP)
	if err != nil {
		return nil, badRequest("invalid ip: %v", err)
	}
	d, err := time.ParseDuration(req.Duration)
	if err != nil {
		return nil, badRequest("invalid duration %q: want a Go duration such as 90m or 2h", req.Duration)
	}
	if d <= 0 {
		return nil, badRequest("invalid duration %q: must be longer than 0s", req.Duration)
	}
	reason := strings.TrimSpace(req.Reason)
	switch {
	case reason == "":
		reason = DefaultReason
	case utf8.RuneCountInString(reason) > maxReason:
		return nil, badRequest("invalid reason: longer than %d characters", maxReason)
	case !utf8.ValidString(reason) || strings.ContainsFunc(reason, unicode.IsControl):
		return nil, badRequest("invalid reason: one line of text, without control characters")
	}
	b, err := s.Backend.Block(r.Context(), ip, d, reason)
	if err != nil {
		return nil, err
	}
	s.info("admin API: blocked", "ip", ip.String(), "for", d.String(), "until", b.Until, "reason", reason)
	return blockOf(b), nil
}

func (s *Server) account(r *http.Request) (any, error) {
	var req struct {
		Account  string `json:"account"`
		Disabled *bool  `json:"disabled"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	account, err := mailaddr.Normalize(req.Account)
	if err != nil {
		return nil, badRequest("invalid account: %v", err)
	}
	if req.Disabled == nil {
		return nil, badRequest("invalid request: \"disabled\" is required (true or false)")
	}
	if err := s.Backend.SetAccountDisabled(r.Context(), account, *req.Disabled); err != nil {
		return nil, err
	}
	s.info("admin API: account", "account", account, "disabled", *req.Disabled)
	return AccountState{Account: account, Disabled: *req.Disabled}, nil
}

func (s *Server) spam(r *http.Request) (any, error) {
	var req struct {
		Client  string `json:"client"`
		QueueID string `json:"queue_id"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	client, err := netip.ParseAddrPort(req.Client)
	if err != nil {
		return nil, badRequest("invalid client: %q is not address:port", req.Client)
	}
	rep, err := s.Backend.Spam(r.Context(), client, req.QueueID)
	if err != nil {
		return nil, err
	}
	s.info("admin API: spam reported", "client", req.Client, "queue_id", req.QueueID, "login", rep.Login, "spent", rep.Spent)
	return rep, nil
}

// clientOf decodes a request whose body names the client: {"client": "ip:port"}.
func clientOf(r *http.Request) (netip.AddrPort, error) {
	var req struct {
		Client string `json:"client"`
	}
	if err := decode(r, &req); err != nil {
		return netip.AddrPort{}, err
	}
	client, err := netip.ParseAddrPort(req.Client)
	if err != nil {
		return netip.AddrPort{}, badRequest("invalid client: %q is not address:port", req.Client)
	}
	return client, nil
}

func (s *Server) filtering(r *http.Request) (any, error) {
	client, err := clientOf(r)
	if err != nil {
		return nil, err
	}
	return struct{}{}, s.Backend.Filtering(r.Context(), client)
}

// EndOfMessage is the answer to the filter at the end of data.
type EndOfMessage struct {
	Reply string `json:"reply"`
}

func (s *Server) endOfMessage(r *http.Request) (any, error) {
	client, err := clientOf(r)
	if err != nil {
		return nil, err
	}
	reply, err := s.Backend.EndOfMessage(r.Context(), client)
	return EndOfMessage{reply}, err
}

func (s *Server) usage(r *http.Request) (any, error) {
	q := r.URL.Query().Get("subject")
	if q == "" {
		return nil, badRequest("invalid subject: the query needs ?subject=ACCOUNT or ?subject=IP")
	}
	subject, err := ParseSubject(q)
	if err != nil {
		return nil, badRequest("invalid subject: %v", err)
	}
	lines, err := s.Backend.Usage(r.Context(), subject.String())
	if err != nil {
		return nil, err
	}
	if lines == nil {
		lines = []UsageLine{}
	}
	return lines, nil
}

func (s *Server) explain(r *http.Request) (any, error) {
	id := strings.TrimPrefix(r.URL.Path, "/explain/")
	if !validID(id) {
		return nil, badRequest("invalid id %q: a reply's id is 22 letters and digits", id)
	}
	rec, ok, err := s.Backend.Explain(r.Context(), id)
	if err != nil {
		return nil, err
	}
	if !ok {
		msg := "no decision " + id
		if s.Retention > 0 {
			msg += fmt.Sprintf(" (decisions are kept %s)", days(s.Retention))
		}
		return nil, &Error{http.StatusNotFound, msg}
	}
	return rec, nil
}

// days writes a retention in days when it is whole days.
func days(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d == day:
		return "1 day"
	case d%day == 0:
		return fmt.Sprintf("%d days", d/day)
	}
	return d.String()
}
