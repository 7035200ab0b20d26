package node

import (
	"context"
	"errors"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/p2p"
)

// The node is the replica the network layer replicates.
var _ p2p.Replica = (*Node)(nil)

// IsMember reports whether key is the federation or an admitted, unrevoked
// venue.
func (n *Node) IsMember(key crdt.PublicKey) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.set.IsMember(key)
}

// Members lists the admitted, unrevoked venues.
func (n *Node) Members() []crdt.PublicKey {
	n.mu.RLock()
	defer n.mu.RUnlock()
	var out []crdt.PublicKey
	for k, v := range n.set.State.Venues {
		if !v.Revoked {
			out = append(out, k)
		}
	}
	return out
}

// VersionVector returns the replica's version vector.
func (n *Node) VersionVector() crdt.VersionVector {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.set.VersionVector()
}

// Digest returns the state digest and op count.
func (n *Node) Digest() ([32]byte, uint64) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.set.Digest(), n.set.Len()
}

// ReadRange reads ops from the store.
func (n *Node) ReadRange(author crdt.PublicKey, from, to uint64, fn func(crdt.Op) error) error {
	return n.store.ReadRange(author, from, to, fn)
}

// Check validates an op without adding it.
func (n *Node) Check(op *crdt.Op) error {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.set.Check(op)
}

// IngestRange adds one author's contiguous run from catch-up and commits it.
func (n *Node) IngestRange(ctx context.Context, ops []crdt.Op) error {
	r := n.submit(ctx, nil, func(tx *writeTx) result {
		return result{err: tx.ingestRange(ops)}
	})
	return r.err
}

// OnChange is OnCommit, for the p2p.Replica interface.
func (n *Node) OnChange(fn func([]crdt.Op)) { n.OnCommit(fn) }

// Chains returns every author's chain head and known fork, for the
// fork comparison of anti-entropy.
func (n *Node) Chains() map[crdt.PublicKey]p2p.Chain {
	n.mu.RLock()
	defer n.mu.RUnlock()
	out := make(map[crdt.PublicKey]p2p.Chain, len(n.set.Authors))
	for k, a := range n.set.Authors {
		seq, head := n.set.Head(k)
		// A revoked venue's chain is cut at its revocation, as in the
		// version vector.
		if a.Revoked && seq > a.RevokedAfter {
			seq, head = a.RevokedAfter, a.RevokedHead
			if head.IsZero() && seq > 0 {
				_ = n.store.ReadRange(k, seq, seq, func(op crdt.Op) error { head = op.ID(); return nil })
			}
		}
		if seq > 0 {
			out[k] = p2p.Chain{Seq: seq, Head: head}
		}
	}
	for _, c := range n.set.State.Conflicts {
		if c.Kind != crdt.ConflictEquivocation {
			continue
		}
		ch := out[c.Author]
		if ch.Fork == 0 || c.Seq < ch.Fork {
			ch.Fork = c.Seq
			out[c.Author] = ch
		}
	}
	return out
}

// Evidence returns the ops kept as evidence of equivocation.
func (n *Node) Evidence() []crdt.Op {
	n.mu.RLock()
	defer n.mu.RUnlock()
	out := make([]crdt.Op, 0, len(n.set.EvidenceOps))
	for _, op := range n.set.EvidenceOps {
		out = append(out, op)
	}
	return out
}

// IngestEvidence adds ops a peer sent in the fork comparison of
// anti-entropy (crdt.OpSet.AddEvidence: each signature verified) and
// commits them: ops that extend a chain as chain ops, the others as
// evidence. Ops that prove nothing here are skipped; the first invalid
// op's error is returned after the rest is committed.
func (n *Node) IngestEvidence(ctx context.Context, ops []crdt.Op) error {
	r := n.submit(ctx, nil, func(tx *writeTx) result {
		var first error
		progressed := false
		for _, op := range ops {
			out, err := tx.n.set.AddEvidence(op)
			switch {
			case err == nil && out == crdt.Added:
				tx.ops = append(tx.ops, op)
				progressed = true
			case err == nil:
				tx.evidence = append(tx.evidence, op)
				tx.n.metrics.evidence.Inc()
			case evidenceSkippable(err):
			default:
				tx.n.metrics.refused.Inc()
				if first == nil {
					first = err
				}
			}
		}
		if progressed {
			tx.ops = append(tx.ops, tx.n.pending.Drain(tx.n.set)...)
		}
		return result{err: first}
	})
	return r.err
}

// evidenceSkippable reports whether AddEvidence refused an op that is not
// invalid, only useless here (see p2p.Replica.IngestEvidence).
func evidenceSkippable(err error) bool {
	for _, e := range []error{crdt.ErrDuplicate, crdt.ErrGap, crdt.ErrStale, crdt.ErrUnknownAuthor, crdt.ErrRevoked, crdt.ErrEquivocation, crdt.ErrFuture} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
