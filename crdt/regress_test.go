package crdt_test

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

// Regression tests for bugs the property tests found, in their smallest
// form, plus unit tests of the op set's less travelled paths.

// fixture is a federation with two admitted venues.
type fixture struct {
	fed, a, b *actor
	base      []crdt.Op // genesis and admissions
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{
		fed: newActor(signerFromBytes(t, 0xFE)),
		a:   newActor(signerFromBytes(t, 1)),
		b:   newActor(signerFromBytes(t, 2)),
	}
	f.base = []crdt.Op{
		f.fed.make(1, &crdt.Genesis{Name: "Réseau", Currency: "EUR", Settings: testSettings()}),
		f.fed.make(1, &crdt.Admit{Venue: f.a.key(), Name: "A"}),
		f.fed.make(1, &crdt.Admit{Venue: f.b.key(), Name: "B"}),
	}
	return f
}

func (f *fixture) replica(t testing.TB) *crdt.Replica {
	t.Helper()
	r := crdt.NewReplica(f.fed.key())
	mustDeliver(t, r, f.base...)
	return r
}

// permutations calls fn with every order of ops (small slices only).
func permutations(ops []crdt.Op, fn func([]crdt.Op)) {
	var rec func(k int)
	rec = func(k int) {
		if k == len(ops) {
			fn(slices.Clone(ops))
			return
		}
		for i := k; i < len(ops); i++ {
			ops[k], ops[i] = ops[i], ops[k]
			rec(k + 1)
			ops[k], ops[i] = ops[i], ops[k]
		}
	}
	rec(0)
}

func sortIDs(ids []crdt.OpID) []crdt.OpID {
	ids = slices.Clone(ids)
	slices.SortFunc(ids, func(a, b crdt.OpID) int { return bytes.Compare(a[:], b[:]) })
	return ids
}

// Found by TestPropertyEquivocation: two ops at one (author, seq) arriving
// early were not both held, so a replica could miss the equivocation.
func TestPendingHoldsBothSidesOfAFork(t *testing.T) {
	f := newFixture(t)
	a1 := f.a.make(1, &crdt.VenueInfo{Name: "A"})
	x := f.a.fork(1, a1.ID())
	m2 := f.a.make(1, &crdt.VenueInfo{Name: "main"})
	b2 := x.make(1, &crdt.VenueInfo{Name: "branch"})

	var p crdt.Pending
	if !p.Hold(m2) || !p.Hold(b2) || p.Hold(m2) || p.Len() != 2 {
		t.Fatalf("pending holds %d ops, want both sides of the fork once", p.Len())
	}
	want := f.replica(t)
	mustDeliver(t, want, a1, m2, b2)
	r := f.replica(t)
	mustDeliver(t, r, m2, b2, a1)
	sameState(t, "early fork", want.Set, r.Set)
	if a := r.Set.Authors[f.a.key()]; a.Fork != 2 || a.NCounted != 3 {
		t.Fatalf("author state %+v, want fork at 2 and both branches counted", a)
	}
}

// Found by TestPropertyEquivocation: Drain reported an op kept as evidence
// as added, and Replica appended it to its log, out of the chain.
func TestDrainDoesNotLogEvidence(t *testing.T) {
	f := newFixture(t)
	a1 := f.a.make(1, &crdt.VenueInfo{Name: "A"})
	x := f.a.fork(1, a1.ID())
	m2 := f.a.make(1, &crdt.VenueInfo{Name: "main 2"})
	m3 := f.a.make(1, &crdt.VenueInfo{Name: "main 3"})
	b2 := x.make(1, &crdt.VenueInfo{Name: "branch 2"})
	b3 := x.make(1, &crdt.VenueInfo{Name: "branch 3"})
	r := f.replica(t)
	// b3 waits for seq 2; m2 fills the gap, then b3 is evidence, not a
	// chain op; m3 must still extend the chain.
	mustDeliver(t, r, a1, b3, m2, m3, b2)
	seq, head := r.Set.Head(f.a.key())
	if seq != 3 || head != m3.ID() {
		t.Fatalf("head %d %s, want 3 %s", seq, head, m3.ID())
	}
	got := readRange(t, r.Log, crdt.Range{Author: f.a.key(), From: 1, To: 3})
	if got[2].ID() != m3.ID() {
		t.Fatalf("log holds %s at seq 3, want the chain's op", got[2].ID())
	}
}

