package crdt_test

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
	"pgregory.net/rapid"
)

// Property tests. They draw a federation history (genScenario), build a
// reference replica by delivering it in the order it was made, and check
// that other delivery orders, duplicates, partitions, re-folds and
// snapshots give the same digest and views, and that money adds up.
// Run more cases with -rapid.checks=N (default 100; -short divides by 5).

var defaultGen = genOptions{minSteps: 100, maxSteps: 400}

// deliverChecked delivers op to r. first says whether r sees op for the
// first time: a first delivery must be accepted or held, except the
// revoked venue's ops past its cut-off; a repeat may also be a duplicate.
func deliverChecked(t tb, sc *scenario, r *crdt.Replica, op crdt.Op, first bool) {
	t.Helper()
	err := r.Deliver(op)
	switch {
	case err == nil:
	case sc.refused(op) && errors.Is(err, crdt.ErrRevoked):
	case !first && errors.Is(err, crdt.ErrDuplicate):
	default:
		t.Fatalf("deliver %s#%d %s (first=%v): %v", op.Author.Short(), op.Seq, op.Kind, first, err)
	}
	if r.Set.Stale {
		t.Fatalf("replica left stale after delivering %s#%d", op.Author.Short(), op.Seq)
	}
}

// referenceReplica delivers the scenario in the order its ops were made.
func referenceReplica(t tb, sc *scenario) *crdt.Replica {
	t.Helper()
	r := crdt.NewReplica(sc.fedKey())
	for _, op := range sc.ops {
		deliverChecked(t, sc, r, op, true)
	}
	if sc.forked < 0 && r.Pending.Len() != 0 {
		t.Fatalf("reference replica: %d ops still pending", r.Pending.Len())
	}
	return r
}

// drawOrder draws a delivery order: a permutation of all ops with some of
// them delivered again.
func drawOrder(t *rapid.T, n int, label string) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	dups := rapid.SliceOfN(rapid.IntRange(0, n-1), 0, n/4).Draw(t, label+" duplicates")
	return rapid.Permutation(append(idx, dups...)).Draw(t, label)
}

func deliverOrder(t tb, sc *scenario, order []int) *crdt.Replica {
	t.Helper()
	r := crdt.NewReplica(sc.fedKey())
	seen := make([]bool, len(sc.ops))
	for _, i := range order {
		deliverChecked(t, sc, r, sc.ops[i], !seen[i])
		seen[i] = true
	}
	if sc.forked < 0 && r.Pending.Len() != 0 {
		t.Fatalf("%d ops still pending after delivering all", r.Pending.Len())
	}
	return r
}

// checkMoney checks that the replica's balances add up and match a model
// computed from the ops that count.
func checkMoney(t tb, sc *scenario, s *crdt.OpSet) {
	t.Helper()
	m := buildModel(sc)
	st := s.State
	var sum, credits, debits int64
	for id, c := range st.Cards {
		if c.Balance != c.Credits-c.Debits {
			t.Fatalf("card %s: balance %d != credits %d - debits %d", id, c.Balance, c.Credits, c.Debits)
		}
		var entries int64
		for _, e := range st.CardHistory(id, nil, false, 0) {
			if e.Counted {
				entries += e.Amount
			}
		}
		if entries != c.Balance {
			t.Fatalf("card %s: counted entries sum to %d, balance %d", id, entries, c.Balance)
		}
		want, ok := m.balance[id]
		if !ok {
			t.Fatalf("card %s in the views but no counted op mentions it", id)
		}
		if c.Balance != want {
			t.Fatalf("card %s: balance %d, model %d", id, c.Balance, want)
		}
		sum += c.Balance
		credits += c.Credits
		debits += c.Debits
	}
	if len(st.Cards) != len(m.balance) {
		t.Fatalf("%d cards in the views, %d in the model", len(st.Cards), len(m.balance))
	}
	if sum != st.Credits-st.Debits || credits != st.Credits || debits != st.Debits {
		t.Fatalf("Σ balances %d (credits %d, debits %d), state credits %d debits %d", sum, credits, debits, st.Credits, st.Debits)
	}
	if st.Credits != m.credits || st.Debits != m.debits {
		t.Fatalf("state credits %d debits %d, model %d %d", st.Credits, st.Debits, m.credits, m.debits)
	}
	spends, refs, stamps := map[string][]crdt.OpID{}, map[string][]crdt.OpID{}, map[string][]crdt.OpID{}
	for _, c := range st.SortedConflicts() {
		switch c.Kind {
		case crdt.ConflictDoubleSpend:
			spends[fmt.Sprintf("%s/%d", c.Card, c.Counter)] = c.Ops
		case crdt.ConflictDuplicateRef:
			refs[c.Ref] = c.Ops
		case crdt.ConflictStaleStamp:
			stamps[string(c.Card)] = c.Ops
		}
	}
	sameIDs := func(what string, got, want map[string][]crdt.OpID) {
		if len(got) != len(want) {
			t.Fatalf("%s conflicts: %d, model %d", what, len(got), len(want))
		}
		for k, ids := range want {
			ids = slices.Clone(ids)
			slices.SortFunc(ids, func(a, b crdt.OpID) int { return bytes.Compare(a[:], b[:]) })
			if !slices.Equal(got[k], ids) {
				t.Fatalf("%s conflict %s: ops %v, model %v", what, k, got[k], ids)
			}
		}
	}
	sameIDs("double spend", spends, m.doubleSpends)
	sameIDs("duplicate ref", refs, m.dupRefs)
	sameIDs("stale stamp", stamps, m.staleStamps)
}

