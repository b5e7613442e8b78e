package scantest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// RspamdCacheDir is where rspamd keeps its compiled hyperscan databases
// (its hs_cache_dir, 87 MB) across runs and instances. The first start
// compiles them, among them the 9628 TLD suffixes of its URL parser: 7 to
// 15 seconds on an idle machine, 78 seconds on two busy CPUs. With the
// cache, rspamd starts in under a second. It is used only if it belongs to
// this user and nobody else can write to it, since rspamd loads compiled
// code from it; otherwise each instance compiles into its own directory.
var RspamdCacheDir = filepath.Join(os.TempDir(), "relayguard-rspamd-cache")

// rspamdReady bounds a start, a cold one under load included.
const rspamdReady = 4 * time.Minute

// Rspamd is an rspamd started by StartRspamd.
type Rspamd struct {
	URL string // its normal worker, http://127.0.0.1:port (POST /checkv2)
	Dir string
	p   *process
}

// StartRspamd starts rspamd with its files in dir and returns once its
// normal worker answers /ping. Its rules are Debian's stock ones
// (/etc/rspamd), with one normal worker and no controller, no proxy and no
// fuzzy worker; its DNS resolver is dnsAddr only ("127.0.0.1:port", UDP
// and TCP), which must answer (internal/dnstest answers NXDOMAIN for the
// names it does not hold): without an answer each lookup waits for its
// timeout and the verdicts change from run to run. The fuzzy_check module
// is disabled (it resolves its servers at start), and the modules that
// need Redis disable themselves. Send "IP: 127.0.0.1" for deterministic
// verdicts: rspamd's host-name rules score a public address that has no
// DNS records.
func StartRspamd(dir, dnsAddr string) (*Rspamd, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("scantest: %w", err)
	}
	for _, d := range []string{"etc/local.d", "db", "run", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("scantest: %w", err)
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cache := filepath.Join(dir, "db")
	if ok, err := ownCacheDir(RspamdCacheDir); err != nil {
		return nil, err
	} else if ok {
		cache = RspamdCacheDir
	}
	files := map[string]string{
		// ../shared/lab/rspamd/rspamd.conf, without the controller.
		"rspamd.conf": `.include "$CONFDIR/common.conf"

options {
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}

logging {
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    .include "$CONFDIR/logging.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/logging.inc"
}

worker "normal" {
    bind_socket = "` + loopback(port) + `";
    .include "$CONFDIR/worker-normal.inc"
    count = 1;
}
`,
		"etc/local.d/options.inc": fmt.Sprintf(`dns {
    nameserver = [%q];
    timeout = 0.5s;
    retransmits = 1;
}
hs_cache_dir = %q;
`, dnsAddr, cache+"/"),
		"etc/local.d/fuzzy_check.conf": "enabled = false;\n",
		"etc/local.d/logging.inc":      "level = \"info\";\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return nil, fmt.Errorf("scantest: %w", err)
		}
	}
	args := []string{"-f", "-c", filepath.Join(dir, "rspamd.conf"),
		"--var", "LOCAL_CONFDIR=" + filepath.Join(dir, "etc"),
		"--var", "DBDIR=" + filepath.Join(dir, "db"),
		"--var", "RUNDIR=" + filepath.Join(dir, "run"),
		"--var", "LOGDIR=" + filepath.Join(dir, "log"),
	}
	if os.Geteuid() == 0 {
		// rspamd refuses to run its workers as root otherwise.
		args = append(args, "--insecure")
	}
	p, err := startProcess("rspamd", dir, filepath.Join(dir, "log", "rspamd.log"), args...)
	if err != nil {
		return nil, err
	}
	r := &Rspamd{URL: "http://" + loopback(port), Dir: dir, p: p}
	if err := p.waitReady(rspamdReady, r.ping); err != nil {
		p.stop()
		return nil, err
	}
	return r, nil
}

// ownCacheDir creates dir if needed and reports whether it can serve as
// the shared cache: a directory of this user's that nobody else can write,
// since rspamd loads compiled code from it.
func ownCacheDir(dir string) (bool, error) {
	if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
		return false, fmt.Errorf("scantest: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return false, fmt.Errorf("scantest: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && fi.IsDir() && fi.Mode().Perm()&0o022 == 0 && int(st.Uid) == os.Geteuid(), nil
}

// ping asks the normal worker's /ping.
func (r *Rspamd) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+"/ping", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "pong" {
		return fmt.Errorf("/ping answered %s %q", resp.Status, body)
	}
	return nil
}

// Log returns rspamd's log.
func (r *Rspamd) Log() string { return r.p.Log() }

// Close stops rspamd and its workers.
func (r *Rspamd) Close() error { return r.p.stop() }
