package report

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// Verdict is how a table says whether a target was met.
func Verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// Latency formats a latency for a table cell: microseconds below 10 ms,
// milliseconds with one decimal above.
func Latency(d time.Duration) string {
	if d >= 10*time.Millisecond {
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

// BusyOther is the share of a core that other processes may use during a
// measurement before its figures are flagged.
const BusyOther = 0.1

// BusyWarning is printed under a table where some measurement had other
// processes using more than BusyOther cores.
const BusyWarning = "WARNING: other processes used more than 0.1 cores during a measurement (column \"other CPU\"): its figures are low; run again on a quiet machine"

// LogSummary counts the warnings and errors in a server's logs (slog's
// text format) and shows the first few.
func LogSummary(server string, paths ...string) string {
	var warn, errs int
	var shown []string
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Sprintf("%s's log: %v\n", server, err)
		}
		for line := range strings.Lines(string(data)) {
			switch {
			case strings.Contains(line, "level=WARN"):
				warn++
			case strings.Contains(line, "level=ERROR"):
				errs++
			default:
				continue
			}
			if len(shown) < 5 {
				shown = append(shown, "  "+strings.TrimSpace(line))
			}
		}
	}
	s := fmt.Sprintf("%s's log: %d warnings, %d errors\n", server, warn, errs)
	if len(shown) > 0 {
		s += strings.Join(shown, "\n") + "\n"
	}
	return s
}
