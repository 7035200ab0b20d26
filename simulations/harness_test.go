package simulations

import (
	"errors"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

func newTestHarness(t *testing.T, lag bool) *Harness {
	t.Helper()
	h, err := NewHarness(HarnessConfig{Venues: 10, Seed: 1, Settings: crdt.DefaultSettings(), Start: simStart, DetectionLag: lag})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func isolated(h *Harness) []int {
	var out []int
	for _, i := range h.Active() {
		if h.Venue(i).Isolated {
			out = append(out, i)
		}
	}
	return out
}

// TestHarnessIsolation: with 10 venues and MinPeersPercent 50, a venue
// must hear 5 of the 9 others: a group of 6 stays in sync, a group of 4 or
// 5 is isolated.
func TestHarnessIsolation(t *testing.T) {
	h := newTestHarness(t, false)
	if got := isolated(h); len(got) != 0 {
		t.Fatalf("isolated at start: %v", got)
	}
	if err := h.Partition([][]int{{0, 1, 2, 3, 4, 5}, {6, 7, 8, 9}}); err != nil {
		t.Fatal(err)
	}
	if got := isolated(h); len(got) != 4 || got[0] != 6 {
		t.Fatalf("isolated after a 6/4 split: %v", got)
	}
	if v := h.Venue(7); v.Ledger.Since != h.Now() || v.Periods != 1 {
		t.Fatalf("ledger of an isolated venue: since %d, periods %d", v.Ledger.Since, v.Periods)
	}
	if err := h.Partition([][]int{{0, 1, 2, 3, 4}, {5, 6, 7, 8, 9}}); err != nil {
		t.Fatal(err)
	}
	if got := isolated(h); len(got) != 10 {
		t.Fatalf("a 5/5 split must isolate everyone: %v", got)
	}
	if !h.WouldSync(6) || h.WouldSync(5) {
		t.Fatal("WouldSync disagrees with the rule")
	}
	if err := h.Heal(); err != nil {
		t.Fatal(err)
	}
	if got := isolated(h); len(got) != 0 || h.Venue(7).Ledger.Since != 0 {
		t.Fatalf("after heal: isolated %v, since %d", got, h.Venue(7).Ledger.Since)
	}
}

// TestHarnessDetectionLag: with heartbeats, a venue cut off keeps counting
// its peers as heard for IsolationAfter.
func TestHarnessDetectionLag(t *testing.T) {
	h := newTestHarness(t, true)
	if err := h.Partition([][]int{{0, 1, 2, 3, 4, 5}, {6, 7, 8, 9}}); err != nil {
		t.Fatal(err)
	}
	split := h.Now()
	window := int64(h.Settings().IsolationAfter)
	h.AdvanceTo(split + window)
	if got := isolated(h); len(got) != 0 {
		t.Fatalf("isolated within the window: %v", got)
	}
	h.AdvanceTo(split + window + 1)
	if got := isolated(h); len(got) != 4 {
		t.Fatalf("after the window: %v", got)
	}
}

// TestHarnessDelivery: ops reach the venue's group at once, the rest at
// heal; a double spend across the partition is found on every replica and
// the card is blocked.
func TestHarnessDelivery(t *testing.T) {
	h := newTestHarness(t, false)
	card := crdt.CardID("04000000000001")
	if _, err := h.TopUp(0, card, 10000); err != nil {
		t.Fatal(err)
	}
	if err := h.Partition([][]int{{0, 1, 2, 3, 4, 5}, {6, 7, 8, 9}}); err != nil {
		t.Fatal(err)
	}
	a, err := h.Pay(1, card, 8000, nil, "a")
	if err != nil || a.Offline {
		t.Fatalf("in-sync payment: %+v %v", a, err)
	}
	if _, err := h.Pay(6, card, 3000, nil, "b"); !errors.Is(err, crdt.ErrOfflineCap) {
		t.Fatalf("beyond the floor limit offline: %v", err)
	}
	b, err := h.Pay(6, card, 2500, nil, "b")
	if err != nil || !b.Offline || b.Decision.Counter != a.Decision.Counter {
		t.Fatalf("offline payment: %+v %v", b, err)
	}
	if c := h.Venue(5).Replica.Set.State.Card(card); c.Balance != 2000 {
		t.Fatalf("group 1 sees %d", c.Balance)
	}
	if c := h.Venue(9).Replica.Set.State.Card(card); c.Balance != 7500 {
		t.Fatalf("group 2 sees %d", c.Balance)
	}
	if err := h.Heal(); err != nil {
		t.Fatal(err)
	}
	ds := h.Digests()
	for i := range ds {
		if ds[i] != ds[0] {
			t.Fatalf("replica %d differs", i)
		}
		st := h.Venue(i).Replica.Set.State
		if c := st.Card(card); c.Balance != -500 || !c.Blocked || len(st.Conflicts) != 1 {
			t.Fatalf("replica %d: card %+v, %d conflicts", i, c, len(st.Conflicts))
		}
	}
	if h.Blocks != 1 {
		t.Fatalf("%d block ops", h.Blocks)
	}
}

// TestHarnessDoubleSigningTills: venue 3's data dir is copied to a second
// till (crdt.NewAuthor twice from one seq and head), each till takes a
// payment and a top-up on its own side of a partition; after the heal
// every replica has one digest, lists the equivocation with both ops at
// the fork, and counts the money of both branches.
func TestHarnessDoubleSigningTills(t *testing.T) {
	h := newTestHarness(t, false)
	card := crdt.CardID("04000000000002")
	if _, err := h.TopUp(0, card, 10000); err != nil {
		t.Fatal(err)
	}
	twin, err := h.CopyVenue(3)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Partition([][]int{{0, 1, 2, 3, 4, 5}, {6, 7, 8, 9, twin}}); err != nil {
		t.Fatal(err)
	}
	if h.Venue(twin).Isolated != true || h.Venue(3).Isolated {
		t.Fatalf("isolation: copy %v, venue 3 %v", h.Venue(twin).Isolated, h.Venue(3).Isolated)
	}
	a, err := h.Pay(3, card, 3000, nil, "a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.Pay(twin, card, 2000, nil, "b")
	if err != nil {
		t.Fatal(err)
	}
	if a.Op.Seq != b.Op.Seq || a.Op.Author != b.Op.Author || a.ID == b.ID {
		t.Fatalf("the tills did not sign two ops at one seq: %d/%d", a.Op.Seq, b.Op.Seq)
	}
	if _, err := h.TopUp(twin, card, 500); err != nil {
		t.Fatal(err)
	}
	h.Retire(twin)
	if err := h.Heal(); err != nil {
		t.Fatal(err)
	}
	key := (&crdt.Conflict{Kind: crdt.ConflictEquivocation, Author: h.Venue(3).Key()}).Key()
	ds := h.Digests()
	for i := range ds {
		if ds[i] != ds[0] {
			t.Fatalf("replica %d digest differs", i)
		}
		st := h.Venue(i).Replica.Set.State
		c := st.Conflicts[key]
		if c == nil || !sameIDs(c.Ops, []crdt.OpID{a.ID, b.ID}) {
			t.Fatalf("replica %d: equivocation %+v", i, c)
		}
		if bal := st.Card(card).Balance; bal != 10000-3000-2000+500 {
			t.Fatalf("replica %d: balance %d, both branches must count", i, bal)
		}
	}
	// Venue 3 keeps signing after the heal: its ops count on every replica.
	if _, err := h.Pay(3, card, 100, nil, "c"); err != nil {
		t.Fatal(err)
	}
	for _, i := range h.Active() {
		if bal := h.Venue(i).Replica.Set.State.Card(card).Balance; bal != 5400 {
			t.Fatalf("replica %d: balance %d after the next payment", i, bal)
		}
	}
}

// TestHarnessCapRefused: the cap a refused offline payment hit is named
// by asking crdt.State.DecidePayment, not by a copy of its order.
func TestHarnessCapRefused(t *testing.T) {
	h := newTestHarness(t, false)
	card := crdt.CardID("04000000000003")
	if _, err := h.TopUp(0, card, 15000); err != nil {
		t.Fatal(err)
	}
	if err := h.Partition([][]int{{0, 1, 2, 3, 4, 5}, {6, 7, 8, 9}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		pay    uint64 // paid first at venue 6, 0 for none
		amount uint64
		want   string
	}{
		{0, 2600, "floor"},
		{0, 2000, ""},
		{2500, 2500, ""},
		{2500, 100, "card_amount"},
	} {
		if tc.pay > 0 {
			if _, err := h.Pay(6, card, tc.pay, nil, "x"); err != nil {
				t.Fatal(err)
			}
		}
		if got := h.CapRefused(6, card, tc.amount, nil); got != tc.want {
			t.Errorf("after %d, %d: got %q, want %q", tc.pay, tc.amount, got, tc.want)
		}
	}
}
