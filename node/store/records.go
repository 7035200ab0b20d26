package store

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/cagnotte/cagnotte/crdt"
)

// The op set's state is kept as small records, each rewritten in the same
// transaction as the ops that change it (crdt.OpSet.TakeChanges): one per
// author, card, venue and conflict, and one for the rest (meta).
// Loading reads them back and no op. Events are in the event index
// (events.go), read as the agenda needs them; "e" records are those of
// older stores, which Load migrates there.
const (
	prefixAuthor   = 'a' // author(32) → binary crdt.AuthorState (gob before)
	prefixCard     = 'c' // card → gob crdt.Card
	prefixVenue    = 'u' // venue(32) → gob crdt.Venue
	prefixEvent    = 'e' // older stores: venue(32) id → binary crdt.Event (gob before); see events.go
	prefixConflict = 'f' // conflict key → gob crdt.Conflict
)

var (
	keyMeta       = []byte{'m'}
	keyGeneration = []byte{'g'}
)

func recordKey(p byte, k ...[]byte) []byte {
	out := []byte{p}
	for _, b := range k {
		out = append(out, b...)
	}
	return out
}

func gobBytes(v any) ([]byte, error) {
	var b bytes.Buffer
	if err := gob.NewEncoder(&b).Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// writeChanges writes a set's changes into txn.
func writeChanges(txn *badger.Txn, ch *crdt.Changes) error {
	if ch.Reset {
		for _, p := range []byte{prefixAuthor, prefixCard, prefixVenue, prefixEvent, prefixConflict} {
			if err := deletePrefix(txn, []byte{p}); err != nil {
				return err
			}
		}
	}
	set := func(key []byte, v any) error {
		b, err := gobBytes(v)
		if err != nil {
			return fmt.Errorf("encode %q: %w", key[:1], err)
		}
		return txn.Set(key, b)
	}
	// The meta and the committing authors' records are rewritten at every
	// commit: binary, a third of their gob size (gob repeats its type
	// descriptions in every record).
	if err := txn.Set(keyMeta, ch.Meta.AppendBinary(nil)); err != nil {
		return err
	}
	for _, a := range ch.Authors {
		if err := txn.Set(recordKey(prefixAuthor, a.Key[:]), a.AppendBinary(nil)); err != nil {
			return err
		}
	}
	for _, c := range ch.Cards {
		// Cards in their compact binary record: a restart reads them all.
		if err := txn.Set(recordKey(prefixCard, []byte(c.ID)), c.AppendBinary(nil)); err != nil {
			return err
		}
	}
	for _, v := range ch.Venues {
		if err := set(recordKey(prefixVenue, v.Key[:]), v); err != nil {
			return err
		}
	}
	for _, c := range ch.Conflicts {
		if err := set(recordKey(prefixConflict, []byte(c.Key())), c); err != nil {
			return err
		}
	}
	return nil
}

func eventRecordKey(e *crdt.Event) []byte {
	return recordKey(prefixEvent, e.Key.Venue[:], []byte(e.Key.ID))
}

// deletePrefix deletes every key under p in txn (the few records of a
// reset: authors, cards, venues, events, conflicts).
func deletePrefix(txn *badger.Txn, p []byte) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: p})
	var keys [][]byte
	for it.Rewind(); it.Valid(); it.Next() {
		keys = append(keys, it.Item().KeyCopy(nil))
	}
	it.Close()
	for _, k := range keys {
		if err := txn.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// decodeMeta reads the meta record: binary, or gob as stores wrote it
// before (rewritten binary at the next commit).
func decodeMeta(v []byte, m *crdt.Meta) error {
	bm, ok, err := crdt.DecodeMetaRecord(v)
	switch {
	case err != nil:
		return err
	case ok:
		*m = bm
		return nil
	}
	return gob.NewDecoder(bytes.NewReader(v)).Decode(m)
}

// eachAuthor reads the author records: binary, or gob as stores wrote
// them before (each rewritten binary at the author's next op).
func eachAuthor(txn *badger.Txn, fn func(a *crdt.AuthorState)) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixAuthor}, PrefetchValues: true, PrefetchSize: 256})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		err := item.Value(func(v []byte) error {
			a, ok, err := crdt.DecodeAuthorRecord(v)
			if err != nil {
				return err
			}
			if !ok {
				a = &crdt.AuthorState{}
				if err := gob.NewDecoder(bytes.NewReader(v)).Decode(a); err != nil {
					return err
				}
			}
			fn(a)
			return nil
		})
		if err != nil {
			return fmt.Errorf("%w: author record %q: %v", ErrCorrupt, item.Key(), err)
		}
	}
	return nil
}

