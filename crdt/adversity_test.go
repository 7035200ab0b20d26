package crdt_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

// The attacks and accidents of issue 9, at the level of the replicated
// data: each test is named after what it defends against.

const advCard = crdt.CardID("04AABBCC")

// sameEverywhere delivers ops in every order to fresh replicas and checks
// they all reach the same views and digest; it returns one of them.
func sameEverywhere(t *testing.T, f *fixture, prefix, ops []crdt.Op) *crdt.Replica {
	t.Helper()
	var ref *crdt.Replica
	permutations(ops, func(order []crdt.Op) {
		r := f.replica(t)
		mustDeliver(t, r, prefix...)
		for _, op := range order {
			if err := r.Deliver(op); err != nil && !errors.Is(err, crdt.ErrRevoked) {
				t.Fatalf("deliver %s#%d: %v", op.Author.Short(), op.Seq, err)
			}
		}
		if ref == nil {
			ref = r
			return
		}
		sameState(t, "order", ref.Set, r.Set)
	})
	return ref
}

// A venue's data dir copied to two tills (or a restored backup): both
// sign on from the same head. Every replica converges, the equivocation is
// listed with both ops, and every top-up and payment of both branches
// counts: nothing that really happened at a till is erased.
func TestDoubleSignedVenueKeepsMoneyOnBothBranches(t *testing.T) {
	f := newFixture(t)
	a1 := f.a.make(1, &crdt.TopUp{Card: advCard, Amount: 5000, Method: crdt.MethodCash})
	till2 := f.a.fork(1, a1.ID())
	ops := []crdt.Op{
		f.a.make(1, &crdt.Payment{Card: advCard, Amount: 300, Counter: 1}),
		f.a.make(1, &crdt.TopUp{Card: advCard, Amount: 1000, Method: crdt.MethodCash}),
		till2.make(2, &crdt.Payment{Card: advCard, Amount: 700, Counter: 2}),
		till2.make(1, &crdt.TopUp{Card: advCard, Amount: 2000, Method: crdt.MethodCash}),
		till2.make(1, &crdt.Payment{Card: advCard, Amount: 100, Counter: 3}),
	}
	r := sameEverywhere(t, f, []crdt.Op{a1}, ops)
	c := r.Set.State.Card(advCard)
	if want := int64(5000 - 300 + 1000 - 700 + 2000 - 100); c == nil || c.Balance != want {
		t.Fatalf("balance %+v, want %d: a branch's money was erased", c, want)
	}
	var eq *crdt.Conflict
	for _, cf := range r.Set.State.SortedConflicts() {
		if cf.Kind == crdt.ConflictEquivocation {
			eq = cf
		}
	}
	if eq == nil || eq.Seq != 2 || len(eq.Ops) != 2 || !slices.Contains(eq.Ops, ops[0].ID()) || !slices.Contains(eq.Ops, ops[2].ID()) {
		t.Fatalf("equivocation %+v, want both ops at seq 2", eq)
	}
}

// Two replicas that followed different branches as their chain report the
// same digest once they hold the same ops.
func TestForkDigestIndependentOfWhichBranchIsTheChain(t *testing.T) {
	f := newFixture(t)
	a1 := f.a.make(1, &crdt.VenueInfo{Name: "A"})
	x := f.a.fork(1, a1.ID())
	main := []crdt.Op{f.a.make(1, &crdt.TopUp{Card: advCard, Amount: 100, Method: crdt.MethodCash}),
		f.a.make(1, &crdt.TopUp{Card: advCard, Amount: 200, Method: crdt.MethodCash})}
	branch := []crdt.Op{x.make(1, &crdt.TopUp{Card: advCard, Amount: 400, Method: crdt.MethodCash}),
		x.make(1, &crdt.TopUp{Card: advCard, Amount: 800, Method: crdt.MethodCash}),
		x.make(1, &crdt.TopUp{Card: advCard, Amount: 1600, Method: crdt.MethodCash})}
	r1, r2 := f.replica(t), f.replica(t)
	mustDeliver(t, r1, a1)
	mustDeliver(t, r1, main...)
	mustDeliver(t, r1, branch...)
	mustDeliver(t, r2, a1)
	mustDeliver(t, r2, branch...)
	mustDeliver(t, r2, main...)
	if h1, _ := r1.Set.Head(f.a.key()); h1 != 3 {
		t.Fatalf("r1 chain at %d", h1)
	}
	if h2, _ := r2.Set.Head(f.a.key()); h2 != 4 {
		t.Fatalf("r2 chain at %d", h2)
	}
	sameState(t, "branches", r1.Set, r2.Set)
	if c := r1.Set.State.Card(advCard); c.Balance != 3100 {
		t.Fatalf("balance %d, want 3100", c.Balance)
	}
}

