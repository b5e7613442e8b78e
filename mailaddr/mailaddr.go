// Package mailaddr normalises the addresses and domains that rules compare.
//
// Domains are compared in their ASCII form: a UTF-8 domain that arrives under
// SMTPUTF8 (RFC 6531) and its punycode form (RFC 3492, IDNA2008 lookup rules
// per UTS #46) are the same domain, and case does not matter (RFC 5321 §2.4).
// Local parts are compared case-insensitively too, as a hosting provider's
// mailboxes are.
package mailaddr

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/idna"
)

var profile = idna.Lookup

// Domain returns the lower-case ASCII form of d, without a trailing dot.
func Domain(d string) (string, error) {
	d = strings.TrimSuffix(d, ".")
	if d == "" {
		return "", errors.New("empty domain")
	}
	if plainASCII(d) {
		return d, nil
	}
	return idnaDomain(d)
}

// idnaDomain is Domain through the IDNA mapping.
func idnaDomain(d string) (string, error) {
	a, err := profile.ToASCII(d)
	if err != nil {
		return "", fmt.Errorf("domain %q: %v", d, err)
	}
	if !strings.Contains(a, ".") {
		return "", fmt.Errorf("domain %q has no dot", d)
	}
	return strings.ToLower(a), nil
}

// plainASCII reports whether d is already what Domain returns for it:
// lower-case letters, digits and hyphens in non-empty labels, at least two,
// none beginning or ending with a hyphen or holding one in its third and
// fourth places (as "xn--" does, which the IDNA check must see). Most
// domains are, and the IDNA mapping of such a domain changes nothing; they
// skip it (FuzzDomain checks that both ways agree).
func plainASCII(d string) bool {
	dots, start := 0, 0
	for i := 0; i <= len(d); i++ {
		if i < len(d) && d[i] != '.' {
			c := d[i]
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
			continue
		}
		label := d[start:i]
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' || (len(label) >= 4 && label[2:4] == "--") {
			return false
		}
		if i < len(d) {
			dots++
		}
		start = i + 1
	}
	return dots > 0
}

// Split returns the local part and the ASCII domain of a full address
// (local@domain). The split is at the last '@', since a quoted local part may
// hold one.
func Split(addr string) (local, domain string, err error) {
	i := strings.LastIndexByte(addr, '@')
	if i <= 0 || i == len(addr)-1 {
		return "", "", fmt.Errorf("%q is not a full address (local@domain)", addr)
	}
	domain, err = Domain(addr[i+1:])
	if err != nil {
		return "", "", err
	}
	return addr[:i], domain, nil
}

// Normalize returns addr with its local part lower-cased and its domain in
// ASCII form, the key under which accounts and senders are compared.
func Normalize(addr string) (string, error) {
	local, domain, err := Split(addr)
	if err != nil {
		return "", err
	}
	if lower := strings.ToLower(local); lower != local || len(local)+1+len(domain) != len(addr) || addr[len(local)+1:] != domain {
		return lower + "@" + domain, nil
	}
	return addr, nil
}
