package store

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"

	"github.com/cagnotte/cagnotte/crdt"
)

// DiskIndex is the crdt.Index of a node: card entries, the first payment
// per (card, counter) and external references live in Badger, under a
// generation number so that a refold can rebuild them aside and switch in
// one commit. Writes wait in an overlay until the next Commit, which
// writes them in the same transaction as the ops that made them; reads see
// the overlay, then the disk. Like the op set it serves, it is not safe
// for concurrent writes: the node calls it under its set's lock.
type DiskIndex struct {
	s    *Store
	gen  uint32 // the committed generation (the "g" key)
	pend *overlay
}

// overlay holds an index's writes until they are committed.
type overlay struct {
	// reset: the index was rebuilt from scratch; reads ignore the disk and
	// the commit switches to a new generation.
	reset    bool
	entries  map[crdt.CardID][]crdt.Entry // sorted by (HLC, op id)
	counters map[counterKey]crdt.OpID
	refs     map[string]crdt.RefEntry
}

type counterKey struct {
	card    crdt.CardID
	counter uint64
}

func newOverlay(reset bool) *overlay {
	return &overlay{reset: reset, entries: map[crdt.CardID][]crdt.Entry{}, counters: map[counterKey]crdt.OpID{}, refs: map[string]crdt.RefEntry{}}
}

func (o *overlay) empty() bool {
	return !o.reset && len(o.entries) == 0 && len(o.counters) == 0 && len(o.refs) == 0
}

var _ crdt.Rebuilder = (*DiskIndex)(nil)

// Index returns the store's index, for the op set's Config.Index.
func (s *Store) Index() *DiskIndex { return s.index }

// Index keys: a prefix byte, the generation, then the record's own key.
const (
	prefixEntry   = 'E' // gen card entry(hlc 8, id 32) → entry
	prefixCounter = 'P' // gen card counter(8) → op id
	prefixRef     = 'R' // gen ref → ref entry
)

func indexPrefix(p byte, gen uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{p}, gen)
}

func cardPrefix(p byte, gen uint32, card crdt.CardID) []byte {
	k := indexPrefix(p, gen)
	k = append(k, byte(len(card)))
	return append(k, card...)
}

func entryKey(gen uint32, card crdt.CardID, st crdt.Stamp) []byte {
	k := cardPrefix(prefixEntry, gen, card)
	k = binary.BigEndian.AppendUint64(k, uint64(st.HLC))
	return append(k, st.ID[:]...)
}

func counterKeyBytes(gen uint32, card crdt.CardID, counter uint64) []byte {
	return binary.BigEndian.AppendUint64(cardPrefix(prefixCounter, gen, card), counter)
}

func refKey(gen uint32, ref string) []byte {
	return append(indexPrefix(prefixRef, gen), ref...)
}

// Entry values: kind, counted, venue, amount, counter, label.
func encodeEntry(e *crdt.Entry) []byte {
	b := make([]byte, 0, 2+32+10+5+len(e.Label)+2)
	counted := byte(0)
	if e.Counted {
		counted = 1
	}
	b = append(b, byte(e.Kind), counted)
	b = append(b, e.Venue[:]...)
	b = binary.AppendVarint(b, e.Amount)
	b = binary.AppendUvarint(b, e.Counter)
	b = binary.AppendUvarint(b, uint64(len(e.Label)))
	return append(b, e.Label...)
}

func decodeEntry(key, v []byte) (crdt.Entry, error) {
	var e crdt.Entry
	if len(key) < 8+32 || len(v) < 2+32 {
		return e, fmt.Errorf("%w: entry of %d bytes", ErrCorrupt, len(v))
	}
	e.HLC = crdt.HLC(binary.BigEndian.Uint64(key[len(key)-40:]))
	copy(e.Op[:], key[len(key)-32:])
	e.Kind, e.Counted = crdt.Kind(v[0]), v[1] == 1
	copy(e.Venue[:], v[2:34])
	r := v[34:]
	var n int
	if e.Amount, n = binary.Varint(r); n <= 0 {
		return e, fmt.Errorf("%w: entry amount", ErrCorrupt)
	}
	r = r[n:]
	if e.Counter, n = binary.Uvarint(r); n <= 0 {
		return e, fmt.Errorf("%w: entry counter", ErrCorrupt)
	}
	r = r[n:]
	l, n := binary.Uvarint(r)
	if n <= 0 || uint64(len(r)-n) != l {
		return e, fmt.Errorf("%w: entry label", ErrCorrupt)
	}
	e.Label = string(r[n:])
	return e, nil
}

