package store

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/cagnotte/cagnotte/crdt"
)

// Batch is what one Commit writes, atomically.
type Batch struct {
	// Ops are the ops just added to the set (Outcome Added), in the order
	// they were added.
	Ops []crdt.Op
	// Evidence are the ops the set kept as evidence (Outcome Evidence).
	Evidence []crdt.Op
	// Idem are idempotency records of API answers.
	Idem []IdemRecord
	// Snapshot, when non-nil, is the op set: if a snapshot is due (see
	// [Store.SnapshotDue]) its state is encoded into the same transaction.
	// Every op the set holds must be in this batch or in an earlier
	// committed one, and the set must not change until Commit returns.
	Snapshot *crdt.OpSet
}

// IdemRecord is the answer the API gave to a request carrying an
// idempotency key, so that a retry gets the same answer instead of charging
// twice.
type IdemRecord struct {
	// Key is the client's idempotency key: 1 to MaxIdempotencyKey bytes.
	Key string
	// RequestHash identifies the request, to refuse a key reused for a
	// different request.
	RequestHash [32]byte
	// Status is the HTTP status of the answer.
	Status int
	// Body is the answer's body.
	Body []byte
}

// idemFormat is the first byte of a stored idempotency record.
const idemFormat = 1

func (r *IdemRecord) encode() []byte {
	b := make([]byte, 0, 1+32+8+len(r.Body))
	b = append(b, idemFormat)
	b = append(b, r.RequestHash[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(int64(r.Status)))
	return append(b, r.Body...)
}

func decodeIdem(key string, v []byte) (IdemRecord, error) {
	r := IdemRecord{Key: key}
	if len(v) < 1+32+8 || v[0] != idemFormat {
		return r, fmt.Errorf("%w: idempotency record %q", ErrCorrupt, key)
	}
	copy(r.RequestHash[:], v[1:33])
	r.Status = int(int64(binary.BigEndian.Uint64(v[33:41])))
	r.Body = append([]byte(nil), v[41:]...)
	return r, nil
}

// Commit writes a batch in one Badger transaction and returns once it is
// durable (fsync'd, unless Config.NoSync): after a crash the batch is
// either wholly there or not at all. A batch too big for one transaction
// fails with ErrBatchTooBig and writes nothing; callers bound their batches
// (a few hundred ops, see the package documentation).
//
// Commit is safe for concurrent use, and Badger writes concurrent commits
// with one fsync. Batches of one author's chain must still be committed in
// chain order by the caller, and a batch carrying a Snapshot must come
// after (or with) every op the set holds.
func (s *Store) Commit(b Batch) error {
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.release()
	return s.commit(b, false)
}

// SnapshotDue reports whether the next Commit carrying a Snapshot will
// write it: the ops committed since the last snapshot reached the larger of
// Config.SnapshotEvery and half the size of the state at the last one.
func (s *Store) SnapshotDue() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sinceSnap >= s.snapEvery
}

// WriteSnapshot writes a snapshot of set now, due or not (at Close, so the
// next Load replays nothing). The same rules as for Batch.Snapshot apply.
func (s *Store) WriteSnapshot(set *crdt.OpSet) error {
	if set == nil {
		return errors.New("store: WriteSnapshot of a nil set")
	}
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.release()
	return s.commit(Batch{Snapshot: set}, true)
}

