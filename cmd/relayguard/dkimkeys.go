package main

// The content filter's DKIM keys (R19): read from the domain directory's
// dkim_selector and dkim_key at start, and again on SIGHUP. A reload builds
// a whole new signer and swaps it in atomically; a reload with any error
// keeps the previous signer and logs each error with its file:line.

import (
	"crypto"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync/atomic"

	"relayguard/config"
	"relayguard/contentfilter"
	"relayguard/dkim"
	"relayguard/mailaddr"
)

// dkimKeys is one load of the keys: the signer, and the keys it signs with.
type dkimKeys struct {
	signer *dkim.Signer         // nil when no domain has a key
	keys   map[string]*dkim.Key // by ASCII domain
}

// domains returns the domains that have a key, sorted.
func (k *dkimKeys) domains() []string {
	return slices.Sorted(maps.Keys(k.keys))
}

// loadDKIMKeys reads the directory file at path and every key file it
// names, and makes a signer of them. It returns every problem: those of
// the directory with their file:line, and those of each key at the line
// of its dkim_key.
func loadDKIMKeys(path string) (*dkimKeys, []error) {
	dir, err := config.LoadDirectory(path)
	if err != nil {
		var es config.Errors
		if !errors.As(err, &es) {
			return nil, []error{err}
		}
		errs := make([]error, len(es))
		for i, e := range es {
			errs[i] = e
		}
		return nil, errs
	}
	return dkimKeysOf(dir, path)
}

// dkimKeysOf reads the key files that dir, read from path, names, and
// makes a signer of them, with every problem at the line of its dkim_key.
func dkimKeysOf(dir *config.Directory, path string) (*dkimKeys, []error) {
	groups := dir.Groups()
	slices.SortFunc(groups, func(a, b *config.Group) int { return a.DKIMLine - b.DKIMLine })
	k := &dkimKeys{keys: map[string]*dkim.Key{}}
	var errs []error
	for _, g := range groups {
		if g.DKIMKey == "" {
			continue
		}
		key, err := dkim.LoadKey(g.Name, g.DKIMSelector, g.DKIMKey)
		if err != nil {
			errs = append(errs, config.Error{File: path, Line: g.DKIMLine, Msg: fmt.Sprintf("domain %s: %v", g.Name, err)})
			continue
		}
		k.keys[key.Domain] = key
	}
	if len(errs) > 0 {
		return nil, errs
	}
	if len(k.keys) > 0 {
		k.signer = dkim.NewSigner(slices.Collect(maps.Values(k.keys)))
		k.signer.SameOwner = dir.SameOwner
	}
	return k, nil
}

// dkimSigning signs the filter's messages with the keys in force, which
// reload replaces.
type dkimSigning struct {
	path string // the directory file
	log  *slog.Logger
	cur  atomic.Pointer[dkimKeys]
}

// newDKIMSigning loads the keys of the directory at path, and fails with
// every problem if any.
func newDKIMSigning(path string, log *slog.Logger) (*dkimSigning, error) {
	k, errs := loadDKIMKeys(path)
	if errs != nil {
		return nil, errors.Join(errs...)
	}
	d := &dkimSigning{path: path, log: log}
	d.cur.Store(k)
	for _, dom := range k.domains() {
		key := k.keys[dom]
		log.Info("DKIM key loaded", "domain", dom, "selector", key.Selector, "algorithm", key.Algorithm, "key", key.Path)
	}
	if len(k.keys) == 0 {
		log.Info("DKIM: no domain has a key in the directory, nothing is signed")
	}
	return d, nil
}

// sign is the filter's Sign: it writes the message signed with the key of
// its sender's domain, or unchanged. The keys are taken once, when the
// signing of the message begins, so that a message is signed whole with
// the keys of before a reload or whole with those after it.
func (d *dkimSigning) sign(w io.Writer, r io.Reader, m *contentfilter.Message) error {
	k := d.cur.Load()
	if k.signer == nil {
		_, err := io.Copy(w, r)
		return err
	}
	domain := ""
	if _, dom, err := mailaddr.Split(m.Sender); err == nil {
		domain = dom
	}
	_, err := k.signer.Sign(w, r, domain)
	if errors.Is(err, dkim.ErrHeaderTooLarge) {
		return &contentfilter.Refusal{Reply: headerTooLarge}
	}
	return err
}

// headerTooLarge refuses a message whose header section the signer does not
// hold (dkim.DefaultMaxHeaderBytes): trying again would not make it smaller.
const headerTooLarge = "552 5.3.4 Error: message header too large"

// reload reads the directory and the key files again. With no error, it
// puts the new keys in force for the messages signed from now on, logs
// each key added, removed or replaced and the domains signed, and returns
// true. With any error it keeps the keys in force, logs each error, and
// returns false.
func (d *dkimSigning) reload() bool {
	k, errs := loadDKIMKeys(d.path)
	if errs != nil {
		for _, err := range errs {
			d.log.Error("DKIM key reload failed, keeping the previous keys", "directory", d.path, "error", err.Error())
		}
		return false
	}
	old := d.cur.Swap(k)
	var added, removed, replaced []string
	for _, dom := range k.domains() {
		key, was := k.keys[dom], old.keys[dom]
		switch {
		case was == nil:
			added = append(added, dom)
			d.log.Info("DKIM key added", "domain", dom, "selector", key.Selector, "algorithm", key.Algorithm, "key", key.Path)
		case !sameKey(was, key):
			replaced = append(replaced, dom)
			d.log.Info("DKIM key replaced", "domain", dom, "selector", key.Selector, "algorithm", key.Algorithm, "key", key.Path,
				"old_selector", was.Selector, "old_key", was.Path)
		}
	}
	for _, dom := range old.domains() {
		if k.keys[dom] == nil {
			removed = append(removed, dom)
			d.log.Info("DKIM key removed: its mail is no longer signed", "domain", dom, "selector", old.keys[dom].Selector)
		}
	}
	d.log.Info("DKIM keys reloaded", "directory", d.path, "signed", strings.Join(k.domains(), " "),
		"added", strings.Join(added, " "), "removed", strings.Join(removed, " "), "replaced", strings.Join(replaced, " "))
	return true
}

// sameKey reports whether two keys sign alike: same selector, algorithm and
// key pair (a key file rewritten in place holds a new pair).
func sameKey(a, b *dkim.Key) bool {
	pa, ok := a.Signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	return a.Selector == b.Selector && a.Algorithm == b.Algorithm && ok && pa.Equal(b.Signer.Public())
}
