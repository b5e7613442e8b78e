package main

// relayguard contentfilter's exposure: it listens on [contentfilter] listen
// (loopback by default) for Postfix's smtpd_proxy_filter or content_filter
// connections and trusts their XFORWARD attributes (the original client),
// so it must be reachable by Postfix only. It connects to Postfix's
// reinjection service only. It needs no privilege beyond writing its spool
// directory and reading the DKIM keys; run it as its own unprivileged user.
// SIGHUP reloads the DKIM keys of the directory; SIGTERM finishes the
// messages in progress and stops.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"relayguard/admin"
	"relayguard/config"
	"relayguard/contentfilter"
	"relayguard/policyd"
)

func runContentFilter(path string) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log)
	f := cfg.ContentFilter
	hostname := f.Hostname
	if hostname == "" {
		if hostname, err = os.Hostname(); err != nil {
			return fmt.Errorf("contentfilter.hostname is empty and the host name is unknown: %w", err)
		}
	}
	if err := os.MkdirAll(f.SpoolDir, 0o700); err != nil {
		return fmt.Errorf("contentfilter.spool_dir: %w", err)
	}
	checks, err := contentfilter.NewChecks(&cfg.ContentFilter, policyd.NewID, log)
	if err != nil {
		return err
	}
	if cfg.Admin.Socket != "" {
		c := admin.NewClient(cfg.Admin.Socket)
		checks.Reporter, checks.Replies = c, c
	} else {
		log.Warn("admin.socket is empty: spam cannot be reported to policyd (R15), it is only tagged; policyd's END-OF-MESSAGE replies reach clients prefixed by Postfix")
	}
	r := &cfg.ContentFilter.Rules
	log.Info("rule", "id", "R17", "name", "attachments", "mode", r.Attachments.Mode, "extensions", len(r.Attachments.Extensions))
	log.Info("rule", "id", "R16", "name", "virus", "mode", r.Virus.Mode, "clamd", r.Virus.Clamd, "fail", r.Virus.Fail)
	log.Info("rule", "id", "R15", "name", "spam", "mode", r.Spam.Mode, "rspamd", r.Spam.Rspamd, "threshold", r.Spam.Threshold, "fail", r.Spam.Fail)
	signing, err := newDKIMSigning(cfg.Policyd.Directory, log)
	if err != nil {
		return err
	}
	srv := &contentfilter.Server{
		Hostname: hostname, NextHop: f.NextHop, MaxSize: int64(f.MaxSize), Checker: checks, Sign: signing.sign,
		SpoolDir: f.SpoolDir, SpoolThreshold: int64(f.SpoolThreshold), Timeout: f.Timeout,
		AfterQueue: f.Mode == config.AfterQueue, Log: log,
	}
	ln, err := net.Listen("tcp", f.Listen)
	if err != nil {
		return fmt.Errorf("contentfilter.listen: %w", err)
	}
	log.Info("content filter listening", "address", ln.Addr().String(), "mode", f.Mode, "next_hop", f.NextHop,
		"max_size", f.MaxSize, "spool_dir", f.SpoolDir, "spool_threshold", f.SpoolThreshold)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	for {
		select {
		case err := <-serveErr:
			return fmt.Errorf("content filter: %w", err)
		case s := <-sig:
			if s == syscall.SIGHUP {
				// The DKIM keys of the directory (R19); messages
				// being signed finish with the previous ones.
				signing.reload()
				continue
			}
			log.Info("shutting down: finishing the messages in progress", "signal", s.String())
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return srv.Close(ctx)
		}
	}
}
