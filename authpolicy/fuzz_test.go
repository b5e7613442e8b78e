package authpolicy

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzRequest feeds Dovecot's JSON parser and the whole handler arbitrary
// bodies: every body is answered 200 or 400, and a body that parses has a
// usable address and hash.
func FuzzRequest(f *testing.F) {
	h := newHarness(f, nil)
	h.Log = slog.New(slog.DiscardHandler) // a fuzzing run would fill any buffer
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, command := range []string{commandAllow, commandReport} {
			r, err := parseRequest(command, body)
			if err == nil {
				if !r.ip.IsValid() || r.ip.Zone() != "" || r.ip.Is4In6() {
					t.Errorf("remote %q parsed as %v", r.Remote, r.ip)
				}
				if len(r.PwHash) > maxPwHash || !hex(r.PwHash) {
					t.Errorf("pwhash %q accepted", r.PwHash)
				}
				if command == commandReport && r.Success == nil {
					t.Error("report without success accepted")
				}
			}
			req := httptest.NewRequest(http.MethodPost, "/?command="+command, strings.NewReader(string(body)))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			want := http.StatusOK
			if err != nil {
				want = http.StatusBadRequest
			}
			if rec.Code != want {
				t.Errorf("%s %q: HTTP %d, want %d (parse error: %v)", command, body, rec.Code, want, err)
			}
		}
	})
}
