// Package decisions keeps relayguard's refusals by their transaction id, so
// that support can explain the line a customer sends them
// (`relayguard explain ID`): when, at which stage, which rule, for whom, why.
package decisions

import (
	"context"
	"time"
)

// Record is one decision that gave a customer a reply with an id.
type Record struct {
	ID        string           `json:"id"`
	Time      time.Time        `json:"time"`
	Stage     string           `json:"stage"` // CONNECT, MAIL, RCPT, ..., or AUTH (Dovecot)
	Rule      string           `json:"rule"`  // "R5"
	Name      string           `json:"name"`  // "sender_domain"
	Mode      string           `json:"mode"`  // enforce or log-only
	Client    string           `json:"client"`
	Login     string           `json:"login,omitempty"`
	Sender    string           `json:"sender,omitempty"`
	Recipient string           `json:"recipient,omitempty"`
	Reason    string           `json:"reason"`
	Reply     string           `json:"reply"`
	Counters  map[string]int64 `json:"counters,omitempty"` // what a counting rule counted
}

// Log stores records for a retention time.
type Log interface {
	Put(ctx context.Context, r Record) error
	Get(ctx context.Context, id string) (Record, bool, error)
}
