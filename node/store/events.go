package store

import (
	"bytes"
	"container/list"
	"encoding/binary"
	"encoding/gob"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"

	"github.com/cagnotte/cagnotte/crdt"
)

// The agenda's events live in Badger, under the index's generation (so a
// refold or a checkpoint install rebuilds them aside with the card
// entries and switches in the same commit), written in the same
// transaction as the ops that change them. A restart reads none of them;
// the pages read them a page at a time through the start-time index:
//
//	"V" gen venue(32) id                     → event record (crdt.Event.AppendBinary)
//	"T" gen start(8) venue(32) id            → the same record, in agenda order
//	"W" gen end(8) venue(32) id              → start(8): the events longer than
//	                                           RunningWindow, by end time
//
// Times are Unix ms with the sign bit flipped, so that byte order is time
// order. Listing the events running at a time t or starting after it
// seeks "T" to t - RunningWindow (the events that started in the window
// and may still run) and reads "W" from t (the few longer ones), then
// reads "T" on from t: it never scans the events that ended before t.
const (
	prefixEventRec   = 'V'
	prefixEventStart = 'T'
	prefixEventLong  = 'W'
)

// eventPrefixes are the prefixes of the event index, under a generation.
var eventPrefixes = []byte{prefixEventRec, prefixEventStart, prefixEventLong}

// RunningWindow is how long an event may last and still be found from its
// start time alone when listing the events running at a time (the "T"
// keys of the window before it are read, their times only); longer ones
// are also indexed by their end time ("W").
const RunningWindow int64 = 24 * 3600 * 1000

// DefaultEventCache is how many events the event index keeps decoded in
// memory by default (Config.EventCache): the ones the fold or the pages
// read last.
const DefaultEventCache = 1024

func timeBytes(b []byte, ms int64) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(ms)^(1<<63))
}

func keyBytes(b []byte, k crdt.EventKey) []byte {
	b = append(b, k.Venue[:]...)
	return append(b, k.ID...)
}

func eventRecKey(gen uint32, k crdt.EventKey) []byte {
	return keyBytes(indexPrefix(prefixEventRec, gen), k)
}

func eventStartKey(gen uint32, e *crdt.Event) []byte {
	return keyBytes(timeBytes(indexPrefix(prefixEventStart, gen), e.StartsAt), e.Key)
}

func eventLongKey(gen uint32, e *crdt.Event) []byte {
	return keyBytes(timeBytes(indexPrefix(prefixEventLong, gen), e.EndsAt), e.Key)
}

// isLong reports whether an event lasts longer than RunningWindow.
func isLong(e *crdt.Event) bool {
	return e.EndsAt > e.StartsAt && uint64(e.EndsAt-e.StartsAt) > uint64(RunningWindow)
}

// DiskEvents is the crdt.EventIndex of a node (see the key layout above).
// Writes wait in an overlay until the next Commit, like DiskIndex's; reads
// see the overlay, then the disk, through a bounded cache of decoded
// events. Writes are made under the op set's lock; reads may run
// concurrently with each other.
type DiskEvents struct {
	s    *Store
	pend *eventOverlay

	mu    sync.Mutex // guards the cache
	cache *eventCache
	// reads counts the event records read from disk (the store's
	// DiskEvents counts those of its Scratch indexes too).
	reads atomic.Uint64
}

var _ crdt.EventRebuilder = (*DiskEvents)(nil)

// eventOverlay holds an event index's writes until they are committed.
type eventOverlay struct {
	// reset: the index was rebuilt from scratch; reads ignore the disk
	// and the commit writes under the new generation.
	reset  bool
	events map[crdt.EventKey]*crdt.Event
	// prev is the committed state of the events changed, whose old "T"
	// and "W" keys the commit deletes.
	prev map[crdt.EventKey]crdt.Event
}

func newEventOverlay(reset bool) *eventOverlay {
	return &eventOverlay{reset: reset, events: map[crdt.EventKey]*crdt.Event{}, prev: map[crdt.EventKey]crdt.Event{}}
}

func (o *eventOverlay) empty() bool { return !o.reset && len(o.events) == 0 }

func newDiskEvents(s *Store, cacheSize int) *DiskEvents {
	if cacheSize <= 0 {
		cacheSize = DefaultEventCache
	}
	return &DiskEvents{s: s, pend: newEventOverlay(false), cache: newEventCache(cacheSize)}
}

