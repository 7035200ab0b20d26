package crdt_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

func reserveVenues(t *testing.T, n int) []crdt.PublicKey {
	t.Helper()
	out := make([]crdt.PublicKey, n)
	for i := range out {
		out[i] = signerFromBytes(t, 'v', byte(i), byte(i>>8)).Public()
	}
	return out
}

func TestReservationTable(t *testing.T) {
	const now = baseMillis
	a, b := reserveVenues(t, 2)[0], reserveVenues(t, 2)[1]
	card := crdt.CardID("04AABBCCDD01")
	type step struct {
		name    string
		do      func(tb *crdt.ReservationTable) error
		wantErr error
	}
	grant := func(v crdt.PublicKey, at int64) func(*crdt.ReservationTable) error {
		return func(tb *crdt.ReservationTable) error { _, err := tb.Grant(card, v, 5000, at); return err }
	}
	release := func(v crdt.PublicKey, want bool) func(*crdt.ReservationTable) error {
		return func(tb *crdt.ReservationTable) error {
			if tb.Release(card, v) != want {
				return fmt.Errorf("release by %s: want %v", v.Short(), want)
			}
			return nil
		}
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first venue gets it, second is busy", []step{
			{"a", grant(a, now), nil},
			{"b", grant(b, now+1), crdt.ErrCardBusy},
		}},
		{"the holder renews (a retried request)", []step{
			{"a", grant(a, now), nil},
			{"a again", grant(a, now+10), nil},
			{"b", grant(b, now+11), crdt.ErrCardBusy},
		}},
		{"released by its holder only", []step{
			{"a", grant(a, now), nil},
			{"b cannot release a's", release(b, false), nil},
			{"b still busy", grant(b, now+1), crdt.ErrCardBusy},
			{"a releases", release(a, true), nil},
			{"b gets it", grant(b, now+2), nil},
		}},
		{"expires after the TTL", []step{
			{"a", grant(a, now), nil},
			{"b just before", grant(b, now+999), crdt.ErrCardBusy},
			{"b at expiry", grant(b, now+1000), nil},
			{"a is now busy", grant(a, now+1001), crdt.ErrCardBusy},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tb := crdt.NewReservationTable(1000)
			for _, s := range tc.steps {
				if err := s.do(tb); !errors.Is(err, s.wantErr) && !(err == nil && s.wantErr == nil) {
					t.Fatalf("%s: got %v, want %v", s.name, err, s.wantErr)
				}
			}
		})
	}
}

func TestReservationTableHolderExpireAndPayments(t *testing.T) {
	vs := reserveVenues(t, 2)
	tb := crdt.NewReservationTable(0)
	if tb.TTL != crdt.DefaultReservationTTL {
		t.Fatalf("default TTL %d", tb.TTL)
	}
	r, err := tb.Grant("04AA000001", vs[0], 3000, baseMillis)
	if err != nil || r.Expires != baseMillis+crdt.DefaultReservationTTL {
		t.Fatalf("grant: %v %+v", err, r)
	}
	busy, err := tb.Grant("04AA000001", vs[1], 3000, baseMillis+1)
	if !errors.Is(err, crdt.ErrCardBusy) || busy.Venue != vs[0] {
		t.Fatalf("busy answer should name the holder: %v %+v", err, busy)
	}
	if h, ok := tb.Holder("04AA000001", baseMillis+1); !ok || h.Venue != vs[0] {
		t.Fatalf("holder: %v %+v", ok, h)
	}
	if _, err := tb.Grant("04AA000002", vs[1], 3000, baseMillis+2); err != nil {
		t.Fatal(err)
	}
	if got := tb.Reservations(baseMillis + 3); len(got) != 2 || got[0].Card != "04AA000001" {
		t.Fatalf("reservations: %+v", got)
	}
	if n := tb.Expire(baseMillis + crdt.DefaultReservationTTL + 1); n != 1 || tb.Len() != 1 {
		t.Fatalf("expire: %d, left %d", n, tb.Len())
	}

	// A payment op of the holder releases its reservation; another venue's
	// payment of the card, or a top-up, does not.
	venue := newActor(signerFromBytes(t, 'p'))
	tb2 := crdt.NewReservationTable(1000)
	tb2.Grant("04AA000003", venue.key(), 3000, baseMillis)
	other := newActor(signerFromBytes(t, 'q'))
	if op := other.make(1, &crdt.Payment{Card: "04AA000003", Amount: 3000, Counter: 1}); tb2.ReleasePayment(&op) {
		t.Fatal("another venue's payment released the reservation")
	}
	if op := venue.make(1, &crdt.TopUp{Card: "04AA000003", Amount: 3000, Method: crdt.MethodCash}); tb2.ReleasePayment(&op) {
		t.Fatal("a top-up released the reservation")
	}
	if op := venue.make(1, &crdt.Payment{Card: "04AA000003", Amount: 3000, Counter: 1}); !tb2.ReleasePayment(&op) || tb2.Len() != 0 {
		t.Fatal("the holder's payment did not release its reservation")
	}
}

