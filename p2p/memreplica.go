package p2p

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
)

// MemReplica is an in-memory Replica: a crdt.Replica behind a lock, with
// commit hooks. Simulations run many of them in one process; tests use it
// to exercise the network without a store. Make signs the replica's own
// ops when it has a signer.
type MemReplica struct {
	mu     sync.RWMutex
	r      *crdt.Replica
	author *crdt.Author

	hooksMu sync.Mutex
	hooks   []func([]crdt.Op)
}

var _ Replica = (*MemReplica)(nil)

// NewMemReplica returns a replica holding the federation chain fedOps
// (genesis first). signer, if not nil, is the node that Make signs as; now
// is its wall clock (default time.Now).
func NewMemReplica(fedOps []crdt.Op, signer *crdt.Signer, now func() time.Time) (*MemReplica, error) {
	if len(fedOps) == 0 || fedOps[0].Kind != crdt.KindGenesis {
		return nil, errors.New("p2p: the federation chain must start with its genesis")
	}
	if now == nil {
		now = time.Now
	}
	m := &MemReplica{r: crdt.NewReplica(fedOps[0].Author)}
	for _, op := range fedOps {
		if err := m.r.Deliver(op); err != nil {
			return nil, fmt.Errorf("p2p: federation chain: %w", err)
		}
	}
	if signer != nil {
		clock := crdt.NewClock(func() int64 { return now().UnixMilli() })
		m.author = crdt.NewAuthor(signer, clock, 0, crdt.OpID{})
	}
	return m, nil
}

// WrapReplica returns a MemReplica over r, a replica that already holds
// the federation chain, without a signer (Make fails). From then on r must
// be used only through it, or while nothing else uses it (a simulation
// that owns r between its steps).
func WrapReplica(r *crdt.Replica) *MemReplica { return &MemReplica{r: r} }

// Make signs the replica's next own op with body b, adds it and runs the
// hooks.
func (m *MemReplica) Make(b crdt.Body) (crdt.Op, error) {
	if m.author == nil {
		return crdt.Op{}, errors.New("p2p: replica has no signer")
	}
	m.mu.Lock()
	seq, head := m.r.Set.Head(m.author.Signer.Public())
	op := m.author.Make(b)
	if _, err := m.r.Set.Add(op); err != nil {
		m.author.Undo(seq, head)
		m.mu.Unlock()
		return op, fmt.Errorf("p2p: own op refused: %w", err)
	}
	if err := m.r.Log.Append(op); err != nil {
		m.mu.Unlock()
		return op, err
	}
	m.mu.Unlock()
	m.notify([]crdt.Op{op})
	return op, nil
}

// Replica returns the underlying replica. The caller must not use it while
// the network runs.
func (m *MemReplica) Replica() *crdt.Replica { return m.r }

// View runs fn with the op set under the read lock.
func (m *MemReplica) View(fn func(*crdt.OpSet)) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	fn(m.r.Set)
}

// Federation implements Replica.
func (m *MemReplica) Federation() crdt.PublicKey { return m.r.Set.Federation() }

// IsMember implements Replica.
func (m *MemReplica) IsMember(k crdt.PublicKey) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.r.Set.IsMember(k)
}

// Members implements Replica.
func (m *MemReplica) Members() []crdt.PublicKey {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []crdt.PublicKey
	for k, v := range m.r.Set.State.Venues {
		if !v.Revoked {
			out = append(out, k)
		}
	}
	return out
}

// VersionVector implements Replica.
func (m *MemReplica) VersionVector() crdt.VersionVector {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.r.Set.VersionVector()
}

// Digest implements Replica.
func (m *MemReplica) Digest() ([32]byte, uint64) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.r.Set.Digest(), m.r.Set.Len()
}

// ReadRange implements Replica. fn runs without the lock held, on a copy
// of the range read under it.
func (m *MemReplica) ReadRange(author crdt.PublicKey, from, to uint64, fn func(crdt.Op) error) error {
	var ops []crdt.Op
	m.mu.RLock()
	err := m.r.Log.ReadRange(author, from, to, func(op crdt.Op) error {
		ops = append(ops, op)
		return nil
	})
	m.mu.RUnlock()
	if err != nil {
		return err
	}
	for _, op := range ops {
		if err := fn(op); err != nil {
			return err
		}
	}
	return nil
}

// Check implements Replica.
func (m *MemReplica) Check(op *crdt.Op) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.r.Set.Check(op)
}

// Ingest implements Replica: ops that arrive early wait in the pending
// buffer; the first refusal is returned after the others are added.
func (m *MemReplica) Ingest(_ context.Context, ops []crdt.Op) error {
	m.mu.Lock()
	// With nothing pending, only the authors of ops can gain ops: compare
	// their heads rather than copying the whole version vector.
	var before crdt.VersionVector
	var authors []crdt.PublicKey
	var heads []uint64
	if m.r.Pending.Len() == 0 {
		for i := range ops {
			if !slices.Contains(authors, ops[i].Author) {
				seq, _ := m.r.Set.Head(ops[i].Author)
				authors, heads = append(authors, ops[i].Author), append(heads, seq)
			}
		}
	} else {
		before = m.r.Set.VersionVector()
	}
	var first error
	for _, op := range ops {
		if err := m.r.Deliver(op); err != nil && !errors.Is(err, crdt.ErrDuplicate) && first == nil {
			first = err
		}
	}
	var added []crdt.Op
	if before != nil {
		added = m.addedSince(before)
	} else {
		for i, a := range authors {
			after, _ := m.r.Set.Head(a)
			_ = m.r.Log.ReadRange(a, heads[i]+1, after, func(op crdt.Op) error {
				added = append(added, op)
				return nil
			})
		}
	}
	m.mu.Unlock()
	m.notify(added)
	return first
}