// Events implements crdt.EventIndexer: the store's event index, which
// crdt.NewOpSet takes with this index. A set being made (Load, NewSet, a
// checkpoint install) starts its events with the index: their pending
// writes are dropped, and reset if the index's are.
func (d *DiskIndex) Events() crdt.EventIndex {
	ev := d.s.events
	ev.pend = newEventOverlay(d.pend.reset)
	return ev
}

// Events returns the store's event index.
func (s *Store) Events() *DiskEvents { return s.events }

// reset reports whether reads must ignore the disk: this index was reset,
// or the card index it shares its generation with was (the store's
// index; a Scratch event index has its own flag set).
func (d *DiskEvents) reset() bool { return d.pend.reset || d.s.index.pend.reset }

// get reads the committed event at k, through the cache.
func (d *DiskEvents) get(k crdt.EventKey) (crdt.Event, bool) {
	gen := d.s.index.gen
	d.mu.Lock()
	e, found, cached := d.cache.get(gen, k)
	d.mu.Unlock()
	if cached {
		return e, found
	}
	key := eventRecKey(gen, k)
	found, err := d.s.viewValue(key, func(v []byte) error {
		var err error
		d.s.events.reads.Add(1)
		e, err = decodeEventValue(v)
		return err
	})
	found = found && err == nil
	if err != nil {
		d.s.fail(fmt.Errorf("event index read: %w", err))
		return crdt.Event{}, false
	}
	d.mu.Lock()
	d.cache.put(gen, k, e, found)
	d.mu.Unlock()
	return e, found
}

func decodeEventValue(v []byte) (crdt.Event, error) {
	e, ok, err := crdt.DecodeEventRecord(v)
	if err != nil || !ok {
		return crdt.Event{}, fmt.Errorf("%w: event record of %d bytes: %v", ErrCorrupt, len(v), err)
	}
	return *e, nil
}

// Event implements crdt.EventIndex.
func (d *DiskEvents) Event(k crdt.EventKey) (crdt.Event, bool) {
	if e := d.pend.events[k]; e != nil {
		return *e, true
	}
	if d.reset() {
		return crdt.Event{}, false
	}
	return d.get(k)
}

// PutEvent implements crdt.EventIndex.
func (d *DiskEvents) PutEvent(e crdt.Event) {
	if _, ok := d.pend.events[e.Key]; !ok && !d.reset() {
		if old, found := d.get(e.Key); found {
			d.pend.prev[e.Key] = old
		}
	}
	d.pend.events[e.Key] = &e
}

// EventsByStart implements crdt.EventIndex: the overlay's events and the
// disk's, merged in agenda order (the overlay's version of an event
// replaces the disk's).
func (d *DiskEvents) EventsByStart(from int64, after *crdt.AgendaPos, fn func(crdt.Event) bool) {
	var over []*crdt.Event
	for _, e := range d.pend.events {
		if crdt.InAgenda(e, from, after) {
			over = append(over, e)
		}
	}
	slices.SortFunc(over, func(a, b *crdt.Event) int { return crdt.ComparePos(a.Pos(), b.Pos()) })
	stopped := false
	emit := func(e crdt.Event) bool {
		// Overlay events that come first.
		for len(over) > 0 && crdt.ComparePos(over[0].Pos(), e.Pos()) < 0 {
			if !fn(*over[0]) {
				stopped = true
				return false
			}
			over = over[1:]
		}
		if _, ok := d.pend.events[e.Key]; ok {
			return true // the overlay's version is listed at its own place
		}
		if !fn(e) {
			stopped = true
			return false
		}
		return true
	}
	if !d.reset() {
		if err := d.scanByStart(from, after, emit); err != nil {
			d.s.fail(fmt.Errorf("event index read: %w", err))
			return
		}
	}
	if stopped {
		return
	}
	for _, e := range over {
		if !fn(*e) {
			return
		}
	}
}

