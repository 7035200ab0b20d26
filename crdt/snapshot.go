package crdt

// Snapshot is an op set's whole state, for a store to persist (node/store
// encodes it with encoding/gob). It shares the set's maps: encode it before
// the set changes again.
type Snapshot struct {
	Authors     map[PublicKey]*AuthorState
	EvidenceOps map[OpID]Op
	State       *State
	Index       *MemIndex  // nil unless the set's index is a MemIndex
	Events      *MemEvents // nil unless the set's events are a MemEvents
	Ops         uint64
}

// Snapshot returns the set's state.
func (s *OpSet) Snapshot() Snapshot {
	m, _ := s.cfg.Index.(*MemIndex)
	ev, _ := s.cfg.Events.(*MemEvents)
	return Snapshot{Authors: s.Authors, EvidenceOps: s.EvidenceOps, State: s.State, Index: m, Events: ev, Ops: s.ops}
}

// Restore returns an op set holding a snapshot's state. A snapshot taken
// while the set was Stale must be followed by Refold.
func Restore(cfg Config, snap Snapshot) *OpSet {
	if snap.Index != nil {
		cfg.Index = snap.Index
	}
	if snap.Events != nil {
		cfg.Events = snap.Events
	}
	s := NewOpSet(cfg)
	if snap.Authors != nil {
		s.Authors = snap.Authors
	}
	if snap.EvidenceOps != nil {
		s.EvidenceOps = snap.EvidenceOps
	}
	if snap.State != nil {
		s.State = snap.State
		s.State.Fed = cfg.Federation
		s.State.index = s.cfg.Index
		s.State.events = s.cfg.Events
		if cfg.TrackChanges {
			s.State.dirty = newDirty()
		}
		if s.State.Venues == nil {
			s.State.Venues = map[PublicKey]*Venue{}
		}
		if s.State.Conflicts == nil {
			s.State.Conflicts = map[string]*Conflict{}
		}
		if s.State.Cards == nil {
			s.State.Cards = map[CardID]*Card{}
		}
	}
	s.ops = snap.Ops
	return s
}

// AddTrusted adds an op read back from the node's own durable store: it was
// verified when it first arrived, so its signature is not checked again.
// Every other check runs.
func (s *OpSet) AddTrusted(op Op) (Outcome, error) {
	a, body, err := s.check(&op, false)
	if err != nil {
		return s.evidence(a, &op, body, err)
	}
	s.append(a, &op, op.ID(), body)
	return Added, nil
}