// A revoked key signs on: a later op at the next seq is refused, a second
// op at a pinned seq is evidence at most, and neither changes a balance.
func TestRevokedKeyCannotExtendHistory(t *testing.T) {
	f := newFixture(t)
	a1 := f.a.make(1, &crdt.TopUp{Card: advCard, Amount: 1000, Method: crdt.MethodCash})
	a2 := f.a.make(1, &crdt.TopUp{Card: advCard, Amount: 1000, Method: crdt.MethodCash})
	forger := f.a.fork(1, a1.ID())
	rev := f.fed.make(10, &crdt.Revoke{Venue: f.a.key(), AfterSeq: 2, Head: a2.ID(), Reason: "stolen"})
	a3 := f.a.make(20, &crdt.TopUp{Card: advCard, Amount: 90000, Method: crdt.MethodCash})
	x2 := forger.make(30, &crdt.TopUp{Card: advCard, Amount: 90000, Method: crdt.MethodCash})
	r := sameEverywhere(t, f, nil, []crdt.Op{a1, a2, rev, a3, x2})
	if c := r.Set.State.Card(advCard); c.Balance != 2000 {
		t.Fatalf("balance %d, want 2000: a revoked key minted money", c.Balance)
	}
	if _, err := r.Set.Add(a3); !errors.Is(err, crdt.ErrRevoked) {
		t.Fatalf("op after the cut-off: %v, want ErrRevoked", err)
	}
}

// A venue forked, then was revoked with the head the maintainers saw:
// whichever branch a replica holds as its chain, only the pinned history
// counts, and every replica agrees.
func TestRevocationPinsOneBranchOfAForkedVenue(t *testing.T) {
	f := newFixture(t)
	a1 := f.a.make(1, &crdt.TopUp{Card: advCard, Amount: 1000, Method: crdt.MethodCash})
	x := f.a.fork(1, a1.ID())
	m2 := f.a.make(1, &crdt.TopUp{Card: advCard, Amount: 10, Method: crdt.MethodCash})
	m3 := f.a.make(1, &crdt.TopUp{Card: advCard, Amount: 20, Method: crdt.MethodCash})
	x2 := x.make(1, &crdt.TopUp{Card: advCard, Amount: 400, Method: crdt.MethodCash})
	x3 := x.make(1, &crdt.TopUp{Card: advCard, Amount: 800, Method: crdt.MethodCash})
	rev := f.fed.make(10, &crdt.Revoke{Venue: f.a.key(), AfterSeq: 3, Head: x3.ID(), Reason: "forked"})
	r := sameEverywhere(t, f, []crdt.Op{a1}, []crdt.Op{m2, m3, x2, x3, rev})
	if c := r.Set.State.Card(advCard); c.Balance != 2200 {
		t.Fatalf("balance %d, want 2200 (a1 + x2 + x3, the pinned branch)", c.Balance)
	}
}

// Pinned by seq alone (no head), a forked venue's revocation counts only
// what every branch shares, the same on every replica.
func TestRevocationWithoutHeadCountsOnlyTheSharedHistory(t *testing.T) {
	f := newFixture(t)
	a1 := f.a.make(1, &crdt.TopUp{Card: advCard, Amount: 1000, Method: crdt.MethodCash})
	x := f.a.fork(1, a1.ID())
	m2 := f.a.make(1, &crdt.TopUp{Card: advCard, Amount: 10, Method: crdt.MethodCash})
	x2 := x.make(1, &crdt.TopUp{Card: advCard, Amount: 400, Method: crdt.MethodCash})
	rev := f.fed.make(10, &crdt.Revoke{Venue: f.a.key(), AfterSeq: 2, Reason: "forked"})
	r := sameEverywhere(t, f, []crdt.Op{a1}, []crdt.Op{m2, x2, rev})
	if c := r.Set.State.Card(advCard); c.Balance != 1000 {
		t.Fatalf("balance %d, want 1000 (the shared history only)", c.Balance)
	}
}

