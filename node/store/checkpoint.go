package store

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/cagnotte/cagnotte/crdt"
)

// The latest checkpoint a quorum of venues attested (see
// docs/checkpoints.md) is kept so that the node can serve it to new
// venues. Its bytes can be larger than one Badger transaction, so they are
// written in chunks under a generation number, then one record names the
// generation, the hash, the size and the attestations:
//
//	"k"                     gen (8) | size (8) | hash (32) | count (uvarint) | count × attestation
//	"K" gen (8) index (4)   a chunk of the checkpoint's bytes, at most checkpointChunk
//
// A crash between the chunks and the record leaves the previous
// checkpoint in place (its chunks are deleted only after the record
// switched); chunks of an unfinished generation are deleted by the next
// save.

const (
	prefixCheckpointChunk = 'K'
	checkpointChunk       = 1 << 20
	// MaxCheckpointAttestations bounds the attestations kept with a
	// checkpoint (one per venue).
	MaxCheckpointAttestations = 4096
)

var keyCheckpoint = []byte{'k'}

// ErrNoCheckpoint is returned by LatestCheckpoint when none was saved.
var ErrNoCheckpoint = errors.New("store: no checkpoint saved")

func checkpointChunkKey(gen uint64, i uint32) []byte {
	k := binary.BigEndian.AppendUint64([]byte{prefixCheckpointChunk}, gen)
	return binary.BigEndian.AppendUint32(k, i)
}

type checkpointRecord struct {
	gen, size uint64
	hash      [32]byte
	atts      []crdt.Attestation
}

func (r *checkpointRecord) encode() []byte {
	b := binary.BigEndian.AppendUint64(nil, r.gen)
	b = binary.BigEndian.AppendUint64(b, r.size)
	b = append(b, r.hash[:]...)
	b = binary.AppendUvarint(b, uint64(len(r.atts)))
	for i := range r.atts {
		b = append(b, r.atts[i].Encode()...)
	}
	return b
}

func decodeCheckpointRecord(v []byte) (checkpointRecord, error) {
	var r checkpointRecord
	if len(v) < 8+8+32+1 {
		return r, fmt.Errorf("%w: checkpoint record of %d bytes", ErrCorrupt, len(v))
	}
	r.gen = binary.BigEndian.Uint64(v)
	r.size = binary.BigEndian.Uint64(v[8:])
	copy(r.hash[:], v[16:48])
	n, k := binary.Uvarint(v[48:])
	if k <= 0 || n > MaxCheckpointAttestations || uint64(len(v)-48-k) != n*crdt.AttestationSize {
		return r, fmt.Errorf("%w: checkpoint record attestations", ErrCorrupt)
	}
	p := v[48+k:]
	for i := uint64(0); i < n; i++ {
		a, err := crdt.DecodeAttestation(p[:crdt.AttestationSize])
		if err != nil {
			return r, fmt.Errorf("%w: checkpoint attestation %d: %v", ErrCorrupt, i, err)
		}
		r.atts = append(r.atts, a)
		p = p[crdt.AttestationSize:]
	}
	return r, nil
}

// SaveCheckpoint keeps cp (a checkpoint's canonical bytes) and its
// attestations as the node's latest checkpoint, replacing the previous
// one. It does not verify them: callers save what a quorum attested.
func (s *Store) SaveCheckpoint(cp []byte, atts []crdt.Attestation) error {
	st, err := s.StageCheckpoint(cp)
	if err != nil {
		return err
	}
	return s.CommitCheckpoint(st, atts)
}

// StagedCheckpoint is a checkpoint whose bytes are written to the store
// but which is not its latest one yet (CommitCheckpoint). A crash before
// the commit leaves the previous checkpoint in place; the staged bytes are
// deleted by the next save.
type StagedCheckpoint struct {
	gen, size uint64
	hash      [32]byte
	prevGen   uint64
	havePrev  bool
}

// Size is the staged checkpoint's size in bytes.
func (st StagedCheckpoint) Size() uint64 { return st.size }

