// Package harness runs the operator's Postfix and Dovecot configuration from etc/ for real, on
// loopback, for relayguard's end-to-end tests.
//
// Start builds a scratch lab directory with a Postfix instance (`postfix -c DIR`) and a Dovecot
// (`dovecot -F -c FILE`, SASL only). The lab's own settings (queue under the lab, no DNS, log files,
// the relayhost) come first; etc/postfix/main.cf, etc/postfix/master.cf and
// etc/dovecot/95-relayguard.conf follow verbatim except for a few substitutions that each fail
// when their target is missing: the policy service address, the TLS certificate paths, the service
// names (turned into 127.0.0.1:port) and Dovecot's socket path (moved into the lab's queue).
// Postfix relays every accepted message to the Sink, an in-process SMTP server.
//
// Exposure: everything listens on 127.0.0.1 only, and nothing in the lab asks the system
// resolver (smtpd_peername_lookup = no, smtp_dns_support_level = disabled, a numeric relayhost).
// Start needs root: Postfix and Dovecot start as root and drop privileges themselves.
package harness

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Config says what to run.
type Config struct {
	// PolicyAddr replaces the policy service address of etc/postfix/main.cf
	// (inet:127.0.0.1:10040), e.g. "inet:127.0.0.1:41234".
	PolicyAddr string
	// MilterAddr replaces the milter address of etc/postfix/main.cf (inet:127.0.0.1:10041).
	MilterAddr string
	// AuthPolicyURL replaces Dovecot's auth policy URL of etc/dovecot/95-relayguard.conf
	// (http://127.0.0.1:10042/).
	AuthPolicyURL string
	// FilterAddr is where relayguard contentfilter listens (127.0.0.1:10025 in etc/), and
	// ReinjectAddr the reinjection service it hands messages back to (127.0.0.1:10026 in etc/).
	FilterAddr, ReinjectAddr string
	// AfterQueue switches etc/postfix/main.cf to the after-queue filter, as its comments say:
	// relayguard_proxy_filter empty, relayguard_content_filter = relayguard-scan:[FilterAddr].
	AfterQueue bool
	// Users are Dovecot's accounts, login to plain-text password.
	Users map[string]string
	// Repo is the repository root, where etc/ is.
	Repo string
	// Dir is the lab directory; it is created when missing and kept by Close. When empty, Start
	// creates a temporary directory and Close removes it; if the test binary dies without Close,
	// a later Start stops that lab's daemons and removes it.
	Dir string
}

// Lab is a running Postfix and Dovecot.
type Lab struct {
	// Addresses (127.0.0.1:port) of the three services of etc/postfix/master.cf.
	SMTP       string // "smtp" (port 25 in production)
	Submission string // "submission" (587)
	SMTPS      string // "submissions" (465)
	// Reinject is the reinjection service (Config.ReinjectAddr): the filter's next hop.
	Reinject string
	// Sink receives what Postfix relays.
	Sink *Sink
	// Dir is the lab directory; PostfixConfigDir is the Postfix instance's config directory, for
	// `postqueue -c` and the like.
	Dir              string
	PostfixConfigDir string

	removeDir  bool
	masterCF   string // the master.cf written at start
	postfixDir string
	dovecotDir string
	postfixBin string
	dovecot    *exec.Cmd
	dovecotEnd chan struct{}
	cmdLog     strings.Builder
}

