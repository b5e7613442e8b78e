package limits_test

import (
	"context"
	"fmt"
	"time"

	"relayguard/limits"
)

// R10: an account and its client IP may send 250 recipients a minute, 1000
// an hour and 20000 a day. Policyd checks at RCPT and counts the message
// once, at END-OF-MESSAGE.
func Example() {
	ctx := context.Background()
	store := limits.NewMemory()
	defer store.Close()

	r10 := func(subject string) []limits.KeyLimit {
		key := "r10|" + subject
		return []limits.KeyLimit{
			{Key: key, Limit: limits.Limit{Window: limits.Window{Length: time.Minute, Buckets: 12}, Max: 250}},
			{Key: key, Limit: limits.Limit{Window: limits.Window{Length: time.Hour, Buckets: 60}, Max: 1000}},
			{Key: key, Limit: limits.Limit{Window: limits.Window{Length: 24 * time.Hour, Buckets: 24}, Max: 20000}},
		}
	}
	both := append(r10("account|jan@example.cz"), r10("ip|192.0.2.1")...)
	now := time.Date(2025, 6, 2, 9, 0, 0, 0, time.UTC)

	d, _ := store.Check(ctx, now, 1, both...)
	fmt.Println("RCPT:", d.Allowed)
	d, _ = store.CheckAdd(ctx, now, 200, both...)
	fmt.Println("END-OF-MESSAGE, 200 recipients:", d.Allowed, d.Counts)

	d, _ = store.Check(ctx, now.Add(10*time.Second), 100, both...)
	fmt.Println("RCPT, 100 more:", d.Allowed)
	fmt.Println("refused by", d.Refused.Key, d.Refused.Limit, "at", d.Count, "until", d.FreeAt.Format(time.TimeOnly))
	// Output:
	// RCPT: true
	// END-OF-MESSAGE, 200 recipients: true [200 200 200 200 200 200]
	// RCPT, 100 more: false
	// refused by r10|account|jan@example.cz 250 per 1m0s/12 at 200 until 09:01:05
}

// R4: more than 10 failed AUTH from an IP in an hour block the IP for an
// hour.
func ExampleMemory_Block() {
	ctx := context.Background()
	store := limits.NewMemory()
	defer store.Close()

	const ip = "192.0.2.7"
	failures := limits.KeyLimit{Key: "r4|ip|" + ip, Limit: limits.Limit{Window: limits.Window{Length: time.Hour, Buckets: 12}, Max: 10}}
	now := time.Date(2025, 6, 2, 9, 0, 0, 0, time.UTC)
	for i := range 11 {
		at := now.Add(time.Duration(i) * time.Minute)
		d, _ := store.CheckAdd(ctx, at, 1, failures)
		if !d.Allowed {
			store.Block(ctx, "r4|ip|"+ip, at.Add(time.Hour), "auth failures", d.Count+1)
		}
	}
	b, blocked, _ := store.Blocked(ctx, "r4|ip|"+ip, now.Add(30*time.Minute))
	fmt.Println(blocked, b.Reason, b.Count, "until", b.Until.Format(time.TimeOnly))
	_, blocked, _ = store.Blocked(ctx, "r4|ip|"+ip, now.Add(2*time.Hour))
	fmt.Println(blocked)
	// Output:
	// true auth failures 11 until 10:10:00
	// false
}
