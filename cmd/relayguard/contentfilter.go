package main

// relayguard contentfilter's exposure: it listens on [contentfilter] listen
// (loopback by default) for Postfix's smtpd_proxy_filter or content_filter
// connections and trusts their XFORWARD attributes (the original client),
// so it must be reachable by Postfix only. It connects to Postfix's
// reinjection service only. It needs no privilege beyond writing its spool
// directory; run it as its own unprivileged user.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"relayguard/admin"
	"relayguard/config"
	"relayguard/contentfilter"
	"relayguard/dkim"
	"relayguard/mailaddr"
	"relayguard/policyd"
)

// dkimSigner loads the DKIM keys the directory names (R19); nil when none.
func dkimSigner(cfg *config.Config, log *slog.Logger) (func(io.Writer, io.Reader, *contentfilter.Message) error, error) {
	dir, err := config.LoadDirectory(cfg.Policyd.Directory)
	if err != nil {
		return nil, err
	}
	var keys []*dkim.Key
	for _, g := range dir.Groups() {
		if g.DKIMKey == "" {
			continue
		}
		k, err := dkim.LoadKey(g.Name, g.DKIMSelector, g.DKIMKey)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
		log.Info("DKIM key loaded", "domain", g.Name, "selector", g.DKIMSelector, "algorithm", k.Algorithm)
	}
	if len(keys) == 0 {
		log.Info("DKIM: no domain has a key in the directory, nothing is signed")
		return nil, nil
	}
	signer := dkim.NewSigner(keys)
	signer.SameOwner = dir.SameOwner
	return func(w io.Writer, r io.Reader, m *contentfilter.Message) error {
		domain := ""
		if _, d, err := mailaddr.Split(m.Sender); err == nil {
			domain = d
		}
		_, err := signer.Sign(w, r, domain)
		return err
	}, nil
}

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
	sign, err := dkimSigner(cfg, log)
	if err != nil {
		return err
	}
	srv := &contentfilter.Server{
		Hostname: hostname, NextHop: f.NextHop, MaxSize: int64(f.MaxSize), Checker: checks, Sign: sign,
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
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-serveErr:
		return fmt.Errorf("content filter: %w", err)
	case s := <-sig:
		log.Info("shutting down: finishing the messages in progress", "signal", s.String())
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return srv.Close(ctx)
	}
}