// Start installs Postfix and Dovecot when missing (see EnsureInstalled), writes the lab's
// configuration and starts both; it returns when Dovecot answers on its socket and Postfix
// listens on its three services. On error, everything started is stopped again.
func Start(cfg Config) (*Lab, error) {
	if err := EnsureInstalled(); err != nil {
		return nil, err
	}
	if cfg.PolicyAddr == "" || cfg.MilterAddr == "" || cfg.AuthPolicyURL == "" || cfg.FilterAddr == "" || cfg.ReinjectAddr == "" || cfg.Repo == "" {
		return nil, errors.New("harness: Config.PolicyAddr, MilterAddr, AuthPolicyURL, FilterAddr, ReinjectAddr and Repo are required")
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("harness: Start needs root: Postfix and Dovecot start as root and drop privileges")
	}
	if err := reapOrphans(); err != nil {
		return nil, err
	}
	lab := &Lab{Dir: cfg.Dir}
	if lab.Dir == "" {
		d, err := os.MkdirTemp("", tempLabPattern)
		if err != nil {
			return nil, fmt.Errorf("harness: %w", err)
		}
		lab.Dir, lab.removeDir = d, true
		if err := writeOwner(d); err != nil {
			return nil, errors.Join(err, os.RemoveAll(d))
		}
	}
	lab.postfixDir = filepath.Join(lab.Dir, "postfix")
	lab.dovecotDir = filepath.Join(lab.Dir, "dovecot")
	lab.PostfixConfigDir = filepath.Join(lab.postfixDir, "etc")
	if err := lab.start(cfg); err != nil {
		if logs := lab.Logs(); logs != "" {
			err = fmt.Errorf("%w\n%s", err, logs)
		}
		return nil, errors.Join(err, lab.Close())
	}
	return lab, nil
}

func (lab *Lab) start(cfg Config) error {
	var err error
	if lab.postfixBin, err = lookPath("postfix"); err != nil {
		return err
	}
	// Dovecot's longest socket is run/token-login/tokenlogin; unix socket paths have 107 bytes.
	if n := len(filepath.Join(lab.dovecotDir, "run/token-login/tokenlogin")); n > 107 {
		return fmt.Errorf("harness: lab directory %s is too long for Dovecot's unix sockets (%d > 107 bytes)", lab.Dir, n)
	}
	tlsDir := filepath.Join(lab.Dir, "tls")
	for _, d := range []string{lab.PostfixConfigDir, filepath.Join(lab.postfixDir, "spool"),
		filepath.Join(lab.postfixDir, "data"), lab.dovecotDir, tlsDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("harness: %w", err)
		}
	}
	// Postfix and Dovecot drop privileges; their users must reach the files below the lab.
	if err := os.Chmod(lab.Dir, 0o755); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	pf, err := user.Lookup("postfix")
	if err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	uid, _ := strconv.Atoi(pf.Uid)
	gid, _ := strconv.Atoi(pf.Gid)
	if err := os.Chown(filepath.Join(lab.postfixDir, "data"), uid, gid); err != nil {
		return fmt.Errorf("harness: %w", err)
	}

	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	lab.SMTP = fmt.Sprintf("127.0.0.1:%d", ports[0])
	lab.Submission = fmt.Sprintf("127.0.0.1:%d", ports[1])
	lab.SMTPS = fmt.Sprintf("127.0.0.1:%d", ports[2])
	lab.Reinject = cfg.ReinjectAddr
	reinjectPort, err := strconv.Atoi(portOf(cfg.ReinjectAddr))
	if err != nil {
		return fmt.Errorf("harness: ReinjectAddr %q: %w", cfg.ReinjectAddr, err)
	}
	ports = append(ports, reinjectPort)
	if lab.Sink, err = startSink(); err != nil {
		return err
	}
	certFile, keyFile := filepath.Join(tlsDir, "cert.pem"), filepath.Join(tlsDir, "key.pem")
	if err := writeSelfSigned(certFile, keyFile); err != nil {
		return err
	}
	if err := lab.writePostfixConfig(cfg, certFile, keyFile); err != nil {
		return err
	}
	if err := lab.writeDovecotConfig(cfg); err != nil {
		return err
	}
	// `postfix check` also creates the queue's subdirectories, private/ (Dovecot's socket) included.
	if err := lab.postfixScript("check"); err != nil {
		return err
	}
	if err := lab.startDovecot(); err != nil {
		return err
	}
	if err := lab.postfixScript("start"); err != nil {
		return err
	}
	if err := lab.waitDovecot(10 * time.Second); err != nil {
		return err
	}
	return lab.waitPostfix(ports, 10*time.Second)
}

