// Package store is the durable store of one Cagnotte node: the ops of the
// replicated set, the evidence of equivocations, the folded state as small
// records, the index of what grows with history, and the idempotency
// records of the HTTP API, in one Badger v4 database under the node's data
// dir.
//
// The node keeps in memory what every payment needs (each card's balance,
// counter and block state, the authors' chains, the venues, the agenda, the
// conflicts); what grows with history (each card's entries, the first
// payment op per (card, counter), the op credited per external reference)
// lives here, behind the [DiskIndex] the op set folds into. Every commit
// writes, in one Badger transaction fsync'd before Commit returns, the ops,
// the records of the state they changed ([crdt.OpSet.TakeChanges]) and the
// index writes they made: after a crash (or SIGKILL, or power loss) a batch
// is either wholly there or not at all, and every batch Commit returned for
// is there. On restart [Store.Load] reads the records back
// ([crdt.FromStored]) and no op, so a restart costs the same whatever the
// length of the history. There is no snapshot: nothing is ever written as
// one big value, and nothing is left behind on disk by restarts.
//
// # Key layout
//
// Every key starts with a one-byte prefix:
//
//	"v"                          format version, uint32 big-endian (currently 2)
//	"o" author(32) seq(8, BE)    canonical bytes of the author's op at seq
//	"x" op id(32)                canonical bytes of an op kept as evidence
//	"i" idempotency key          an API answer: request hash, status, body
//	"n"                          number of ops stored under "o", uint64 BE
//	"m"                          the state's meta record (binary crdt.Meta; gob before)
//	"a" author(32)               an author's chain state (binary crdt.AuthorState; gob before)
//	"c" card                     a card's state (gob crdt.Card)
//	"u" venue(32)                a venue (gob crdt.Venue)
//	"e" venue(32) event id       older stores: an event, moved to "V"/"T"/"W" by Load
//	"f" conflict key             a conflict (gob crdt.Conflict)
//	"g"                          the index generation, uint32 BE
//	"E" gen(4) card entry        a card's entry: key (HLC, op id), value kind, counted, venue, amount, counter, label
//	"P" gen(4) card counter(8)   the first payment op id seen at that counter
//	"R" gen(4) reference         the op credited for an external reference
//	"V" gen(4) venue(32) id      an event (binary crdt.Event)
//	"T" gen(4) start(8) venue id the same event, in agenda order (see events.go)
//	"W" gen(4) end(8) venue id   an event longer than a day: its start
//
// Because seqs are big-endian, the "o" keys of one author sort by seq and
// "ops of author A from seq N" is one prefix iteration seeking to
// "o"+A+N ([Store.ReadRange], which also serves as the op set's
// [crdt.OpReader] for equivocation checks and [crdt.OpSet.Refold]). A
// card's entries sort by (HLC, op id), so a page of its history is one
// iteration from a cursor.
//
// # Refolds and generations
//
// A revocation or a federation fork can void ops already folded: the set
// is refolded from the ops. The refold folds into a scratch index (the
// generation after the current one); the commit that follows writes it and
// switches the "g" key, and the old generation's keys are deleted in the
// background, key by key (Badger's DropPrefix would block writes). A
// refolded state too big for one transaction is written in several, the
// meta record last: until then the meta on disk says the state is stale
// and Load refolds again. A store written by format 1 (a gob snapshot of
// the whole state) is rebuilt from its ops once, in batches, the same way.
//
// # Limits
//
// A batch must fit in one Badger transaction: with the memtable size used
// here (16 MiB) that is about 2.4 MB of keys and values, some 5 000 ops of
// ordinary size with their index and records. Callers bound their batches
// (the node commits at most a few hundred ops at a time); a batch that does
// not fit fails with [ErrBatchTooBig] and writes nothing.
//
// After a write fails at the disk level the store refuses further commits
// ([ErrFailed]): what Badger holds in memory and on disk may disagree, and
// the node must restart and reload.
package store