// stampBy signs a stamp with an actor's key.
func stampBy(t *testing.T, a *actor, counter uint64, balance int64) *crdt.CardStamp {
	t.Helper()
	st := &crdt.CardStamp{Card: advCard, Counter: counter, Balance: balance, Time: 1}
	if err := a.signer.SignStamp(st); err != nil {
		t.Fatal(err)
	}
	return st
}

// funded returns a replica where advCard holds amount.
func funded(t *testing.T, f *fixture, amount uint64) *crdt.Replica {
	t.Helper()
	r := f.replica(t)
	mustDeliver(t, r, f.a.make(1, &crdt.TopUp{Card: advCard, Amount: amount, Method: crdt.MethodCash}))
	return r
}

// A stamp signed by a revoked venue (which could sign anything after its
// revocation) is not relied on: no balance, no counter from it.
func TestRevokedVenueStampNotReliedOn(t *testing.T) {
	f := newFixture(t)
	r := funded(t, f, 1000)
	mustDeliver(t, r, f.fed.make(10, &crdt.Revoke{Venue: f.b.key(), AfterSeq: 0, Reason: "stolen"}))
	st := stampBy(t, f.b, 50, 100000)
	for _, isolated := range []bool{false, true} {
		d, err := r.Set.State.DecidePayment(f.a.key(), crdt.PaymentInput{Card: advCard, Amount: 500, Stamp: st, Isolated: isolated}, &crdt.OfflineLedger{})
		if err != nil || d.StampIgnored == "" || d.Counter != 1 || d.StampCounter != 0 || d.Balance != 500 {
			t.Fatalf("isolated=%v: %+v %v, want the stamp ignored", isolated, d, err)
		}
	}
	// A card the ledger does not know, shown with a revoked venue's stamp.
	st2 := &crdt.CardStamp{Card: "04DDEEFF", Counter: 3, Balance: 5000, Time: 1}
	if err := f.b.signer.SignStamp(st2); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Set.State.DecidePayment(f.a.key(), crdt.PaymentInput{Card: "04DDEEFF", Amount: 100, Stamp: st2, Isolated: true}, &crdt.OfflineLedger{}); !errors.Is(err, crdt.ErrUnknownCard) {
		t.Fatalf("unknown card with a revoked venue's stamp: %v", err)
	}
}

// A payment op records which venue signed the stamp it relied on.
func TestPaymentRecordsStampVenue(t *testing.T) {
	f := newFixture(t)
	r := funded(t, f, 1000)
	st := stampBy(t, f.b, 4, 800)
	d, err := r.Set.State.DecidePayment(f.a.key(), crdt.PaymentInput{Card: advCard, Amount: 100, Stamp: st, Isolated: true}, &crdt.OfflineLedger{})
	if err != nil || d.StampVenue != f.b.key() || d.StampCounter != 4 || d.Counter != 5 {
		t.Fatalf("decision %+v %v", d, err)
	}
	op := f.a.make(1, &crdt.Payment{Card: advCard, Amount: 100, Counter: d.Counter, StampCounter: d.StampCounter, StampVenue: d.StampVenue})
	got, err := crdt.DecodeOp(op.Encode())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := got.Decode()
	if p := b.(*crdt.Payment); p.StampVenue != f.b.key() {
		t.Fatalf("decoded stamp venue %s", p.StampVenue.Short())
	}
	noVenue := crdt.EncodeBody(&crdt.Payment{Card: advCard, Amount: 1, Counter: 5, StampCounter: 4})
	if _, err := crdt.DecodeBody(crdt.KindPayment, noVenue); !errors.Is(err, crdt.ErrInvalidBody) {
		t.Fatalf("stamp without its venue: %v", err)
	}
}