// filterMode sets the content filter's address and mode in main.cf.
func filterMode(cfg Config) [2]substitution {
	if cfg.AfterQueue {
		return [2]substitution{
			{"before-queue filter", etcProxyFilter, "relayguard_proxy_filter ="},
			{"after-queue filter", etcContentFilter, "relayguard_content_filter = relayguard-scan:[127.0.0.1]:" + portOf(cfg.FilterAddr)},
		}
	}
	return [2]substitution{
		{"before-queue filter", etcProxyFilter, "relayguard_proxy_filter = " + cfg.FilterAddr},
		{"after-queue filter", etcContentFilter, etcContentFilter},
	}
}

func portOf(addr string) string {
	_, p, _ := strings.Cut(addr, ":")
	return p
}

func (lab *Lab) writePostfixConfig(cfg Config, certFile, keyFile string) error {
	mainFile := filepath.Join(cfg.Repo, "etc/postfix/main.cf")
	b, err := os.ReadFile(mainFile)
	if err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	if err := require(mainFile, string(b), "SASL socket relative to the queue directory", etcSASLPath); err != nil {
		return err
	}
	mainCF, err := substitute(mainFile, string(b),
		substitution{"policy service address", etcPolicyAddr, cfg.PolicyAddr},
		substitution{"milter address", etcMilterAddr, cfg.MilterAddr},
		filterMode(cfg)[0], filterMode(cfg)[1],
		substitution{"TLS certificate", etcTLSCert, certFile},
		substitution{"TLS key", etcTLSKey, keyFile})
	if err != nil {
		return err
	}
	masterFile := filepath.Join(cfg.Repo, "etc/postfix/master.cf")
	b, err = os.ReadFile(masterFile)
	if err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	masterCF := string(b)
	for _, s := range []struct{ name, addr string }{
		{"smtp", lab.SMTP}, {"submission", lab.Submission}, {"submissions", lab.SMTPS}, {etcReinject, lab.Reinject},
	} {
		if masterCF, err = renameService(masterFile, masterCF, s.name, s.addr); err != nil {
			return err
		}
	}
	lab.masterCF = postfixMasterCF + masterCF
	if err := lab.writeConfigFile("main.cf", postfixMainCF(lab)+mainCF); err != nil {
		return err
	}
	return lab.writeConfigFile("master.cf", lab.masterCF)
}

// writeConfigFile writes one file of the Postfix instance's configuration directory.
func (lab *Lab) writeConfigFile(name, text string) error {
	f := filepath.Join(lab.PostfixConfigDir, name)
	if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	// Postfix reads a configuration file again, every 300 ms for ~2.4 s, while it changed
	// recently (util/load_file.c: "reads it again when the file changed recently"); a
	// backdated file is read once.
	old := time.Now().Add(-time.Minute)
	if err := os.Chtimes(f, old, old); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	return nil
}

// StopReinject takes the reinjection service (Config.ReinjectAddr) out of the lab's master.cf and
// reloads Postfix; it returns once the master has closed that listener. The filter's next hop is
// then down (connection refused) while the rest of Postfix runs on; StartReinject brings it back.
func (lab *Lab) StopReinject() error {
	text, err := withoutService("master.cf", lab.masterCF, lab.Reinject)
	if err != nil {
		return err
	}
	return lab.reload(text, false)
}

// StartReinject puts the reinjection service back after StopReinject and returns once the master
// listens there again.
func (lab *Lab) StartReinject() error { return lab.reload(lab.masterCF, true) }