func TestCoordinators(t *testing.T) {
	vs := reserveVenues(t, 200)
	tests := []struct {
		venues, r, want int
	}{
		{1, 5, 1}, {2, 5, 2}, {3, 5, 3}, {5, 5, 5}, {10, 5, 5}, {200, 5, 5}, {10, 0, 0},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d venues r=%d", tc.venues, tc.r), func(t *testing.T) {
			got := crdt.Coordinators("04AABBCCDD", vs[:tc.venues], tc.r)
			if len(got) != tc.want {
				t.Fatalf("got %d coordinators, want %d", len(got), tc.want)
			}
			// Same set whatever the order the venues are listed in.
			rev := slices.Clone(vs[:tc.venues])
			slices.Reverse(rev)
			if again := crdt.Coordinators("04AABBCCDD", rev, tc.r); !slices.Equal(got, again) {
				t.Fatal("coordinators depend on the order of the venue list")
			}
		})
	}
	// Rendezvous: removing a venue that is not a coordinator changes
	// nothing; removing one changes one member of the set.
	all := crdt.Coordinators("04AABBCCDD", vs, 5)
	var without []crdt.PublicKey
	for _, v := range vs {
		if v != all[0] {
			without = append(without, v)
		}
	}
	after := crdt.Coordinators("04AABBCCDD", without, 5)
	if !slices.Equal(after[:4], all[1:]) {
		t.Fatal("removing one coordinator moved more than one")
	}
	// Cards spread over the venues.
	load := map[crdt.PublicKey]int{}
	for i := range 2000 {
		for _, c := range crdt.Coordinators(crdt.CardID(fmt.Sprintf("04%08X", i)), vs[:20], 5) {
			load[c]++
		}
	}
	for v, n := range load {
		if n < 300 || n > 700 { // expected 500 each
			t.Fatalf("venue %s coordinates %d of 2000 cards", v.Short(), n)
		}
	}
}

func TestReservationOutcome(t *testing.T) {
	tests := []struct {
		n, granted, busy, failed int
		done                     bool
		err                      error
	}{
		{5, 3, 0, 0, true, nil},
		{5, 2, 0, 0, false, nil},
		{5, 2, 1, 0, false, nil},
		{5, 2, 2, 0, false, nil},
		{5, 2, 2, 1, true, crdt.ErrCardBusy},
		{5, 0, 3, 0, true, crdt.ErrCardBusy},
		{5, 2, 0, 3, true, crdt.ErrNoReservationQuorum},
		{1, 1, 0, 0, true, nil},
		{1, 0, 1, 0, true, crdt.ErrCardBusy},
		{2, 1, 0, 0, false, nil},
		{2, 1, 1, 0, true, crdt.ErrCardBusy},
		{0, 0, 0, 0, true, crdt.ErrNoReservationQuorum},
	}
	for _, tc := range tests {
		done, err := crdt.ReservationOutcome(tc.n, tc.granted, tc.busy, tc.failed)
		if done != tc.done || !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
			t.Errorf("%+v: got %v %v", tc, done, err)
		}
	}
}

// TestReservationsBoundSimultaneousTaps is the rule in one process: k
// venues ask the same card's coordinators at the same instant, in every
// interleaving of their requests; at most one gathers a majority.
func TestReservationsBoundSimultaneousTaps(t *testing.T) {
	vs := reserveVenues(t, 7)
	coords := crdt.Coordinators("04CAFE", vs, crdt.ReservationCoordinators)
	for seed := range 200 {
		tables := map[crdt.PublicKey]*crdt.ReservationTable{}
		for _, c := range coords {
			tables[c] = crdt.NewReservationTable(1000)
		}
		requesters := vs[:3]
		type ask struct{ v, c int }
		var asks []ask
		for v := range requesters {
			for c := range coords {
				asks = append(asks, ask{v, c})
			}
		}
		// A deterministic shuffle per seed.
		x := uint32(seed*2654435761 + 1)
		for i := len(asks) - 1; i > 0; i-- {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			j := int(x % uint32(i+1))
			asks[i], asks[j] = asks[j], asks[i]
		}
		granted := make([]int, len(requesters))
		for _, a := range asks {
			if _, err := tables[coords[a.c]].Grant("04CAFE", requesters[a.v], 9000, baseMillis); err == nil {
				granted[a.v]++
			}
		}
		winners := 0
		for _, g := range granted {
			if g >= crdt.ReservationMajority(len(coords)) {
				winners++
			}
		}
		if winners > 1 {
			t.Fatalf("seed %d: %d venues hold a majority", seed, winners)
		}
	}
}
