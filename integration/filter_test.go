package integration

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"relayguard/dkim"
	"relayguard/integration/harness"
	"relayguard/scan/scantest"
)

// withAttachment is a message with one attachment, its Content-Disposition
// and Content-Type parameters written as given (to try the naming tricks).
func withAttachment(disposition, ctype string, content []byte) string {
	return "From: <jan@example.cz>\r\nTo: <someone@dest.test>\r\nSubject: attachment\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n" +
		"--b1\r\nContent-Type: " + ctype + "\r\nContent-Transfer-Encoding: base64\r\n" +
		"Content-Disposition: " + disposition + "\r\n\r\n" + base64.StdEncoding.EncodeToString(content) + "\r\n--b1--\r\n"
}

// submit sends one raw message from local as jan@example.cz and returns the
// stage and line of a refusal, or "" and the reply to the end of DATA.
func submit(t *testing.T, local, msg string) (stage, line string) {
	t.Helper()
	c := session(t, local, "jan@example.cz")
	if line, err := c.Mail("jan@example.cz"); err != nil {
		return "MAIL", line
	}
	if line, err := c.Rcpt("someone@dest.test"); err != nil {
		return "RCPT", line
	}
	line, err := c.Data([]byte(msg))
	if err != nil {
		return "DATA", line
	}
	return "", line
}

// R17: every banned extension, every naming trick, and what passes.
func TestBannedAttachments(t *testing.T) {
	const bad = "554 5.7.1 {id} Bad attachment"
	for _, ext := range []string{"com", "exe", "pif", "bat", "scr", "cpl", "cmd", "dll", "lnk", "inf", "msi", "sct", "vbs", "vb", "vbe", "js", "wsf", "iso"} {
		stage, line := submit(t, "127.0.0.101", withAttachment(`attachment; filename="file.`+ext+`"`, "application/octet-stream", []byte("x")))
		if _, ok := matchReply(line, bad); stage != "DATA" || !ok {
			t.Errorf(".%s: %s %q", ext, stage, line)
		}
	}
	for name, parts := range map[string][2]string{
		"upper case":             {`attachment; filename="INVOICE.EXE"`, "application/octet-stream"},
		"double extension":       {`attachment; filename="invoice.pdf.exe"`, "application/pdf"},
		"trailing dot and space": {`attachment; filename="invoice.exe. "`, "application/octet-stream"},
		"RFC 2231 charset":       {`attachment; filename*=UTF-8''%C3%BA%C4%8Det.exe`, "application/octet-stream"},
		"RFC 2231 continuations": {`attachment; filename*0="fak"; filename*1="tura.js"`, "application/octet-stream"},
		"RFC 2047 in name":       {`attachment`, `application/octet-stream; name="=?UTF-8?B?w7rEjWV0LnNjcg==?="`},
		"name only":              {`inline`, `application/octet-stream; name="setup.msi"`},
	} {
		stage, line := submit(t, "127.0.0.101", withAttachment(parts[0], parts[1], []byte("x")))
		if _, ok := matchReply(line, bad); stage != "DATA" || !ok {
			t.Errorf("%s: %s %q", name, stage, line)
		}
	}
	for name, parts := range map[string][2]string{
		"exe then pdf": {`attachment; filename="report.exe.pdf"`, "application/pdf"},
		"zip":          {`attachment; filename="setup.zip"`, "application/zip"},
	} {
		if stage, line := submit(t, "127.0.0.102", withAttachment(parts[0], parts[1], []byte("%PDF-1.4"))); stage != "" {
			t.Errorf("%s refused: %s %q", name, stage, line)
		}
	}
	// An attached message carrying a banned file.
	inner := withAttachment(`attachment; filename="bad.js"`, "application/javascript", []byte("alert(1)"))
	outer := "From: <jan@example.cz>\r\nTo: <someone@dest.test>\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"o\"\r\n\r\n--o\r\nContent-Type: text/plain\r\n\r\nForwarded.\r\n" +
		"--o\r\nContent-Type: message/rfc822\r\n\r\n" + inner + "\r\n--o--\r\n"
	if stage, line := submit(t, "127.0.0.101", outer); stage != "DATA" || !strings.Contains(line, "Bad attachment") {
		t.Errorf("attached message with bad.js: %s %q", stage, line)
	}
}

