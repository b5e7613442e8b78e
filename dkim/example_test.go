package dkim_test

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"strings"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"relayguard/dkim"
)

// The record that publishes a key, as `relayguard dkim keygen` prints it.
func ExampleTXTRecord() {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	fmt.Println(dkim.TXTRecord("ed2026", "example.com", key.Public()))
	// Output:
	// ed2026._domainkey.example.com. IN TXT "v=DKIM1; k=ed25519; p=6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw="
}

// The content filter signs a message before it reinjects it; the receiver
// verifies it against the published record.
func ExampleSigner_Sign() {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	key := &dkim.Key{Domain: "example.com", Selector: "ed2026", Signer: priv, Algorithm: dkim.Ed25519SHA256}
	s := dkim.NewSigner([]*dkim.Key{key})

	msg := "From: Jan <jan@example.com>\r\nTo: eva@example.org\r\nSubject: Hello\r\n\r\nHi Eva.\r\n"
	var signed bytes.Buffer
	ok, err := s.Sign(&signed, strings.NewReader(msg), "example.com")
	fmt.Println("signed:", ok, err)

	lookup := func(string) ([]string, error) {
		return []string{"v=DKIM1; k=ed25519; p=6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw="}, nil
	}
	vs, err := msgauth.VerifyWithOptions(&signed, &msgauth.VerifyOptions{LookupTXT: lookup})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("d=%s h=%s: %v\n", vs[0].Domain, strings.Join(vs[0].HeaderKeys, ":"), vs[0].Err)
	// Output:
	// signed: true <nil>
	// d=example.com h=From:From:To:Subject: <nil>
}