// A stamp never creates money online: in sync the ledger decides (a card
// it does not know is refused, a higher stamp balance is not believed);
// isolated, the stamp is the card's memory, within the caps.
func TestStampNeverCreatesMoneyOnline(t *testing.T) {
	f := newFixture(t)
	r := funded(t, f, 1000)
	rich := stampBy(t, f.b, 7, 10000)
	if _, err := r.Set.State.DecidePayment(f.a.key(), crdt.PaymentInput{Card: advCard, Amount: 2000, Stamp: rich}, nil); !errors.Is(err, crdt.ErrInsufficientFunds) {
		t.Fatalf("online, a stamp with more money than the ledger: %v, want insufficient funds", err)
	}
	d, err := r.Set.State.DecidePayment(f.a.key(), crdt.PaymentInput{Card: advCard, Amount: 500, Stamp: rich}, nil)
	if err != nil || d.Balance != 500 || d.Counter != 8 {
		t.Fatalf("online with a newer stamp: %+v %v, want the ledger's balance and the stamp's counter", d, err)
	}
	unknown := &crdt.CardStamp{Card: "04DDEEFF", Counter: 3, Balance: 5000, Time: 1}
	if err := f.b.signer.SignStamp(unknown); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Set.State.DecidePayment(f.a.key(), crdt.PaymentInput{Card: "04DDEEFF", Amount: 100, Stamp: unknown}, nil); !errors.Is(err, crdt.ErrUnknownCard) {
		t.Fatalf("online, a card only its stamp knows: %v, want unknown card", err)
	}
	ledger := &crdt.OfflineLedger{}
	ledger.Reset(1)
	d, err = r.Set.State.DecidePayment(f.a.key(), crdt.PaymentInput{Card: "04DDEEFF", Amount: 100, Stamp: unknown, Isolated: true, Now: 2}, ledger)
	if err != nil || d.Balance != 4900 {
		t.Fatalf("isolated, a card only its stamp knows: %+v %v", d, err)
	}
	if _, err := r.Set.State.DecidePayment(f.a.key(), crdt.PaymentInput{Card: "04DDEEFF", Amount: 4000, Stamp: unknown, Isolated: true, Now: 2}, ledger); !errors.Is(err, crdt.ErrOfflineCap) {
		t.Fatalf("isolated, beyond the caps on a stamp's word: %v", err)
	}
}

// An op stamped 0, or before its author's admission, is refused.
func TestOpStampedZeroOrBeforeAdmissionRefused(t *testing.T) {
	f := newFixture(t)
	r := f.replica(t)
	zero := crdt.Op{Seq: 1, HLC: 0, Kind: crdt.KindVenueInfo, Body: crdt.EncodeBody(&crdt.VenueInfo{Name: "A"})}
	f.a.signer.Sign(&zero)
	if _, err := r.Set.Add(zero); !errors.Is(err, crdt.ErrBadClock) {
		t.Fatalf("HLC 0: %v", err)
	}
	early := crdt.Op{Seq: 1, HLC: crdt.MakeHLC(uint64(baseMillis-60_000), 0), Kind: crdt.KindVenueInfo, Body: crdt.EncodeBody(&crdt.VenueInfo{Name: "A"})}
	f.a.signer.Sign(&early)
	if _, err := r.Set.Add(early); !errors.Is(err, crdt.ErrBadClock) {
		t.Fatalf("before admission: %v", err)
	}
}

// An op stamped beyond the federation's skew bound is held at the door
// (Settings.TooFarAhead); one within it is not.
func TestForgedFutureClockHeldAtTheDoor(t *testing.T) {
	s := crdt.DefaultSettings()
	now := baseMillis
	near := crdt.Op{HLC: crdt.MakeHLC(uint64(now+60_000), 0)}
	far := crdt.Op{HLC: crdt.MakeHLC(uint64(now+s.Skew()+1), 0)}
	if s.TooFarAhead(&near, now) || !s.TooFarAhead(&far, now) {
		t.Fatal("skew bound")
	}
}

