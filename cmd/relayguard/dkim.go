package main

// relayguard dkim keygen makes a domain's DKIM signing key (R19) and prints
// what the operator publishes and configures. It talks to no daemon; it needs
// write access to the key's directory only, and leaves the key readable by
// the user that runs it alone.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"relayguard/dkim"
	"relayguard/mailaddr"
)

// dkimKeyDir is where keygen writes keys unless --out says otherwise.
const dkimKeyDir = "/etc/relayguard/dkim"

func dkimCommand() *cli.Command {
	return &cli.Command{
		Name:  "dkim",
		Usage: "manage the keys that the content filter signs mail with (R19)",
		Subcommands: []*cli.Command{{
			Name:      "keygen",
			Usage:     "make a domain's signing key; print its DNS record and its directory lines",
			ArgsUsage: "DOMAIN --selector SELECTOR",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "selector", Usage: "the `SELECTOR` under which the key is published, SELECTOR._domainkey.DOMAIN: required"},
				&cli.StringFlag{Name: "type", Value: "rsa", Usage: "key `TYPE`: rsa or ed25519 (receivers that do not know Ed25519 see such mail as unsigned)"},
				&cli.IntFlag{Name: "bits", Value: dkim.MinRSABits, Usage: fmt.Sprintf("RSA key size in `BITS`, %d to %d", dkim.MinRSABits, dkim.MaxRSABits)},
				&cli.StringFlag{Name: "out", Usage: "the key `FILE` to write (default: " + dkimKeyDir + "/DOMAIN.SELECTOR.key)"},
				&cli.BoolFlag{Name: "force", Usage: "replace an existing key file"},
			},
			Action: dkimKeygen,
		}},
	}
}

func dkimKeygen(c *cli.Context) error {
	arg, err := supportCLI{}.operand(c)
	if err != nil {
		return err
	}
	domain, err := mailaddr.Domain(arg)
	if err != nil {
		return err
	}
	selector := c.String("selector")
	if selector == "" {
		return errors.New("--selector is required: the name under which the key is published, such as s2026")
	}
	if err := dkim.CheckSelector(selector); err != nil {
		return err
	}
	kind, bits := c.String("type"), c.Int("bits")
	if kind == "ed25519" {
		if c.IsSet("bits") {
			return errors.New("--bits is for RSA keys: Ed25519 keys have one size")
		}
		bits = 0
	}
	out := c.String("out")
	if out == "" {
		out = filepath.Join(dkimKeyDir, domain+"."+selector+".key")
	}
	if out, err = filepath.Abs(out); err != nil {
		return err
	}
	signer, pemKey, err := dkim.Generate(kind, bits)
	if err != nil {
		return err
	}
	if err := writeKeyFile(out, pemKey, c.Bool("force")); err != nil {
		return err
	}
	key, err := dkim.LoadKey(domain, selector, out)
	if err != nil {
		return err
	}
	what := "an Ed25519 key"
	if key.Algorithm == dkim.RSASHA256 {
		what = fmt.Sprintf("a %d-bit RSA key", bits)
	}
	name := domain
	if arg != domain {
		name = fmt.Sprintf("%s (%s)", arg, domain)
	}
	fmt.Fprintf(c.App.Writer, `Wrote %s for %s to %s, mode 0600.
Give it to the user the content filter runs as (chown); no one else may read it.

1. Publish this record in the DNS zone of %s, and wait until it resolves
   (dig +short TXT %s._domainkey.%s):

%s

2. Then add these lines to the [[domain]] entry of %s in the directory file,
   and reload the content filter (systemctl reload relayguard-contentfilter,
   or SIGHUP):

dkim_selector = %q
dkim_key = %q
`, what, name, out, name, selector, domain, dkim.TXTRecord(selector, domain, signer.Public()), name, selector, out)
	return nil
}

// writeKeyFile writes a private key with mode 0600. It refuses to replace a
// file unless force; then it replaces it at once (rename), so that a reload
// reads the old key or the new one, never a part.
func writeKeyFile(path string, data []byte, force bool) error {
	if !force {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s exists; pass --force to replace it (mail signed with the old key fails DKIM once its DNS record is replaced)", path)
		}
		if err != nil {
			return err
		}
		return finishKeyFile(f, path, data)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".keygen-*")
	if err != nil {
		return err
	}
	if err := finishKeyFile(f, f.Name(), data); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
}

// finishKeyFile sets f's mode, whatever the umask, writes data to it and
// closes it; on failure it removes the file at path.
func finishKeyFile(f *os.File, path string, data []byte) error {
	err := f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}
