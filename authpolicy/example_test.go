package authpolicy_test

import (
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"time"

	"relayguard/authpolicy"
	"relayguard/config"
	"relayguard/limits"
)

// Dovecot asks before each password check and reports each result; the
// eleventh wrong password within the hour blocks the address.
func Example() {
	c := config.Default()
	store := limits.NewMemory()
	defer store.Close()
	now := time.Date(2025, 6, 2, 9, 0, 0, 0, time.UTC)
	s := &authpolicy.Server{
		Config:          c.AuthPolicy,
		Failures:        &c.Rules.AuthFailures,
		LoginFormat:     &c.Rules.LoginFormat,
		AccountDisabled: &c.Rules.AccountDisabled,
		Store:           store,
		Now:             func() time.Time { return now },
		NewID:           func() string { return "3uJpGQ1Ms0rEqxKvTq8fZb" }, // policyd.NewID in production
		Log:             slog.New(slog.DiscardHandler),
	}
	post := func(command, body string) string {
		req := httptest.NewRequest("POST", "/?command="+command, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		return rec.Body.String()
	}

	fmt.Println(post("allow", `{"login":"user","pwhash":"02b3","remote":"192.0.2.7"}`))
	for range 11 {
		post("report", `{"login":"user@example.test","pwhash":"08fa","remote":"192.0.2.7","success":false,"policy_reject":false}`)
	}
	fmt.Println(post("allow", `{"login":"user@example.test","pwhash":"02b3","remote":"192.0.2.7"}`))
	// Output:
	// {"status":-1,"msg":"3uJpGQ1Ms0rEqxKvTq8fZb authentication rejected"}
	// {"status":-1,"msg":"3uJpGQ1Ms0rEqxKvTq8fZb Connection refused from 192.0.2.7. Too many authorization failures from this IP, try again later."}
}