// R16: EICAR, attached, through the real clamd.
func TestVirus(t *testing.T) {
	stage, line := submit(t, "127.0.0.103", withAttachment(`attachment; filename="readme.txt"`, "text/plain", scantest.EICAR()))
	if _, ok := matchReply(line, "554 5.7.1 {id} virus detected"); stage != "DATA" || !ok {
		t.Errorf("EICAR: %s %q", stage, line)
	}
	if lines := strings.Count(readFile(env.filter.log), scantest.EICARSignature); lines == 0 {
		t.Errorf("the virus name is not in the filter's log")
	}
}

// Spam (rspamd, GTUBE) passes tagged; the allowance and the refusal come with
// policyd's counting (R15).
func TestSpamTagged(t *testing.T) {
	msg := "From: <jan@example.cz>\r\nTo: <someone@dest.test>\r\nSubject: spam " + fmt.Sprint(time.Now().UnixNano()) + "\r\n\r\n" + string(scantest.GTUBE()) + "\r\n"
	if stage, line := submit(t, "127.0.0.104", msg); stage != "" {
		t.Fatalf("GTUBE refused: %s %q", stage, line)
	}
	m, err := env.lab.Sink.WaitFor(func(m harness.Msg) bool { return bytes.Contains(m.Data, scantest.GTUBE()) }, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(m.Data, []byte("X-Spam: Yes\r\n")) {
		t.Errorf("spam not tagged:\n%s", m.Data[:min(len(m.Data), 600)])
	}
}

// R19: mail of example.cz arrives signed, and the signature verifies.
func TestDKIMSigned(t *testing.T) {
	subject := fmt.Sprintf("signed %d", time.Now().UnixNano())
	msg := "From: Jan <jan@example.cz>\r\nTo: <someone@dest.test>\r\nSubject: " + subject + "\r\nMessage-ID: <" + subject[7:] + "@example.cz>\r\n" +
		"Date: " + time.Now().Format(time.RFC1123Z) + "\r\n\r\nHello, signed.\r\n"
	if stage, line := submit(t, "127.0.0.105", msg); stage != "" {
		t.Fatalf("refused: %s %q", stage, line)
	}
	m, err := env.lab.Sink.WaitFor(func(m harness.Msg) bool { return bytes.Contains(m.Data, []byte(subject)) }, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	verifyDKIM(t, m.Data)
}

// verifyDKIM asserts that a message arrived with one valid signature of
// example.cz.
func verifyDKIM(t *testing.T, data []byte) {
	t.Helper()
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(data), &msgauth.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if name != "e2e._domainkey.example.cz" {
				return nil, fmt.Errorf("no TXT for %s", name)
			}
			return []string{env.dkimTXT}, nil
		},
	})
	if err != nil || len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "example.cz" {
		t.Errorf("DKIM verification: %v %+v\n%s", err, vs, data[:min(len(data), 800)])
	}
}

// R19: SIGHUP makes the content filter read the directory's DKIM keys
// again. A key added to the directory signs the next message; a reload
// with a broken key keeps the keys in force and logs the error with its
// file:line.
func TestDKIMReload(t *testing.T) {
	signer, pemKey, err := dkim.Generate("ed25519", 0)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "granted.test.hup.key")
	if err := os.WriteFile(keyFile, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	txt := map[string]string{
		"e2e._domainkey.example.cz":   env.dkimTXT,
		"hup._domainkey.granted.test": dkimTXTValue(dkim.TXTRecord("hup", "granted.test", signer.Public())),
	}
	withKey := func(key string) string {
		return strings.Replace(directory, "name = \"granted.test\"\n", fmt.Sprintf("name = \"granted.test\"\ndkim_selector = \"hup\"\ndkim_key = %q\n", key), 1)
	}
	granted := tx{local: "127.0.0.107", login: "x@granted.test", from: "x@granted.test", to: rcpt}
	jan := tx{local: "127.0.0.107", login: "jan@example.cz", from: "jan@example.cz", to: rcpt}
	t.Cleanup(func() { reloadFilter(t, directory, `msg="DKIM keys reloaded"`) })

	if got := signedBy(t, granted, txt); got != "" {
		t.Fatalf("before the key: granted.test's mail signed by %s", got)
	}
	reloadFilter(t, withKey(keyFile), `msg="DKIM keys reloaded" directory=`+env.directory+` signed="example.cz granted.test" added=granted.test removed="" replaced=""`)
	if got := signedBy(t, granted, txt); got != "granted.test" {
		t.Errorf("after the reload: granted.test's mail signed by %q", got)
	}
	if got := signedBy(t, jan, txt); got != "example.cz" {
		t.Errorf("after the reload: example.cz's mail signed by %q", got)
	}

	missing := filepath.Join(filepath.Dir(keyFile), "missing.key")
	broken := withKey(missing)
	line := strings.Count(broken[:strings.Index(broken, "dkim_key = \""+missing)], "\n") + 1
	reloadFilter(t, broken, fmt.Sprintf(`msg="DKIM key reload failed, keeping the previous keys" directory=%s error="%s:%d: domain granted.test: dkim: key file: open %s: no such file or directory"`,
		env.directory, env.directory, line, missing))
	if got := signedBy(t, granted, txt); got != "granted.test" {
		t.Errorf("after a broken reload: granted.test's mail signed by %q, want the key kept", got)
	}
}

