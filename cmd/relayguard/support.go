package main

// The support desk's commands: blocks, unblock, block, account, usage and
// explain. They talk to policyd's admin API on its unix socket (package
// admin), named by the configuration's admin.socket or by --socket, and
// never open the store themselves. They need no privilege but membership
// of the socket's group.

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"relayguard/admin"
	"relayguard/config"
	"relayguard/mailaddr"
)

// supportCLI makes the support commands; now and loc are the clock and the
// time zone of what they print.
type supportCLI struct {
	now func() time.Time
	loc *time.Location
}

func supportCommands() []*cli.Command {
	return supportCLI{now: time.Now, loc: time.Local}.commands()
}

func (s supportCLI) commands() []*cli.Command {
	return []*cli.Command{
		{
			Name:   "blocks",
			Usage:  "list the blocked addresses and accounts: reason, count, expiry",
			Flags:  s.flags(),
			Action: s.blocks,
		},
		{
			Name:      "unblock",
			Usage:     "lift the blocks of an address (R4, R15) or of an account (R15)",
			ArgsUsage: "IP|ACCOUNT",
			Description: "Lifts every block of an address that support may lift: R4's (failed authentications, and\n" +
				"`relayguard block`) and R15's (spam allowance spent); or of an account (a full e-mail address):\n" +
				"R15's. The counts behind them are forgotten, so that the next failure or spam message does\n" +
				"not block again at once. It does not give back the SMTP access of an account that support\n" +
				"disabled (R3, shown by blocks): `relayguard account enable ACCOUNT` does.",
			Flags:  s.flags(),
			Action: s.unblock,
		},
		{
			Name:      "block",
			Usage:     "refuse an address for a time",
			ArgsUsage: "IP --for DURATION [--reason TEXT]",
			Flags: s.flags(
				&cli.DurationFlag{Name: "for", Usage: "how long the block lasts, a `DURATION` such as 90m or 2h: required", DefaultText: "none"},
				&cli.StringFlag{Name: "reason", Usage: "why, as `TEXT` that blocks shows and policyd logs (default: \"" + admin.DefaultReason + "\")"},
			),
			Action: s.block,
		},
		{
			Name:  "account",
			Usage: "turn an account's SMTP access off or on (R3)",
			Subcommands: []*cli.Command{
				{Name: "disable", Usage: "refuse the account's authentication and mail", ArgsUsage: "ADDRESS", Flags: s.flags(), Action: s.account(true)},
				{Name: "enable", Usage: "give the account its SMTP access back", ArgsUsage: "ADDRESS", Flags: s.flags(), Action: s.account(false)},
			},
		},
		{
			Name:      "usage",
			Usage:     "show each limit on an account or an IP: used, limit, when it frees up",
			ArgsUsage: "ACCOUNT|IP",
			Flags:     s.flags(),
			Action:    s.usage,
		},
		{
			Name:      "explain",
			Usage:     "show the decision behind a reply's id: stage, rule, subjects, counters",
			ArgsUsage: "ID",
			Flags:     s.flags(),
			Action:    s.explain,
		},
	}
}

func (supportCLI) flags(more ...cli.Flag) []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "read admin.socket from the configuration `FILE`", Value: "/etc/relayguard/relayguard.toml"},
		&cli.StringFlag{Name: "socket", Usage: "policyd's admin socket `PATH`, instead of the configuration's admin.socket"},
		&cli.BoolFlag{Name: "json", Usage: "print the admin API's JSON instead of a table"},
	}, more...)
}

// client returns a client of the socket that --socket names, or else the
// configuration's admin.socket.
func (supportCLI) client(c *cli.Context) (*admin.Client, error) {
	if p := c.String("socket"); p != "" {
		return admin.NewClient(p), nil
	}
	cfg, err := config.Load(c.String("config"))
	if err != nil {
		msg := strings.ReplaceAll(err.Error(), "\n", "; ")
		return nil, fmt.Errorf("%s (the admin socket is read from this configuration; or give --socket PATH)", msg)
	}
	return admin.NewClient(cfg.Admin.Socket), nil
}