func (s *Store) commit(b Batch, forceSnap bool) error {
	entries := make([]*badger.Entry, 0, len(b.Ops)+len(b.Evidence)+len(b.Idem))
	for i := range b.Ops {
		op := &b.Ops[i]
		if op.Seq == 0 {
			return fmt.Errorf("store: op %d of batch has seq 0", i)
		}
		entries = append(entries, badger.NewEntry(opKey(op.Author, op.Seq), op.Encode()))
	}
	for i := range b.Evidence {
		op := &b.Evidence[i]
		entries = append(entries, badger.NewEntry(evidenceKey(op.ID()), op.Encode()))
	}
	for i := range b.Idem {
		r := &b.Idem[i]
		if len(r.Key) == 0 || len(r.Key) > MaxIdempotencyKey {
			return fmt.Errorf("store: idempotency key of %d bytes, want 1 to %d", len(r.Key), MaxIdempotencyKey)
		}
		entries = append(entries, badger.NewEntry(idemKey(r.Key), r.encode()))
	}
	nops := uint64(len(b.Ops))

	s.mu.Lock()
	if s.failed != nil {
		s.mu.Unlock()
		return s.failed
	}
	var snap *encodedSnapshot
	if b.Snapshot != nil && (forceSnap || s.sinceSnap+nops >= s.snapEvery) {
		var err error
		if snap, err = encodeSnapshot(b.Snapshot); err != nil {
			s.mu.Unlock()
			return err
		}
	}
	if len(entries) == 0 && snap == nil {
		s.mu.Unlock()
		return nil
	}
	txn, err := s.fill(entries, nops, snap)
	if errors.Is(err, badger.ErrTxnTooBig) && snap != nil {
		s.log.Warn("snapshot does not fit with its batch, left for a later one",
			"ops", len(b.Ops), "snapshot_bytes", snap.header.Bytes)
		snap = nil
		txn, err = s.fill(entries, nops, nil)
	}
	if err != nil {
		s.mu.Unlock()
		if errors.Is(err, badger.ErrTxnTooBig) {
			return fmt.Errorf("%w: %d ops, %d evidence, %d idempotency records: %w",
				ErrBatchTooBig, len(b.Ops), len(b.Evidence), len(b.Idem), err)
		}
		return fmt.Errorf("store: commit: %w", err)
	}
	done := make(chan error, 1)
	// Handing the transaction to Badger under mu keeps commit order equal
	// to counter order; the write and its fsync happen after Unlock, grouped
	// with concurrent commits.
	txn.CommitWith(func(err error) { done <- err })
	s.opsStored += nops
	s.sinceSnap += nops
	if snap != nil {
		s.sinceSnap = 0
		s.snapOps = snap.header.SetOps
		s.snapEvery = s.nextSnapEvery(snap.header.StateSize)
		s.snapChunks = snap.header.Chunks
		s.snapWritten++
	}
	s.mu.Unlock()

	if err := <-done; err != nil {
		s.mu.Lock()
		if s.failed == nil {
			s.failed = fmt.Errorf("%w: %w", ErrFailed, err)
		}
		s.mu.Unlock()
		s.log.Error("commit failed: the store refuses further writes until reopened", "err", err)
		return fmt.Errorf("store: commit: %w", err)
	}
	if snap != nil {
		s.log.Debug("snapshot written", "ops", snap.header.SetOps, "bytes", snap.header.Bytes)
		select {
		case s.gcKick <- struct{}{}:
		default:
		}
	}
	return nil
}

// fill builds the transaction of a batch. Called with mu held.
func (s *Store) fill(entries []*badger.Entry, nops uint64, snap *encodedSnapshot) (*badger.Txn, error) {
	txn := s.db.NewTransaction(true)
	err := func() error {
		for _, e := range entries {
			if err := txn.SetEntry(e); err != nil {
				return err
			}
		}
		if nops > 0 {
			if err := txn.Set(keyCount, binary.BigEndian.AppendUint64(nil, s.opsStored+nops)); err != nil {
				return err
			}
		}
		if snap == nil {
			return nil
		}
		for i, c := range snap.chunks {
			if err := txn.Set(snapChunkKey(uint32(i)), c); err != nil {
				return err
			}
		}
		for i := snap.header.Chunks; i < s.snapChunks; i++ {
			if err := txn.Delete(snapChunkKey(i)); err != nil {
				return err
			}
		}
		return txn.Set(keySnapshot, snap.header.encode())
	}()
	if err != nil {
		txn.Discard()
		return nil, err
	}
	return txn, nil
}

// Idempotency returns the record stored for an idempotency key, and false
// if there is none.
func (s *Store) Idempotency(key string) (IdemRecord, bool, error) {
	if err := s.acquire(); err != nil {
		return IdemRecord{}, false, err
	}
	defer s.release()
	if len(key) == 0 || len(key) > MaxIdempotencyKey {
		return IdemRecord{}, false, nil
	}
	var rec IdemRecord
	var found bool
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(idemKey(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		return item.Value(func(v []byte) error {
			rec, err = decodeIdem(key, v)
			return err
		})
	})
	if err != nil {
		return IdemRecord{}, false, fmt.Errorf("store: idempotency %q: %w", key, err)
	}
	return rec, found, nil
}