func encodeRef(e crdt.RefEntry) []byte {
	b := []byte{byte(len(e.Card))}
	b = append(b, e.Card...)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Winner.HLC))
	b = append(b, e.Winner.ID[:]...)
	return binary.AppendVarint(b, e.Amount)
}

func decodeRef(v []byte) (crdt.RefEntry, error) {
	var e crdt.RefEntry
	if len(v) < 1 || len(v) < 1+int(v[0])+40+1 {
		return e, fmt.Errorf("%w: ref of %d bytes", ErrCorrupt, len(v))
	}
	n := int(v[0])
	e.Card = crdt.CardID(v[1 : 1+n])
	r := v[1+n:]
	e.Winner.HLC = crdt.HLC(binary.BigEndian.Uint64(r))
	copy(e.Winner.ID[:], r[8:40])
	var k int
	if e.Amount, k = binary.Varint(r[40:]); k <= 0 {
		return e, fmt.Errorf("%w: ref amount", ErrCorrupt)
	}
	return e, nil
}

func stampCmp(a crdt.Entry, b crdt.Stamp) int {
	if a.HLC != b.HLC {
		return cmp.Compare(a.HLC, b.HLC)
	}
	return bytes.Compare(a.Op[:], b.ID[:])
}

// get reads one key of the committed index; it reports a read failure to
// the store (the index has no error returns: the fold cannot stop midway).
func (d *DiskIndex) get(key []byte, fn func(v []byte) error) bool {
	found, err := d.s.viewValue(key, fn)
	if err != nil {
		d.s.fail(fmt.Errorf("index read: %w", err))
		return false
	}
	return found
}

// AddEntry implements crdt.Index.
func (d *DiskIndex) AddEntry(card crdt.CardID, e crdt.Entry) {
	es := d.pend.entries[card]
	i, found := slices.BinarySearchFunc(es, crdt.Stamp{HLC: e.HLC, ID: e.Op}, stampCmp)
	if found {
		es[i] = e
		return
	}
	d.pend.entries[card] = slices.Insert(es, i, e)
}

// SetCounted implements crdt.Index.
func (d *DiskIndex) SetCounted(card crdt.CardID, st crdt.Stamp, counted bool) {
	es := d.pend.entries[card]
	if i, found := slices.BinarySearchFunc(es, st, stampCmp); found {
		es[i].Counted = counted
		return
	}
	if d.pend.reset {
		return
	}
	var e crdt.Entry
	key := entryKey(d.gen, card, st)
	ok := d.get(key, func(v []byte) error {
		var err error
		e, err = decodeEntry(key, v)
		return err
	})
	if ok {
		e.Counted = counted
		d.AddEntry(card, e)
	}
}

// Entries implements crdt.Index: the committed entries and the overlay's,
// merged in order (the overlay's win on the same key).
func (d *DiskIndex) Entries(card crdt.CardID, from *crdt.Stamp, newestFirst bool, fn func(crdt.Entry) bool) {
	pend := d.pend.entries[card]
	// The overlay's entries after from, in iteration order.
	var over []crdt.Entry
	for _, e := range pend {
		if from != nil {
			c := stampCmp(e, *from)
			if newestFirst && c >= 0 || !newestFirst && c <= 0 {
				continue
			}
		}
		over = append(over, e)
	}
	if newestFirst {
		slices.Reverse(over)
	}
	emit := func(e crdt.Entry) bool { return fn(e) }
	if d.pend.reset {
		for _, e := range over {
			if !emit(e) {
				return
			}
		}
		return
	}
	prefix := cardPrefix(prefixEntry, d.gen, card)
	err := d.s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: newestFirst, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		switch {
		case from != nil:
			it.Seek(entryKey(d.gen, card, *from))
			if it.Valid() && bytes.Equal(it.Item().Key(), entryKey(d.gen, card, *from)) {
				it.Next()
			}
		case newestFirst:
			it.Seek(append(slices.Clone(prefix), 0xff))
		default:
			it.Rewind()
		}
		for ; it.Valid(); it.Next() {
			item := it.Item()
			var e crdt.Entry
			err := item.Value(func(v []byte) error {
				var err error
				e, err = decodeEntry(item.Key(), v)
				return err
			})
			if err != nil {
				return err
			}
			// Overlay entries that come first.
			for len(over) > 0 {
				c := stampCmp(over[0], crdt.Stamp{HLC: e.HLC, ID: e.Op})
				if newestFirst {
					c = -c
				}
				if c > 0 {
					break
				}
				if !emit(over[0]) {
					return nil
				}
				if c == 0 { // the overlay's version of this entry
					e.Kind = 0
				}
				over = over[1:]
			}
			if e.Kind == 0 {
				continue
			}
			if !emit(e) {
				return nil
			}
		}
		for _, e := range over {
			if !emit(e) {
				return nil
			}
		}
		over = nil
		return nil
	})
	if err != nil {
		d.s.fail(fmt.Errorf("index read: %w", err))
	}
}

