// Package store is the durable store of one Cagnotte node: the ops of the
// replicated set, the evidence of equivocations, a snapshot of the folded
// views and the idempotency records of the HTTP API, in one Badger v4
// database under the node's data dir.
//
// The node keeps its [crdt.OpSet] in memory. Every op the set accepts is
// written with [Store.Commit] before the node acknowledges anything that
// depends on it: a batch is one Badger transaction, fsync'd before Commit
// returns, so after a crash (or SIGKILL, or power loss) a batch is either
// wholly there or not at all, and every batch Commit returned for is there.
// On restart [Store.Load] rebuilds the set from the last snapshot and the
// ops stored after it, with no replay of the network.
//
// # Key layout
//
// Every key starts with a one-byte prefix:
//
//	"v"                          format version, uint32 big-endian (currently 1)
//	"o" author(32) seq(8, BE)    canonical bytes of the author's op at seq
//	"x" op id(32)                canonical bytes of an op kept as evidence
//	"s"                          snapshot header (see below)
//	"s" chunk(4, BE)             the gob-encoded snapshot, in chunks of 1 MiB
//	"i" idempotency key          an API answer: request hash, status, body
//	"n"                          number of ops stored under "o", uint64 BE
//
// Because seqs are big-endian, the "o" keys of one author sort by seq and
// "ops of author A from seq N" is one prefix iteration seeking to
// "o"+A+N ([Store.ReadRange], which also serves as the op set's
// [crdt.OpReader] for equivocation checks and [crdt.OpSet.Refold]).
//
// The snapshot header holds a format byte, the number of chunks, the
// encoded length, the set's op count and a size estimate of its state
// (cards + events + ops). The snapshot is a gob encoding of the set's
// [crdt.Snapshot] plus the federation key and the set's Stale flag; it is
// split into chunks so that a large federation's snapshot (one history
// entry per money op: about 150 bytes each) never meets Badger's limit on
// the size of one value, and so that chunks live in the value log where old
// snapshots are garbage-collected.
//
// # Snapshots
//
// A batch carrying [Batch.Snapshot] also writes the snapshot, in the same
// transaction, when one is due: when the ops committed since the last
// snapshot reach the larger of [Config.SnapshotEvery] and half the size
// estimate of the state at the last snapshot. Encoding a snapshot costs
// time proportional to the state, and the state grows with the op count
// (history entries), so a fixed interval would make the cost per op grow
// without bound; comparing to the state's size keeps it amortised O(1) per
// op, at the price of replaying at most about half the ops on Load in a
// very large store.
//
// # Limits
//
// A batch must fit in one Badger transaction: with the memtable size used
// here (16 MiB) that is about 2.4 MB of keys and values, some 10 000 ops of
// ordinary size (ops are at most [crdt.MaxOpSize] bytes, so at least 1 000
// of the largest). Callers bound their batches (the node commits at most a
// few hundred ops at a time); a batch that does not fit fails with
// [ErrBatchTooBig] and writes nothing. A snapshot that does not fit with its
// batch is left for a later batch.
//
// After a write fails at the disk level the store refuses further commits
// ([ErrFailed]): what Badger holds in memory and on disk may disagree, and
// the node must restart and reload.
package store
