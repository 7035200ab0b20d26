package crdt

import (
	"cmp"
	"slices"
)

// Index holds the views that grow with history: each card's money entries,
// the first payment op of each (card, counter), and the op credited for
// each external reference. The fold reads and writes them through it, so a
// replica may keep them in memory (MemIndex: tests, simulations) or on disk
// (node/store, written in the same transaction as the ops that change
// them), while what every payment needs (balances, counters, block state)
// stays in the State.
//
// Reads must see the writes made before them, committed or not. Methods
// are called with the op set's lock held, like every other method of the
// set.
type Index interface {
	// AddEntry records a money op of a card.
	AddEntry(card CardID, e Entry)
	// SetCounted marks the entry of the op at st counted or not.
	SetCounted(card CardID, st Stamp, counted bool)
	// Entries calls fn with the card's entries in (HLC, op id) order,
	// newest first if newestFirst, starting after the entry at from (all
	// entries when from is nil), until fn returns false.
	Entries(card CardID, from *Stamp, newestFirst bool, fn func(Entry) bool)
	// Payment returns the first payment op (smallest id) seen at counter.
	Payment(card CardID, counter uint64) (OpID, bool)
	// SetPayment records the first payment op seen at counter.
	SetPayment(card CardID, counter uint64, id OpID)
	// Ref returns the op credited for an external reference.
	Ref(ref string) (RefEntry, bool)
	// SetRef records the op credited for an external reference.
	SetRef(ref string, e RefEntry)
	// VenuePayments calls fn for each counted payment made by venue with an
	// HLC at or after since (Unix ms).
	VenuePayments(venue PublicKey, since int64, fn func(card CardID, amount uint64))
	// EachRef calls fn for every external reference (checkpoints).
	EachRef(fn func(ref string, e RefEntry))
	// Reset forgets everything (before a refold).
	Reset()
}

// Rebuilder is an Index that can rebuild itself aside: Refold folds into
// Scratch and, only if it succeeds, the index Adopts the result, so a
// failed Refold leaves the set and its index unchanged.
type Rebuilder interface {
	Index
	// Scratch returns an empty index whose writes stay aside.
	Scratch() Index
	// Adopt makes a Scratch index's content the index's own.
	Adopt(scratch Index)
}

// RefEntry records which op is credited (or debited) for an external
// reference.
type RefEntry struct {
	Card   CardID
	Winner Stamp
	Amount int64
}

// MemIndex is an Index in memory. Its fields are exported so that a test
// can snapshot it with encoding/gob; treat them as read-only.
type MemIndex struct {
	Cards    map[CardID][]Entry // in (HLC, op id) order
	Counters map[CardID]map[uint64]OpID
	Refs     map[string]RefEntry
}

// NewMemIndex returns an empty in-memory index.
func NewMemIndex() *MemIndex {
	m := &MemIndex{}
	m.Reset()
	return m
}

var _ Rebuilder = (*MemIndex)(nil)

// Scratch implements Rebuilder.
func (m *MemIndex) Scratch() Index { return NewMemIndex() }

// Adopt implements Rebuilder.
func (m *MemIndex) Adopt(scratch Index) { *m = *scratch.(*MemIndex) }

func entryCmp(a Entry, b Stamp) int {
	if a.HLC != b.HLC {
		return cmp.Compare(a.HLC, b.HLC)
	}
	return cmp.Compare(string(a.Op[:]), string(b.ID[:]))
}

// AddEntry implements Index.
func (m *MemIndex) AddEntry(card CardID, e Entry) {
	es := m.Cards[card]
	i, _ := slices.BinarySearchFunc(es, Stamp{HLC: e.HLC, ID: e.Op}, entryCmp)
	m.Cards[card] = slices.Insert(es, i, e)
}

// SetCounted implements Index.
func (m *MemIndex) SetCounted(card CardID, st Stamp, counted bool) {
	es := m.Cards[card]
	if i, ok := slices.BinarySearchFunc(es, st, entryCmp); ok {
		es[i].Counted = counted
	}
}

// Entries implements Index.
func (m *MemIndex) Entries(card CardID, from *Stamp, newestFirst bool, fn func(Entry) bool) {
	es := m.Cards[card]
	if !newestFirst {
		i := 0
		if from != nil {
			j, found := slices.BinarySearchFunc(es, *from, entryCmp)
			i = j
			if found {
				i++
			}
		}
		for ; i < len(es); i++ {
			if !fn(es[i]) {
				return
			}
		}
		return
	}
	i := len(es) - 1
	if from != nil {
		j, _ := slices.BinarySearchFunc(es, *from, entryCmp)
		i = j - 1
	}
	for ; i >= 0; i-- {
		if !fn(es[i]) {
			return
		}
	}
}

// Payment implements Index.
func (m *MemIndex) Payment(card CardID, counter uint64) (OpID, bool) {
	id, ok := m.Counters[card][counter]
	return id, ok
}

// SetPayment implements Index.
func (m *MemIndex) SetPayment(card CardID, counter uint64, id OpID) {
	c := m.Counters[card]
	if c == nil {
		c = map[uint64]OpID{}
		m.Counters[card] = c
	}
	c[counter] = id
}

// Ref implements Index.
func (m *MemIndex) Ref(ref string) (RefEntry, bool) {
	e, ok := m.Refs[ref]
	return e, ok
}

// SetRef implements Index.
func (m *MemIndex) SetRef(ref string, e RefEntry) { m.Refs[ref] = e }

// VenuePayments implements Index.
func (m *MemIndex) VenuePayments(venue PublicKey, since int64, fn func(card CardID, amount uint64)) {
	for card, es := range m.Cards {
		for _, e := range es {
			if e.Kind == KindPayment && e.Counted && e.Venue == venue && e.HLC.Millis() >= since {
				fn(card, uint64(-e.Amount))
			}
		}
	}
}

// EachRef implements Index.
func (m *MemIndex) EachRef(fn func(ref string, e RefEntry)) {
	for k, e := range m.Refs {
		fn(k, e)
	}
}

// Reset implements Index.
func (m *MemIndex) Reset() {
	m.Cards, m.Counters, m.Refs = map[CardID][]Entry{}, map[CardID]map[uint64]OpID{}, map[string]RefEntry{}
}
