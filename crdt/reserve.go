package crdt

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"errors"
	"slices"
)

// Reservations: simultaneous taps of one card at in-sync venues.
//
// Online, a venue decides a payment on its own view of the card's balance.
// Two venues in sync still learn of each other's payments only after the
// gossip delay (milliseconds), so a cloned card tapped at k venues at the
// same instant could spend its whole balance k times. A payment above the
// floor limit (Settings.OfflinePaymentMax, see NeedsReservation) therefore
// first reserves the card with a majority of its coordinators: a small
// deterministic set of venues per card (Coordinators, rendezvous hashing of
// the card id over the admitted, unrevoked venues, R = min(5, venues)). A
// coordinator grants a card to one venue at a time (ReservationTable): any
// two reservations of one card meet at a coordinator, so at most one venue
// at a time holds a card's reservation, and an attack at k in-sync venues
// loses at most (k-1) × floor limit (the others can only take payments at
// or under the floor, which need no reservation).
//
// How to call it (node and simulations alike):
//
//	if NeedsReservation(state.Settings, amount) {
//		coords := Coordinators(card, state.ReservationVenues(), ReservationCoordinators)
//		// ask each coordinator c (the requester answers for itself if it
//		// is one): c runs table.Grant(card, requester, amount, nowMs) and
//		// answers granted or busy; unanswered ones count as failed.
//		done, err := ReservationOutcome(len(coords), granted, busy, failed)
//		// done && err == nil: pay online. errors.Is(err, ErrCardBusy):
//		// refuse ("card busy"). errors.Is(err, ErrNoReservationQuorum):
//		// the coordinators cannot be reached, take the payment under the
//		// offline caps (which refuse anything above the floor).
//	}
//	// a coordinator that sees venue V's payment op of the card calls
//	// table.ReleasePayment(op) (or table.Release(card, V)); a reservation
//	// not released ends after table.TTL ms (table.Expire(nowMs)).
//
// A requester that fails to gather a majority releases the grants it got,
// so two venues that split the coordinators between them both retry
// instead of waiting for the TTL. A coordinator's grant also tells the
// highest payment counter it knows of the card; the requester decides the
// payment only once its own view of the card has reached the highest of
// those (the node waits for it, within its budget, else answers "busy"):
// a coordinator that released the card on another venue's payment has seen
// that payment, so the next holder's decision includes it. A simulation
// with instant delivery among connected venues can skip that wait.
//
// Everything here is pure: time comes in as Unix ms.

// ReservationCoordinators is R, the number of coordinators of a card (fewer
// when the federation has fewer venues).
const ReservationCoordinators = 5

// DefaultReservationTTL is how long a reservation lives, in ms, when the
// payment it announced is not seen: long enough for the payment op to be
// made durable and gossiped (milliseconds), short enough that a venue that
// crashed between reserving and paying blocks the card's large payments
// elsewhere only for a few seconds.
const DefaultReservationTTL = 5000

// Errors of reservations; test them with errors.Is.
var (
	// ErrCardBusy: another venue holds a live reservation of the card.
	ErrCardBusy = errors.New("card reserved by another venue")
	// ErrNoReservationQuorum: not enough coordinators answered.
	ErrNoReservationQuorum = errors.New("card's reservation coordinators not reachable")
)

// NeedsReservation reports whether a payment (or refund) of amount must
// reserve the card first: above the floor limit.
func NeedsReservation(s Settings, amount uint64) bool { return amount > s.OfflinePaymentMax }

// ReservationVenues lists the venues that may coordinate reservations: the
// admitted, unrevoked venues, in key order.
func (s *State) ReservationVenues() []PublicKey {
	out := make([]PublicKey, 0, len(s.Venues))
	for k, v := range s.Venues {
		if !v.Revoked {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b PublicKey) int { return bytes.Compare(a[:], b[:]) })
	return out
}

// Coordinators returns the r venues (all of them if fewer) that coordinate
// the reservations of card, by rendezvous hashing: each venue scores
// SHA-256("cagnotte/reserve/v1" 0 card 0 venue key) and the r highest scores
// win. Every node holding the same venue list picks the same set, in the
// same order, and admitting or revoking one venue moves a card's set by at
// most one venue.
func Coordinators(card CardID, venues []PublicKey, r int) []PublicKey {
	type scored struct {
		key   PublicKey
		score [32]byte
	}
	all := make([]scored, 0, len(venues))
	for _, v := range venues {
		h := sha256.New()
		h.Write([]byte("cagnotte/reserve/v1\x00"))
		h.Write([]byte(card))
		h.Write([]byte{0})
		h.Write(v[:])
		var s scored
		s.key = v
		h.Sum(s.score[:0])
		all = append(all, s)
	}
	slices.SortFunc(all, func(a, b scored) int {
		if c := bytes.Compare(b.score[:], a.score[:]); c != 0 {
			return c
		}
		return bytes.Compare(a.key[:], b.key[:])
	})
	all = slices.CompactFunc(all, func(a, b scored) bool { return a.key == b.key })
	if r < 0 {
		r = 0
	}
	out := make([]PublicKey, 0, min(r, len(all)))
	for i := 0; i < len(all) && i < r; i++ {
		out = append(out, all[i].key)
	}
	return out
}