// Payment implements crdt.Index.
func (d *DiskIndex) Payment(card crdt.CardID, counter uint64) (crdt.OpID, bool) {
	if id, ok := d.pend.counters[counterKey{card, counter}]; ok {
		return id, true
	}
	if d.pend.reset {
		return crdt.OpID{}, false
	}
	var id crdt.OpID
	ok := d.get(counterKeyBytes(d.gen, card, counter), func(v []byte) error {
		if len(v) != len(id) {
			return fmt.Errorf("%w: counter of %d bytes", ErrCorrupt, len(v))
		}
		copy(id[:], v)
		return nil
	})
	return id, ok
}

// SetPayment implements crdt.Index.
func (d *DiskIndex) SetPayment(card crdt.CardID, counter uint64, id crdt.OpID) {
	d.pend.counters[counterKey{card, counter}] = id
}

// Ref implements crdt.Index.
func (d *DiskIndex) Ref(ref string) (crdt.RefEntry, bool) {
	if e, ok := d.pend.refs[ref]; ok {
		return e, true
	}
	if d.pend.reset {
		return crdt.RefEntry{}, false
	}
	var e crdt.RefEntry
	ok := d.get(refKey(d.gen, ref), func(v []byte) error {
		var err error
		e, err = decodeRef(v)
		return err
	})
	return e, ok
}

// SetRef implements crdt.Index.
func (d *DiskIndex) SetRef(ref string, e crdt.RefEntry) { d.pend.refs[ref] = e }

// VenuePayments implements crdt.Index from the venue's own chain: its ops
// from the first stamped at or after since (found by bisection: a venue's
// HLCs grow along its chain), committed ones only.
func (d *DiskIndex) VenuePayments(venue crdt.PublicKey, since int64, fn func(card crdt.CardID, amount uint64)) {
	hlcAt := func(seq uint64) (int64, bool) {
		var ms int64
		found := false
		_ = d.s.readRange(venue, seq, seq, func(op crdt.Op) error { ms, found = op.HLC.Millis(), true; return nil })
		return ms, found
	}
	// The last seq held.
	var hi uint64
	err := d.s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: opPrefix(venue), Reverse: true})
		defer it.Close()
		it.Seek(opKey(venue, ^uint64(0)))
		if it.Valid() {
			hi = binary.BigEndian.Uint64(it.Item().Key()[1+32:])
		}
		return nil
	})
	if err != nil || hi == 0 {
		return
	}
	lo := uint64(1)
	for lo < hi {
		mid := lo + (hi-lo)/2
		if ms, ok := hlcAt(mid); ok && ms < since {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	_ = d.s.readRange(venue, lo, ^uint64(0), func(op crdt.Op) error {
		if op.Kind != crdt.KindPayment || op.HLC.Millis() < since {
			return nil
		}
		b, err := op.Decode()
		if err != nil {
			return nil
		}
		p := b.(*crdt.Payment)
		fn(p.Card, p.Amount)
		return nil
	})
}

// EachRef implements crdt.Index.
func (d *DiskIndex) EachRef(fn func(ref string, e crdt.RefEntry)) {
	for k, e := range d.pend.refs {
		fn(k, e)
	}
	if d.pend.reset {
		return
	}
	prefix := indexPrefix(prefixRef, d.gen)
	err := d.s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			ref := string(it.Item().Key()[len(prefix):])
			if _, ok := d.pend.refs[ref]; ok {
				continue
			}
			var e crdt.RefEntry
			if err := it.Item().Value(func(v []byte) error {
				var err error
				e, err = decodeRef(v)
				return err
			}); err != nil {
				return err
			}
			fn(ref, e)
		}
		return nil
	})
	if err != nil {
		d.s.fail(fmt.Errorf("index read: %w", err))
	}
}

// Reset implements crdt.Index.
func (d *DiskIndex) Reset() { d.pend = newOverlay(true) }

// Scratch implements crdt.Rebuilder.
func (d *DiskIndex) Scratch() crdt.Index {
	return &DiskIndex{s: d.s, gen: d.gen, pend: newOverlay(true)}
}

// Adopt implements crdt.Rebuilder.
func (d *DiskIndex) Adopt(scratch crdt.Index) { d.pend = scratch.(*DiskIndex).pend }

