package crdt

import (
	"cmp"
	"slices"
)

// A node keeps its state on disk as small records written in the same
// transaction as the ops that change them (node/store), so a restart reads
// no per-op data and nothing is ever written as one big snapshot. The op
// set tells what changed since the last commit (Config.TrackChanges).

// Meta is the state that is neither a card, a venue, an event, a conflict
// nor an author. Events are not records of the state: they go through the
// set's EventIndex (Config.Events), like card entries through its Index.
type Meta struct {
	Federation PublicKey
	Name       string
	Currency   string
	Settings   Settings
	Credits    int64
	Debits     int64
	Counted    uint64
	Ops        uint64
	// Stale: the views wait for a Refold (see OpSet.Stale).
	Stale bool
}

// Changes is what changed in a set since the last TakeChanges. With Reset,
// the set was refolded: the records are all of them and any record not
// among them is gone.
type Changes struct {
	Reset     bool
	Meta      Meta
	Authors   []*AuthorState
	Cards     []*Card
	Venues    []*Venue
	Conflicts []*Conflict
}

// Empty reports whether nothing but the meta record changed.
func (c *Changes) Empty() bool {
	return !c.Reset && len(c.Authors)+len(c.Cards)+len(c.Venues)+len(c.Conflicts) == 0
}

func (s *OpSet) meta() Meta {
	st := s.State
	return Meta{Federation: s.cfg.Federation, Name: st.Name, Currency: st.Currency, Settings: st.Settings, Credits: st.Credits, Debits: st.Debits, Counted: st.Counted, Ops: s.ops, Stale: s.Stale}
}

func (s *OpSet) authorChanged(a *AuthorState) {
	if s.dirtyAuthors != nil {
		s.dirtyAuthors[a.Key] = true
	}
}

// TakeChanges returns what changed since the last call and forgets it.
// The records are the set's own: encode them before the set changes again.
// Without Config.TrackChanges it returns every record, as after a reset.
func (s *OpSet) TakeChanges() Changes {
	ch := Changes{Meta: s.meta()}
	st := s.State
	if st.dirty == nil || s.reseted {
		s.reseted = false
		ch.Reset = true
		for _, a := range s.Authors {
			ch.Authors = append(ch.Authors, a)
		}
		for _, c := range st.Cards {
			ch.Cards = append(ch.Cards, c)
		}
		for _, v := range st.Venues {
			ch.Venues = append(ch.Venues, v)
		}
		for _, c := range st.Conflicts {
			ch.Conflicts = append(ch.Conflicts, c)
		}
	} else {
		for k := range s.dirtyAuthors {
			ch.Authors = append(ch.Authors, s.Authors[k])
		}
		for k := range st.dirty.cards {
			ch.Cards = append(ch.Cards, st.Cards[k])
		}
		for k := range st.dirty.venues {
			if v := st.Venues[k]; v != nil {
				ch.Venues = append(ch.Venues, v)
			}
		}
		for k := range st.dirty.conflicts {
			ch.Conflicts = append(ch.Conflicts, st.Conflicts[k])
		}
	}
	if s.cfg.TrackChanges {
		st.dirty = newDirty()
		s.dirtyAuthors = map[PublicKey]bool{}
	}
	slices.SortFunc(ch.Authors, func(a, b *AuthorState) int { return cmp.Compare(string(a.Key[:]), string(b.Key[:])) })
	return ch
}

// Stored is a set's state as read back from its records. Events are
// those of a checkpoint: FromStored puts them in the set's EventIndex (a
// store's own events are in its index already).
type Stored struct {
	Meta      Meta
	Authors   []*AuthorState
	Cards     []*Card
	Venues    []*Venue
	Events    []*Event
	Conflicts []*Conflict
	Evidence  []Op
}

// FromStored returns an op set holding a state read back from its records
// (cfg.Index and cfg.Events must hold the matching index and events, or
// in.Events the events to put in cfg.Events).
func FromStored(cfg Config, in Stored) *OpSet {
	s := NewOpSet(cfg)
	for _, a := range in.Authors {
		s.Authors[a.Key] = a
	}
	for _, op := range in.Evidence {
		s.EvidenceOps[op.ID()] = op
	}
	st := s.State
	st.Name, st.Currency, st.Settings = in.Meta.Name, in.Meta.Currency, in.Meta.Settings
	st.Credits, st.Debits, st.Counted = in.Meta.Credits, in.Meta.Debits, in.Meta.Counted
	s.ops = in.Meta.Ops
	s.Stale = in.Meta.Stale
	for _, c := range in.Cards {
		st.Cards[c.ID] = c
	}
	for _, v := range in.Venues {
		st.Venues[v.Key] = v
	}
	for _, e := range in.Events {
		st.events.PutEvent(*e)
	}
	for _, c := range in.Conflicts {
		st.Conflicts[c.Key()] = c
	}
	if cfg.TrackChanges {
		st.dirty = newDirty()
		s.dirtyAuthors = map[PublicKey]bool{}
	}
	s.reseted = false
	return s
}
