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

// Load rebuilds the op set of federation fed from disk. It restores the
// last snapshot, then re-adds with [crdt.OpSet.AddTrusted] (no signature
// check: the ops were verified before they were committed) only the ops
// stored after it: the federation's chain first, then each author the set
// knows, in key order, each as one range scan from the author's seq in the
// snapshot + 1. Ops older than the snapshot are not read. A revoked venue's
// ops past its cut-off stay on disk but are not replayed. Then it re-adds
// the evidence ops the snapshot does not hold, and refolds the set (reading
// every chain again) if it ends Stale.
//
// The set's Log is the store. Load resets the snapshot schedule: the ops
// replayed count as committed since the last snapshot. Call it at startup
// (or to drop in-memory state after a failed commit), never concurrently
// with Commit.
func (s *Store) Load(fed crdt.PublicKey) (*crdt.OpSet, error) {
	if err := s.acquire(); err != nil {
		return nil, err
	}
	defer s.release()
	start := time.Now()
	cfg := crdt.Config{Federation: fed, Log: s}
	rec, h, err := s.readSnapshot()
	if err != nil {
		return nil, err
	}
	var set *crdt.OpSet
	if rec != nil {
		if rec.Federation != fed {
			return nil, fmt.Errorf("%w: snapshot of %s, loading %s", ErrWrongFederation, rec.Federation.Short(), fed.Short())
		}
		set = crdt.Restore(cfg, rec.Snap)
		set.Stale = rec.Stale
	} else {
		set = crdt.NewOpSet(cfg)
	}

	var replayed, loaded uint64
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
			replayed++
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
	refolded := set.Stale
	if set.Stale {
		r := &countingReader{s: s}
		if err := set.Refold(r); err != nil {
			return nil, fmt.Errorf("store: load: refold: %w", err)
		}
		loaded += r.n
	}

	s.mu.Lock()
	s.sinceSnap = replayed
	if rec != nil {
		s.snapOps = h.SetOps
		s.snapEvery = s.nextSnapEvery(h.StateSize)
	}
	s.loadedOps = loaded
	s.mu.Unlock()
	s.log.Info("store loaded", "ops", set.Len(), "snapshot_ops", h.SetOps, "replayed", replayed,
		"evidence", nev, "refolded", refolded, "read", loaded, "took", time.Since(start))
	return set, nil
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
