// Package crdt is Cagnotte's replicated data: signed operations, their
// canonical encoding, the grow-only op set and the views folded from it
// (venues, agenda, card balances and counters, conflicts).
//
// The package is pure. It does no I/O, reads no clock and opens no socket:
// time comes in through [HLC] values and a wall-clock function the caller
// injects, bytes come in through [DecodeOp], and storage or the network stay
// with the caller (node/store, p2p). This keeps every replica deterministic:
// the same set of ops gives the same [OpSet.Digest] and the same views on
// every node, whatever order the ops arrived in. An import test
// (imports_test.go) keeps it that way.
//
// # Operations
//
// An [Op] is {Author, Seq, Prev, HLC, Kind, Body, Sig}. Author is an Ed25519
// public key (the node's libp2p identity key, or the federation key); Seq
// counts the author's ops from 1 without gaps; Prev is the [OpID] of the
// author's op at Seq-1, so each author's ops form a hash chain that only that
// author can extend. The op id is the SHA-256 of the whole canonical encoding,
// signature included, so a chain link authenticates everything before it: a
// contiguous range received in catch-up is checked by its links and the
// signature of its newest op alone ([OpSet.AddRange]).
//
// # The op set
//
// An [OpSet] accepts an op only if its signature verifies, its author is the
// federation key or an admitted, unrevoked venue, its kind is allowed to that
// author, its body is valid and its Seq follows the author's head. Ops that
// arrive early (a gap, or an author whose admission is not here yet) are
// refused with [ErrGap] or [ErrUnknownAuthor]; [Pending] holds them until
// they fit. Two valid ops of one author at one Seq are an equivocation: both
// are kept as evidence and the author's chain stops counting at the fork.
//
// # Views
//
// Views are folded incrementally as ops are added and are a pure function of
// the counted ops: balances are sums of credits and debits (never a number
// read, changed and written back), counters are maxima, agenda fields are
// last-writer-wins by (HLC, op id). A full re-fold ([OpSet.Refold]) gives the
// same state; property tests check it.
package crdt
