package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/cagnotte/cagnotte/crdt"
)

// errStopAuthor ends the replay of a revoked author's ops past its cut-off.
var errStopAuthor = errors.New("stop author")

// Load returns the op set of federation fed as it is on disk. It reads the
// state's records (crdt.FromStored) and the evidence ops: no op of the
// chains, so a restart costs the same whatever the history. The set's Log
// is the store, its Index the store's DiskIndex, and it tracks its changes
// for the next Commit. A state left stale (a crash before the refold a
// revocation or a fork called for was written) is refolded from the ops.
//
// A store with ops but no records (written by format 1, or a crash in the
// middle of its rebuild) is rebuilt from its ops once, in batches.
//
// Call it at startup (or to drop in-memory state after a failed commit),
// never concurrently with Commit.
func (s *Store) Load(fed crdt.PublicKey) (*crdt.OpSet, error) {
	if err := s.acquire(); err != nil {
		return nil, err
	}
	defer s.release()
	start := time.Now()
	st, gen, gobCards, ok, err := s.readRecords()
	if err != nil {
		return nil, err
	}
	s.index.gen, s.index.pend = gen, newOverlay(false)
	if ok && !s.format1 {
		// Event records of an older store: into the event index, once.
		t := time.Now()
		if n, err := s.migrateEvents(gen); err != nil {
			return nil, err
		} else if n > 0 {
			s.log.Info("event records moved to the event index", "events", n, "took", time.Since(t))
		}
	}
	cfg := crdt.Config{Federation: fed, Log: s, Index: s.index, TrackChanges: true}
	if !ok || s.format1 {
		return s.rebuild(cfg, start)
	}
	if st.Meta.Federation != fed {
		return nil, fmt.Errorf("%w: state of %s, loading %s", ErrWrongFederation, st.Meta.Federation.Short(), fed.Short())
	}
	if st.Evidence, err = s.readEvidence(); err != nil {
		return nil, err
	}
	set := crdt.FromStored(cfg, st)
	if len(gobCards) > 0 {
		// Before anything changes them: the records written are the
		// state just read.
		if err := s.rewriteCards(gobCards); err != nil {
			s.log.Warn("card records left in gob (rewritten at the next start)", "cards", len(gobCards), "err", err)
		} else {
			s.log.Info("card records rewritten in binary", "cards", len(gobCards))
		}
	}
	var loaded uint64
	refolded := set.Stale
	if set.Stale {
		r := &countingReader{s: s}
		if err := set.Refold(r); err != nil {
			return nil, fmt.Errorf("store: load: refold: %w", err)
		}
		loaded = r.n
		if err := s.commit(Batch{State: set}); err != nil {
			return nil, fmt.Errorf("store: load: write the refolded state: %w", err)
		}
	}
	s.mu.Lock()
	s.loadedOps = loaded
	s.mu.Unlock()
	s.log.Info("store loaded", "ops", set.Len(), "cards", len(set.State.Cards), "evidence", len(st.Evidence),
		"refolded", refolded, "read", loaded, "took", time.Since(start))
	return set, nil
}

// NewSet returns an empty op set of federation fed bound to the store (its
// Log, its Index, tracking its changes for Commit), for a store that holds
// nothing yet. A store that holds a state is read with Load.
func (s *Store) NewSet(fed crdt.PublicKey) *crdt.OpSet {
	s.index.Reset()
	return crdt.NewOpSet(crdt.Config{Federation: fed, Log: s, Index: s.index, TrackChanges: true})
}

// rebuildBatch is how many ops a rebuild adds between two commits.
const rebuildBatch = 4096