// scanByStart lists the committed events of EventsByStart(from, after).
func (d *DiskEvents) scanByStart(from int64, after *crdt.AgendaPos, fn func(crdt.Event) bool) error {
	gen := d.s.index.gen
	return d.s.db.View(func(txn *badger.Txn) error {
		// The events still running at from: started in the window before
		// it, or longer than the window.
		if from != math.MinInt64 {
			var running []crdt.Event
			lo := from - RunningWindow
			if lo > from { // overflow
				lo = math.MinInt64
			}
			it := txn.NewIterator(badger.IteratorOptions{Prefix: indexPrefix(prefixEventStart, gen), PrefetchValues: true, PrefetchSize: 64})
			end := timeBytes(indexPrefix(prefixEventStart, gen), from)
			for it.Seek(timeBytes(indexPrefix(prefixEventStart, gen), lo)); it.Valid() && bytes.Compare(it.Item().Key(), end) < 0; it.Next() {
				// The times first: most of the window's events are over.
				var ends int64
				if err := it.Item().Value(func(v []byte) error {
					var err error
					_, ends, err = crdt.EventRecordTimes(v)
					return err
				}); err != nil {
					it.Close()
					return fmt.Errorf("%w: %v", ErrCorrupt, err)
				}
				if ends < from {
					continue
				}
				e, err := d.itemEvent(it.Item())
				if err != nil {
					it.Close()
					return err
				}
				if crdt.InAgenda(&e, from, after) {
					running = append(running, e)
				}
			}
			it.Close()
			it = txn.NewIterator(badger.IteratorOptions{Prefix: indexPrefix(prefixEventLong, gen), PrefetchValues: true})
			for it.Seek(timeBytes(indexPrefix(prefixEventLong, gen), from)); it.Valid(); it.Next() {
				k := it.Item().Key()
				var ek crdt.EventKey
				var starts int64
				if err := it.Item().Value(func(v []byte) error {
					if len(v) != 8 {
						return fmt.Errorf("%w: long event value of %d bytes", ErrCorrupt, len(v))
					}
					starts = int64(binary.BigEndian.Uint64(v) ^ (1 << 63))
					return nil
				}); err != nil {
					it.Close()
					return err
				}
				if len(k) < 5+8+32 {
					it.Close()
					return fmt.Errorf("%w: long event key of %d bytes", ErrCorrupt, len(k))
				}
				if starts >= lo {
					continue // listed from its start time
				}
				copy(ek.Venue[:], k[5+8:])
				ek.ID = string(k[5+8+32:])
				item, err := txn.Get(eventRecKey(gen, ek))
				if err != nil {
					it.Close()
					return fmt.Errorf("long event %v: %w", ek, err)
				}
				e, err := d.itemEvent(item)
				if err != nil {
					it.Close()
					return err
				}
				if e.StartsAt < lo && crdt.InAgenda(&e, from, after) {
					running = append(running, e)
				}
			}
			it.Close()
			slices.SortFunc(running, func(a, b crdt.Event) int { return crdt.ComparePos(a.Pos(), b.Pos()) })
			for _, e := range running {
				if !fn(e) {
					return nil
				}
			}
		}
		// Then the events starting at or after from (and after the cursor).
		prefix := indexPrefix(prefixEventStart, gen)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		var seek []byte
		if after != nil && after.StartsAt >= from {
			a := crdt.Event{Key: after.Key, StartsAt: after.StartsAt}
			seek = eventStartKey(gen, &a)
		} else {
			seek = timeBytes(slices.Clone(prefix), from)
		}
		for it.Seek(seek); it.Valid(); it.Next() {
			e, err := d.itemEvent(it.Item())
			if err != nil {
				return err
			}
			if !crdt.InAgenda(&e, from, after) {
				continue
			}
			if !fn(e) {
				return nil
			}
		}
		return nil
	})
}

func (d *DiskEvents) itemEvent(item *badger.Item) (crdt.Event, error) {
	d.s.events.reads.Add(1)
	var e crdt.Event
	err := item.Value(func(v []byte) error {
		var err error
		e, err = decodeEventValue(v)
		return err
	})
	return e, err
}