// StageCheckpoint writes cp's bytes to the store, in chunks, aside from
// the latest checkpoint: the caller can drop its copy of cp after it, and
// make it the latest with CommitCheckpoint (or drop it by staging
// another).
func (s *Store) StageCheckpoint(cp []byte) (StagedCheckpoint, error) {
	if err := s.acquire(); err != nil {
		return StagedCheckpoint{}, err
	}
	defer s.release()
	if len(cp) == 0 {
		return StagedCheckpoint{}, errors.New("store: empty checkpoint")
	}
	prev, havePrev, err := s.checkpointRecord()
	if err != nil && !errors.Is(err, ErrCorrupt) {
		return StagedCheckpoint{}, err
	}
	gen := uint64(1)
	if havePrev {
		gen = prev.gen + 1
	}
	// Chunks of a save that did not finish (a crash) are in the way.
	if err := s.deletePrefixBackground(binary.BigEndian.AppendUint64([]byte{prefixCheckpointChunk}, gen)); err != nil {
		return StagedCheckpoint{}, fmt.Errorf("store: save checkpoint: %w", err)
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for i := 0; i*checkpointChunk < len(cp); i++ {
		end := min(len(cp), (i+1)*checkpointChunk)
		if err := wb.Set(checkpointChunkKey(gen, uint32(i)), cp[i*checkpointChunk:end]); err != nil {
			return StagedCheckpoint{}, fmt.Errorf("store: save checkpoint: %w", err)
		}
	}
	if err := wb.Flush(); err != nil {
		return StagedCheckpoint{}, fmt.Errorf("store: save checkpoint: %w", err)
	}
	s.releaseValueLog()
	return StagedCheckpoint{gen: gen, size: uint64(len(cp)), hash: sha256.Sum256(cp), prevGen: prev.gen, havePrev: havePrev}, nil
}

// CommitCheckpoint makes a staged checkpoint, with its attestations, the
// store's latest one, and deletes the previous one's bytes.
func (s *Store) CommitCheckpoint(st StagedCheckpoint, atts []crdt.Attestation) error {
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.release()
	if st.gen == 0 {
		return errors.New("store: commit a checkpoint that was not staged")
	}
	if len(atts) > MaxCheckpointAttestations {
		return fmt.Errorf("store: %d attestations, at most %d", len(atts), MaxCheckpointAttestations)
	}
	cur, haveCur, err := s.checkpointRecord()
	if err != nil && !errors.Is(err, ErrCorrupt) {
		return fmt.Errorf("store: save checkpoint: %w", err)
	}
	if haveCur != st.havePrev || haveCur && cur.gen != st.prevGen {
		return errors.New("store: another checkpoint was saved since this one was staged")
	}
	rec := checkpointRecord{gen: st.gen, size: st.size, hash: st.hash, atts: atts}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(keyCheckpoint, rec.encode()) }); err != nil {
		return fmt.Errorf("store: save checkpoint: %w", err)
	}
	if st.havePrev && st.prevGen != st.gen {
		if err := s.deletePrefixBackground(binary.BigEndian.AppendUint64([]byte{prefixCheckpointChunk}, st.prevGen)); err != nil {
			s.log.Warn("delete the previous checkpoint", "err", err)
		}
	}
	return nil
}

func (s *Store) checkpointRecord() (checkpointRecord, bool, error) {
	var rec checkpointRecord
	found, err := s.viewValue(keyCheckpoint, func(v []byte) error {
		var err error
		rec, err = decodeCheckpointRecord(v)
		return err
	})
	return rec, found && err == nil, err
}

// CheckpointInfo describes the saved checkpoint without its bytes.
type CheckpointInfo struct {
	Hash         [32]byte
	Size         uint64
	Attestations []crdt.Attestation
}

