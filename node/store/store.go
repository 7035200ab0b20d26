package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/cagnotte/cagnotte/crdt"
)

// FormatVersion is the on-disk format this package writes. It reads format
// 1 (a gob snapshot of the whole state) by rebuilding the state from the
// ops once. Format 3 writes the meta and author records in binary where
// format 2 wrote gob: this package reads both, and marks a format 2 store
// 3 when it opens it, so that an older build refuses it with
// ErrNewerFormat ("upgrade cagnotte") rather than failing on a record it
// cannot decode.
const FormatVersion = 3

// MaxIdempotencyKey bounds the length of an idempotency key, in bytes.
const MaxIdempotencyKey = 256

// Errors returned by the store. Test them with errors.Is.
var (
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("store: closed")
	// ErrNewerFormat is returned by Open for a directory written by a newer
	// version of Cagnotte.
	ErrNewerFormat = errors.New("store: written by a newer version of cagnotte")
	// ErrUnknownFormat is returned by Open for a non-empty directory that is
	// not a Cagnotte store.
	ErrUnknownFormat = errors.New("store: not a cagnotte store")
	// ErrBatchTooBig is returned by Commit for a batch that does not fit in
	// one Badger transaction; nothing of it was written.
	ErrBatchTooBig = errors.New("store: batch too big for one transaction")
	// ErrFailed is returned by Commit after a write failed: the store must
	// be closed and reopened.
	ErrFailed = errors.New("store: an earlier write failed")
	// ErrCorrupt is returned when stored data does not decode or does not
	// match its key.
	ErrCorrupt = errors.New("store: corrupt data")
	// ErrWrongFederation is returned by Load when the snapshot on disk
	// belongs to another federation.
	ErrWrongFederation = errors.New("store: snapshot belongs to another federation")
)

// Config configures a Store.
type Config struct {
	// Dir is the Badger directory. Required; created if missing.
	Dir string
	// Logger receives the store's logs and Badger's warnings and errors.
	// Default slog.Default().
	Logger *slog.Logger
	// NoSync skips the fsync of each commit: Commit returns before the batch
	// is durable and a crash of the machine may lose acknowledged batches.
	// Default false (every Commit is fsync'd). Only benchmarks set it.
	NoSync bool
	// MinFreeBytes is the free space on the store's disk below which
	// Commit refuses to write, with ErrDiskFull (see there why Badger needs
	// headroom). Default 0 means DefaultMinFreeBytes (128 MiB); negative
	// turns the check off.
	MinFreeBytes int64
	// MappedBudget bounds the resident pages of Badger's memory-mapped
	// tables (see DefaultMappedBudget): past it, the store asks the kernel
	// to reclaim them. Default 0 means DefaultMappedBudget (64 MiB);
	// negative turns it off.
	MappedBudget int64
	// EventCache is how many agenda events the store keeps decoded in
	// memory (the ones read last). Default 0 means DefaultEventCache
	// (1,024).
	EventCache int
	// IdempotencyTTL is how long the API's answers stay stored under their
	// idempotency keys: a retry within it gets the first answer back, a
	// key reused after it is a new request. Badger drops the expired
	// answers at compaction, so a season of API payments does not keep
	// one answer (about 375 bytes, most of it the card's stamp) per
	// payment forever. Default 0 means DefaultIdempotencyTTL (7 days);
	// negative keeps them forever.
	IdempotencyTTL time.Duration
	// TableSize is the size of the tables Badger builds, one size at every
	// level (see badgerOptions for what it costs in memory). Default 0
	// means DefaultTableSize (2 MiB); a node opening a new store to join a
	// federation asks for NewStoreTableSize. Stores hold tables of mixed
	// sizes without harm: the size only bounds the tables built from now.
	TableSize int64
}

// DefaultTableSize is the table size of a store that serves (Config.TableSize
// zero): 2 MiB. Smaller tables mean more, smaller compactions, and a node
// under payments pays for them in its tail latency.
const DefaultTableSize = 2 << 20

