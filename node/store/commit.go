package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

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
	// State, when non-nil, is the op set these ops were added to: what
	// changed in it (crdt.OpSet.TakeChanges) and its index's pending
	// writes (the set's Config.Index must be this store's Index) are
	// written in the same transaction. The set must not change until
	// Commit returns.
	State *crdt.OpSet
	// Timing, when non-nil, receives how long the commit's phases took
	// (for the node's metrics and slow-write logs).
	Timing *CommitTiming
}

// CommitTiming is how long the phases of one Commit took.
type CommitTiming struct {
	// Wait is the time spent waiting for the store's commit lock and
	// checking free space.
	Wait time.Duration
	// Fill is the time spent building the Badger transaction: encoding
	// the ops, the state's changed records and the disk index's writes.
	Fill time.Duration
	// Durable is the time from handing the transaction to Badger to its
	// answer: Badger's write queue, the memtable write (which waits when
	// every memtable is full and waiting for its flush) and the fsync of
	// the write-ahead log.
	Durable time.Duration
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
// (a few hundred ops, see the package documentation). The one exception is
// the first commit after a refold, which rewrites the whole state: it is
// written in several transactions, the last of which switches to it (until
// then the state on disk says it is stale, and Load refolds it again).
//
// Batches must be committed one at a time, in the order their ops were
// added to the set.
func (s *Store) Commit(b Batch) error {
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.release()
	return s.commit(b)
}

func (s *Store) commit(b Batch) error {
	var tm CommitTiming
	if b.Timing != nil {
		defer func() { *b.Timing = tm }()
	}
	t0 := time.Now()
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
		e := badger.NewEntry(idemKey(r.Key), r.encode())
		if ttl := s.cfg.idempotencyTTL(); ttl > 0 {
			e = e.WithTTL(ttl)
		}
		entries = append(entries, e)
	}
	nops := uint64(len(b.Ops))
	if b.State != nil && b.State.State.Index() != crdt.Index(s.index) {
		return errors.New("store: Batch.State is not a set of this store (use Load or NewSet)")
	}

	tc := time.Now()
	if err := s.CheckSpace(); err != nil {
		return err
	}
	s.mu.Lock()
	t1 := time.Now()
	tm.Wait = t1.Sub(tc)
	if s.failed != nil {
		s.mu.Unlock()
		return s.failed
	}
	var ch *crdt.Changes
	if b.State != nil {
		c := b.State.TakeChanges()
		ch = &c
	}
	if len(entries) == 0 && (ch == nil || ch.Empty() && s.index.pend.empty() && s.events.pend.empty()) {
		s.mu.Unlock()
		return nil
	}
	txn, gen, err := s.fill(entries, nops, ch)
	if errors.Is(err, badger.ErrTxnTooBig) && ch != nil && (ch.Reset || s.index.pend.reset) {
		s.mu.Unlock()
		return s.bulkCommit(entries, nops, ch)
	}
	if err != nil {
		s.index.discard()
		s.events.discard()
		s.mu.Unlock()
		if errors.Is(err, badger.ErrTxnTooBig) {
			return fmt.Errorf("%w: %d ops, %d evidence, %d idempotency records: %w",
				ErrBatchTooBig, len(b.Ops), len(b.Evidence), len(b.Idem), err)
		}
		return fmt.Errorf("store: commit: %w", err)
	}
	done := make(chan error, 1)
	t2 := time.Now()
	tm.Fill = t2.Sub(t0) - tm.Wait
	// Handing the transaction to Badger under mu keeps commit order equal
	// to counter order; the write and its fsync happen after Unlock.
	txn.CommitWith(func(err error) { done <- err })
	s.opsStored += nops
	s.mu.Unlock()

	err = <-done
	tm.Durable = time.Since(t2)
	if err != nil {
		s.index.discard()
		s.events.discard()
		if IsDiskFull(err) {
			// ENOSPC from Badger: the transaction may or may not have
			// reached its memtable, wholly or not at all; the caller
			// reloads its state with Load, which reads what Badger
			// holds. The store stays usable (ops counter is a statistic).
			s.mu.Lock()
			s.opsStored -= nops
			s.mu.Unlock()
			return fmt.Errorf("store: commit: %w: %w", ErrDiskFull, err)
		}
		s.fail(err)
		return fmt.Errorf("store: commit: %w", err)
	}
	if ch != nil {
		s.events.committed(gen, gen != s.index.gen)
		if s.index.committed(gen) {
			s.dropOldGenerations(gen)
		}
	}
	return nil
}

// fail records a write failure: the store refuses further writes until it
// is reopened.
func (s *Store) fail(err error) {
	s.mu.Lock()
	first := s.failed == nil
	if first {
		s.failed = fmt.Errorf("%w: %w", ErrFailed, err)
	}
	s.mu.Unlock()
	if first {
		s.log.Error("store failed: it refuses further writes until reopened", "err", err)
	}
}

