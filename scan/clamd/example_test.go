package clamd_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"relayguard/scan"
	"relayguard/scan/clamd"
)

// The content filter's use: a virus is refused (R16); clamd down or slow
// gives no verdict, and the configured fail mode (by default a 4xx reply)
// applies; a message too large to scan whole is the configuration's call.
func ExampleClient_Scan() {
	c := &clamd.Client{Network: "unix", Address: "/run/clamav/clamd.ctl", Timeout: 20 * time.Second}
	msg := strings.NewReader("From: alice@example.test\r\nSubject: hi\r\n\r\nHello\r\n")
	res, err := c.Scan(context.Background(), msg)
	switch {
	case errors.Is(err, scan.ErrUnavailable):
		fmt.Println("451 4.7.1 virus scanner unavailable, try again later")
	case err != nil:
		fmt.Println("451 4.3.0 local error, try again later")
	case res.Infected:
		fmt.Println("554 5.7.1 virus detected") // res.Signature goes to the log line
	case res.TooLarge:
		fmt.Println("too large to scan whole: as configured")
	default:
		fmt.Println("clean")
	}
}