func (supportCLI) usageError(c *cli.Context) error {
	var names []string
	for _, x := range c.Lineage() {
		if x.Command != nil && x.Command.Name != "" {
			names = append([]string{x.Command.Name}, names...)
		}
	}
	return fmt.Errorf("usage: %s %s", strings.Join(names, " "), c.Command.ArgsUsage)
}

// operand returns the one argument of c's command. Flags may follow it
// (`block 192.0.2.7 --for 2h`): urfave/cli v2 stops reading flags at the
// first argument, so those after it are read here into c.
func (s supportCLI) operand(c *cli.Context) (string, error) {
	if c.NArg() == 0 {
		return "", s.usageError(c)
	}
	fs := flag.NewFlagSet(c.Command.Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, f := range c.Command.Flags {
		if err := f.Apply(fs); err != nil {
			return "", err
		}
	}
	if err := fs.Parse(c.Args().Tail()); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", s.usageError(c)
		}
		return "", err
	}
	if fs.NArg() > 0 {
		return "", s.usageError(c)
	}
	var err error
	fs.Visit(func(f *flag.Flag) {
		if err == nil {
			err = c.Set(f.Name, f.Value.String())
		}
	})
	return c.Args().First(), err
}

// print writes v as JSON with --json, else the table that table writes
// (cells separated by tabs).
func (supportCLI) print(c *cli.Context, v any, table func(w io.Writer)) error {
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

func (s supportCLI) blocks(c *cli.Context) error {
	if c.NArg() > 0 {
		return s.usageError(c)
	}
	cl, err := s.client(c)
	if err != nil {
		return err
	}
	bs, err := cl.Blocks(c.Context)
	if err != nil {
		return err
	}
	return s.print(c, bs, func(w io.Writer) {
		if len(bs) == 0 {
			fmt.Fprintln(w, "nothing is blocked")
			return
		}
		fmt.Fprintln(w, "SUBJECT\tRULE\tREASON\tCOUNT\tEXPIRES")
		for _, b := range bs {
			count := "-"
			if b.Count > 0 {
				count = fmt.Sprint(b.Count)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", b.Subject, b.Rule, b.Reason, count, s.at(b.Until, "2006-01-02 15:04 MST"))
		}
	})
}

func (s supportCLI) unblock(c *cli.Context) error {
	arg, err := s.operand(c)
	if err != nil {
		return err
	}
	subj, err := admin.ParseSubject(arg)
	if err != nil {
		return err
	}
	cl, err := s.client(c)
	if err != nil {
		return err
	}
	u, err := cl.Unblock(c.Context, subj)
	if err != nil {
		return err
	}
	shown := arg // an IPv6 prefix as the user wrote it
	if subj.Account != "" {
		shown = subj.Account
	}
	if !u.Unblocked {
		return fmt.Errorf("%s is not blocked", shown)
	}
	return s.print(c, u, func(w io.Writer) {
		fmt.Fprintf(w, "%s unblocked:\n", shown)
		for _, b := range u.Lifted {
			fmt.Fprintf(w, "  %s\t%s\twould have ended %s\n", b.Rule, b.Reason, s.at(b.Until, "2006-01-02 15:04 MST"))
		}
		if u.Disabled {
			fmt.Fprintf(w, "%s: SMTP access stays disabled (R3): \"relayguard account enable %[1]s\" turns it on\n", shown)
		}
	})
}

func (s supportCLI) block(c *cli.Context) error {
	arg, err := s.operand(c)
	if err != nil {
		return err
	}
	if !c.IsSet("for") {
		return fmt.Errorf("%w: --for is required", s.usageError(c))
	}
	ip, err := admin.ParseIP(arg)
	if err != nil {
		return err
	}
	cl, err := s.client(c)
	if err != nil {
		return err
	}
	b, err := cl.Block(c.Context, ip, c.Duration("for"), c.String("reason"))
	if err != nil {
		return err
	}
	return s.print(c, b, func(w io.Writer) {
		fmt.Fprintf(w, "%s blocked until %s: %s\n", b.Subject, s.at(b.Until, "2006-01-02 15:04 MST"), b.Reason)
	})
}

func (s supportCLI) account(disabled bool) cli.ActionFunc {
	return func(c *cli.Context) error {
		arg, err := s.operand(c)
		if err != nil {
			return err
		}
		account, err := mailaddr.Normalize(arg)
		if err != nil {
			return fmt.Errorf("invalid account: %v", err)
		}
		cl, err := s.client(c)
		if err != nil {
			return err
		}
		if err := cl.SetAccountDisabled(c.Context, account, disabled); err != nil {
			return err
		}
		state := "enabled"
		if disabled {
			state = "disabled"
		}
		return s.print(c, admin.AccountState{Account: account, Disabled: disabled}, func(w io.Writer) {
			fmt.Fprintf(w, "%s: SMTP access %s\n", account, state)
		})
	}
}

func (s supportCLI) usage(c *cli.Context) error {
	arg, err := s.operand(c)
	if err != nil {
		return err
	}
	cl, err := s.client(c)
	if err != nil {
		return err
	}
	lines, err := cl.Usage(c.Context, arg)
	if err != nil {
		return err
	}
	return s.print(c, lines, func(w io.Writer) {
		if len(lines) == 0 {
			fmt.Fprintf(w, "nothing is counted for %s\n", arg)
			return
		}
		fmt.Fprintln(w, "RULE\tSUBJECT\tWINDOW\tUSED\tLIMIT\tFREES")
		for _, l := range lines {
			frees := "now"
			switch {
			case l.Used < l.Limit:
			case l.FreesAt.IsZero():
				frees = "never"
			default:
				frees = s.at(l.FreesAt, "2006-01-02 15:04 MST")
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%s\n", l.Rule, l.Subject, l.Window, l.Used, l.Limit, frees)
		}
	})
}

func (s supportCLI) explain(c *cli.Context) error {
	id, err := s.operand(c)
	if err != nil {
		return err
	}
	cl, err := s.client(c)
	if err != nil {
		return err
	}
	r, ok, err := cl.Explain(c.Context, id)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("no decision %s: the id is unknown, or older than admin.decision_retention (7 days by default)", id)
	}
	return s.print(c, r, func(w io.Writer) {
		line := func(key, value string) {
			if value != "" {
				fmt.Fprintf(w, "%s:\t%s\n", key, value)
			}
		}
		line("id", r.ID)
		line("time", s.at(r.Time, "2006-01-02 15:04:05 MST"))
		line("stage", r.Stage)
		rule := r.Rule
		if r.Name != "" {
			rule += " (" + r.Name + ")"
		}
		line("rule", rule)
		line("mode", r.Mode)
		line("client", r.Client)
		line("login", r.Login)
		line("sender", r.Sender)
		line("recipient", r.Recipient)
		line("reason", r.Reason)
		line("reply", r.Reply)
		for i, k := range slices.Sorted(maps.Keys(r.Counters)) {
			key := ""
			if i == 0 {
				key = "counters:"
			}
			fmt.Fprintf(w, "%s\t%s = %d\n", key, k, r.Counters[k])
		}
	})
}

// at writes t in the local time zone, and how far from now it is:
// "2026-05-04 14:45 CEST (in 42m)".
func (s supportCLI) at(t time.Time, layout string) string {
	d := t.Sub(s.now())
	rel := "now"
	switch {
	case d >= time.Second:
		rel = "in " + s.span(d)
	case d <= -time.Second:
		rel = s.span(-d) + " ago"
	}
	return t.In(s.loc).Format(layout) + " (" + rel + ")"
}

// span writes a positive duration to the unit that matters: "42s", "42m",
// "5h12m", "3d4h".
func (supportCLI) span(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", d/time.Second)
	case d < time.Hour:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d < 2*day && d%time.Hour < time.Minute:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d < 2*day:
		return fmt.Sprintf("%dh%dm", d/time.Hour, d%time.Hour/time.Minute)
	case d%day < time.Hour:
		return fmt.Sprintf("%dd", d/day)
	}
	return fmt.Sprintf("%dd%dh", d/day, d%day/time.Hour)
}
