package p2p

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
)

// Scenario 1 of issue 9, anti-entropy half: a venue's key signed two
// different ops at one seq (a data dir copied to two tills) and each
// side of a partition holds one branch, with a continuation. Version
// vectors cannot show it: both sides may hold as many ops of that venue.
// Gossip never carries these ops (their author runs no node here), so
// only sync can.

// forkedVenue makes a venue's common ops, then two branches signed by the
// same key from the same (seq, head): lenA and lenB ops.
func forkedVenue(t testing.TB, x *crdt.Signer, common, lenA, lenB int) (c, a, b []crdt.Op) {
	t.Helper()
	clock := crdt.NewClock(func() int64 { return time.Now().UnixMilli() })
	au := crdt.NewAuthor(x, clock, 0, crdt.OpID{})
	for i := range common {
		c = append(c, au.Make(&crdt.TopUp{Card: "04A1B2C3D4E5F6", Amount: uint64(100 + i), Method: crdt.MethodCash}))
	}
	head := c[len(c)-1].ID()
	branch := func(n, base int) []crdt.Op {
		bu := crdt.NewAuthor(x, clock, uint64(common), head)
		var out []crdt.Op
		for i := range n {
			out = append(out, bu.Make(&crdt.TopUp{Card: crdt.CardID(fmt.Sprintf("04A1B2C3D4E5%02X", base+i)), Amount: uint64(base + i), Method: crdt.MethodCash}))
		}
		return out
	}
	return c, branch(lenA, 10), branch(lenB, 40)
}

type forkView struct {
	evidence  []crdt.OpID
	conflicts []crdt.Conflict
	digest    [32]byte
	balances  map[crdt.CardID]int64
}

func viewOf(m *MemReplica) forkView {
	var v forkView
	v.evidence = evidenceIDs(m)
	m.View(func(s *crdt.OpSet) {
		for _, c := range s.State.SortedConflicts() {
			v.conflicts = append(v.conflicts, *c)
		}
		v.digest = s.Digest()
		v.balances = map[crdt.CardID]int64{}
		for id, c := range s.State.Cards {
			v.balances[id] = c.Balance
		}
	})
	return v
}

func TestEquivocationCarriedByAntiEntropy(t *testing.T) {
	for _, tc := range []struct {
		name       string
		lenA, lenB int
	}{
		{"same length", 4, 4},
		{"one branch longer", 4, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sa, sb, x, sc := seedSigner(t, 40), seedSigner(t, 41), seedSigner(t, 42), seedSigner(t, 43)
			fed := testFederation(t, sa, sb, x, sc)
			common, brA, brB := forkedVenue(t, x, 5, tc.lenA, tc.lenB)
			repA := memRep(t, fed, sa, common, brA)
			repB := memRep(t, fed, sb, common, brB)
			// Each side also has its own ops, for ordinary catch-up.
			for i := range 50 {
				if _, err := repA.Make(&crdt.TopUp{Card: "04A1B2C3D4E501", Amount: uint64(1 + i), Method: crdt.MethodCash}); err != nil {
					t.Fatal(err)
				}
				if _, err := repB.Make(&crdt.TopUp{Card: "04A1B2C3D4E502", Amount: uint64(1 + i), Method: crdt.MethodCash}); err != nil {
					t.Fatal(err)
				}
			}
			na := loopNet(t, repA, sa, nil)
			nb := loopNet(t, repB, sb, nil)
			link(t, na, nb)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			// The sessions the connection starts, and then one each way
			// (both see the fork once the first has shown it).
			waitUntil(t, 10*time.Second, "own ops exchanged", func() bool {
				return vvOf(repA, sb.Public()) == 50 && vvOf(repB, sa.Public()) == 50
			})
			for _, pair := range [][2]*Network{{na, nb}, {nb, na}} {
				if err := pair[0].SyncWith(ctx, pair[1].ID()); err != nil {
					t.Fatal(err)
				}
			}
			// Each side keeps its branch as its chain and the other's as
			// evidence: every op from the fork on, on either branch.
			fork := brA[0].Seq
			wantA, wantB := brB, brA // evidence each side must hold
			va, vb := viewOf(repA), viewOf(repB)
			if !slices.Equal(va.evidence, opIDs(wantA)) {
				t.Errorf("A's evidence: %d ops, want B's branch (%d ops)", len(va.evidence), len(wantA))
			}
			if !slices.Equal(vb.evidence, opIDs(wantB)) {
				t.Errorf("B's evidence: %d ops, want A's branch (%d ops)", len(vb.evidence), len(wantB))
			}
			wantC := crdt.Conflict{Kind: crdt.ConflictEquivocation, Author: x.Public(), Seq: fork, Ops: opIDs([]crdt.Op{brA[0], brB[0]})}
			for side, v := range map[string]forkView{"A": va, "B": vb} {
				if len(v.conflicts) != 1 || !sameConflict(v.conflicts[0], wantC) {
					t.Errorf("%s's conflicts: %+v, want %+v", side, v.conflicts, wantC)
				}
			}
			if va.digest != vb.digest {
				t.Errorf("digests differ: %x vs %x", va.digest[:6], vb.digest[:6])
			}
			for card, bal := range va.balances {
				if vb.balances[card] != bal {
					t.Errorf("card %s: balance %d at A, %d at B", card, bal, vb.balances[card])
				}
			}
			if len(va.balances) != len(vb.balances) {
				t.Errorf("%d cards at A, %d at B", len(va.balances), len(vb.balances))
			}
			sa1, sb1 := na.SyncStats(), nb.SyncStats()
			t.Logf("A: %+v", sa1)
			t.Logf("B: %+v", sb1)
			// A third replica that holds only the common ops and meets A
			// alone learns both branches from it: A's chain by the
			// version vectors, B's branch by the fork comparison.
			repC := memRep(t, fed, sc, common)
			nc := loopNet(t, repC, sc, nil)
			link(t, nc, na)
			if err := nc.SyncWith(ctx, na.ID()); err != nil {
				t.Fatal(err)
			}
			vc := viewOf(repC)
			if !slices.Equal(vc.evidence, va.evidence) || vc.digest != va.digest || len(vc.conflicts) != 1 || !sameConflict(vc.conflicts[0], wantC) {
				t.Errorf("C after syncing with A: %d evidence ops (A %d), conflicts %+v, same digest %v", len(vc.evidence), len(va.evidence), vc.conflicts, vc.digest == va.digest)
			}
			// In sync now: the next session ends at the hellos.
			before, checks := na.Stats().SyncInSync, na.SyncStats().ForkChecks
			if err := na.SyncWith(ctx, nb.ID()); err != nil {
				t.Fatal(err)
			}
			if na.Stats().SyncInSync < before+1 || na.SyncStats().ForkChecks != checks {
				t.Error("the next session did not end at the hellos")
			}
		})
	}
}

