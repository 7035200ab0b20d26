package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"

	"github.com/dgraph-io/badger/v4"
)

// Bulk loading: writing a large history (millions of ops) into an empty
// store, for benchmarks (internal/genhistory). Through the node's options
// every byte is rewritten by compaction at each level of the LSM tree on
// its way down (4 levels at 10 M ops: about 8 KB written to disk per op of
// some 420 stored), and compaction's table builders push the heap far past
// the binary's memory limit. A bulk load writes through the same Commit as
// a node (same keys, same values, same transactions), into a store opened
// with OpenBulk: no fsync, large memtables, and no compaction while it
// runs, so every memtable becomes one level-0 table and stays there.
// FinishBulk then reopens the store with the node's options and merges all
// those tables into the last level in one pass: each byte is written three
// times in all (write-ahead log, level-0 table, last level), stale
// versions of rewritten records are dropped, and the node later opens a
// store whose contents it cannot tell from one sync had written.

// BulkConfig tunes OpenBulk. Zero fields take the documented defaults.
type BulkConfig struct {
	// MemTableSize is the size of each memtable, and so of each level-0
	// table (before compression). Default DefaultBulkMemTableSize (256 MiB):
	// 10 M ops make about 20 of them.
	MemTableSize int64
	// NumMemtables is the number of memtables (one filling, the rest
	// waiting for their flush). Default 3.
	NumMemtables int
}

// DefaultBulkMemTableSize is the default of BulkConfig.MemTableSize.
const DefaultBulkMemTableSize = 256 << 20

// ErrBulkNotEmpty is returned by OpenBulk for a directory that already
// holds a store's data.
var ErrBulkNotEmpty = errors.New("store: a bulk load needs an empty store")

// OpenBulk opens a new, empty store in cfg.Dir for a bulk load: commits are
// not fsync'd (cfg.NoSync is ignored: a crash loses the load, which is
// started again from scratch), nothing is compacted, and the resident-page
// budget is off. Write with Commit as usual, Close, then call FinishBulk
// before anything else opens the directory. It fails with ErrBulkNotEmpty when
// the directory holds ops already.
func OpenBulk(cfg Config, bulk BulkConfig) (*Store, error) {
	if bulk.MemTableSize <= 0 {
		bulk.MemTableSize = DefaultBulkMemTableSize
	}
	if bulk.NumMemtables <= 0 {
		bulk.NumMemtables = 3
	}
	cfg.NoSync = true
	cfg.MappedBudget = -1
	s, err := openWith(cfg, func(cfg Config, log *slog.Logger) badger.Options {
		return bulkOptions(badgerOptions(cfg, log), bulk)
	})
	if err != nil {
		return nil, err
	}
	if s.opsStored > 0 || s.format1 {
		if cerr := s.Close(); cerr != nil {
			s.log.Warn("close after a refused bulk load", "err", cerr)
		}
		return nil, fmt.Errorf("%w: %s holds %d ops", ErrBulkNotEmpty, cfg.Dir, s.opsStored)
	}
	return s, nil
}

// bulkOptions changes a node's Badger options for a bulk load.
func bulkOptions(opts badger.Options, bulk BulkConfig) badger.Options {
	return opts.
		WithSyncWrites(false).
		WithMemTableSize(bulk.MemTableSize).
		WithNumMemtables(bulk.NumMemtables).
		// No compactor: level 0 grows by one table per memtable, and
		// never stalls the writes.
		WithNumCompactors(0).
		WithNumLevelZeroTables(math.MaxInt32 - 1).
		WithNumLevelZeroTablesStall(math.MaxInt32).
		// Every table's index and bloom filter in memory: the load reads
		// the index (a payment's counter, a top-up's reference) in each
		// level-0 table.
		WithIndexCacheSize(0).
		WithBlockCacheSize(64 << 20)
}

// FinishBulk ends a bulk load into dir (the store Closed): it reopens the
// store with the node's options (cfg as a node would pass it) and merges
// every table into the last level of the LSM tree, then closes it. The
// merge runs in Badger and cannot be interrupted: ctx is checked before it
// starts.
func FinishBulk(ctx context.Context, cfg Config) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s, err := Open(cfg)
	if err != nil {
		return fmt.Errorf("store: finish bulk load: %w", err)
	}
	ferr := s.db.Flatten(1)
	if ferr != nil {
		ferr = fmt.Errorf("store: finish bulk load: flatten: %w", ferr)
	}
	if err := s.Close(); err != nil && ferr == nil {
		ferr = fmt.Errorf("store: finish bulk load: %w", err)
	}
	return ferr
}

// Levels returns the number of tables and their total size at each level
// of the store's LSM tree, level 0 first (for benchmarks and tests: a
// finished bulk load holds its tables in the last level only).
func (s *Store) Levels() (tables []int, bytes []int64) {
	for _, t := range s.db.Tables() {
		for len(tables) <= t.Level {
			tables = append(tables, 0)
			bytes = append(bytes, 0)
		}
		tables[t.Level]++
		bytes[t.Level] += int64(t.OnDiskSize)
	}
	return tables, bytes
}
