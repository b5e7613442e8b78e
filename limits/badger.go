package limits

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Defaults for the zero values of BadgerConfig's fields.
const (
	DefaultFlushInterval = time.Second
	DefaultGCInterval    = 10 * time.Minute
)

// gcDiscardRatio is the share of stale data that makes value-log GC
// rewrite a file.
const gcDiscardRatio = 0.5

// BadgerConfig configures OpenBadger.
type BadgerConfig struct {
	// Dir is the database directory, created if missing. Only one process
	// may open it at a time.
	Dir string
	// FlushInterval is how often the changes are written to the database:
	// what a crash can lose. Zero means DefaultFlushInterval.
	FlushInterval time.Duration
	// GCInterval is how often the value log is garbage-collected. Zero
	// means DefaultGCInterval.
	GCInterval time.Duration
	// Log receives Badger's messages and flush errors. Nil means
	// slog.Default().
	Log *slog.Logger
	// Now is the clock that decides, on open and on the timers, what has
	// expired. Nil means time.Now.
	Now func() time.Time
}

// Badger is the embedded Store: a Memory that serves every operation, saved
// to a Badger database in one batch every FlushInterval and on Close, and
// loaded from it on open. It is safe for concurrent use. Close it on
// SIGTERM, after the servers that use it have stopped: Close writes the
// last changes.
type Badger struct {
	mem *Memory
	db  *badger.DB
	log *slog.Logger
	now func() time.Time

	flushMu   sync.Mutex // one flush at a time, so that a later state is written last
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// BadgerOptions returns the Badger options of a store in dir, set for a
// small daemon whose database holds a few hundred thousand small entries,
// rewritten in a batch every second and read only on open (README.md gives
// the memory they use and how they were chosen). Under a steady stream of
// rewrites Badger's memory is mostly its table builders (an allocation of
// twice the table size each, kept in a pool for reuse, one per table being
// built), its memtables and the garbage of each table written, all on the
// Go heap, and the tables it keeps mapped:
//
//   - two memtables of 2 MiB (the default is five of 64 MiB): a memtable is
//     an arena allocated whole, and holds a flush of some 15 000 changed
//     keys;
//   - every table 2 MiB (no growth from level to level), so that a
//     builder's first allocation holds any table, a flushed memtable
//     included, without growing; level 1 of 8 MiB; level 0 compacted from 6
//     tables, writes stalled at 12: every compaction of level 0 rewrites
//     the whole of level 1 (the keys are spread evenly), so fewer, larger
//     ones cost less; the minimum of 2 compactors;
//   - values up to 64 KiB kept in the LSM tree (a key's counters take tens
//     of bytes), so the value log holds nothing but is still collected;
//     value-log files of 16 MiB (the default is 1 GiB);
//   - no block cache and no compression: entries are read once, on open,
//     so there is nothing to cache, and small values compress poorly
//     (Badger needs a block cache only for compressed or encrypted tables);
//     an index cache of 4 MiB instead of every table index in memory;
//   - no metrics (expvar), no conflict detection (writes are blind
//     batches), one goroutine for Badger's streams;
//   - Badger's log through slog: errors and warnings as such, its
//     informational messages (table counts, replays) at Debug.
func BadgerOptions(dir string, log *slog.Logger) badger.Options {
	o := badger.DefaultOptions(dir)
	o.TableSizeMultiplier = 1 // no With method
	return o.
		WithLogger(slogLogger{log.With("component", "badger")}).
		WithMemTableSize(2 << 20).
		WithNumMemtables(2).
		WithBaseTableSize(2 << 20).
		WithBaseLevelSize(8 << 20).
		WithNumLevelZeroTables(6).
		WithNumLevelZeroTablesStall(12).
		WithNumCompactors(2).
		WithValueThreshold(64 << 10).
		WithValueLogFileSize(16 << 20).
		WithBlockCacheSize(0).
		WithCompression(options.None).
		WithIndexCacheSize(4 << 20).
		WithMetricsEnabled(false).
		WithDetectConflicts(false).
		WithNumGoroutines(1)
}

// OpenBadger opens (or creates) the store in cfg.Dir, loads the counters and
// blocks that have not expired, and starts the flush and GC timers.
func OpenBadger(cfg BadgerConfig) (*Badger, error) {
	if cfg.Dir == "" {
		return nil, errors.New("limits: no database directory")
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.GCInterval == 0 {
		cfg.GCInterval = DefaultGCInterval
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := replayLargerLogs(cfg.Dir, cfg.Log); err != nil {
		return nil, fmt.Errorf("limits: open %s: %w", cfg.Dir, err)
	}
	db, err := badger.Open(BadgerOptions(cfg.Dir, cfg.Log))
	if err != nil {
		return nil, fmt.Errorf("limits: open %s: %w", cfg.Dir, err)
	}
	b := &Badger{
		mem:  newMemory(true),
		db:   db,
		log:  cfg.Log,
		now:  cfg.Now,
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	if err := b.checkFormat(); err != nil {
		db.Close()
		return nil, fmt.Errorf("limits: %s: %w", cfg.Dir, err)
	}
	if err := b.load(); err != nil {
		db.Close()
		return nil, fmt.Errorf("limits: load %s: %w", cfg.Dir, err)
	}
	go b.run(cfg.FlushInterval, cfg.GCInterval)
	return b, nil
}

// replayLargerLogs makes a database whose write-ahead logs were written
// with larger memtables than BadgerOptions sets (by an earlier version that
// crashed or was killed: a clean Close leaves none) readable with them.
// Badger replays each log into a memtable of the configured size on open,
// and exits the process when one does not fit; a log file is twice the size
// of the memtable that wrote it. So the database is opened once with
// memtables of the largest log's, which replays them, and closed, which
// writes them into tables and removes them.
func replayLargerLogs(dir string, log *slog.Logger) error {
	logs, err := filepath.Glob(filepath.Join(dir, "*.mem"))
	if err != nil {
		return err
	}
	opts := BadgerOptions(dir, log)
	var largest int64
	for _, name := range logs {
		fi, err := os.Stat(name)
		if err != nil {
			return err
		}
		largest = max(largest, fi.Size())
	}
	if largest <= 2*opts.MemTableSize {
		return nil
	}
	log.Warn("limits: replaying write-ahead logs of memtables larger than this version's, left by a crash",
		"dir", dir, "memtable_size", largest/2)
	db, err := badger.Open(opts.WithMemTableSize(largest / 2))
	if err != nil {
		return err
	}
	return db.Close()
}

// checkFormat writes the layout's version into a new database and refuses a
// database of another version.
func (b *Badger) checkFormat() error {
	return b.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(formatKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return txn.Set(formatKey, []byte(formatVersion))
		}
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		if string(v) != formatVersion {
			return fmt.Errorf("database format %q, want %q", v, formatVersion)
		}
		return nil
	})
}

// load puts the database's counters and blocks that have not expired into
// memory. Entries it cannot decode are logged and skipped.
func (b *Badger) load() error {
	now := b.now()
	var counters, blocks, skipped int
	err := b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if len(k) > 0 && k[0] == metaTag {
				continue
			}
			err := item.Value(func(v []byte) error {
				if len(k) > 0 && k[0] == blockTag {
					bl, err := decodeBlock(k, v)
					if err == nil && bl.Until.After(now) {
						b.mem.shards[b.mem.shardOf(bl.Key)].blocks[bl.Key] = bl
						blocks++
					}
					return err
				}
				key, cs, err := decodeCounters(k, v)
				if err != nil {
					return err
				}
				cs = cs.drop(func(c counter) bool { return !c.expiresAt().Add(sweepGrace).After(now) })
				if len(cs) > 0 {
					b.mem.shards[b.mem.shardOf(key)].counters[key] = cs
					counters += cs.len()
				}
				return nil
			})
			if errors.Is(err, errCorrupt) {
				b.log.Warn("limits: skipping an entry that cannot be decoded", "key", fmt.Sprintf("%q", k))
				skipped++
				continue
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	b.log.Info("limits: store loaded", "counters", counters, "blocks", blocks, "skipped", skipped)
	return err
}

// run flushes, sweeps and collects garbage on its timers until Close.
func (b *Badger) run(flushEvery, gcEvery time.Duration) {
	defer close(b.done)
	flush := time.NewTicker(flushEvery)
	defer flush.Stop()
	gc := time.NewTicker(gcEvery)
	defer gc.Stop()
	var swept time.Time
	for {
		select {
		case <-b.stop:
			return
		case <-flush.C:
			if err := b.flush(); err != nil {
				b.log.Error("limits: writing the counters failed, will retry", "error", err.Error())
			}
			if now := b.now(); now.Sub(swept) >= sweepEvery {
				b.mem.Sweep(now)
				swept = now
			}
		case <-gc.C:
			b.gc()
		}
	}
}

// gc rewrites value-log files while one is at least half stale.
func (b *Badger) gc() {
	for {
		err := b.db.RunValueLogGC(gcDiscardRatio)
		if err == nil {
			continue
		}
		if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
			b.log.Error("limits: value-log GC failed", "error", err.Error())
		}
		return
	}
}

// pending is what one shard had changed when flush took it, kept until the
// write succeeds so that a failed write is retried.
type pending struct {
	shard  *shard
	keys   []string
	blocks []string
}

// flush writes every change since the last flush in one batch and syncs
// it to disk: per changed key, one entry with all its counters, or a
// deletion if it has none left. Each shard's changes are taken and encoded
// under its lock; the writing happens outside, so requests wait only for
// the encoding.
func (b *Badger) flush() error {
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	wb := b.db.NewWriteBatch()
	defer wb.Cancel()
	var taken []pending
	var werr error
	for i := range b.mem.shards {
		s := &b.mem.shards[i]
		s.mu.Lock()
		if len(s.dirty) == 0 && len(s.dirtyBlocks) == 0 {
			s.mu.Unlock()
			continue
		}
		p := pending{shard: s}
		entries := make([]badger.Entry, 0, len(s.dirty)+len(s.dirtyBlocks))
		var dels [][]byte
		for key := range s.dirty {
			p.keys = append(p.keys, key)
			cs, ok := s.counters[key]
			if !ok {
				dels = append(dels, counterKey(key))
				continue
			}
			kv, k := appendCounters(nil, key, cs)
			var expires time.Time
			for pos := 0; pos < len(cs); {
				var c counter
				c, pos = cs.at(pos)
				if e := c.expiresAt(); e.After(expires) {
					expires = e
				}
			}
			entries = append(entries, badger.Entry{Key: kv[:k:k], Value: kv[k:], ExpiresAt: ttl(expires.Add(sweepGrace))})
		}
		for key := range s.dirtyBlocks {
			p.blocks = append(p.blocks, key)
			if bl, ok := s.blocks[key]; ok {
				entries = append(entries, badger.Entry{Key: blockKey(key), Value: encodeBlock(bl), ExpiresAt: ttl(bl.Until)})
			} else {
				dels = append(dels, blockKey(key))
			}
		}
		clear(s.dirty)
		clear(s.dirtyBlocks)
		s.mu.Unlock()
		taken = append(taken, p)
		for _, k := range dels {
			if werr == nil {
				werr = wb.Delete(k)
			}
		}
		for j := range entries {
			if werr == nil {
				werr = wb.SetEntry(&entries[j])
			}
		}
	}
	if len(taken) == 0 {
		return nil
	}
	if werr == nil {
		werr = wb.Flush()
	}
	if werr == nil {
		werr = b.db.Sync()
	}
	if werr != nil {
		b.retry(taken)
	}
	return werr
}

// retry marks the changes of a failed flush dirty again.
func (b *Badger) retry(taken []pending) {
	for _, p := range taken {
		s := p.shard
		s.mu.Lock()
		for _, key := range p.keys {
			s.dirty[key] = struct{}{}
		}
		for _, key := range p.blocks {
			s.dirtyBlocks[key] = struct{}{}
		}
		s.mu.Unlock()
	}
}

// ttl returns Badger's expiry, in whole Unix seconds, for an entry that may
// be forgotten from t on.
func ttl(t time.Time) uint64 {
	return uint64(t.Unix()) + 1
}

// Close stops the timers, writes the last changes, and closes the database.
// Operations under way finish first; later ones return ErrClosed.
func (b *Badger) Close() error {
	b.closeOnce.Do(func() {
		b.mem.Close()
		close(b.stop)
		<-b.done
		b.closeErr = errors.Join(b.flush(), b.db.Close())
	})
	return b.closeErr
}

// CheckAdd implements Store.
func (b *Badger) CheckAdd(ctx context.Context, now time.Time, n int64, limits ...KeyLimit) (Decision, error) {
	return b.mem.CheckAdd(ctx, now, n, limits...)
}

// Check implements Store.
func (b *Badger) Check(ctx context.Context, now time.Time, n int64, limits ...KeyLimit) (Decision, error) {
	return b.mem.Check(ctx, now, n, limits...)
}

// Get implements Store.
func (b *Badger) Get(ctx context.Context, now time.Time, key string, l Limit) (int64, time.Time, error) {
	return b.mem.Get(ctx, now, key, l)
}

// Reset implements Store.
func (b *Badger) Reset(ctx context.Context, key string) error { return b.mem.Reset(ctx, key) }

// List implements Store.
func (b *Badger) List(ctx context.Context, now time.Time, prefix string) ([]Usage, error) {
	return b.mem.List(ctx, now, prefix)
}

// Block implements Store.
func (b *Badger) Block(ctx context.Context, key string, until time.Time, reason string, count int64) error {
	return b.mem.Block(ctx, key, until, reason, count)
}

// Unblock implements Store.
func (b *Badger) Unblock(ctx context.Context, key string) (bool, error) {
	return b.mem.Unblock(ctx, key)
}

// Blocked implements Store.
func (b *Badger) Blocked(ctx context.Context, key string, now time.Time) (Block, bool, error) {
	return b.mem.Blocked(ctx, key, now)
}

// ListBlocks implements Store.
func (b *Badger) ListBlocks(ctx context.Context, now time.Time, prefix string) ([]Block, error) {
	return b.mem.ListBlocks(ctx, now, prefix)
}

// slogLogger passes Badger's messages to slog.
type slogLogger struct{ log *slog.Logger }

func (l slogLogger) Errorf(f string, a ...any) { l.log.Error(msg(f, a)) }

func (l slogLogger) Warningf(f string, a ...any) { l.log.Warn(msg(f, a)) }

func (l slogLogger) Infof(f string, a ...any) { l.debug(f, a) }

func (l slogLogger) Debugf(f string, a ...any) { l.debug(f, a) }

func (l slogLogger) debug(f string, a []any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug(msg(f, a))
	}
}

func msg(f string, a []any) string { return strings.TrimSpace(fmt.Sprintf(f, a...)) }