// IngestRange implements Replica.
func (m *MemReplica) IngestRange(_ context.Context, ops []crdt.Op) error {
	if len(ops) == 0 {
		return nil
	}
	m.mu.Lock()
	before := m.r.Set.VersionVector()
	head, _ := m.r.Set.Head(ops[0].Author)
	_, err := m.r.Set.AddRange(ops)
	after, _ := m.r.Set.Head(ops[0].Author)
	for i := range ops {
		if ops[i].Seq > head && ops[i].Seq <= after {
			if aerr := m.r.Log.Append(ops[i]); aerr != nil && err == nil {
				err = aerr
			}
		}
	}
	if after > head {
		for _, o := range m.r.Pending.Drain(m.r.Set) {
			_ = m.r.Log.Append(o)
		}
	}
	if m.r.Set.Stale {
		if rerr := m.r.Set.Refold(m.r.Log); rerr != nil && err == nil {
			err = rerr
		}
	}
	added := m.addedSince(before)
	m.mu.Unlock()
	m.notify(added)
	return err
}

// addedSince lists the chain ops added since the version vector before.
// Caller holds mu.
func (m *MemReplica) addedSince(before crdt.VersionVector) []crdt.Op {
	var out []crdt.Op
	for _, r := range m.r.Set.Missing(before) {
		_ = m.r.Log.ReadRange(r.Author, r.From, r.To, func(op crdt.Op) error {
			out = append(out, op)
			return nil
		})
	}
	return out
}

// OnChange implements Replica.
func (m *MemReplica) OnChange(fn func([]crdt.Op)) {
	m.hooksMu.Lock()
	m.hooks = append(m.hooks, fn)
	m.hooksMu.Unlock()
}

func (m *MemReplica) notify(ops []crdt.Op) {
	if len(ops) == 0 {
		return
	}
	m.hooksMu.Lock()
	hooks := m.hooks
	m.hooksMu.Unlock()
	for _, h := range hooks {
		h(ops)
	}
}

// Chains implements Replica.
func (m *MemReplica) Chains() map[crdt.PublicKey]Chain {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return chainsOf(m.r.Set, m.r.Log)
}

// chainsOf lists the chains of set: heads, and forks from its
// equivocation conflicts. A revoked venue's chain is cut at its
// revocation (as in the version vector), its head there read from log
// unless the revocation pinned it: replicas that received more of it
// before the revocation then list the same head.
func chainsOf(set *crdt.OpSet, log crdt.OpReader) map[crdt.PublicKey]Chain {
	out := make(map[crdt.PublicKey]Chain, len(set.Authors))
	for k, a := range set.Authors {
		seq, head := set.Head(k)
		if a.Revoked && seq > a.RevokedAfter {
			seq, head = a.RevokedAfter, a.RevokedHead
			if head.IsZero() && seq > 0 {
				_ = log.ReadRange(k, seq, seq, func(op crdt.Op) error { head = op.ID(); return nil })
			}
		}
		if seq > 0 {
			out[k] = Chain{Seq: seq, Head: head}
		}
	}
	for _, c := range set.State.Conflicts {
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

// Evidence implements Replica.
func (m *MemReplica) Evidence() []crdt.Op {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]crdt.Op, 0, len(m.r.Set.EvidenceOps))
	for _, op := range m.r.Set.EvidenceOps {
		out = append(out, op)
	}
	return out
}

// IngestEvidence implements Replica.
func (m *MemReplica) IngestEvidence(_ context.Context, ops []crdt.Op) error {
	m.mu.Lock()
	var first error
	var added []crdt.Op
	for _, op := range ops {
		out, err := m.r.Set.AddEvidence(op)
		switch {
		case err == nil && out == crdt.Added:
			if aerr := m.r.Log.Append(op); aerr != nil && first == nil {
				first = aerr
			}
			added = append(added, op)
		case err == nil:
		case evidenceSkippable(err):
		case first == nil:
			first = err
		}
	}
	if len(added) > 0 {
		for _, o := range m.r.Pending.Drain(m.r.Set) {
			_ = m.r.Log.Append(o)
			added = append(added, o)
		}
	}
	if m.r.Set.Stale {
		if rerr := m.r.Set.Refold(m.r.Log); rerr != nil && first == nil {
			first = rerr
		}
	}
	m.mu.Unlock()
	m.notify(added)
	return first
}

// evidenceSkippable reports whether AddEvidence refused an op that is not
// invalid, only useless here: already held, ahead of its author's chain,
// unknown or revoked author, or nothing held to compare it with.
func evidenceSkippable(err error) bool {
	for _, e := range []error{crdt.ErrDuplicate, crdt.ErrGap, crdt.ErrStale, crdt.ErrUnknownAuthor, crdt.ErrRevoked, crdt.ErrEquivocation, crdt.ErrFuture} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
