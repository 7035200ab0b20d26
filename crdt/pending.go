package crdt

import (
	"errors"
	"slices"
)

// Pending holds verified-later ops that arrived before they could be added:
// ahead of their author's head (ErrGap) or from an author whose admission
// has not arrived yet (ErrUnknownAuthor). It is bounded: past Max ops, new
// ones are dropped and anti-entropy fetches them again later.
type Pending struct {
	// Max bounds the ops held. Default 10000.
	Max  int
	ops  map[PublicKey]map[uint64]Op
	size int
}

// Len returns the number of ops held.
func (p *Pending) Len() int { return p.size }

// Hold keeps op for later. It returns false if the buffer is full or the
// op is already held.
func (p *Pending) Hold(op Op) bool {
	max := p.Max
	if max <= 0 {
		max = 10000
	}
	if p.size >= max || op.Size() > MaxOpSize {
		return false
	}
	if p.ops == nil {
		p.ops = map[PublicKey]map[uint64]Op{}
	}
	m := p.ops[op.Author]
	if m == nil {
		m = map[uint64]Op{}
		p.ops[op.Author] = m
	}
	if _, ok := m[op.Seq]; ok {
		return false
	}
	m[op.Seq] = op
	p.size++
	return true
}

// Drain adds to s every held op that now fits, repeatedly, and returns the
// ops added in the order they were added. Held ops that s refuses for good
// (bad signature, revoked, duplicate) are dropped.
func (p *Pending) Drain(s *OpSet) []Op {
	var added []Op
	for progress := true; progress && p.size > 0; {
		progress = false
		authors := make([]PublicKey, 0, len(p.ops))
		for k := range p.ops {
			authors = append(authors, k)
		}
		// Federation first: its admissions unlock other authors.
		slices.SortFunc(authors, func(a, b PublicKey) int {
			if a == s.Federation() {
				return -1
			}
			if b == s.Federation() {
				return 1
			}
			return 0
		})
		for _, k := range authors {
			m := p.ops[k]
			for seq := range m {
				if seen, _ := s.Head(k); seq <= seen {
					delete(m, seq)
					p.size--
				}
			}
			for {
				seq, _ := s.Head(k)
				op, ok := m[seq+1]
				if !ok {
					break
				}
				_, err := s.Add(op)
				if errors.Is(err, ErrUnknownAuthor) {
					break
				}
				delete(m, seq+1)
				p.size--
				if err == nil {
					added = append(added, op)
					progress = true
				}
			}
			if len(m) == 0 {
				delete(p.ops, k)
			}
		}
	}
	return added
}
