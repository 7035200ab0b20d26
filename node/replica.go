package node

import (
	"context"

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