// Found by TestPropertyEquivocation: a second op at the author's head seq
// was refused as stale when the log did not have the head yet, although
// the head id is known.
func TestEvidenceAtHeadWithoutLog(t *testing.T) {
	f := newFixture(t)
	s := crdt.NewOpSet(crdt.Config{Federation: f.fed.key()})
	mustAdd(t, s, f.base...)
	a1 := f.a.make(1, &crdt.VenueInfo{Name: "A"})
	x := f.a.fork(1, a1.ID())
	m2 := f.a.make(1, &crdt.VenueInfo{Name: "main"})
	b2 := x.make(1, &crdt.VenueInfo{Name: "branch"})
	mustAdd(t, s, a1, m2)
	out, err := s.Add(b2)
	if err != nil || out != crdt.Evidence {
		t.Fatalf("second op at the head: %v %v, want evidence", out, err)
	}
	if _, err := s.Add(b2); !errors.Is(err, crdt.ErrDuplicate) {
		t.Fatalf("evidence again: %v, want ErrDuplicate", err)
	}
	// Below the head, without a log, it cannot be compared.
	m3 := f.a.make(1, &crdt.VenueInfo{Name: "main 3"})
	mustAdd(t, s, m3)
	y := f.a.fork(1, a1.ID())
	y2 := y.make(5, &crdt.VenueInfo{Name: "third"})
	if _, err := s.Add(y2); !errors.Is(err, crdt.ErrStale) {
		t.Fatalf("op below the head without a log: %v, want ErrStale", err)
	}
}

// Three ops at one seq: every order must give the same conflict, naming
// all three.
func TestThreeWayEquivocation(t *testing.T) {
	f := newFixture(t)
	a1 := f.a.make(1, &crdt.VenueInfo{Name: "A"})
	x, y := f.a.fork(1, a1.ID()), f.a.fork(1, a1.ID())
	ops := []crdt.Op{
		f.a.make(1, &crdt.TopUp{Card: "04AABBCC", Amount: 100, Method: crdt.MethodCash}),
		x.make(2, &crdt.TopUp{Card: "04AABBCC", Amount: 200, Method: crdt.MethodCash}),
		y.make(3, &crdt.TopUp{Card: "04AABBCC", Amount: 300, Method: crdt.MethodCash}),
	}
	want := sortIDs([]crdt.OpID{ops[0].ID(), ops[1].ID(), ops[2].ID()})
	var ref *crdt.Replica
	permutations(ops, func(order []crdt.Op) {
		r := f.replica(t)
		mustDeliver(t, r, a1)
		for _, op := range order {
			if err := r.Deliver(op); err != nil {
				t.Fatal(err)
			}
		}
		cs := r.Set.State.SortedConflicts()
		if len(cs) != 1 || cs[0].Seq != 2 || !slices.Equal(cs[0].Ops, want) {
			t.Fatalf("conflicts %+v, want one naming the 3 ops at seq 2", cs)
		}
		// Each branch is a signed fact of the venue: all three count.
		if c := r.Set.State.Card("04AABBCC"); c == nil || c.Balance != 600 {
			t.Fatalf("forked ops not all counted: %+v", c)
		}
		if ref == nil {
			ref = r
		}
		sameState(t, "three-way", ref.Set, r.Set)
	})
}