func sameConflict(a, b crdt.Conflict) bool {
	return a.Kind == b.Kind && a.Author == b.Author && a.Seq == b.Seq && slices.Equal(a.Ops, b.Ops)
}

// evidenceIDs returns the sorted ids of a replica's evidence ops.
func evidenceIDs(m *MemReplica) []crdt.OpID {
	var ids []crdt.OpID
	for _, op := range m.Evidence() {
		ids = append(ids, op.ID())
	}
	slices.SortFunc(ids, func(a, b crdt.OpID) int { return cmpKey(crdt.PublicKey(a), crdt.PublicKey(b)) })
	return ids
}

func opIDs(ops []crdt.Op) []crdt.OpID {
	ids := make([]crdt.OpID, len(ops))
	for i := range ops {
		ids[i] = ops[i].ID()
	}
	slices.SortFunc(ids, func(a, b crdt.OpID) int { return cmpKey(crdt.PublicKey(a), crdt.PublicKey(b)) })
	return ids
}

// junkEvidence serves its evidence ops with a flipped signature byte.
type junkEvidence struct{ *MemReplica }

func (r junkEvidence) Evidence() []crdt.Op {
	ev := r.MemReplica.Evidence()
	for i := range ev {
		ev[i].Sig[0] ^= 0xff
	}
	return ev
}

// TestSyncJunkEvidencePenalised: a peer that sends evidence ops with bad
// signatures in the fork comparison has them refused (each evidence op
// is verified) and is put on penalty.
func TestSyncJunkEvidencePenalised(t *testing.T) {
	sa, sb, x := seedSigner(t, 50), seedSigner(t, 51), seedSigner(t, 52)
	fed := testFederation(t, sa, sb, x)
	common, brA, brB := forkedVenue(t, x, 5, 3, 3)
	repA := memRep(t, fed, sa, common, brA, brB) // both branches: B's as evidence
	repB := memRep(t, fed, sb, common, brA)
	if len(repA.Evidence()) != 3 {
		t.Fatalf("A holds %d evidence ops", len(repA.Evidence()))
	}
	na := loopNet(t, junkEvidence{repA}, sa, nil)
	nb := loopNet(t, repB, sb, nil)
	link(t, nb, na)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := nb.SyncWith(ctx, na.ID()); err != nil {
		t.Fatal(err)
	}
	if ev := repB.Evidence(); len(ev) != 0 {
		t.Fatalf("B kept %d forged evidence ops", len(ev))
	}
	if st := nb.SyncStats(); st.EvidenceRefused == 0 || !nb.SyncPenalized(na.ID()) {
		t.Fatalf("the peer that sent forged evidence was not penalised: %+v", st)
	}
}
