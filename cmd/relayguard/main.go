// Command relayguard guards a shared SMTP submission service: `relayguard
// policyd` is Postfix's policy service, `relayguard contentfilter` its
// content filter, `relayguard check-config` checks the configuration without
// starting anything, and the support commands talk to policyd's admin API.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

func main() {
	configFlag := &cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "configuration `FILE`", Value: "/etc/relayguard/relayguard.toml"}
	app := &cli.App{
		Name:  "relayguard",
		Usage: "enforce a hosting provider's outbound mail rules in front of Postfix",
		Commands: append([]*cli.Command{
			{
				Name:   "policyd",
				Usage:  "run the Postfix policy service",
				Flags:  []cli.Flag{configFlag},
				Action: func(c *cli.Context) error { return runPolicyd(c.String("config")) },
			},
			{
				Name:   "contentfilter",
				Usage:  "run the SMTP content filter between Postfix and its reinjection service",
				Flags:  []cli.Flag{configFlag},
				Action: func(c *cli.Context) error { return runContentFilter(c.String("config")) },
			},
			{
				Name:  "check-config",
				Usage: "check the configuration and the files it names, then exit",
				Flags: []cli.Flag{configFlag, &cli.StringFlag{
					Name:  "for",
					Usage: "check only what `DAEMON` (policyd or contentfilter) reads at start-up",
				}},
				Action: func(c *cli.Context) error { return checkConfig(c.App.Writer, c.String("config"), c.String("for")) },
			},
			dkimCommand(),
		}, supportCommands()...),
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