// NewStoreTableSize is the table size for a store that starts empty to
// catch up with a federation: 1 MiB. A catch-up compacts all the time with
// 20-30 table builders at once, each holding about six times the table
// size, so halving the tables keeps the new venue's heap in its limits.
const NewStoreTableSize = 1 << 20

// Exists reports whether dir holds a store: Badger's manifest, written
// when a store is first opened.
func Exists(dir string) (bool, error) {
	_, err := os.Stat(filepath.Join(dir, badger.ManifestFilename))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("store: %w", err)
}

// tableSize returns the table size in force.
func (c Config) tableSize() int64 {
	if c.TableSize > 0 {
		return c.TableSize
	}
	return DefaultTableSize
}

// DefaultIdempotencyTTL is how long an API answer stays stored under its
// idempotency key by default: far longer than any till retries a request
// (seconds to minutes, hours for a till that lost its network), well
// short of a season.
const DefaultIdempotencyTTL = 7 * 24 * time.Hour

// idempotencyTTL returns the configured retention (0: forever).
func (c Config) idempotencyTTL() time.Duration {
	switch {
	case c.IdempotencyTTL == 0:
		return DefaultIdempotencyTTL
	case c.IdempotencyTTL < 0:
		return 0
	}
	return c.IdempotencyTTL
}

// Store is one node's Badger database. Its methods are safe for concurrent
// use; see [Store.Commit] for what the caller must order.
type Store struct {
	cfg Config
	log *slog.Logger
	db  *badger.DB

	life     sync.Mutex // guards closed
	closed   bool
	inflight sync.WaitGroup // calls in progress, waited for by Close

	// mu orders commits: counters are assigned and transactions handed to
	// Badger in one order, so the "n" key's latest version is the total.
	mu        sync.Mutex
	failed    error
	opsStored uint64 // ops committed under "o" (including the ones in flight)
	loadedOps uint64 // ops read by the last Load
	format1   bool   // the store was written by format 1: Load migrates it

	index  *DiskIndex
	events *DiskEvents // the agenda, under the index's generation

	dropKick chan uint32
	gcStop   chan struct{}
	gcDone   chan struct{}
}

var _ crdt.OpReader = (*Store)(nil)

// Open opens (or creates) the store in cfg.Dir. It fails with
// ErrNewerFormat for a store written by a newer format and ErrUnknownFormat
// for a directory holding something else.
func Open(cfg Config) (*Store, error) { return openWith(cfg, badgerOptions) }

// openWith is Open with the Badger options options gives (OpenBulk tunes
// them for a bulk load).
func openWith(cfg Config, options func(Config, *slog.Logger) badger.Options) (*Store, error) {
	if cfg.Dir == "" {
		return nil, errors.New("store: Config.Dir is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("component", "store")
	if err := removeEmptyLogs(cfg.Dir, log); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", cfg.Dir, err)
	}
	db, err := badger.Open(options(cfg, log))
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", cfg.Dir, err)
	}
	s := &Store{
		cfg:      cfg,
		log:      log,
		db:       db,
		dropKick: make(chan uint32, 1),
		gcStop:   make(chan struct{}),
		gcDone:   make(chan struct{}),
	}
	s.index = &DiskIndex{s: s, pend: newOverlay(false)}
	s.events = newDiskEvents(s, cfg.EventCache)
	if err := s.init(); err != nil {
		if cerr := db.Close(); cerr != nil {
			log.Warn("close after failed open", "err", cerr)
		}
		return nil, err
	}
	go s.gcLoop()
	log.Debug("store opened", "dir", cfg.Dir, "ops", s.opsStored)
	return s, nil
}

