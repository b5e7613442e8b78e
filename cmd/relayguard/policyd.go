package main

// relayguard policyd's exposure: it listens on the TCP addresses and/or unix
// sockets of [policyd] and [milter] (loopback and 0660 sockets by default) and
// trusts whoever connects there to be Postfix's smtpd: the attributes of a
// request are taken as Postfix states them. It needs no privilege beyond reading its
// configuration, the directory and the GeoIP database, and creating its
// socket; run it as its own unprivileged user.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"relayguard/admin"
	"relayguard/authpolicy"
	"relayguard/config"
	"relayguard/decisions"
	"relayguard/dnscheck"
	"relayguard/geoip"
	"relayguard/limits"
	"relayguard/milter"
	"relayguard/policyd"
)

// loaded is everything the configuration names, opened and checked.
type loaded struct {
	cfg *config.Config
	dir *config.Directory
	geo *geoip.Reader
}

// load reads the configuration and opens what it names, collecting every
// problem instead of stopping at the first.
func load(path string) (*loaded, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	l := &loaded{cfg: cfg}
	var errs []error
	if l.dir, err = config.LoadDirectory(cfg.Policyd.Directory); err != nil {
		errs = append(errs, err)
	}
	if cfg.Rules.GeoIP.Mode != config.Off {
		if l.geo, err = geoip.Open(cfg.Rules.GeoIP.Database); err != nil {
			errs = append(errs, fmt.Errorf("%s: rules.geoip.database: %w", path, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		if l.geo != nil {
			l.geo.Close()
		}
		return nil, err
	}
	return l, nil
}

// checkConfig checks the configuration at path and the files it names that
// daemon reads at start-up: "policyd" (the domain directory, the GeoIP
// database), "contentfilter" (the domain directory and its DKIM keys), or
// both for "". It writes a summary to w.
func checkConfig(w io.Writer, path, daemon string) error {
	if daemon != "" && daemon != "policyd" && daemon != "contentfilter" {
		return fmt.Errorf("check-config --for %q: want policyd or contentfilter", daemon)
	}
	var (
		cfg *config.Config
		dir *config.Directory
	)
	if daemon == "contentfilter" {
		c, err := config.Load(path)
		if err != nil {
			return err
		}
		if dir, err = config.LoadDirectory(c.Policyd.Directory); err != nil {
			return err
		}
		cfg = c
	} else {
		l, err := load(path)
		if err != nil {
			return err
		}
		if l.geo != nil {
			l.geo.Close()
		}
		cfg, dir = l.cfg, l.dir
	}
	summary := dir.Summary()
	if daemon != "policyd" {
		keys, errs := dkimKeysOf(dir, cfg.Policyd.Directory)
		if errs != nil {
			return errors.Join(errs...)
		}
		if doms := keys.domains(); len(doms) > 0 {
			summary += "; DKIM keys for " + strings.Join(doms, ", ")
		} else {
			summary += "; no domain has a DKIM key"
		}
	}
	_, err := fmt.Fprintf(w, "%s: OK\n%s: %s\n", path, cfg.Policyd.Directory, summary)
	return err
}

func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.Level)) // checked by config
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func runPolicyd(path string) error {
	l, err := load(path)
	if err != nil {
		return err
	}
	cfg := l.cfg
	log := newLogger(cfg.Log)
	slog.SetDefault(log)

	resolver, err := dnscheck.New(dnscheck.Config{
		Servers: cfg.DNS.Servers, Timeout: cfg.DNS.Timeout, CacheSize: cfg.DNS.CacheSize,
		MaxTTL: cfg.DNS.MaxTTL, NegativeTTL: cfg.DNS.NegativeTTL,
	})
	if err != nil {
		return err
	}
	store, err := limits.OpenBadger(limits.BadgerConfig{
		Dir: cfg.Store.Dir, FlushInterval: cfg.Store.FlushInterval, GCInterval: cfg.Store.GCInterval, Log: log,
	})
	if err != nil {
		return fmt.Errorf("store %s: %w", cfg.Store.Dir, err)
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("store not closed cleanly", "dir", cfg.Store.Dir, "error", err)
		}
	}()
	log.Info("store open", "backend", cfg.Store.Backend, "dir", cfg.Store.Dir, "flush_interval", cfg.Store.FlushInterval)
	decided := &decisions.Files{Dir: filepath.Join(cfg.Store.Dir, "decisions"), Retention: cfg.Admin.DecisionRetention, Now: time.Now}
	defer decided.Close()
	deps := policyd.Deps{DNS: resolver, Store: store, Decisions: decided, Log: log}
	if l.geo != nil {
		defer l.geo.Close()
		deps.GeoIP = l.geo
		log.Info("GeoIP database open", "path", cfg.Rules.GeoIP.Database, "type", l.geo.DatabaseType())
	}
	engine, err := policyd.NewEngine(cfg, l.dir, deps)
	if err != nil {
		return err
	}
	for _, s := range engine.Status() {
		log.Info("rule", "id", s.ID, "name", s.Name, "mode", s.Mode, "why", s.Why)
	}
	log.Info("directory loaded", "path", cfg.Policyd.Directory, "summary", l.dir.Summary())
	log.Info("resolver", "servers", cfg.DNS.Servers, "timeout", cfg.DNS.Timeout, "cache_size", cfg.DNS.CacheSize)

	var voice *policyd.Voice
	var milterSrv *milter.Server
	if cfg.Milter.Listen != "" || cfg.Milter.Socket != "" {
		voice = &policyd.Voice{Log: log, Now: time.Now}
		milterSrv = &milter.Server{Handler: voice.Milter, Timeout: cfg.Policyd.IdleTimeout, Log: log}
	} else {
		log.Warn("milter listener off: replies go back through the policy protocol, and Postfix prefixes them (\"<address>: Sender address rejected: ...\")")
	}
	srv := &policyd.Server{
		Engine:         engine,
		Voice:          voice,
		Limits:         policyd.Limits{MaxLine: cfg.Policyd.MaxLine, MaxRequest: cfg.Policyd.MaxRequest, MaxAttributes: cfg.Policyd.MaxAttributes},
		IdleTimeout:    cfg.Policyd.IdleTimeout,
		RequestTimeout: cfg.Policyd.RequestTimeout,
		Log:            log,
	}
	listeners, err := listen(cfg.Policyd.Listen, cfg.Policyd.Socket, cfg.Policyd.SocketMode)
	if err != nil {
		return err
	}
	serveErr := make(chan error, 4)
	for _, ln := range listeners {
		log.Info("policy service listening", "address", ln.Addr().String())
		go func() { serveErr <- srv.Serve(ln) }()
	}
	if milterSrv != nil {
		mls, err := listen(cfg.Milter.Listen, cfg.Milter.Socket, cfg.Milter.SocketMode)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return err
		}
		for _, ln := range mls {
			log.Info("milter listening: replies reach clients word for word", "address", ln.Addr().String())
			go func() { serveErr <- milterSrv.Serve(ln) }()
		}
	}

	var adminSrv *http.Server
	if cfg.Admin.Socket != "" {
		ln, err := admin.Listen(cfg.Admin.Socket, cfg.Admin.SocketMode, cfg.Admin.SocketGroup)
		if err != nil {
			return fmt.Errorf("admin.socket: %w", err)
		}
		support := &policyd.Support{Engine: engine, Config: cfg, Store: store, Decisions: decided, Now: time.Now, Voice: voice}
		adminSrv = &http.Server{Handler: &admin.Server{Backend: support, Retention: cfg.Admin.DecisionRetention, Log: log},
			ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		log.Info("admin API listening", "socket", cfg.Admin.Socket, "mode", cfg.Admin.SocketMode, "group", cfg.Admin.SocketGroup)
		go func() { serveErr <- adminSrv.Serve(ln) }()
	}

	var authSrv *http.Server
	if cfg.AuthPolicy.Listen != "" {
		ap := &authpolicy.Server{
			Config: cfg.AuthPolicy, Failures: &cfg.Rules.AuthFailures,
			LoginFormat: &cfg.Rules.LoginFormat, AccountDisabled: &cfg.Rules.AccountDisabled,
			Store: store, Directory: engine.Directory, Decisions: deps.Decisions, NewID: policyd.NewID, Log: log,
			Disabled: func(ctx context.Context, account string) (bool, error) {
				return policyd.AccountDisabled(ctx, store, account, time.Now())
			},
		}
		if err := ap.Validate(); err != nil {
			return err
		}
		ln, err := net.Listen("tcp", cfg.AuthPolicy.Listen)
		if err != nil {
			return fmt.Errorf("auth_policy.listen: %w", err)
		}
		authSrv = &http.Server{Handler: ap, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
			WriteTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		log.Info("Dovecot auth policy service listening", "address", ln.Addr().String(), "api_key", cfg.AuthPolicy.APIKey != "")
		go func() { serveErr <- authSrv.Serve(ln) }()
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	for {
		select {
		case err := <-serveErr:
			return fmt.Errorf("policy service: %w", err)
		case s := <-sig:
			if s == syscall.SIGHUP {
				reloadDirectory(log, engine, cfg.Policyd.Directory)
				continue
			}
			log.Info("shutting down", "signal", s.String())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := srv.Shutdown(ctx)
			cancel()
			if milterSrv != nil {
				milterSrv.Close()
			}
			for _, h := range []*http.Server{authSrv, adminSrv} {
				if h != nil {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					h.Shutdown(ctx)
					cancel()
				}
			}
			for _, sock := range []string{cfg.Policyd.Socket, cfg.Milter.Socket} {
				if sock != "" {
					os.Remove(sock)
				}
			}
			return err
		}
	}
}

// reloadDirectory replaces the directory; a broken file keeps the old one.
func reloadDirectory(log *slog.Logger, engine *policyd.Engine, path string) {
	dir, err := config.LoadDirectory(path)
	if err != nil {
		log.Error("directory reload failed, keeping the previous directory", "path", path, "error", err.Error())
		return
	}
	engine.SetDirectory(dir)
	log.Info("directory reloaded", "path", path, "summary", dir.Summary())
}

// listen opens a TCP listener and a unix socket, each when configured.
func listen(tcp, socket, socketMode string) ([]net.Listener, error) {
	var ls []net.Listener
	fail := func(err error) ([]net.Listener, error) {
		for _, l := range ls {
			l.Close()
		}
		return nil, err
	}
	if tcp != "" {
		l, err := net.Listen("tcp", tcp)
		if err != nil {
			return fail(err)
		}
		ls = append(ls, l)
	}
	if socket != "" {
		if fi, err := os.Lstat(socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
			if c, err := net.Dial("unix", socket); err == nil {
				c.Close()
				return fail(fmt.Errorf("%s: another process is listening there", socket))
			}
			os.Remove(socket) // left by a previous run
		}
		l, err := net.Listen("unix", socket)
		if err != nil {
			return fail(err)
		}
		ls = append(ls, l)
		mode, _ := strconv.ParseUint(socketMode, 8, 32) // checked by config
		if err := os.Chmod(socket, os.FileMode(mode)); err != nil {
			return fail(err)
		}
	}
	return ls, nil
}