// Found by TestPropertyRefoldAndRestore: when a later-sorting op with the
// same external reference had been counted first, taking its credit back
// was booked as a debit, so Credits and Debits depended on arrival order.
func TestDuplicateRefCreditsAndDebits(t *testing.T) {
	f := newFixture(t)
	card := crdt.CardID("04A1B2C3")
	ops := []crdt.Op{
		f.a.make(1, &crdt.TopUp{Card: card, Amount: 1000, Method: crdt.MethodOnline, ExternalRef: "cs_1"}),
		f.b.make(2, &crdt.TopUp{Card: card, Amount: 1000, Method: crdt.MethodOnline, ExternalRef: "cs_1"}),
		f.a.make(3, &crdt.Refund{Card: card, Amount: 400, ExternalRef: "re_1"}),
		f.b.make(4, &crdt.Refund{Card: card, Amount: 400, ExternalRef: "re_1"}),
	}
	for _, order := range [][]int{{0, 1, 2, 3}, {1, 0, 3, 2}} {
		r := f.replica(t)
		for _, i := range order {
			mustDeliver(t, r, ops[i])
		}
		st := r.Set.State
		c := st.Card(card)
		if c.Balance != 600 || c.Credits != 1000 || c.Debits != 400 || st.Credits != 1000 || st.Debits != 400 {
			t.Fatalf("order %v: balance %d credits %d/%d debits %d/%d, want 600, 1000, 400",
				order, c.Balance, c.Credits, st.Credits, c.Debits, st.Debits)
		}
		if n := len(st.Conflicts); n != 2 {
			t.Fatalf("order %v: %d conflicts, want 2 duplicate refs", order, n)
		}
	}
}

// Found by review, checked here: the federation's own fork was forgotten by
// Refold, which then counted its ops past the fork again.
func TestFederationEquivocation(t *testing.T) {
	f := newFixture(t)
	head := f.base[len(f.base)-1].ID()
	other := f.fed.fork(3, head)
	s1 := crdt.DefaultSettings()
	s1.OfflinePaymentMax = 1
	s2 := crdt.DefaultSettings()
	s2.OfflinePaymentMax = 2
	x := f.fed.make(1, &crdt.SettingsChange{Settings: s1})
	y := other.make(1, &crdt.SettingsChange{Settings: s2})
	var ref *crdt.Replica
	for _, order := range [][]crdt.Op{{x, y}, {y, x}} {
		r := f.replica(t)
		mustDeliver(t, r, order...)
		if got := r.Set.State.Settings; got != testSettings() {
			t.Fatalf("settings %+v, want the genesis settings (both changes are past the fork)", got)
		}
		if a := r.Set.Authors[f.fed.key()]; a.Fork != 4 || a.Counted != 3 {
			t.Fatalf("federation state %+v, want fork 4 counted 3", a)
		}
		if ref == nil {
			ref = r
		}
		sameState(t, "federation fork", ref.Set, r.Set)
		checkRefold(t, "federation fork", r)
	}
}

// Found by review, checked here: a second revocation changed the venue
// view but not the author state that decides what counts.
func TestSecondRevocationIgnored(t *testing.T) {
	f := newFixture(t)
	r := f.replica(t)
	var ops []crdt.Op
	for range 4 {
		ops = append(ops, f.a.make(1, &crdt.TopUp{Card: "04A1B2C3", Amount: 100, Method: crdt.MethodCash}))
	}
	mustDeliver(t, r, ops...)
	mustDeliver(t, r,
		f.fed.make(1, &crdt.Revoke{Venue: f.a.key(), AfterSeq: 3, Reason: "first"}),
		f.fed.make(1, &crdt.Revoke{Venue: f.a.key(), AfterSeq: 1, Reason: "second"}))
	a, v := r.Set.Authors[f.a.key()], r.Set.State.Venues[f.a.key()]
	if !a.Revoked || !v.Revoked || a.RevokedAfter != 3 || v.RevokedAfter != 3 || v.RevokeReason != "first" {
		t.Fatalf("author %+v venue %+v: want both revoked after 3", a, v)
	}
	if c := r.Set.State.Card("04A1B2C3"); c.Balance != 300 {
		t.Fatalf("balance %d, want the 3 top-ups before the cut", c.Balance)
	}
	checkRefold(t, "two revocations", r)
}