// rebuild folds every stored op into a new state, committing it in
// batches. Until the last batch the state on disk says it is stale, so a
// crash in the middle is repaired by the next Load.
func (s *Store) rebuild(cfg crdt.Config, start time.Time) (*crdt.OpSet, error) {
	fed := cfg.Federation
	if s.format1 {
		s.log.Info("store written by an older format: rebuilding its state from its ops, once")
		if err := s.db.DropPrefix([]byte{prefixSnapshot}); err != nil {
			return nil, fmt.Errorf("store: drop the old snapshot: %w", err)
		}
	}
	s.index.Reset()
	set := crdt.NewOpSet(cfg)
	var loaded, sinceCommit uint64
	flush := func(final bool) error {
		stale := set.Stale
		set.Stale = stale || !final // on disk: stale until the last batch
		err := s.commit(Batch{State: set})
		set.Stale = stale
		sinceCommit = 0
		return err
	}
	replay := func(author crdt.PublicKey) error {
		head, _ := set.Head(author)
		err := s.readRange(author, head+1, math.MaxUint64, func(op crdt.Op) error {
			loaded++
			out, err := set.AddTrusted(op)
			switch {
			case errors.Is(err, crdt.ErrRevoked):
				return errStopAuthor
			case err != nil:
				return fmt.Errorf("store: load %s#%d: %w", author.Short(), op.Seq, err)
			case out != crdt.Added:
				return fmt.Errorf("%w: stored op %s#%d is not the next of its chain", ErrCorrupt, author.Short(), op.Seq)
			}
			if sinceCommit++; sinceCommit >= rebuildBatch {
				if err := flush(false); err != nil {
					return err
				}
			}
			return nil
		})
		if errors.Is(err, errStopAuthor) {
			return nil
		}
		return err
	}
	if err := replay(fed); err != nil {
		return nil, err
	}
	authors := make([]crdt.PublicKey, 0, len(set.Authors))
	for k := range set.Authors {
		if k != fed {
			authors = append(authors, k)
		}
	}
	slices.SortFunc(authors, func(a, b crdt.PublicKey) int { return bytes.Compare(a[:], b[:]) })
	for _, k := range authors {
		if err := replay(k); err != nil {
			return nil, err
		}
	}
	nev, err := s.replayEvidence(set)
	if err != nil {
		return nil, err
	}
	loaded += nev
	if set.Stale {
		r := &countingReader{s: s}
		if err := set.Refold(r); err != nil {
			return nil, fmt.Errorf("store: rebuild: refold: %w", err)
		}
		loaded += r.n
	}
	if err := flush(true); err != nil {
		return nil, fmt.Errorf("store: rebuild: %w", err)
	}
	if s.format1 {
		if err := s.db.Update(func(txn *badger.Txn) error {
			return txn.Set(keyVersion, binary.BigEndian.AppendUint32(nil, FormatVersion))
		}); err != nil {
			return nil, fmt.Errorf("store: rebuild: %w", err)
		}
		s.format1 = false
	}
	s.mu.Lock()
	s.loadedOps = loaded
	s.mu.Unlock()
	if loaded > 0 {
		s.log.Info("store rebuilt from its ops", "ops", set.Len(), "evidence", nev, "read", loaded, "took", time.Since(start))
	}
	return set, nil
}

// readEvidence reads the ops kept as evidence.
func (s *Store) readEvidence() ([]crdt.Op, error) {
	var out []crdt.Op
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixEvidence}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			var op crdt.Op
			if err := item.Value(func(v []byte) error {
				var err error
				op, err = crdt.DecodeOp(v)
				return err
			}); err != nil {
				return fmt.Errorf("%w: evidence %x: %v", ErrCorrupt, item.Key(), err)
			}
			out = append(out, op)
		}
		return nil
	})
	return out, err
}

