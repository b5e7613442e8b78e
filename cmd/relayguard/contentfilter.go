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
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"relayguard/config"
	"relayguard/contentfilter"
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
	srv := &contentfilter.Server{
		Hostname: hostname, NextHop: f.NextHop, MaxSize: int64(f.MaxSize),
		SpoolDir: f.SpoolDir, SpoolThreshold: int64(f.SpoolThreshold), Timeout: f.Timeout, Log: log,
	}
	ln, err := net.Listen("tcp", f.Listen)
	if err != nil {
		return fmt.Errorf("contentfilter.listen: %w", err)
	}
	log.Info("content filter listening", "address", ln.Addr().String(), "next_hop", f.NextHop,
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