// fill builds the transaction of a batch. Called with mu held.
func (s *Store) fill(entries []*badger.Entry, nops uint64, ch *crdt.Changes) (*badger.Txn, uint32, error) {
	txn := s.db.NewTransaction(true)
	gen := s.index.gen
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
		if ch == nil {
			return nil
		}
		if err := writeChanges(txn, ch); err != nil {
			return err
		}
		var err error
		if gen, err = s.index.flush(txn); err != nil {
			return err
		}
		return s.events.flush(txn, gen)
	}()
	if err != nil {
		txn.Discard()
		return nil, 0, err
	}
	return txn, gen, nil
}

// bulkCommit writes a batch that rewrites the whole state (after a refold)
// in several transactions: the ops, index and records first under a new
// generation, then the meta and the generation switch in a last one. A
// crash in between leaves the previous meta, which says the state is
// stale: Load refolds again.
func (s *Store) bulkCommit(entries []*badger.Entry, nops uint64, ch *crdt.Changes) error {
	s.log.Info("writing a refolded state in several transactions", "cards", len(ch.Cards))
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, e := range entries {
		if err := wb.SetEntry(e); err != nil {
			return fmt.Errorf("store: bulk commit: %w", err)
		}
	}
	gen := s.index.gen + 1
	d := s.index
	for card, es := range d.pend.entries {
		for i := range es {
			if err := wb.Set(entryKey(gen, card, crdt.Stamp{HLC: es[i].HLC, ID: es[i].Op}), encodeEntry(&es[i])); err != nil {
				return fmt.Errorf("store: bulk commit: %w", err)
			}
		}
	}
	for k, id := range d.pend.counters {
		if err := wb.Set(counterKeyBytes(gen, k.card, k.counter), id[:]); err != nil {
			return fmt.Errorf("store: bulk commit: %w", err)
		}
	}
	for ref, e := range d.pend.refs {
		if err := wb.Set(refKey(gen, ref), encodeRef(e)); err != nil {
			return fmt.Errorf("store: bulk commit: %w", err)
		}
	}
	if err := s.events.bulkWrite(wb, gen); err != nil {
		s.index.discard()
		s.events.discard()
		return fmt.Errorf("store: bulk commit: %w", err)
	}
	if err := wb.Flush(); err != nil {
		s.index.discard()
		s.events.discard()
		s.fail(err)
		return fmt.Errorf("store: bulk commit: %w", err)
	}
	// The records, then the meta and the generation, in chunks of
	// transactions small enough for Badger.
	err := s.db.Update(func(txn *badger.Txn) error {
		for _, p := range []byte{prefixAuthor, prefixCard, prefixVenue, prefixEvent, prefixConflict} {
			if err := deletePrefix(txn, []byte{p}); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		rest := *ch
		rest.Reset = false
		meta := rest.Meta
		rest.Meta.Stale = true // until the last transaction
		for len(rest.Cards) > 0 || len(rest.Authors)+len(rest.Venues)+len(rest.Conflicts) > 0 {
			part := rest
			n := min(len(rest.Cards), 2000)
			part.Cards, rest.Cards = rest.Cards[:n], rest.Cards[n:]
			// Conflicts are chunked too: a season holds tens of
			// thousands of them.
			k := min(len(rest.Conflicts), 2000)
			part.Conflicts, rest.Conflicts = rest.Conflicts[:k], rest.Conflicts[k:]
			rest.Authors, rest.Venues = nil, nil
			if err = s.db.Update(func(txn *badger.Txn) error { return writeChanges(txn, &part) }); err != nil {
				break
			}
		}
		if err == nil {
			err = s.db.Update(func(txn *badger.Txn) error {
				if nops > 0 {
					if err := txn.Set(keyCount, binary.BigEndian.AppendUint64(nil, s.opsStored+nops)); err != nil {
						return err
					}
				}
				if err := txn.Set(keyGeneration, binary.BigEndian.AppendUint32(nil, gen)); err != nil {
					return err
				}
				return writeChanges(txn, &crdt.Changes{Meta: meta})
			})
		}
	}
	if err != nil {
		s.index.discard()
		s.events.discard()
		s.fail(err)
		return fmt.Errorf("store: bulk commit: %w", err)
	}
	s.mu.Lock()
	s.opsStored += nops
	s.mu.Unlock()
	s.events.committed(gen, gen != s.index.gen)
	s.index.committed(gen)
	s.dropOldGenerations(gen)
	return nil
}

// dropOldGenerations deletes, in the background, the index keys of the
// generations before gen.
func (s *Store) dropOldGenerations(gen uint32) {
	select {
	case s.dropKick <- gen:
	default:
	}
}

// Idempotency returns the record stored for an idempotency key, and false
// if there is none or it expired (Config.IdempotencyTTL).
func (s *Store) Idempotency(key string) (IdemRecord, bool, error) {
	if err := s.acquire(); err != nil {
		return IdemRecord{}, false, err
	}
	defer s.release()
	if len(key) == 0 || len(key) > MaxIdempotencyKey {
		return IdemRecord{}, false, nil
	}
	var rec IdemRecord
	found, err := s.viewValue(idemKey(key), func(v []byte) error {
		var err error
		rec, err = decodeIdem(key, v)
		return err
	})
	if err != nil {
		return IdemRecord{}, false, fmt.Errorf("store: idempotency %q: %w", key, err)
	}
	return rec, found, nil
}