// reload writes master.cf, runs `postfix reload` and waits until the master listens on the
// reinjection service's port, or no longer does.
func (lab *Lab) reload(masterCF string, reinjectUp bool) error {
	port, err := strconv.Atoi(portOf(lab.Reinject))
	if err != nil {
		return fmt.Errorf("harness: reinjection service %q: %w", lab.Reinject, err)
	}
	if err := lab.writeConfigFile("master.cf", masterCF); err != nil {
		return err
	}
	if err := lab.postfixScript("reload"); err != nil {
		return err
	}
	// The master reloads on SIGHUP, after `postfix reload` has returned.
	deadline := time.Now().Add(10 * time.Second)
	for listening(lab.masterPID(), port) != reinjectUp {
		if time.Now().After(deadline) {
			state := "open"
			if reinjectUp {
				state = "closed"
			}
			return fmt.Errorf("harness: postfix reload: the master's listener on %s is still %s after 10s", lab.Reinject, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func (lab *Lab) writeDovecotConfig(cfg Config) error {
	var users strings.Builder
	for login, pass := range cfg.Users {
		if login == "" || strings.ContainsAny(login, ":\n") || strings.ContainsAny(pass, ":\n") {
			return fmt.Errorf("harness: user %q: login and password must be non-empty and free of ':' and newlines", login)
		}
		fmt.Fprintf(&users, "%s:{PLAIN}%s::::::\n", login, pass)
	}
	usersFile := filepath.Join(lab.dovecotDir, "users")
	if err := os.WriteFile(usersFile, []byte(users.String()), 0o644); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	fragFile := filepath.Join(cfg.Repo, "etc/dovecot/95-relayguard.conf")
	b, err := os.ReadFile(fragFile)
	if err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	frag, err := substitute(fragFile, string(b),
		substitution{"Postfix SASL socket", etcDovecotSocket, lab.authSocket()},
		substitution{"auth policy URL", etcAuthPolicyURL, cfg.AuthPolicyURL})
	if err != nil {
		return err
	}
	labFrag := filepath.Join(lab.dovecotDir, "95-relayguard.conf")
	if err := os.WriteFile(labFrag, []byte(frag), 0o644); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	conf := dovecotConf(lab, usersFile, labFrag)
	return os.WriteFile(filepath.Join(lab.dovecotDir, "dovecot.conf"), []byte(conf), 0o644)
}

// authSocket is where Dovecot listens for Postfix: private/auth in the lab's queue directory, as
// smtpd_sasl_path = private/auth (relative to queue_directory) expects.
func (lab *Lab) authSocket() string {
	return filepath.Join(lab.postfixDir, "spool/private/auth")
}

// postfixScript runs `postfix -c DIR verb` under script(1): postfix prints its errors only to a
// tty, otherwise a failing check just exits 1 (../shared/lab/LAB.md).
func (lab *Lab) postfixScript(verb string) error {
	script, err := lookPath("script")
	if err != nil {
		return err
	}
	line := shellQuote(lab.postfixBin) + " -c " + shellQuote(lab.PostfixConfigDir) + " " + verb
	out, err := exec.Command(script, "-qec", line, "/dev/null").CombinedOutput()
	fmt.Fprintf(&lab.cmdLog, "$ postfix %s\n%s", verb, out)
	if err != nil {
		return fmt.Errorf("harness: postfix %s: %w: %s", verb, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (lab *Lab) startDovecot() error {
	bin, err := lookPath("dovecot")
	if err != nil {
		return err
	}
	out, err := os.Create(filepath.Join(lab.dovecotDir, "stderr.log"))
	if err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	defer out.Close()
	cmd := exec.Command(bin, "-F", "-c", filepath.Join(lab.dovecotDir, "dovecot.conf"))
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so that Close can wait for the children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("harness: dovecot: %w", err)
	}
	lab.dovecot, lab.dovecotEnd = cmd, make(chan struct{})
	go func() {
		cmd.Wait()
		close(lab.dovecotEnd)
	}()
	return nil
}

// waitDovecot waits until Dovecot's auth service completes the handshake of its client protocol
// (https://doc.dovecot.org/developer_manual/design/auth_protocol/) on Postfix's socket.
func (lab *Lab) waitDovecot(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-lab.dovecotEnd:
			return fmt.Errorf("harness: dovecot exited: %v", lab.dovecot.ProcessState)
		default:
		}
		if last = authHandshake(lab.authSocket()); last == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("harness: dovecot not ready after %v: %w", timeout, last)
}

func authHandshake(socket string) error {
	conn, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(conn, "VERSION\t1\t2\nCPID\t%d\n", os.Getpid()); err != nil {
		return err
	}
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		if sc.Text() == "DONE" {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("auth socket closed before DONE")
}

// masterPID reads the pid of Postfix's master from the lab's queue; 0 when there is none.
func (lab *Lab) masterPID() int {
	return readPID(filepath.Join(lab.postfixDir, "spool/pid/master.pid"))
}

func (lab *Lab) waitPostfix(ports []int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if pid := lab.masterPID(); pid != 0 {
			ready := true
			for _, p := range ports {
				ready = ready && listening(pid, p)
			}
			if ready {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("harness: postfix master (pid %d) not listening on %v after %v", lab.masterPID(), ports, timeout)
}

// Postqueue runs `postqueue -c DIR args...` (e.g. "-f" to flush, "-j" to list the queue as JSON)
// and returns its output.
func (lab *Lab) Postqueue(args ...string) (string, error) {
	bin, err := lookPath("postqueue")
	if err != nil {
		return "", err
	}
	out, err := exec.Command(bin, append([]string{"-c", lab.PostfixConfigDir}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("harness: postqueue %v: %w: %s", args, err, out)
	}
	return string(out), nil
}

// DialSMTP connects to the smtp service (port 25) from local, without TLS.
func (lab *Lab) DialSMTP(local string) (*Client, error) { return Dial(lab.SMTP, local, Plain) }

// DialSubmission connects to the submission service (587) from local; Hello does STARTTLS.
func (lab *Lab) DialSubmission(local string) (*Client, error) {
	return Dial(lab.Submission, local, StartTLS)
}

// DialSMTPS connects to the submissions service (465) from local, with implicit TLS.
func (lab *Lab) DialSMTPS(local string) (*Client, error) { return Dial(lab.SMTPS, local, ImplicitTLS) }

// PostfixLog is the path of Postfix's log (maillog_file), for tests that wait for a line of it.
func (lab *Lab) PostfixLog() string { return filepath.Join(lab.postfixDir, "postfix.log") }

// Logs returns the Postfix log, the Dovecot log and the output of the commands the harness ran.
func (lab *Lab) Logs() string {
	var b strings.Builder
	for _, f := range []struct{ title, path string }{
		{"postfix log", lab.PostfixLog()},
		{"dovecot log", filepath.Join(lab.dovecotDir, "dovecot.log")},
		{"dovecot stderr", filepath.Join(lab.dovecotDir, "stderr.log")},
	} {
		if data, err := os.ReadFile(f.path); err == nil && len(data) > 0 {
			fmt.Fprintf(&b, "==== %s (%s)\n%s", f.title, f.path, data)
		}
	}
	if lab.cmdLog.Len() > 0 {
		fmt.Fprintf(&b, "==== harness commands\n%s", lab.cmdLog.String())
	}
	return b.String()
}

// Close stops Postfix and Dovecot, waits until their processes are gone, stops the sink and
// removes the lab directory when Start created it.
func (lab *Lab) Close() error {
	var errs []error
	if pid := lab.masterPID(); pid != 0 && alive(pid) {
		if err := lab.postfixScript("stop"); err != nil {
			errs = append(errs, err)
		}
		// The master ends its children (its process group) when it ends.
		errs = append(errs, waitGroupGone(pid, 10*time.Second))
	}
	if lab.dovecot != nil {
		errs = append(errs, lab.stopDovecot())
	}
	if lab.Sink != nil {
		errs = append(errs, lab.Sink.close())
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if lab.removeDir {
		return os.RemoveAll(lab.Dir)
	}
	return nil
}

func (lab *Lab) stopDovecot() error {
	pgid := lab.dovecot.Process.Pid
	lab.dovecot.Process.Signal(syscall.SIGTERM)
	select {
	case <-lab.dovecotEnd:
	case <-time.After(10 * time.Second):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-lab.dovecotEnd
	}
	return waitGroupGone(pgid, 10*time.Second)
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