// A federation block beats a venue's later unblock, in any order; only
// the federation lifts it.
func TestFederationBlockBeatsVenueUnblock(t *testing.T) {
	f := newFixture(t)
	blk := f.fed.make(1, &crdt.CardBlock{Card: advCard, Reason: "fraud"})
	unb := f.a.make(100, &crdt.CardUnblock{Card: advCard, Reason: "customer says it's fine"})
	r := sameEverywhere(t, f, nil, []crdt.Op{blk, unb})
	if c := r.Set.State.Card(advCard); !c.Blocked || c.BlockReason != "fraud" {
		t.Fatalf("card %+v: a venue lifted a federation block", c)
	}
	fedUnb := f.fed.make(200, &crdt.CardUnblock{Card: advCard, Reason: "cleared"})
	r = sameEverywhere(t, f, nil, []crdt.Op{blk, unb, fedUnb})
	if c := r.Set.State.Card(advCard); c.Blocked {
		t.Fatalf("card %+v: the federation's unblock did not lift it", c)
	}
}

// Refunds follow the payment rules: refused while isolated or in the
// detection window, and within the balance.
func TestRefundRefusedWhileIsolated(t *testing.T) {
	f := newFixture(t)
	r := funded(t, f, 1000)
	if _, err := r.Set.State.DecideRefund(crdt.RefundInput{Card: advCard, Amount: 100, Isolated: true}); !errors.Is(err, crdt.ErrRefundOffline) {
		t.Fatalf("isolated refund: %v", err)
	}
	if _, err := r.Set.State.DecideRefund(crdt.RefundInput{Card: advCard, Amount: 1001}); !errors.Is(err, crdt.ErrInsufficientFunds) {
		t.Fatalf("refund beyond the balance: %v", err)
	}
	if b, err := r.Set.State.DecideRefund(crdt.RefundInput{Card: advCard, Amount: 1000}); err != nil || b != 0 {
		t.Fatalf("refund: %d %v", b, err)
	}
}

// A member signs a payment with a counter at the very top of the range:
// the card's counter view ignores it, and the card keeps paying.
func TestForgedCounterCannotBrickCard(t *testing.T) {
	f := newFixture(t)
	top := f.a.make(1, &crdt.TopUp{Card: advCard, Amount: 10000, Method: crdt.MethodCash})
	forged := f.b.make(1, &crdt.Payment{Card: advCard, Amount: 1, Counter: crdt.MaxCounter})
	honest := f.a.make(1, &crdt.Payment{Card: advCard, Amount: 1, Counter: 1})
	r := sameEverywhere(t, f, nil, []crdt.Op{top, forged, honest})
	c := r.Set.State.Card(advCard)
	if c.Counter != 1 || len(c.Outliers) != 1 {
		t.Fatalf("counter %d outliers %v, want 1 and the forged one aside", c.Counter, c.Outliers)
	}
	d, err := r.Set.State.DecidePayment(f.a.key(), crdt.PaymentInput{Card: advCard, Amount: 1}, nil)
	if err != nil || d.Counter != 2 {
		t.Fatalf("next payment: %+v %v", d, err)
	}
}

// A stamp whose counter is far beyond the card's payments is refused.
func TestStampCounterFarAheadRefused(t *testing.T) {
	f := newFixture(t)
	r := funded(t, f, 1000)
	st := stampBy(t, f.b, crdt.MaxCounterJump+5, 900)
	if _, err := r.Set.State.DecidePayment(f.a.key(), crdt.PaymentInput{Card: advCard, Amount: 1, Stamp: st}, nil); !errors.Is(err, crdt.ErrBadStamp) {
		t.Fatalf("far counter: %v", err)
	}
}

// The balance ceiling refuses a top-up beyond it.
func TestBalanceCeilingRefusesTopUp(t *testing.T) {
	f := newFixture(t)
	r := funded(t, f, crdt.DefaultBalanceMax-100)
	if _, err := r.Set.State.DecideTopUp(advCard, 101); !errors.Is(err, crdt.ErrBalanceCeiling) {
		t.Fatalf("beyond the ceiling: %v", err)
	}
	if b, err := r.Set.State.DecideTopUp(advCard, 100); err != nil || b != crdt.DefaultBalanceMax {
		t.Fatalf("up to the ceiling: %d %v", b, err)
	}
}