// checkRefold checks that a full re-fold of a copy of r gives r's views,
// and that a snapshot restores to the same state.
func checkRefold(t tb, what string, r *crdt.Replica) {
	t.Helper()
	restored := copySet(t, r.Set, r.Log)
	sameState(t, what+": snapshot/restore", r.Set, restored)
	if err := restored.Refold(r.Log); err != nil {
		t.Fatalf("%s: refold: %v", what, err)
	}
	sameState(t, what+": refold", r.Set, restored)
	if restored.Len() != r.Set.Len() {
		t.Fatalf("%s: refold holds %d ops, incremental %d", what, restored.Len(), r.Set.Len())
	}
}

func TestPropertyReplicasConverge(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		sc := genScenario(t, defaultGen)
		ref := referenceReplica(t, sc)
		checkMoney(t, sc, ref.Set)
		checkRefold(t, "reference", ref)

		r := deliverOrder(t, sc, drawOrder(t, len(sc.ops), "order"))
		sameState(t, "shuffled", ref.Set, r.Set)
		checkRefold(t, "shuffled", r)
	})
}

func TestPropertySplitMerge(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		sc := genScenario(t, defaultGen)
		ref := referenceReplica(t, sc)

		// Each op goes to A, to B or to both, in a drawn order.
		side := rapid.SliceOfN(rapid.IntRange(0, 2), len(sc.ops), len(sc.ops)).Draw(t, "sides")
		a, b := crdt.NewReplica(sc.fedKey()), crdt.NewReplica(sc.fedKey())
		seenA, seenB := make([]bool, len(sc.ops)), make([]bool, len(sc.ops))
		for _, i := range drawOrder(t, len(sc.ops), "split order") {
			if side[i] != 1 {
				deliverChecked(t, sc, a, sc.ops[i], !seenA[i])
				seenA[i] = true
			}
			if side[i] != 0 {
				deliverChecked(t, sc, b, sc.ops[i], !seenB[i])
				seenB[i] = true
			}
		}
		merge(t, sc, a, b)
		sameState(t, "merged A", ref.Set, a.Set)
		sameState(t, "merged B", ref.Set, b.Set)
		checkRefold(t, "merged", a)
	})
}

// merge runs anti-entropy between two replicas until neither has anything
// to send: each sends the ranges the other's version vector lacks, read
// from its log, and its evidence ops.
func merge(t tb, sc *scenario, a, b *crdt.Replica) {
	t.Helper()
	send := func(from, to *crdt.Replica) int {
		n := 0
		for _, rg := range from.Set.Missing(to.Set.VersionVector()) {
			for _, op := range readRange(t, from.Log, rg) {
				deliverChecked(t, sc, to, op, false)
				n++
			}
		}
		for _, id := range sortedEvidence(from.Set) {
			if _, ok := to.Set.EvidenceOps[id]; !ok {
				deliverChecked(t, sc, to, from.Set.EvidenceOps[id], false)
				n++
			}
		}
		return n
	}
	// Each round fills gaps, which can release ops the other side held in
	// its pending buffer and has not seen: it may take several rounds, but
	// every round that sends something makes progress.
	for round := 0; ; round++ {
		if round > len(sc.ops)+2 {
			t.Fatalf("replicas still exchanging after %d rounds", round)
		}
		if send(a, b)+send(b, a) == 0 {
			break
		}
	}
	if a.Pending.Len() != 0 || b.Pending.Len() != 0 {
		t.Fatalf("after merge: %d and %d ops pending", a.Pending.Len(), b.Pending.Len())
	}
}