// EachEvent implements crdt.EventIndex: the committed events and the
// overlay's, merged in key order.
func (d *DiskEvents) EachEvent(fn func(crdt.Event) bool) {
	over := make([]*crdt.Event, 0, len(d.pend.events))
	for _, e := range d.pend.events {
		over = append(over, e)
	}
	slices.SortFunc(over, func(a, b *crdt.Event) int { return crdt.CompareEventKeys(a.Key, b.Key) })
	stopped := false
	if !d.reset() {
		gen := d.s.index.gen
		err := d.s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: indexPrefix(prefixEventRec, gen), PrefetchValues: true, PrefetchSize: 64})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				e, err := d.itemEvent(it.Item())
				if err != nil {
					return err
				}
				for len(over) > 0 && crdt.CompareEventKeys(over[0].Key, e.Key) < 0 {
					if !fn(*over[0]) {
						stopped = true
						return nil
					}
					over = over[1:]
				}
				if _, ok := d.pend.events[e.Key]; ok {
					continue
				}
				if !fn(e) {
					stopped = true
					return nil
				}
			}
			return nil
		})
		if err != nil {
			d.s.fail(fmt.Errorf("event index read: %w", err))
			return
		}
	}
	if stopped {
		return
	}
	for _, e := range over {
		if !fn(*e) {
			return
		}
	}
}

// Reads returns the number of event records read from disk since the
// store opened (a measure of what the agenda's reads cost).
func (d *DiskEvents) Reads() uint64 { return d.s.events.reads.Load() }

// Reset implements crdt.EventIndex.
func (d *DiskEvents) Reset() { d.pend = newEventOverlay(true) }

// Scratch implements crdt.EventRebuilder.
func (d *DiskEvents) Scratch() crdt.EventIndex {
	return &DiskEvents{s: d.s, pend: newEventOverlay(true), cache: newEventCache(1)}
}

// Adopt implements crdt.EventRebuilder.
func (d *DiskEvents) Adopt(scratch crdt.EventIndex) { d.pend = scratch.(*DiskEvents).pend }

// discard drops the writes not committed (after a failed commit).
func (d *DiskEvents) discard() { d.pend = newEventOverlay(false) }

// flush writes the overlay into txn under gen, the generation the card
// index's flush returned (a new one if it was reset).
func (d *DiskEvents) flush(txn *badger.Txn, gen uint32) error {
	newGen := gen != d.s.index.gen
	if d.pend.reset && !newGen {
		// Reset alone (the card index was not): clear this generation.
		for _, p := range eventPrefixes {
			if err := deletePrefix(txn, indexPrefix(p, gen)); err != nil {
				return err
			}
		}
	}
	return d.write(gen, d.pend.reset || newGen, txn.Set, txn.Delete)
}

// write writes the overlay's events under gen with set, deleting the old
// positions of the events it changes with del unless fresh (a new
// generation holds none).
func (d *DiskEvents) write(gen uint32, fresh bool, set func(k, v []byte) error, del func(k []byte) error) error {
	for k, e := range d.pend.events {
		if old, ok := d.pend.prev[k]; ok && !fresh {
			if old.StartsAt != e.StartsAt {
				if err := del(eventStartKey(gen, &old)); err != nil {
					return err
				}
			}
			if isLong(&old) && (!isLong(e) || old.EndsAt != e.EndsAt || old.StartsAt != e.StartsAt) {
				if err := del(eventLongKey(gen, &old)); err != nil {
					return err
				}
			}
		}
		rec := e.AppendBinary(nil)
		if err := set(eventRecKey(gen, k), rec); err != nil {
			return err
		}
		if err := set(eventStartKey(gen, e), rec); err != nil {
			return err
		}
		if isLong(e) {
			if err := set(eventLongKey(gen, e), timeBytes(nil, e.StartsAt)); err != nil {
				return err
			}
		}
	}
	return nil
}

// bulkWrite writes a reset overlay under gen (a new generation) with a
// write batch, for a commit too big for one transaction; what a crash in
// the middle of a previous one left under gen is deleted first.
func (d *DiskEvents) bulkWrite(wb *badger.WriteBatch, gen uint32) error {
	for _, p := range eventPrefixes {
		if err := d.s.deletePrefixBackground(indexPrefix(p, gen)); err != nil {
			return err
		}
	}
	return d.write(gen, true, wb.Set, wb.Delete)
}

// committed records that the overlay is on disk under gen.
func (d *DiskEvents) committed(gen uint32, newGen bool) {
	d.mu.Lock()
	if newGen {
		d.cache.clear()
	} else {
		for k, e := range d.pend.events {
			d.cache.put(gen, k, *e, true)
		}
	}
	d.mu.Unlock()
	d.pend = newEventOverlay(false)
}