// removeEmptyLogs deletes zero-byte memtable (.mem) and value log (.vlog)
// files. Badger creates such a file, then writes its header; a crash in
// between leaves an empty file that Badger v4.9 then refuses to open
// ("Create a new file"), so a node killed at that moment would not restart.
// An empty file holds no entry, committed or not, so removing it loses
// nothing.
func removeEmptyLogs(dir string, log *slog.Logger) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !(strings.HasSuffix(name, ".mem") || strings.HasSuffix(name, ".vlog")) {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		if info.Size() == 0 {
			log.Warn("removing an empty log file left by a crash", "file", name)
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return err
			}
		}
	}
	return nil
}

// badgerOptions tunes Badger for a modest machine (a 1 GB Raspberry Pi):
// small memtables, tables and caches, one version per key, Snappy blocks,
// everything small in the LSM tree (no value log in use).
func badgerOptions(cfg Config, log *slog.Logger) badger.Options {
	opts := badger.DefaultOptions(cfg.Dir)
	opts.TableSizeMultiplier = 1 // no With method in v4
	return opts.
		WithLogger(badgerLogger{log: log}).
		WithSyncWrites(!cfg.NoSync).
		WithNumVersionsToKeep(1).
		// One memtable filling while at most two wait for their flush
		// (Badger queues NumMemtables of them): each is a 16 MiB arena
		// on the heap and a mapped write-ahead log of twice that. 16 MiB
		// keeps Badger's largest transaction (15 % of it) above a node's
		// biggest batch.
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(3).
		WithNumLevelZeroTablesStall(8).
		// A compaction builds its output tables
		// in memory (each builder reserves twice the table size, several
		// run at once): small tables of one size at every level bound
		// that, where the default doubles them at each level (a 10 M-op
		// store reached 8 MiB tables and 100+ MiB of builders).
		// 2 MiB, not 4: a compaction runs up to 8 builders and more, so
		// 4 MiB tables took 64+ MiB of heap per compaction, which pushed
		// the node past its soft memory limit whenever a memtable flush
		// cascaded into the levels: the collector then ran back to back
		// (288 cycles in a 70 s payment run at 1 M ops, against 23 with
		// 2 MiB tables) and payments stalled behind it (p99 209-647 ms
		// against 58 ms; docs/benchmarks.md, "Payment tail at 200/s").
		// The size is Config.TableSize's: 2 MiB for a node that serves,
		// 1 MiB for a new store catching up. A table is full when its
		// compressed blocks reach the size, and its builder holds them
		// uncompressed beside their compressed copies, more than the
		// twice-the-size its allocator starts with, which then doubles:
		// 12 MiB per builder for 2 MiB tables, 6 for 1 MiB. A new venue
		// catching up at 10 M ops ran 20-30 builders at once: its live
		// heap peaked at 406-454 MB with 2 MiB tables, 350-394 with 1 MiB
		// (issue 11, sixth pass).
		WithBaseTableSize(cfg.tableSize()).
		// Four compactors, Badger's default (the first keeps level 0
		// moving while the others work below). Two until 921fa6a, which
		// dropped the setting by mistake: the two hours of issue 11's
		// seventh pass ran with four, and the second met every figure
		// (payment p99 4.89 ms through a 9 s level 5 to 6 compaction,
		// peak 431 MiB). How much of that the compactors did is not
		// measured apart.
		WithNumCompactors(4).
		// Snappy: a third less disk (venue keys, labels and the key
		// prefixes shared by an op's index records compress; hashes and
		// signatures do not) and fewer mapped pages, for little CPU
		// (ZSTD saves 2 % more at 4 times the compaction time). The
		// block cache holds decompressed blocks.
		WithCompression(options.Snappy).
		WithBlockCacheSize(8 << 20).
		// 16 KiB blocks: a table's index holds one entry per block (about
		// 100 bytes), so 4 KiB blocks made 9 MiB of indexes at 1 M ops
		// and 90 at 10 M, more than the cache below: past it, every read
		// decodes a table's index again from its mapped file.
		WithBlockSize(16 << 10).
		// Bounded: with 0, Badger keeps every table's index and bloom
		// filter in memory, which grows with the history. 48 MiB holds
		// them all at 10 M ops with 16 KiB blocks (about 2.5 + 2 MiB per
		// million ops).
		WithIndexCacheSize(48 << 20).
		WithValueThreshold(32 << 10).
		WithValueLogFileSize(64 << 20).
		WithDetectConflicts(false)
}

