package p2p

import (
	"context"

	"github.com/cagnotte/cagnotte/crdt"
)

// Replica is what the network layer replicates: a venue node (node.Node
// implements it over its Badger store) or, in simulations, an in-memory
// replica. Every method is safe for concurrent use.
type Replica interface {
	// Federation returns the federation key.
	Federation() crdt.PublicKey
	// IsMember reports whether key is the federation key or an admitted,
	// unrevoked venue: the connection gater and validators admit only those.
	IsMember(key crdt.PublicKey) bool
	// Members lists the admitted, unrevoked venue keys.
	Members() []crdt.PublicKey
	// VersionVector returns author -> highest contiguous seq held.
	VersionVector() crdt.VersionVector
	// Digest returns the state digest and the number of ops held.
	Digest() ([32]byte, uint64)
	// ReadRange streams the ops of author with from <= seq <= to, in order.
	ReadRange(author crdt.PublicKey, from, to uint64, fn func(crdt.Op) error) error
	// Check validates an op arriving on gossip without adding it: decoding,
	// size, author membership, signature. It returns nil, or an error
	// wrapping crdt.ErrDuplicate, crdt.ErrGap or crdt.ErrUnknownAuthor for
	// ops that are valid but not new or not yet in order, or another crdt
	// error for an invalid op.
	Check(op *crdt.Op) error
	// Ingest adds ops from gossip (each verified) and commits them durably.
	Ingest(ctx context.Context, ops []crdt.Op) error
	// IngestRange adds one author's contiguous run received in catch-up
	// (links hashed, newest signature verified) and commits it durably.
	IngestRange(ctx context.Context, ops []crdt.Op) error
	// OnChange registers fn, called after each durable commit with the ops
	// committed (own and remote). fn must not block.
	OnChange(fn func(ops []crdt.Op))

	// Chains returns, for every author with ops held, its chain head and
	// its lowest known fork seq. Anti-entropy compares them beyond version
	// vectors: two chains of equal length may hold different ops.
	Chains() map[crdt.PublicKey]Chain
	// Evidence returns the ops kept as evidence of equivocation (valid ops
	// outside the chains, crdt.OpSet.EvidenceOps), in no particular order.
	Evidence() []crdt.Op
	// IngestEvidence adds ops a peer holds beyond what version vectors
	// show (the other branch of a forked author, the ops around its fork)
	// with crdt.OpSet.AddEvidence, each op's signature verified, and
	// commits what it added (chain ops and evidence) durably. Ops that are
	// valid but prove nothing here (already held, ahead of the author's
	// chain, stamped too far in the future, unknown or revoked author,
	// nothing to compare them with) are skipped. It returns the first refusal of an invalid op (an error
	// wrapping a *crdt.OpError: bad signature, invalid body, kind not
	// allowed, …) after committing the others, or an error of the replica
	// itself.
	IngestEvidence(ctx context.Context, ops []crdt.Op) error
}

// Chain is one author's chain as a replica holds it.
type Chain struct {
	// Seq and Head are the contiguous chain held: ops 1 to Seq, Head being
	// the id of op Seq.
	Seq  uint64
	Head crdt.OpID
	// Fork is the lowest seq at which the author is known to have signed
	// two different ops (the Seq of its crdt.ConflictEquivocation), 0 if
	// none.
	Fork uint64
}