// reloadFilter writes the directory file, sends SIGHUP to the content
// filter and waits for its log line that contains logged.
func reloadFilter(t *testing.T, content, logged string) {
	t.Helper()
	count := func() int { return strings.Count(readFile(env.filter.log), logged) }
	before := count()
	if err := os.WriteFile(env.directory, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := env.filter.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for count() == before {
		if time.Now().After(deadline) {
			t.Fatalf("the content filter did not log %s after SIGHUP", logged)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// signedBy sends x, waits for it at the next hop, and returns the domain
// of its DKIM signature, verified with the TXT records txt; "" when it is
// not signed.
func signedBy(t *testing.T, x tx, txt map[string]string) string {
	t.Helper()
	stage, line, subject := x.run(t)
	if stage != "" {
		t.Fatalf("%s refused at %s: %q", x.from, stage, line)
	}
	m, err := env.lab.Sink.WaitFor(func(m harness.Msg) bool { return bytes.Contains(m.Data, []byte("Subject: "+subject+"\r\n")) }, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(m.Data), &msgauth.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if v, ok := txt[name]; ok {
				return []string{v}, nil
			}
			return nil, fmt.Errorf("no TXT for %s", name)
		},
	})
	switch {
	case err != nil:
		t.Fatalf("verification: %v\n%s", err, m.Data)
	case len(vs) == 0:
		return ""
	case len(vs) > 1 || vs[0].Err != nil:
		t.Fatalf("verification: %+v\n%s", vs, m.Data[:min(len(m.Data), 800)])
	}
	return vs[0].Domain
}

// A 20 MB message goes through the filter (spooled to disk) whole.
func TestLargeMessage(t *testing.T) {
	line := strings.Repeat("0123456789", 7) + "\r\n"
	body := strings.Repeat(line, 20_000_000/len(line))
	subject := fmt.Sprintf("large %d", time.Now().UnixNano())
	msg := "From: <jan@example.cz>\r\nTo: <someone@dest.test>\r\nSubject: " + subject + "\r\n\r\n" + body
	if stage, line := submit(t, "127.0.0.106", msg); stage != "" {
		t.Fatalf("refused: %s %q", stage, line)
	}
	m, err := env.lab.Sink.WaitFor(func(m harness.Msg) bool { return bytes.Contains(m.Data, []byte(subject)) }, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(m.Data, []byte(body)) {
		t.Errorf("the 20 MB body did not arrive intact (%d bytes)", len(m.Data))
	}
}

// R15: within the allowance (2 a day in the test configuration) spam passes
// tagged; past it the filter refuses it, and policyd refuses all mail of the
// account and of the address until the block ends, or until support lifts
// the account's block and then the address's with `relayguard unblock`.
func TestSpamAllowance(t *testing.T) {
	gtube := func(from string) string {
		return "From: <" + from + ">\r\nTo: <someone@dest.test>\r\nSubject: offer " + fmt.Sprint(time.Now().UnixNano()) +
			"\r\n\r\n" + string(scantest.GTUBE()) + "\r\n"
	}
	// send returns the stage and line of a refusal, or "" and the reply
	// to the end of DATA.
	send := func(local, login, msg string) (string, string) {
		c := session(t, local, login)
		if line, err := c.Mail(login); err != nil {
			return "MAIL", line
		}
		if line, err := c.Rcpt("someone@dest.test"); err != nil {
			return "RCPT", line
		}
		line, err := c.Data([]byte(msg))
		if err != nil {
			return "DATA", line
		}
		return "", line
	}
	for i := range 2 {
		if stage, line := send("127.0.0.111", "spam@example.cz", gtube("spam@example.cz")); stage != "" {
			t.Fatalf("spam %d, within the allowance: %s %q", i+1, stage, line)
		}
	}
	stage, line := send("127.0.0.111", "spam@example.cz", gtube("spam@example.cz"))
	expectFilter(t, stage, line, "DATA", "550 5.7.1 {id} spam detected")
	const violation = "550 5.7.1 {id} policy violation"
	stage, line = send("127.0.0.112", "spam@example.cz", "Subject: clean\r\n\r\nHello.\r\n")
	expect(t, stage, line, "MAIL", violation, "R15")
	stage, line = send("127.0.0.111", "other@example.cz", "Subject: clean\r\n\r\nHello.\r\n")
	expect(t, stage, line, "MAIL", violation, "R15")
	blocks := relayguard(t, "blocks")
	if !strings.Contains(blocks, "spam@example.cz") || !strings.Contains(blocks, "127.0.0.111") || !strings.Contains(blocks, "spam allowance") {
		t.Errorf("relayguard blocks:\n%s", blocks)
	}

	// clean sends a clean message and asserts the reply to its end of
	// DATA, and that it reaches the next hop.
	clean := func(local, login string) {
		t.Helper()
		subject := fmt.Sprintf("clean %d", serial.Add(1))
		stage, line := send(local, login, "From: <"+login+">\r\nTo: <someone@dest.test>\r\nSubject: "+subject+"\r\n\r\nHello.\r\n")
		if !queued.MatchString(line) || stage != "" {
			t.Fatalf("%s from %s after the unblock: %s %q, want %q", login, local, stage, line, queued)
		}
		if _, err := env.lab.Sink.WaitFor(func(m harness.Msg) bool { return bytes.Contains(m.Data, []byte("Subject: "+subject+"\r\n")) }, 30*time.Second); err != nil {
			t.Fatalf("accepted (%q) but not relayed: %v", line, err)
		}
	}
	unblocked := func(subject, rule string) {
		t.Helper()
		out := relayguard(t, "unblock", subject)
		want := regexp.MustCompile(`^` + regexp.QuoteMeta(subject+" unblocked:\n  "+rule+"  spam allowance of 2 per 24h0m0s spent  would have ended ") + `.+ \(in 2[34]h[0-9]*m?\)\n$`)
		if !want.MatchString(out) {
			t.Errorf("relayguard unblock %s:\n%s\nwant %s", subject, out, want)
		}
	}

	// The account: it sends again from another address; the address
	// stays blocked for everyone.
	unblocked("spam@example.cz", "R15")
	clean("127.0.0.112", "spam@example.cz")
	stage, line = send("127.0.0.111", "spam@example.cz", "Subject: clean\r\n\r\nHello.\r\n")
	expect(t, stage, line, "MAIL", violation, "R15")
	// The address: then the account sends from it too.
	unblocked("127.0.0.111", "R15")
	clean("127.0.0.111", "other@example.cz")
	clean("127.0.0.111", "spam@example.cz")
	if blocks := relayguard(t, "blocks"); strings.Contains(blocks, "spam@example.cz") || strings.Contains(blocks, "127.0.0.111") {
		t.Errorf("relayguard blocks after the unblocks:\n%s", blocks)
	}
}

// queued is Postfix's reply to an accepted message.
var queued = regexp.MustCompile(`^250 2\.0\.0 Ok: queued as [0-9A-Za-z]+$`)

// expectFilter asserts a refusal by the content filter, whose id is in its log.
func expectFilter(t *testing.T, stage, line, wantStage, want string) {
	t.Helper()
	id, ok := matchReply(line, want)
	if stage != wantStage || !ok {
		t.Fatalf("got %s %q, want %s %q", stage, line, wantStage, want)
	}
	if !strings.Contains(readFile(env.filter.log), "id="+id) {
		t.Errorf("the filter's log has no line with id %s", id)
	}
}