// migrateEvents moves the event records of an older store ("e" records,
// not under a generation, all read at every start) to the event index
// under gen, in transactions of up to 500 events, each deleting the
// records it moved: a crash in the middle leaves the rest for the next
// Load. It returns the number of events moved.
func (s *Store) migrateEvents(gen uint32) (int, error) {
	moved := 0
	for {
		n, err := s.migrateEventsOnce(gen, 500)
		moved += n
		if err != nil || n == 0 {
			return moved, err
		}
	}
}

// migrateEventsOnce moves up to max old event records in one transaction
// and returns how many it moved.
func (s *Store) migrateEventsOnce(gen uint32, max int) (int, error) {
	type old struct {
		key []byte
		e   *crdt.Event
	}
	var part []old
	err := s.db.View(func(txn *badger.Txn) error {
		return eachEventKey(txn, func(key []byte, e *crdt.Event) bool {
			part = append(part, old{key, e})
			return len(part) < max
		})
	})
	if err != nil || len(part) == 0 {
		return 0, err
	}
	err = s.db.Update(func(txn *badger.Txn) error {
		for _, o := range part {
			e := o.e
			rec := e.AppendBinary(nil)
			if err := txn.Set(eventRecKey(gen, e.Key), rec); err != nil {
				return err
			}
			if err := txn.Set(eventStartKey(gen, e), rec); err != nil {
				return err
			}
			if isLong(e) {
				if err := txn.Set(eventLongKey(gen, e), timeBytes(nil, e.StartsAt)); err != nil {
					return err
				}
			}
			if err := txn.Delete(o.key); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: migrate event records: %w", err)
	}
	return len(part), nil
}

// eachEventKey reads the old event records with their keys (see
// eachEvent) until fn returns false.
func eachEventKey(txn *badger.Txn, fn func(key []byte, e *crdt.Event) bool) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixEvent}, PrefetchValues: true, PrefetchSize: 256})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		var e *crdt.Event
		err := item.Value(func(v []byte) error {
			var err error
			e, err = decodeOldEvent(v)
			return err
		})
		if err != nil {
			return fmt.Errorf("%w: event record %q: %v", ErrCorrupt, item.Key(), err)
		}
		if !fn(item.KeyCopy(nil), e) {
			return nil
		}
	}
	return nil
}

// decodeOldEvent decodes an old event record: binary, or gob as stores
// wrote them before that.
func decodeOldEvent(v []byte) (*crdt.Event, error) {
	e, ok, err := crdt.DecodeEventRecord(v)
	if err != nil {
		return nil, err
	}
	if ok {
		return e, nil
	}
	e = &crdt.Event{}
	if err := gob.NewDecoder(bytes.NewReader(v)).Decode(e); err != nil {
		return nil, err
	}
	return e, nil
}

// eventCache is a bounded LRU of decoded committed events (and of keys
// known to hold none), under the generation they were read from.
type eventCache struct {
	max   int
	gen   uint32
	items map[crdt.EventKey]*list.Element
	order *list.List // front: most recently used
}

type cachedEvent struct {
	k     crdt.EventKey
	e     crdt.Event
	found bool
}

func newEventCache(max int) *eventCache {
	return &eventCache{max: max, items: map[crdt.EventKey]*list.Element{}, order: list.New()}
}

func (c *eventCache) clear() {
	c.items = map[crdt.EventKey]*list.Element{}
	c.order.Init()
}

func (c *eventCache) get(gen uint32, k crdt.EventKey) (crdt.Event, bool, bool) {
	if gen != c.gen {
		return crdt.Event{}, false, false
	}
	el := c.items[k]
	if el == nil {
		return crdt.Event{}, false, false
	}
	c.order.MoveToFront(el)
	ce := el.Value.(*cachedEvent)
	return ce.e, ce.found, true
}

func (c *eventCache) put(gen uint32, k crdt.EventKey, e crdt.Event, found bool) {
	if gen != c.gen {
		c.clear()
		c.gen = gen
	}
	if el := c.items[k]; el != nil {
		el.Value = &cachedEvent{k: k, e: e, found: found}
		c.order.MoveToFront(el)
		return
	}
	c.items[k] = c.order.PushFront(&cachedEvent{k: k, e: e, found: found})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*cachedEvent).k)
	}
}

// len returns the number of cached events (tests).
func (c *eventCache) len() int { return c.order.Len() }