// CheckpointInfo returns the hash, size and attestations of the latest
// saved checkpoint, or ErrNoCheckpoint.
func (s *Store) CheckpointInfo() (CheckpointInfo, error) {
	if err := s.acquire(); err != nil {
		return CheckpointInfo{}, err
	}
	defer s.release()
	rec, ok, err := s.checkpointRecord()
	if err != nil {
		return CheckpointInfo{}, fmt.Errorf("store: checkpoint: %w", err)
	}
	if !ok {
		return CheckpointInfo{}, ErrNoCheckpoint
	}
	return CheckpointInfo{Hash: rec.hash, Size: rec.size, Attestations: rec.atts}, nil
}

// readCheckpointIn reads the latest checkpoint's record, then its chunks
// in order, appended to the bytes it returns (allocated whole up front if
// whole), until they are all read or enough, called after each chunk,
// says so. ErrNoCheckpoint when there is none.
func readCheckpointIn(txn *badger.Txn, whole bool, enough func(prefix []byte) bool) (checkpointRecord, []byte, error) {
	var rec checkpointRecord
	item, err := txn.Get(keyCheckpoint)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return rec, nil, ErrNoCheckpoint
	}
	if err != nil {
		return rec, nil, err
	}
	if err := item.Value(func(v []byte) error {
		var err error
		rec, err = decodeCheckpointRecord(v)
		return err
	}); err != nil {
		return rec, nil, err
	}
	var cp []byte
	if whole {
		cp = make([]byte, 0, rec.size)
	}
	for i := uint32(0); uint64(len(cp)) < rec.size; i++ {
		item, err := txn.Get(checkpointChunkKey(rec.gen, i))
		if err != nil {
			return rec, cp, fmt.Errorf("%w: checkpoint chunk %d: %v", ErrCorrupt, i, err)
		}
		if err := item.Value(func(v []byte) error { cp = append(cp, v...); return nil }); err != nil {
			return rec, cp, err
		}
		if enough != nil && enough(cp) {
			break
		}
	}
	return rec, cp, nil
}

// LatestCheckpoint returns the latest saved checkpoint's bytes and
// attestations, or ErrNoCheckpoint. The bytes are checked against the
// saved hash.
func (s *Store) LatestCheckpoint() ([]byte, []crdt.Attestation, error) {
	if err := s.acquire(); err != nil {
		return nil, nil, err
	}
	defer s.release()
	var cp []byte
	var rec checkpointRecord
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		rec, cp, err = readCheckpointIn(txn, true, nil)
		return err
	})
	s.releaseValueLog()
	if err != nil {
		if errors.Is(err, ErrNoCheckpoint) {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("store: checkpoint: %w", err)
	}
	if uint64(len(cp)) != rec.size || sha256.Sum256(cp) != rec.hash {
		return nil, nil, fmt.Errorf("%w: checkpoint bytes do not match their hash", ErrCorrupt)
	}
	return cp, rec.atts, nil
}

// StreamLatestCheckpoint hands the latest saved checkpoint to a sender
// without holding it whole (80 MB at 10 M ops): header gets its size and
// attestations, then chunk its bytes in order, a chunk at a time (the
// slice is valid only during the call). Each chunk is read in its own
// transaction, so that no read transaction or store reference is held
// while the caller writes to the network. The bytes are checked against
// the saved hash at the end (ErrCorrupt); a checkpoint replaced while it
// is sent fails with an error too. ErrNoCheckpoint when there is none.
func (s *Store) StreamLatestCheckpoint(header func(size uint64, atts []crdt.Attestation) error, chunk func([]byte) error) error {
	if err := s.acquire(); err != nil {
		return err
	}
	rec, ok, err := s.checkpointRecord()
	s.release()
	if err != nil {
		return fmt.Errorf("store: checkpoint: %w", err)
	}
	if !ok {
		return ErrNoCheckpoint
	}
	if err := header(rec.size, rec.atts); err != nil {
		return err
	}
	h := sha256.New()
	var buf []byte
	var sent uint64
	// The chunks' pages are handed back as they are sent, not only at the
	// end: the whole checkpoint resident at once is what is avoided.
	defer s.releaseValueLog()
	for i := uint32(0); sent < rec.size; i++ {
		if buf, err = s.checkpointChunkInto(rec.gen, i, buf[:0]); err != nil {
			return err
		}
		if i%releaseEveryChunks == releaseEveryChunks-1 {
			s.releaseValueLog()
		}
		h.Write(buf)
		sent += uint64(len(buf))
		if err := chunk(buf); err != nil {
			return err
		}
	}
	if sent != rec.size || [32]byte(h.Sum(nil)) != rec.hash {
		return fmt.Errorf("%w: checkpoint bytes do not match their hash", ErrCorrupt)
	}
	return nil
}