// eachCard reads the card records: binary, or gob as the first format-2
// stores wrote them (fn's second argument is true for those: decoding
// one costs a gob type exchange, 20 times a binary record).
func eachCard(txn *badger.Txn, fn func(c *crdt.Card, wasGob bool)) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixCard}, PrefetchValues: true, PrefetchSize: 256})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		err := item.Value(func(v []byte) error {
			c, ok, err := crdt.DecodeCardRecord(v)
			if err != nil {
				return err
			}
			if !ok {
				c = &crdt.Card{}
				if err := gob.NewDecoder(bytes.NewReader(v)).Decode(c); err != nil {
					return err
				}
			}
			fn(c, !ok)
			return nil
		})
		if err != nil {
			return fmt.Errorf("%w: card record %q: %v", ErrCorrupt, item.Key(), err)
		}
	}
	return nil
}

// readRecords reads the state's records; ok is false when the store holds
// none (a new store, or one written by format 1).
func (s *Store) readRecords() (st crdt.Stored, gen uint32, gobCards []*crdt.Card, ok bool, err error) {
	err = s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(keyMeta)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		ok = true
		if err := item.Value(func(v []byte) error { return decodeMeta(v, &st.Meta) }); err != nil {
			return fmt.Errorf("%w: meta: %v", ErrCorrupt, err)
		}
		if item, err := txn.Get(keyGeneration); err == nil {
			if err := item.Value(func(v []byte) error {
				if len(v) != 4 {
					return fmt.Errorf("%w: generation of %d bytes", ErrCorrupt, len(v))
				}
				gen = binary.BigEndian.Uint32(v)
				return nil
			}); err != nil {
				return err
			}
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		each := func(p byte, fn func(dec *gob.Decoder) error) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{p}, PrefetchValues: true, PrefetchSize: 256})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				item := it.Item()
				if err := item.Value(func(v []byte) error { return fn(gob.NewDecoder(bytes.NewReader(v))) }); err != nil {
					return fmt.Errorf("%w: record %q: %v", ErrCorrupt, item.Key(), err)
				}
			}
			return nil
		}
		if err := eachAuthor(txn, func(a *crdt.AuthorState) { st.Authors = append(st.Authors, a) }); err != nil {
			return err
		}
		if err := eachCard(txn, func(c *crdt.Card, wasGob bool) {
			st.Cards = append(st.Cards, c)
			if wasGob {
				gobCards = append(gobCards, c)
			}
		}); err != nil {
			return err
		}
		if err := each(prefixVenue, func(d *gob.Decoder) error {
			v := &crdt.Venue{}
			st.Venues = append(st.Venues, v)
			return d.Decode(v)
		}); err != nil {
			return err
		}
		return each(prefixConflict, func(d *gob.Decoder) error {
			c := &crdt.Conflict{}
			st.Conflicts = append(st.Conflicts, c)
			return d.Decode(c)
		})
	})
	return st, gen, gobCards, ok, err
}

// rewriteCards writes cards in their binary record, in transactions of
// up to 2,000 cards: Load does it once for the cards a store still holds
// in gob, so that the next starts decode them quickly. The records hold
// the same state, so a crash in the middle loses nothing.
func (s *Store) rewriteCards(cards []*crdt.Card) error {
	for len(cards) > 0 {
		n := min(len(cards), 2000)
		part := cards[:n]
		cards = cards[n:]
		if err := s.db.Update(func(txn *badger.Txn) error {
			for _, c := range part {
				if err := txn.Set(recordKey(prefixCard, []byte(c.ID)), c.AppendBinary(nil)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("store: rewrite card records: %w", err)
		}
	}
	return nil
}