// Found by TestPropertyReplicasConverge: a replica that held a revoked
// venue's ops past the cut-off listed it with seq 0 in its version vector,
// one that refused them did not list it at all.
func TestVersionVectorOmitsZero(t *testing.T) {
	f := newFixture(t)
	a1 := f.a.make(1, &crdt.VenueInfo{Name: "A"})
	rev := f.fed.make(1, &crdt.Revoke{Venue: f.a.key(), AfterSeq: 0})
	r1, r2 := f.replica(t), f.replica(t)
	mustDeliver(t, r1, a1, rev)
	mustDeliver(t, r2, rev)
	if err := r2.Deliver(a1); !errors.Is(err, crdt.ErrRevoked) {
		t.Fatalf("op past the cut-off: %v, want ErrRevoked", err)
	}
	if _, ok := r1.Set.VersionVector()[f.a.key()]; ok {
		t.Fatalf("version vector lists a revoked venue with nothing counted: %v", r1.Set.VersionVector())
	}
	sameState(t, "revoked at 0", r1.Set, r2.Set)
}

// Found by TestPropertyReplicasConverge: ops of a venue revoked while they
// waited in the pending buffer stayed there for ever.
func TestPendingDropsRevoked(t *testing.T) {
	f := newFixture(t)
	a1 := f.a.make(1, &crdt.VenueInfo{Name: "A"})
	a2 := f.a.make(1, &crdt.VenueInfo{Name: "A2"})
	rev := f.fed.make(1, &crdt.Revoke{Venue: f.a.key(), AfterSeq: 0})
	r := f.replica(t)
	mustDeliver(t, r, a2, rev)
	if n := r.Pending.Len(); n != 0 {
		t.Fatalf("%d ops pending, want the revoked venue's op dropped", n)
	}
	if err := r.Deliver(a1); !errors.Is(err, crdt.ErrRevoked) {
		t.Fatalf("got %v, want ErrRevoked", err)
	}
}

// Found by TestBadOpsRefused: an op with no valid signature, at its
// author's next seq and with a zero prev, was refused for its chain
// position before its signature was checked, then recorded as evidence of
// equivocation: anyone could stop any venue's ops from counting.
func TestForgedOpIsNotEvidence(t *testing.T) {
	f := newFixture(t)
	r := f.replica(t)
	mustDeliver(t, r, f.a.make(1, &crdt.TopUp{Card: "04A1B2C3", Amount: 500, Method: crdt.MethodCash}))
	before := fingerprint(r.Set)
	for _, prev := range []crdt.OpID{{}, {1, 2, 3}} {
		forged := crdt.Op{Author: f.a.key(), Seq: 2, Prev: prev, HLC: 1, Kind: crdt.KindCardBlock,
			Body: crdt.EncodeBody(&crdt.CardBlock{Card: "04A1B2C3"})}
		for _, add := range []func(crdt.Op) (crdt.Outcome, error){r.Set.Add, r.Set.AddEvidence} {
			if out, err := add(forged); err == nil || out != 0 {
				t.Fatalf("forged op with prev %x: %v %v, want refused", prev[:2], out, err)
			}
		}
		if err := r.Deliver(forged); err == nil {
			t.Fatal("Deliver accepted a forged op")
		}
		if after := fingerprint(r.Set); after != before {
			t.Fatalf("forged op changed the set:\n%s", diffLines(before.dump, after.dump))
		}
	}
}

