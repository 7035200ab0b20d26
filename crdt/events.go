package crdt

import (
	"cmp"
	"math"
	"slices"
)

// EventIndex holds the agenda's events: a view that grows with history
// (every event ever published stays), so a node keeps it on disk
// (node/store, written in the same transaction as the ops that change it)
// while tests and simulations keep it in memory (MemEvents). The fold
// reads an event, changes it and puts it back; the pages read the agenda
// by start time.
//
// Reads must see the writes made before them, committed or not. Writes
// are made with the op set's lock held; reads may run concurrently with
// each other (a node's pages read under its read lock).
type EventIndex interface {
	// Event returns a copy of the event at k.
	Event(k EventKey) (Event, bool)
	// PutEvent records the new state of the event e.Key names.
	PutEvent(e Event)
	// EventsByStart calls fn, until it returns false, with the events
	// still running at from (StartsAt < from ≤ EndsAt), then those
	// starting at or after from, in AgendaPos order; with after non-nil,
	// only the events whose position is after it. from = math.MinInt64
	// gives every event.
	EventsByStart(from int64, after *AgendaPos, fn func(Event) bool)
	// EachEvent calls fn with every event in (venue, id) order until fn
	// returns false (checkpoints).
	EachEvent(fn func(Event) bool)
	// Reset forgets every event (before a refold).
	Reset()
}

// EventRebuilder is an EventIndex that can rebuild itself aside, like a
// Rebuilder: Refold folds into Scratch and, only if it succeeds, Adopts
// the result.
type EventRebuilder interface {
	EventIndex
	// Scratch returns an empty index whose writes stay aside.
	Scratch() EventIndex
	// Adopt makes a Scratch index's content the index's own.
	Adopt(scratch EventIndex)
}

// AgendaPos is an event's place in the agenda: by start time, then venue,
// then id.
type AgendaPos struct {
	StartsAt int64
	Key      EventKey
}

// Pos returns the event's place in the agenda.
func (e *Event) Pos() AgendaPos { return AgendaPos{StartsAt: e.StartsAt, Key: e.Key} }

// ComparePos orders agenda positions: by start time, venue, then id.
func ComparePos(a, b AgendaPos) int {
	if c := cmp.Compare(a.StartsAt, b.StartsAt); c != 0 {
		return c
	}
	if c := cmp.Compare(string(a.Key.Venue[:]), string(b.Key.Venue[:])); c != 0 {
		return c
	}
	return cmp.Compare(a.Key.ID, b.Key.ID)
}

// CompareEventKeys orders event keys by venue, then id (EachEvent's order).
func CompareEventKeys(a, b EventKey) int {
	if c := cmp.Compare(string(a.Venue[:]), string(b.Venue[:])); c != 0 {
		return c
	}
	return cmp.Compare(a.ID, b.ID)
}

// InAgenda reports whether EventsByStart(from, after, …) lists e: it runs
// at from or starts after it, and comes after the cursor.
func InAgenda(e *Event, from int64, after *AgendaPos) bool {
	if e.StartsAt < from && e.EndsAt < from {
		return false
	}
	return after == nil || ComparePos(e.Pos(), *after) > 0
}

// MemEvents is an EventIndex in memory: the reference the store's index is
// tested against. Its field is exported so that a test can snapshot it
// with encoding/gob; treat it as read-only. The agenda reads sort every
// event: fine for tests and simulations, not for a season.
type MemEvents struct {
	Events map[EventKey]*Event
}

var _ EventRebuilder = (*MemEvents)(nil)

// NewMemEvents returns an empty in-memory event index.
func NewMemEvents() *MemEvents { return &MemEvents{Events: map[EventKey]*Event{}} }

// Event implements EventIndex.
func (m *MemEvents) Event(k EventKey) (Event, bool) {
	if e := m.Events[k]; e != nil {
		return *e, true
	}
	return Event{}, false
}

// PutEvent implements EventIndex.
func (m *MemEvents) PutEvent(e Event) { m.Events[e.Key] = &e }

// EventsByStart implements EventIndex.
func (m *MemEvents) EventsByStart(from int64, after *AgendaPos, fn func(Event) bool) {
	out := make([]*Event, 0, len(m.Events))
	for _, e := range m.Events {
		if InAgenda(e, from, after) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b *Event) int { return ComparePos(a.Pos(), b.Pos()) })
	for _, e := range out {
		if !fn(*e) {
			return
		}
	}
}

// EachEvent implements EventIndex.
func (m *MemEvents) EachEvent(fn func(Event) bool) {
	keys := make([]EventKey, 0, len(m.Events))
	for k := range m.Events {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, CompareEventKeys)
	for _, k := range keys {
		if !fn(*m.Events[k]) {
			return
		}
	}
}

// Reset implements EventIndex.
func (m *MemEvents) Reset() { m.Events = map[EventKey]*Event{} }

// Scratch implements EventRebuilder.
func (m *MemEvents) Scratch() EventIndex { return NewMemEvents() }

// Adopt implements EventRebuilder.
func (m *MemEvents) Adopt(scratch EventIndex) { *m = *scratch.(*MemEvents) }

// Events returns the index holding the agenda's events.
func (s *State) Events() EventIndex { return s.events }

// Event returns the event at k, and false if no counted op made it.
func (s *State) Event(k EventKey) (Event, bool) { return s.events.Event(k) }

// AgendaFrom calls fn with the events running at from or starting after
// it, by start time, venue and id, after the cursor after (if non-nil),
// until fn returns false.
func (s *State) AgendaFrom(from int64, after *AgendaPos, fn func(Event) bool) {
	s.events.EventsByStart(from, after, fn)
}

// Agenda returns every event, ordered by start time, venue and id. It
// reads every event ever published: for tests and tools; a node reads
// the agenda a page at a time with AgendaFrom.
func (s *State) Agenda() []*Event {
	var out []*Event
	s.events.EventsByStart(math.MinInt64, nil, func(e Event) bool {
		out = append(out, &e)
		return true
	})
	return out
}

func (s *State) upsertEvent(venue PublicKey, b *EventUpsert, st Stamp) {
	k := EventKey{Venue: venue, ID: b.EventID}
	e, _ := s.events.Event(k)
	e.Key = k
	for i := range e.Stamps {
		f := uint64(1) << i
		if b.Fields&f == 0 || !st.After(e.Stamps[i]) {
			continue
		}
		e.Stamps[i] = st
		switch f {
		case FieldTitle:
			e.Title = b.Title
		case FieldStartsAt:
			e.StartsAt = b.StartsAt
		case FieldEndsAt:
			e.EndsAt = b.EndsAt
		case FieldDescription:
			e.Description = b.Description
		case FieldLocation:
			e.Location = b.Location
		}
	}
	e.Updated = max(e.Updated, st.HLC)
	s.events.PutEvent(e)
}

func (s *State) cancelEvent(venue PublicKey, b *EventCancel, hlc HLC) {
	k := EventKey{Venue: venue, ID: b.EventID}
	e, _ := s.events.Event(k)
	e.Key = k
	e.Cancelled = true
	e.Updated = max(e.Updated, hlc)
	s.events.PutEvent(e)
}

// EventIndexer is an Index that comes with its own EventIndex (a store
// keeps both on disk and commits them together): NewOpSet takes it as
// Config.Events when that is nil.
type EventIndexer interface {
	Events() EventIndex
}
