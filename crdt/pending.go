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
	ops  map[PublicKey]map[uint64][]Op
	size int
}

// Len returns the number of ops held.
func (p *Pending) Len() int { return p.size }

// Hold keeps op for later. It returns false if the buffer is full or the
// op is already held. Two different ops at one (author, seq) are both held:
// one of them is evidence of equivocation.
func (p *Pending) Hold(op Op) bool {
	max := p.Max
	if max <= 0 {
		max = 10000
	}
	if p.size >= max || op.Size() > MaxOpSize {
		return false
	}
	if p.ops == nil {
		p.ops = map[PublicKey]map[uint64][]Op{}
	}
	m := p.ops[op.Author]
	if m == nil {
		m = map[uint64][]Op{}
		p.ops[op.Author] = m
	}
	if held := m[op.Seq]; len(held) > 0 {
		id := op.ID()
		for _, o := range held {
			if o.ID() == id {
				return false
			}
		}
	}
	m[op.Seq] = append(m[op.Seq], op)
	p.size++
	return true
}

// Drain adds to s every held op that now fits, repeatedly, and returns the
// ops added to the chains in the order they were added. Held ops that s
// refuses for good (bad signature, revoked, duplicate) are dropped; held ops
// at a seq the set already covers are offered to s, which keeps them as
// evidence if they conflict with its chain.
func (p *Pending) Drain(s *OpSet) []Op {
	added, _ := p.DrainAll(s)
	return added
}

// DrainAll is Drain that also returns the held ops the set kept as
// evidence (the caller persists both).
func (p *Pending) DrainAll(s *OpSet) (added, evidence []Op) {
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
			if a := s.Authors[k]; a != nil && a.Revoked {
				for seq, ops := range m {
					if seq > a.RevokedAfter {
						delete(m, seq)
						p.size -= len(ops)
					}
				}
			}
			if head, _ := s.Head(k); head > 0 {
				for seq, ops := range m {
					if seq <= head {
						delete(m, seq)
						p.size -= len(ops)
						for _, op := range ops {
							// Evidence, or refused for good.
							if out, err := s.Add(op); err == nil && out == Evidence {
								evidence = append(evidence, op)
							}
						}
					}
				}
			}
			// Ops signed on top of a branch held as evidence are evidence.
			for seq, ops := range m {
				kept := ops[:0]
				for _, op := range ops {
					if ev, ok := s.EvidenceOps[op.Prev]; ok && ev.Author == op.Author && ev.Seq+1 == seq {
						p.size--
						if out, err := s.Add(op); err == nil && out == Evidence {
							evidence = append(evidence, op)
							progress = true
						}
						continue
					}
					kept = append(kept, op)
				}
				if len(kept) == 0 {
					delete(m, seq)
				} else {
					m[seq] = kept
				}
			}
			for stop := false; !stop; {
				head, _ := s.Head(k)
				ops, ok := m[head+1]
				if !ok {
					break
				}
				delete(m, head+1)
				p.size -= len(ops)
				// A second op at one seq can only be evidence once the
				// first is added.
				for i, op := range ops {
					out, err := s.Add(op)
					if errors.Is(err, ErrUnknownAuthor) {
						m[head+1] = ops[i:]
						p.size += len(ops) - i
						stop = true
						break
					}
					if err == nil && out == Added {
						added = append(added, op)
						progress = true
					}
				}
			}
			if len(m) == 0 {
				delete(p.ops, k)
			}
		}
	}
	return added, evidence
}
