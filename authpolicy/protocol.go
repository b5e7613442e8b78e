package authpolicy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
)

// The commands of Dovecot's auth policy protocol, from the query string
// (POST /?command=allow).
const (
	commandAllow  = "allow"  // before (and again after) the password check
	commandReport = "report" // after the check, with its result
)

// Dovecot reads status as: 0 go on, below 0 refuse with msg, above 0 delay
// the answer by that many seconds. relayguard never delays.
const (
	statusAllow  = 0
	statusRefuse = -1
)

// maxPwHash is the longest pwhash accepted: a whole SHA-512 in hexadecimal
// (auth_policy_hash_mech = sha512, auth_policy_hash_truncate = 0). Dovecot's
// default is a SHA-256 of nonce, login and password truncated to 12 bits.
const maxPwHash = 128

// request is one auth policy request as Dovecot 2.3 sends it with the
// default auth_policy_request_attributes (login=%{requested_username}
// pwhash=%{hashed_password} remote=%{rip} device_id=%{client_id}
// protocol=%s session_id=%{session}), e.g.
//
//	{"device_id":"","login":"user@example.test","protocol":"smtp","pwhash":"02b3","remote":"127.0.0.1","session_id":"","tls":false}
//
// A report adds "success" (the passdb's answer) and "policy_reject" (true
// when the allow before it was refused). Attributes not named here are
// ignored.
type request struct {
	Login        string `json:"login"`
	PwHash       string `json:"pwhash"`
	Remote       string `json:"remote"`
	Protocol     string `json:"protocol"`
	SessionID    string `json:"session_id"`
	Success      *bool  `json:"success"`
	PolicyReject bool   `json:"policy_reject"`

	ip netip.Addr // Remote without a zone, IPv4-mapped IPv6 as IPv4
}

// response is the answer to every command; Dovecot shows msg to the client
// when status refuses (Postfix: "535 5.7.8 Error: authentication failed: msg").
type response struct {
	Status int    `json:"status"`
	Msg    string `json:"msg,omitempty"`
}

// parseRequest decodes and checks the body of a command: remote must be an
// IP address, pwhash hexadecimal, and a report must say whether the login
// succeeded.
func parseRequest(command string, body []byte) (*request, error) {
	var r request
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("body is not an auth policy JSON object: %v", err)
	}
	ip, err := netip.ParseAddr(r.Remote)
	if err != nil {
		return nil, fmt.Errorf("remote %q is not an IP address", r.Remote)
	}
	r.ip = ip.WithZone("").Unmap()
	if len(r.PwHash) > maxPwHash || !hex(r.PwHash) {
		return nil, fmt.Errorf("pwhash %q is not a hexadecimal hash of at most %d digits", r.PwHash, maxPwHash)
	}
	if command == commandReport && r.Success == nil {
		return nil, errors.New(`report without "success"`)
	}
	return &r, nil
}

func hex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}