// discard drops the writes not committed (after a failed commit).
func (d *DiskIndex) discard() { d.pend = newOverlay(false) }

// flush writes the overlay into txn and returns the generation it writes.
func (d *DiskIndex) flush(txn *badger.Txn) (uint32, error) {
	gen := d.gen
	if d.pend.reset {
		gen++
		if err := txn.Set(keyGeneration, binary.BigEndian.AppendUint32(nil, gen)); err != nil {
			return 0, err
		}
	}
	for card, es := range d.pend.entries {
		for i := range es {
			if err := txn.Set(entryKey(gen, card, crdt.Stamp{HLC: es[i].HLC, ID: es[i].Op}), encodeEntry(&es[i])); err != nil {
				return 0, err
			}
		}
	}
	for k, id := range d.pend.counters {
		if err := txn.Set(counterKeyBytes(gen, k.card, k.counter), id[:]); err != nil {
			return 0, err
		}
	}
	for ref, e := range d.pend.refs {
		if err := txn.Set(refKey(gen, ref), encodeRef(e)); err != nil {
			return 0, err
		}
	}
	return gen, nil
}

// committed records that the overlay is on disk under gen.
func (d *DiskIndex) committed(gen uint32) (dropOld bool) {
	dropOld = gen != d.gen
	d.gen = gen
	d.pend = newOverlay(false)
	return dropOld
}

// RefsAsideConfig configures WriteRefsAside. Zero fields take the
// defaults.
type RefsAsideConfig struct {
	// ChunkBytes bounds the bytes of references written per transaction
	// (Badger may cut a chunk shorter). Default 4 MiB.
	ChunkBytes int
	// AfterChunk, if set, is called after each chunk is committed, with
	// its number (from 1); an error it returns stops the writes, as a
	// crash would (tests stop an install midway with it).
	AfterChunk func(chunk int) error
}

// ErrNotReset is returned by WriteRefsAside when the index was not Reset.
var ErrNotReset = errors.New("store: the index was not reset: references cannot be written aside")

// WriteRefsAside writes external references (each calls its argument
// with every one) straight to the store, under the generation that the
// next commit of the reset index switches to, in transactions of at most
// cfg.ChunkBytes, instead of holding them in the overlay until that
// commit: a checkpoint carries hundreds of thousands of them. The index
// must have been Reset and hold no reference yet. Until that commit no
// read sees them (reads of a reset index ignore the disk, and the state
// on disk names the previous generation); a crash before it leaves keys
// under a generation nothing names, which the next WriteRefsAside deletes
// first. It returns the number of chunks written.
func (d *DiskIndex) WriteRefsAside(ctx context.Context, each func(fn func(ref string, e crdt.RefEntry) error) error, cfg RefsAsideConfig) (int, error) {
	s := d.s
	if err := s.acquire(); err != nil {
		return 0, err
	}
	defer s.release()
	if !d.pend.reset || len(d.pend.refs) > 0 {
		return 0, ErrNotReset
	}
	if cfg.ChunkBytes <= 0 {
		cfg.ChunkBytes = 4 << 20
	}
	gen := d.gen + 1
	// What a crashed install or rebuild left under that generation.
	for _, p := range append([]byte{prefixEntry, prefixCounter, prefixRef}, eventPrefixes...) {
		if err := s.deletePrefixBackground(indexPrefix(p, gen)); err != nil {
			return 0, fmt.Errorf("store: clear index generation %d: %w", gen, err)
		}
	}
	chunks, size := 0, 0
	txn := s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	commit := func() error {
		if size == 0 {
			return nil
		}
		if err := txn.Commit(); err != nil {
			return err
		}
		chunks++
		txn, size = s.db.NewTransaction(true), 0
		if cfg.AfterChunk != nil {
			if err := cfg.AfterChunk(chunks); err != nil {
				return err
			}
		}
		return ctx.Err()
	}
	err := each(func(ref string, e crdt.RefEntry) error {
		k, v := refKey(gen, ref), encodeRef(e)
		err := txn.Set(k, v)
		if errors.Is(err, badger.ErrTxnTooBig) {
			if err := commit(); err != nil {
				return err
			}
			err = txn.Set(k, v)
		}
		if err != nil {
			return err
		}
		if size += len(k) + len(v); size >= cfg.ChunkBytes {
			return commit()
		}
		return nil
	})
	if err == nil {
		err = commit()
	}
	if err != nil {
		return chunks, fmt.Errorf("store: write references aside: %w", err)
	}
	return chunks, nil
}