// init checks the format version and reads the counters.
func (s *Store) init() error {
	return s.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(keyVersion)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			if !isEmpty(txn) {
				return fmt.Errorf("%w: %s has data but no format version", ErrUnknownFormat, s.cfg.Dir)
			}
			return txn.Set(keyVersion, binary.BigEndian.AppendUint32(nil, FormatVersion))
		case err != nil:
			return fmt.Errorf("store: read format version: %w", err)
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return fmt.Errorf("store: read format version: %w", err)
		}
		if len(v) != 4 {
			return fmt.Errorf("%w: format version of %d bytes", ErrUnknownFormat, len(v))
		}
		switch ver := binary.BigEndian.Uint32(v); {
		case ver > FormatVersion:
			return fmt.Errorf("%w: %s has format %d, this build reads format %d: upgrade cagnotte", ErrNewerFormat, s.cfg.Dir, ver, FormatVersion)
		case ver == 1:
			s.format1 = true
		case ver == 2:
			// Nothing to rewrite: gob records are read, and each is
			// written binary at its next change.
			if err := txn.Set(keyVersion, binary.BigEndian.AppendUint32(nil, FormatVersion)); err != nil {
				return fmt.Errorf("store: mark format %d: %w", FormatVersion, err)
			}
		case ver != FormatVersion:
			return fmt.Errorf("%w: format %d", ErrUnknownFormat, ver)
		}
		var err2 error
		s.opsStored, err2 = getUint64(txn, keyCount)
		return err2
	})
}

func isEmpty(txn *badger.Txn) bool {
	it := txn.NewIterator(badger.IteratorOptions{})
	defer it.Close()
	it.Rewind()
	return !it.Valid()
}

func getUint64(txn *badger.Txn, key []byte) (uint64, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: read %q: %w", key, err)
	}
	var n uint64
	err = item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("%w: key %q holds %d bytes", ErrCorrupt, key, len(v))
		}
		n = binary.BigEndian.Uint64(v)
		return nil
	})
	return n, err
}

// acquire registers a call in progress; it fails after Close.
func (s *Store) acquire() error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.inflight.Add(1)
	return nil
}

func (s *Store) release() { s.inflight.Done() }

// Close waits for the calls in progress, stops the store's and Badger's
// goroutines and closes the database. Closing twice is a no-op.
func (s *Store) Close() error {
	s.life.Lock()
	if s.closed {
		s.life.Unlock()
		return nil
	}
	s.closed = true
	s.life.Unlock()
	s.inflight.Wait()
	close(s.gcStop)
	<-s.gcDone
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// gcLoop deletes the index generations a refold replaced, reclaims
// value-log space and keeps the mapped tables' pages under their budget.
func (s *Store) gcLoop() {
	defer close(s.gcDone)
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	mapped := time.NewTicker(mappedTick)
	defer mapped.Stop()
	var ticks uint64
	for {
		select {
		case <-s.gcStop:
			return
		case <-mapped.C:
			ticks++
			s.trimMapped(mappedCheck(ticks))
		case gen := <-s.dropKick:
			// Deleted key by key in the background: DropPrefix would
			// block the node's writes while it runs.
			for g := range gen {
				for _, p := range append([]byte{prefixEntry, prefixCounter, prefixRef}, eventPrefixes...) {
					if err := s.deletePrefixBackground(indexPrefix(p, g)); err != nil {
						s.log.Warn("delete an old index generation", "err", err)
					}
				}
			}
		case <-t.C:
			for {
				if err := s.db.RunValueLogGC(0.5); err != nil {
					if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
						s.log.Warn("value log gc", "err", err)
					}
					break
				}
			}
		}
	}
}

