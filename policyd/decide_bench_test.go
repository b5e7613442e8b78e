package policyd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"testing"

	"relayguard/config"
)

// BenchmarkDecide decides the requests of whole sessions as Postfix 3.7
// sends them (29 attributes; CONNECT, MAIL, two RCPT, DATA, END-OF-MESSAGE)
// on one connection, for 10 000 accounts in turn, every rule on, the DNS
// answers cached: the engine's own cost per request, without the network.
// make bench measures policyd whole.
func BenchmarkDecide(b *testing.B) {
	e := newTestEngine(b, func(c *config.Config) {
		for i := range c.Rules.Rate.Windows {
			c.Rules.Rate.Windows[i].Max = 1 << 40 // counted, never reached
		}
	})
	e.deps.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	const accounts = 10000
	stages := []string{"CONNECT", "MAIL", "RCPT", "RCPT", "DATA", "END-OF-MESSAGE"}
	session := func(i int) []*Request {
		login := fmt.Sprintf("u%d@example.cz", i)
		var reqs []*Request
		for j, st := range stages {
			r := request(st, "127.0.0."+strconv.Itoa(20+i%10), login, login, "")
			for _, kv := range [][2]string{
				{"client_port", strconv.Itoa(1024 + i)}, {"reverse_client_name", "unknown"}, {"server_address", "127.0.0.1"},
				{"server_port", "587"}, {"helo_name", "client.example.test"}, {"recipient_count", "0"}, {"queue_id", ""},
				{"instance", ""}, {"size", "0"}, {"etrn_domain", ""}, {"stress", ""}, {"sasl_method", "PLAIN"},
				{"sasl_sender", ""}, {"ccert_subject", ""}, {"ccert_issuer", ""}, {"ccert_fingerprint", ""},
				{"ccert_pubkey_fingerprint", ""}, {"encryption_protocol", "TLSv1.3"}, {"encryption_cipher", "TLS_AES_256_GCM_SHA384"},
				{"encryption_keysize", "256"}, {"policy_context", "submission"},
			} {
				r.Set(kv[0], kv[1])
			}
			switch st {
			case "CONNECT":
				r.Set("sasl_username", "")
				r.Set("sasl_method", "")
				r.Set("sender", "")
				r.Set("helo_name", "")
			case "RCPT":
				r.Set("recipient", fmt.Sprintf("r%d@foreign.test", j))
			case "DATA", "END-OF-MESSAGE":
				r.Set("recipient_count", "2")
			}
			if j >= 2 {
				r.Set("instance", fmt.Sprintf("%x.6720f1e5.%x.0", i, i))
				r.Set("queue_id", fmt.Sprintf("4F%06X", i))
			}
			if st == "END-OF-MESSAGE" {
				r.Set("size", "51200")
			}
			reqs = append(reqs, r)
		}
		return reqs
	}
	sessions := make([][]*Request, accounts)
	for i := range sessions {
		sessions[i] = session(i)
	}
	c := e.NewConn()
	ctx := context.Background()
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		for _, r := range sessions[n%accounts] {
			if a := c.Decide(ctx, r); a != "DUNNO" {
				b.Fatalf("%s: %s", r.Get("protocol_state"), a)
			}
		}
		n++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*len(stages)), "ns/request")
}
