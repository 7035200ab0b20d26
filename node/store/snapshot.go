package store

import (
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"io"

	"github.com/dgraph-io/badger/v4"

	"github.com/cagnotte/cagnotte/crdt"
)

// snapFormat is the first byte of the snapshot header.
const snapFormat = 1

// chunkSize is the size of a snapshot chunk.
const chunkSize = 1 << 20

// snapHeaderLen is format, chunks, bytes, set ops and state size.
const snapHeaderLen = 1 + 4 + 8 + 8 + 8

// snapHeader is the value of the "s" key.
type snapHeader struct {
	Chunks    uint32
	Bytes     uint64
	SetOps    uint64 // set.Len() when the snapshot was taken
	StateSize uint64 // cards + events + ops then
}

func (h snapHeader) encode() []byte {
	b := make([]byte, 0, snapHeaderLen)
	b = append(b, snapFormat)
	b = binary.BigEndian.AppendUint32(b, h.Chunks)
	b = binary.BigEndian.AppendUint64(b, h.Bytes)
	b = binary.BigEndian.AppendUint64(b, h.SetOps)
	return binary.BigEndian.AppendUint64(b, h.StateSize)
}

func readSnapHeader(txn *badger.Txn) (snapHeader, bool, error) {
	var h snapHeader
	item, err := txn.Get(keySnapshot)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return h, false, nil
	}
	if err != nil {
		return h, false, fmt.Errorf("store: read snapshot header: %w", err)
	}
	err = item.Value(func(v []byte) error {
		if len(v) != snapHeaderLen || v[0] != snapFormat {
			return fmt.Errorf("%w: snapshot header of %d bytes, format %d", ErrCorrupt, len(v), v[0])
		}
		h.Chunks = binary.BigEndian.Uint32(v[1:])
		h.Bytes = binary.BigEndian.Uint64(v[5:])
		h.SetOps = binary.BigEndian.Uint64(v[13:])
		h.StateSize = binary.BigEndian.Uint64(v[21:])
		return nil
	})
	return h, err == nil, err
}

// snapshotRecord is what the snapshot chunks hold, gob-encoded. Stale is
// kept because crdt.Snapshot does not carry it: a set snapshotted while
// stale must be refolded after Restore.
type snapshotRecord struct {
	Federation crdt.PublicKey
	Stale      bool
	Snap       crdt.Snapshot
}

// encodedSnapshot is a snapshot ready to be written.
type encodedSnapshot struct {
	header snapHeader
	chunks [][]byte
}

// encodeSnapshot encodes set's state. It reads the set's maps: the caller
// must not change the set meanwhile.
func encodeSnapshot(set *crdt.OpSet) (*encodedSnapshot, error) {
	rec := snapshotRecord{Federation: set.Federation(), Stale: set.Stale, Snap: set.Snapshot()}
	var w chunkWriter
	if err := gob.NewEncoder(&w).Encode(&rec); err != nil {
		return nil, fmt.Errorf("store: encode snapshot: %w", err)
	}
	st := set.State
	return &encodedSnapshot{
		header: snapHeader{
			Chunks:    uint32(len(w.chunks)),
			Bytes:     w.n,
			SetOps:    set.Len(),
			StateSize: uint64(len(st.Cards)+len(st.Events)) + set.Len(),
		},
		chunks: w.chunks,
	}, nil
}

// chunkWriter collects what is written in chunks of chunkSize bytes.
type chunkWriter struct {
	chunks [][]byte
	n      uint64
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if len(w.chunks) == 0 || len(w.chunks[len(w.chunks)-1]) == chunkSize {
			w.chunks = append(w.chunks, make([]byte, 0, chunkSize))
		}
		c := &w.chunks[len(w.chunks)-1]
		k := copy((*c)[len(*c):chunkSize], p)
		*c = (*c)[:len(*c)+k]
		p = p[k:]
	}
	w.n += uint64(n)
	return n, nil
}

// chunkReader reads the snapshot's chunks in order, one at a time.
type chunkReader struct {
	txn  *badger.Txn
	next uint32
	n    uint32
	cur  []byte
	read uint64
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.next == r.n {
			return 0, io.EOF
		}
		item, err := r.txn.Get(snapChunkKey(r.next))
		if err != nil {
			return 0, fmt.Errorf("%w: snapshot chunk %d of %d: %v", ErrCorrupt, r.next, r.n, err)
		}
		if r.cur, err = item.ValueCopy(r.cur[:0]); err != nil {
			return 0, fmt.Errorf("store: read snapshot chunk %d: %w", r.next, err)
		}
		r.next++
	}
	k := copy(p, r.cur)
	r.cur = r.cur[k:]
	r.read += uint64(k)
	return k, nil
}

// readSnapshot decodes the snapshot on disk, if any.
func (s *Store) readSnapshot() (*snapshotRecord, snapHeader, error) {
	var rec *snapshotRecord
	var h snapHeader
	err := s.db.View(func(txn *badger.Txn) error {
		var ok bool
		var err error
		if h, ok, err = readSnapHeader(txn); err != nil || !ok {
			return err
		}
		r := &chunkReader{txn: txn, n: h.Chunks}
		rec = new(snapshotRecord)
		if err := gob.NewDecoder(r).Decode(rec); err != nil {
			return fmt.Errorf("%w: decode snapshot: %v", ErrCorrupt, err)
		}
		if r.read != h.Bytes || r.next != h.Chunks || len(r.cur) != 0 {
			return fmt.Errorf("%w: snapshot of %d bytes in %d chunks, decoded %d bytes from %d chunks", ErrCorrupt, h.Bytes, h.Chunks, r.read, r.next)
		}
		return nil
	})
	if err != nil {
		return nil, h, err
	}
	return rec, h, nil
}