// deletePrefixBackground deletes the keys under prefix in small batches,
// stopping early when the store closes.
func (s *Store) deletePrefixBackground(prefix []byte) error {
	for {
		var keys [][]byte
		err := s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			defer it.Close()
			for it.Rewind(); it.Valid() && len(keys) < 10000; it.Next() {
				keys = append(keys, it.Item().KeyCopy(nil))
			}
			return nil
		})
		if err != nil || len(keys) == 0 {
			return err
		}
		wb := s.db.NewWriteBatch()
		for _, k := range keys {
			if err := wb.Delete(k); err != nil {
				wb.Cancel()
				return err
			}
		}
		if err := wb.Flush(); err != nil {
			return err
		}
		select {
		case <-s.gcStop:
			return nil
		default:
		}
	}
}

// Stats describes what the store holds.
type Stats struct {
	// OpsStored is the number of chain ops committed (the "o" keys).
	OpsStored uint64
	// DiskBytes is Badger's estimate of the LSM tree and value log on disk
	// (badger.DB.Size, refreshed by Badger about once a minute).
	DiskBytes int64
	// LoadedOps is the number of ops the last Load read from disk: none
	// when the state's records are there, every op when it rebuilt them
	// (a format-1 store) or refolded a stale state.
	LoadedOps uint64
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	lsm, vlog := s.db.Size()
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{OpsStored: s.opsStored, DiskBytes: lsm + vlog, LoadedOps: s.loadedOps}
}

// Keys. See the package documentation for the layout.
const (
	prefixOp       = 'o'
	prefixEvidence = 'x'
	prefixSnapshot = 's' // format 1 only
	prefixIdem     = 'i'
)

var (
	keyVersion = []byte{'v'}
	keyCount   = []byte{'n'}
)

const opKeyLen = 1 + 32 + 8

func opPrefix(author crdt.PublicKey) []byte {
	return append([]byte{prefixOp}, author[:]...)
}

func opKey(author crdt.PublicKey, seq uint64) []byte {
	k := make([]byte, 0, opKeyLen)
	k = append(k, prefixOp)
	k = append(k, author[:]...)
	return binary.BigEndian.AppendUint64(k, seq)
}

func evidenceKey(id crdt.OpID) []byte {
	return append([]byte{prefixEvidence}, id[:]...)
}

func idemKey(key string) []byte {
	return append([]byte{prefixIdem}, key...)
}

// badgerLogger passes Badger's warnings and errors to slog, its L0 stalls
// at info level, its other info lines (compactions, table and file
// housekeeping) at debug level; its debug lines are dropped.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any)   { l.emit(slog.LevelError, f, a) }
func (l badgerLogger) Warningf(f string, a ...any) { l.emit(slog.LevelWarn, f, a) }
func (l badgerLogger) Infof(f string, a ...any) {
	// A stall of the writes behind level 0 is what an operator looking
	// for slow payments needs to see; the rest (every compaction) is
	// debugging detail.
	if strings.Contains(f, "stalled") {
		l.emit(slog.LevelInfo, f, a)
		return
	}
	l.emit(slog.LevelDebug, f, a)
}
func (l badgerLogger) Debugf(string, ...any) {}

func (l badgerLogger) emit(level slog.Level, f string, a []any) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	l.log.Log(ctx, level, "badger: "+strings.TrimSpace(fmt.Sprintf(f, a...)))
}

// viewValue reads key's committed value with fn, reporting false (and no
// error) when the key is absent.
func (s *Store) viewValue(key []byte, fn func(v []byte) error) (found bool, err error) {
	err = s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		return item.Value(fn)
	})
	return found, err
}