// replayEvidence re-adds the evidence ops the set does not hold yet. Keys
// name the op id, so evidence already in the snapshot is skipped without
// reading it.
func (s *Store) replayEvidence(set *crdt.OpSet) (uint64, error) {
	var pending []crdt.Op
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixEvidence}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			var id crdt.OpID
			if len(k) != 1+len(id) {
				return fmt.Errorf("%w: evidence key of %d bytes", ErrCorrupt, len(k))
			}
			copy(id[:], k[1:])
			if _, ok := set.EvidenceOps[id]; ok {
				continue
			}
			var op crdt.Op
			err := item.Value(func(v []byte) error {
				var err error
				op, err = crdt.DecodeOp(v)
				return err
			})
			if err != nil {
				return fmt.Errorf("%w: evidence %s: %v", ErrCorrupt, id, err)
			}
			if op.ID() != id {
				return fmt.Errorf("%w: evidence %s holds op %s", ErrCorrupt, id, op.ID())
			}
			pending = append(pending, op)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, op := range pending {
		out, err := set.AddTrusted(op)
		switch {
		case errors.Is(err, crdt.ErrDuplicate):
		case errors.Is(err, crdt.ErrRevoked):
			// Evidence recorded before its author's revocation arrived: the
			// set refuses it now (see the package's notes on crdt).
			s.log.Debug("evidence of a revoked venue past its cut-off skipped", "author", op.Author.Short(), "seq", op.Seq)
		case err != nil:
			return 0, fmt.Errorf("store: load evidence %s#%d: %w", op.Author.Short(), op.Seq, err)
		case out != crdt.Evidence:
			return 0, fmt.Errorf("%w: evidence op %s#%d extends its chain", ErrCorrupt, op.Author.Short(), op.Seq)
		}
	}
	return uint64(len(pending)), nil
}

// countingReader counts the ops read through it.
type countingReader struct {
	s *Store
	n uint64
}

func (r *countingReader) ReadRange(author crdt.PublicKey, from, to uint64, fn func(crdt.Op) error) error {
	return r.s.readRange(author, from, to, func(op crdt.Op) error {
		r.n++
		return fn(op)
	})
}

// ReadRange implements [crdt.OpReader]: it calls fn with the ops of author
// with from <= seq <= to, in seq order, and stops early at the first seq
// missing from the store. An error returned by fn stops the read and is
// returned as is.
func (s *Store) ReadRange(author crdt.PublicKey, from, to uint64, fn func(crdt.Op) error) error {
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.release()
	return s.readRange(author, from, to, fn)
}

func (s *Store) readRange(author crdt.PublicKey, from, to uint64, fn func(crdt.Op) error) error {
	if from == 0 {
		from = 1
	}
	if to < from {
		return nil
	}
	return s.db.View(func(txn *badger.Txn) error {
		if from == to {
			item, err := txn.Get(opKey(author, from))
			if errors.Is(err, badger.ErrKeyNotFound) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("store: read %s#%d: %w", author.Short(), from, err)
			}
			op, err := decodeItem(item, author, from)
			if err != nil {
				return err
			}
			return fn(op)
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: opPrefix(author)})
		defer it.Close()
		want := from
		for it.Seek(opKey(author, from)); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if len(k) != opKeyLen {
				return fmt.Errorf("%w: op key of %d bytes", ErrCorrupt, len(k))
			}
			if binary.BigEndian.Uint64(k[33:]) != want {
				return nil // a gap: the chain stops here
			}
			op, err := decodeItem(item, author, want)
			if err != nil {
				return err
			}
			if err := fn(op); err != nil {
				return err
			}
			if want == to {
				return nil
			}
			want++
		}
		return nil
	})
}

// decodeItem decodes the op stored at an "o" key and checks it is the op
// of author at seq.
func decodeItem(item *badger.Item, author crdt.PublicKey, seq uint64) (crdt.Op, error) {
	var op crdt.Op
	err := item.Value(func(v []byte) error {
		var err error
		op, err = crdt.DecodeOp(v)
		return err
	})
	if err != nil {
		return op, fmt.Errorf("%w: op %s#%d: %v", ErrCorrupt, author.Short(), seq, err)
	}
	if op.Author != author || op.Seq != seq {
		return op, fmt.Errorf("%w: key %s#%d holds op %s#%d", ErrCorrupt, author.Short(), seq, op.Author.Short(), op.Seq)
	}
	return op, nil
}