func sortedEvidence(s *crdt.OpSet) []crdt.OpID {
	ids := make([]crdt.OpID, 0, len(s.EvidenceOps))
	for id := range s.EvidenceOps {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b crdt.OpID) int { return bytes.Compare(a[:], b[:]) })
	return ids
}

// TestPropertyRefoldAndRestore checks incremental folding against a full
// re-fold and a snapshot round trip in the middle of a history, then keeps
// adding to the restored copy.
func TestPropertyRefoldAndRestore(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		sc := genScenario(t, defaultGen)
		cut := rapid.IntRange(0, len(sc.ops)).Draw(t, "prefix")
		ref := crdt.NewReplica(sc.fedKey())
		for _, op := range sc.ops[:cut] {
			deliverChecked(t, sc, ref, op, true)
		}
		checkRefold(t, "prefix", ref)

		// Restore the snapshot into a second replica with its own log and
		// deliver the rest of the history to both.
		log := crdt.NewMemLog()
		for _, k := range sortedPubKeys(ref.Set.Authors) {
			seq, _ := ref.Set.Head(k)
			for _, op := range readRange(t, ref.Log, crdt.Range{Author: k, From: 1, To: seq}) {
				if err := log.Append(op); err != nil {
					t.Fatal(err)
				}
			}
		}
		restored := &crdt.Replica{Set: copySet(t, ref.Set, log), Log: log}
		for _, op := range sc.ops[cut:] {
			deliverChecked(t, sc, ref, op, true)
			deliverChecked(t, sc, restored, op, true)
		}
		sameState(t, "restored then extended", ref.Set, restored.Set)
		checkRefold(t, "full", ref)
		checkMoney(t, sc, ref.Set)
	})
}

// TestPropertyEquivocation has one venue sign two chains from one seq on.
// Every replica, whatever the order, ends with the same digest, views and
// conflicts, and every op of both branches counts.
func TestPropertyEquivocation(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		sc := genScenario(t, genOptions{minSteps: 50, maxSteps: 250, equivocate: true})
		ref := referenceReplica(t, sc)
		checkMoney(t, sc, ref.Set)
		for i := range 3 {
			r := deliverOrder(t, sc, drawOrder(t, len(sc.ops), fmt.Sprintf("order %d", i)))
			sameState(t, fmt.Sprintf("order %d", i), ref.Set, r.Set)
			checkRefold(t, fmt.Sprintf("order %d", i), r)
		}
		if sc.forked < 0 {
			return
		}
		v := sc.venues[sc.forked].key()
		var atFork []crdt.OpID
		for _, op := range sc.ops {
			if op.Author == v && op.Seq == sc.forkSeq {
				atFork = append(atFork, op.ID())
			}
		}
		slices.SortFunc(atFork, func(a, b crdt.OpID) int { return bytes.Compare(a[:], b[:]) })
		var found bool
		for _, c := range ref.Set.State.SortedConflicts() {
			if c.Kind == crdt.ConflictEquivocation {
				if c.Author != v || c.Seq != sc.forkSeq || !slices.Equal(c.Ops, atFork) {
					t.Fatalf("equivocation conflict %+v, want venue %s seq %d ops %v", *c, v.Short(), sc.forkSeq, atFork)
				}
				found = true
			}
		}
		if !found {
			t.Fatalf("no equivocation conflict for %s", v.Short())
		}
		// Both branches are signed facts of the venue: every op counts.
		var all uint64
		for _, op := range sc.ops {
			if op.Author == v {
				all++
			}
		}
		if a := ref.Set.Authors[v]; a.Fork != sc.forkSeq || a.NCounted != all {
			t.Fatalf("forked venue: fork %d counted %d ops, want %d and all %d", a.Fork, a.NCounted, sc.forkSeq, all)
		}
	})
}