// An honest card whose stamp could not be written pays twice with one
// counter at two venues: the collision is reported, nothing is blocked
// while the balance covers it; an overdraft after a merge is news until a
// block or unblock answers it.
func TestCoveredCounterCollisionBlocksNothing(t *testing.T) {
	f := newFixture(t)
	top := f.a.make(1, &crdt.TopUp{Card: advCard, Amount: 1000, Method: crdt.MethodCash})
	pa := f.a.make(1, &crdt.Payment{Card: advCard, Amount: 300, Counter: 1})
	pb := f.b.make(1, &crdt.Payment{Card: advCard, Amount: 300, Counter: 1})
	r := sameEverywhere(t, f, nil, []crdt.Op{top, pa, pb})
	c := r.Set.State.Card(advCard)
	if c.NeedsAutoBlock() {
		t.Fatalf("covered collision needs a block: %+v", c)
	}
	if len(r.Set.State.SortedConflicts()) != 1 {
		t.Fatalf("conflicts %v, want the double spend reported", r.Set.State.SortedConflicts())
	}
	mustDeliver(t, r, f.b.make(1, &crdt.Payment{Card: advCard, Amount: 500, Counter: 2}))
	if c := r.Set.State.Card(advCard); !c.NeedsAutoBlock() {
		t.Fatalf("overdrawn card %d does not need a block", c.Balance)
	}
	mustDeliver(t, r, f.fed.make(100, &crdt.CardUnblock{Card: advCard, Reason: "maintainers cleared it"}))
	if c := r.Set.State.Card(advCard); c.NeedsAutoBlock() {
		t.Fatal("an unblock newer than the overdraft was overruled")
	}
	mustDeliver(t, r, f.a.make(200, &crdt.Payment{Card: advCard, Amount: 1, Counter: 3}))
	if c := r.Set.State.Card(advCard); !c.NeedsAutoBlock() {
		t.Fatal("a new debit on an overdrawn card is news again")
	}
}

// BlockAfterRefusal: only a stale stamp while isolated blocks.
func TestStaleStampWhileIsolatedBlocks(t *testing.T) {
	for _, tc := range []struct {
		err      error
		isolated bool
		want     bool
	}{
		{crdt.ErrStaleStamp, true, true},
		{crdt.ErrStaleStamp, false, false},
		{crdt.ErrInsufficientFunds, true, false},
		{crdt.ErrOfflineCap, true, false},
	} {
		if got := crdt.BlockAfterRefusal(tc.err, tc.isolated); got != tc.want {
			t.Errorf("%v isolated=%v: %v", tc.err, tc.isolated, got)
		}
	}
}

// Mixed readers: a card paid once through a reader that writes its stamp,
// then through one that reads only its UID (no stamp read, none written).
// Its stamp is behind the ledger by that payment only: an honest card, not
// a stale stamp, even at an isolated venue. A stamp behind a payment that
// read (and wrote) the stamp is stale.
func TestStampBehindOnlyUIDReaderPaymentsIsNotStale(t *testing.T) {
	f := newFixture(t)
	r := funded(t, f, 5000)
	withStamp := stampBy(t, f.a, 1, 4900)
	mustDeliver(t, r, f.a.make(1, &crdt.Payment{Card: advCard, Amount: 100, Counter: 1}),
		f.b.make(1, &crdt.Payment{Card: advCard, Amount: 100, Counter: 2}))
	ledger := &crdt.OfflineLedger{}
	ledger.Reset(1)
	d, err := r.Set.State.DecidePayment(f.a.key(), crdt.PaymentInput{Card: advCard, Amount: 100, Stamp: withStamp, Isolated: true, Now: 2}, ledger)
	if err != nil || d.Counter != 3 {
		t.Fatalf("honest card behind a UID-only payment: %+v %v", d, err)
	}
	// A venue that read the stamp (and wrote the next) paid at counter 3.
	mustDeliver(t, r, f.b.make(1, &crdt.Payment{Card: advCard, Amount: 100, Counter: 3, StampCounter: 2, StampVenue: f.a.key()}))
	if _, err := r.Set.State.DecidePayment(f.a.key(), crdt.PaymentInput{Card: advCard, Amount: 100, Stamp: withStamp, Isolated: true, Now: 2}, ledger); !errors.Is(err, crdt.ErrStaleStamp) {
		t.Fatalf("stamp behind a stamp-writing payment: %v, want stale", err)
	}
}