// ReservationMajority is how many of n coordinators must grant.
func ReservationMajority(n int) int { return n/2 + 1 }

// ReservationOutcome decides a reservation from the answers of its n
// coordinators so far: granted, busy (held for another venue) and failed
// (no answer, or an error). done is false while the outcome still depends
// on answers to come. It succeeds (done, nil) once a majority granted; it
// fails with ErrCardBusy when a majority can no longer be reached and some
// coordinator said busy, with ErrNoReservationQuorum when no coordinator
// said busy (nothing to reserve with: the payment falls to the offline
// caps).
func ReservationOutcome(n, granted, busy, failed int) (done bool, err error) {
	need := ReservationMajority(n)
	if n <= 0 {
		return true, ErrNoReservationQuorum
	}
	if granted >= need {
		return true, nil
	}
	if pending := n - granted - busy - failed; granted+pending >= need {
		return false, nil
	}
	if busy > 0 {
		return true, ErrCardBusy
	}
	return true, ErrNoReservationQuorum
}

// Reservation is a card held for one venue until Expires (Unix ms).
type Reservation struct {
	Card    CardID
	Venue   PublicKey
	Amount  uint64
	Granted int64
	Expires int64
}

// ReservationTable is one coordinator's reservations: at most one live
// reservation per card. The zero value is not usable: see
// NewReservationTable. It is not safe for concurrent use (the caller
// locks).
type ReservationTable struct {
	// TTL is how long a grant lives, in ms.
	TTL    int64
	byCard map[CardID]Reservation
}

// NewReservationTable returns an empty table whose grants live ttl ms
// (DefaultReservationTTL if ttl ≤ 0).
func NewReservationTable(ttl int64) *ReservationTable {
	if ttl <= 0 {
		ttl = DefaultReservationTTL
	}
	return &ReservationTable{TTL: ttl, byCard: map[CardID]Reservation{}}
}

// Grant reserves card for venue at now (Unix ms). It refuses with
// ErrCardBusy, returning the live reservation, when another venue holds
// one; a venue that already holds the card gets it renewed (a retried
// request). Expired reservations are replaced.
func (t *ReservationTable) Grant(card CardID, venue PublicKey, amount uint64, now int64) (Reservation, error) {
	if r, ok := t.byCard[card]; ok && r.Expires > now && r.Venue != venue {
		return r, ErrCardBusy
	}
	r := Reservation{Card: card, Venue: venue, Amount: amount, Granted: now, Expires: now + t.TTL}
	t.byCard[card] = r
	return r, nil
}

// Release ends venue's reservation of card (its payment was seen, or it
// gave up). It reports whether there was one; another venue's reservation
// is left alone.
func (t *ReservationTable) Release(card CardID, venue PublicKey) bool {
	if r, ok := t.byCard[card]; ok && r.Venue == venue {
		delete(t.byCard, card)
		return true
	}
	return false
}

// ReleasePayment releases the reservation a payment or refund op
// announced: the op's author's reservation of the op's card. It reports
// whether one was released. Other ops release nothing.
func (t *ReservationTable) ReleasePayment(op *Op) bool {
	if len(t.byCard) == 0 || (op.Kind != KindPayment && op.Kind != KindRefund) {
		return false
	}
	b, err := DecodeBody(op.Kind, op.Body)
	if err != nil {
		return false
	}
	switch b := b.(type) {
	case *Payment:
		return t.Release(b.Card, op.Author)
	case *Refund:
		return t.Release(b.Card, op.Author)
	}
	return false
}

// Holder returns the live reservation of card at now, if any.
func (t *ReservationTable) Holder(card CardID, now int64) (Reservation, bool) {
	r, ok := t.byCard[card]
	if !ok || r.Expires <= now {
		return Reservation{}, false
	}
	return r, true
}

// Expire drops the reservations expired at now and returns how many.
func (t *ReservationTable) Expire(now int64) int {
	n := 0
	for c, r := range t.byCard {
		if r.Expires <= now {
			delete(t.byCard, c)
			n++
		}
	}
	return n
}

// Len returns the number of reservations held, live or expired.
func (t *ReservationTable) Len() int { return len(t.byCard) }

// sortReservations orders reservations by card (for tests and reports).
func sortReservations(rs []Reservation) {
	slices.SortFunc(rs, func(a, b Reservation) int { return cmp.Compare(a.Card, b.Card) })
}

// Reservations returns the live reservations at now, by card.
func (t *ReservationTable) Reservations(now int64) []Reservation {
	var out []Reservation
	for _, r := range t.byCard {
		if r.Expires > now {
			out = append(out, r)
		}
	}
	sortReservations(out)
	return out
}