// releaseEveryChunks is every how many chunks streamed the value log's
// pages are handed back (16 MiB). A save writes its chunks in one batch
// and hands them back once, after it.
const releaseEveryChunks = 16

// checkpointChunkInto appends chunk i of checkpoint generation gen to buf.
func (s *Store) checkpointChunkInto(gen uint64, i uint32, buf []byte) ([]byte, error) {
	if err := s.acquire(); err != nil {
		return buf, err
	}
	defer s.release()
	found, err := s.viewValue(checkpointChunkKey(gen, i), func(v []byte) error {
		buf = append(buf, v...)
		return nil
	})
	switch {
	case err != nil:
		return buf, fmt.Errorf("store: checkpoint chunk %d: %w", i, err)
	case !found || len(buf) == 0:
		// Deleted by a newer checkpoint's save since the record was read.
		return buf, fmt.Errorf("store: checkpoint chunk %d of generation %d is gone (replaced by a newer checkpoint?)", i, gen)
	}
	return buf, nil
}

// LatestCheckpointHead reads the latest saved checkpoint chunk by chunk
// and gives decode the bytes read so far, until decode accepts them: a
// reader that needs only the checkpoint's head (its meta and authors, at
// its start) does not hold the whole of it (80 MB at 10 M ops). decode's
// last error is returned if the whole checkpoint does not satisfy it.
// Unlike LatestCheckpoint it does not check the bytes against the saved
// hash, which needs all of them: Badger's own checksums guard the chunks
// read.
func (s *Store) LatestCheckpointHead(decode func(prefix []byte) error) error {
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.release()
	var last error
	calls := 0
	err := s.db.View(func(txn *badger.Txn) error {
		_, prefix, err := readCheckpointIn(txn, false, func(prefix []byte) bool {
			calls++
			last = decode(prefix)
			return last == nil
		})
		if err == nil && calls == 0 {
			last = decode(prefix) // an empty checkpoint
		}
		return err
	})
	switch {
	case errors.Is(err, ErrNoCheckpoint):
		return err
	case err != nil:
		return fmt.Errorf("store: checkpoint: %w", err)
	}
	return last
}

// UpdateCheckpointAttestations replaces the attestations kept with the
// latest checkpoint, if its hash is hash (more venues attested it after it
// was saved). It reports whether it did.
func (s *Store) UpdateCheckpointAttestations(hash [32]byte, atts []crdt.Attestation) (bool, error) {
	if err := s.acquire(); err != nil {
		return false, err
	}
	defer s.release()
	if len(atts) > MaxCheckpointAttestations {
		return false, fmt.Errorf("store: %d attestations, at most %d", len(atts), MaxCheckpointAttestations)
	}
	updated := false
	err := s.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(keyCheckpoint)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		var rec checkpointRecord
		if err := item.Value(func(v []byte) error {
			var err error
			rec, err = decodeCheckpointRecord(v)
			return err
		}); err != nil {
			return err
		}
		if rec.hash != hash {
			return nil
		}
		rec.atts = atts
		updated = true
		return txn.Set(keyCheckpoint, rec.encode())
	})
	if err != nil {
		return false, fmt.Errorf("store: checkpoint attestations: %w", err)
	}
	return updated, nil
}