// Found by review: Check, which pubsub validators use, must say nil for an
// op Add would keep (also as evidence) and ErrDuplicate for one held, at
// any seq; it said ErrStale for both below the head.
func TestCheckMatchesAdd(t *testing.T) {
	f := newFixture(t)
	r := f.replica(t)
	a1 := f.a.make(1, &crdt.VenueInfo{Name: "A"})
	x := f.a.fork(1, a1.ID())
	a2 := f.a.make(1, &crdt.VenueInfo{Name: "A2"})
	a3 := f.a.make(1, &crdt.VenueInfo{Name: "A3"})
	b2 := x.make(1, &crdt.VenueInfo{Name: "branch 2"})
	b3 := x.make(1, &crdt.VenueInfo{Name: "branch 3"})
	mustDeliver(t, r, a1, a2)
	for _, op := range []crdt.Op{a1, f.base[0]} {
		if err := r.Set.Check(&op); !errors.Is(err, crdt.ErrDuplicate) {
			t.Fatalf("Check of a held op: %v, want ErrDuplicate", err)
		}
	}
	if err := r.Set.Check(&a3); err != nil {
		t.Fatalf("Check of the next op: %v", err)
	}
	for _, op := range []crdt.Op{b2, b3} { // same seq as a2; on top of b2
		before := fingerprint(r.Set)
		if err := r.Set.Check(&op); err != nil {
			t.Fatalf("Check of evidence at seq %d: %v, want nil", op.Seq, err)
		}
		if fingerprint(r.Set) != before {
			t.Fatal("Check changed the set")
		}
	}
	mustDeliver(t, r, a3) // a2 is below the head now
	if err := r.Set.Check(&b2); err != nil {
		t.Fatalf("Check of evidence below the head: %v, want nil", err)
	}
	if out, err := r.Set.Add(b2); err != nil || out != crdt.Evidence {
		t.Fatalf("Add: %v %v, want evidence", out, err)
	}
	if err := r.Set.Check(&b2); !errors.Is(err, crdt.ErrDuplicate) {
		t.Fatalf("Check of held evidence: %v, want ErrDuplicate", err)
	}
}

// Found by review: when the federation forks below an admission, the
// admitted venue stops being a member; Refold failed on its chain ("held
// but not admitted") and left the set half rebuilt.
func TestFederationForkBeforeAdmission(t *testing.T) {
	f := newFixture(t)
	// The federation signs two ops at seq 3 (the admission of B, and a
	// settings change); B then makes ops.
	other := f.fed.fork(2, f.base[1].ID())
	branch := other.make(1, &crdt.SettingsChange{Settings: crdt.DefaultSettings()})
	b1 := f.b.make(1, &crdt.TopUp{Card: "04A1B2C3", Amount: 100, Method: crdt.MethodCash})
	a1 := f.a.make(1, &crdt.TopUp{Card: "04A1B2C3", Amount: 200, Method: crdt.MethodCash})
	orders := [][]crdt.Op{
		{f.base[0], f.base[1], f.base[2], b1, a1, branch},
		{f.base[0], f.base[1], branch, f.base[2], a1, b1},
		{branch, b1, a1, f.base[2], f.base[1], f.base[0]},
	}
	var ref *crdt.Replica
	for i, order := range orders {
		r := crdt.NewReplica(f.fed.key())
		mustDeliver(t, r, order...)
		if r.Set.IsMember(f.b.key()) || !r.Set.IsMember(f.a.key()) {
			t.Fatalf("order %d: B member %v, A member %v", i, r.Set.IsMember(f.b.key()), r.Set.IsMember(f.a.key()))
		}
		if c := r.Set.State.Card("04A1B2C3"); c == nil || c.Balance != 200 {
			t.Fatalf("order %d: card %+v, want only A's top-up", i, c)
		}
		if ref == nil {
			ref = r
		}
		sameState(t, "federation fork before an admission", ref.Set, r.Set)
	}
}

// Refold from a log that lacks ops the set holds fails and leaves the set
// as it was.
func TestRefoldShortLog(t *testing.T) {
	f := newFixture(t)
	r := f.replica(t)
	mustDeliver(t, r, venueChain(f.a, 5)...)
	short := crdt.NewMemLog()
	for _, op := range f.base {
		if err := short.Append(op); err != nil {
			t.Fatal(err)
		}
	}
	before := fingerprint(r.Set)
	if err := r.Set.Refold(short); err == nil {
		t.Fatal("refold from a short log succeeded")
	}
	if fingerprint(r.Set) != before {
		t.Fatal("failed refold changed the set")
	}
}
