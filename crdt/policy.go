package crdt

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
)

// The payment rules, shared by nodes and simulations. They are pure: the
// caller passes the time, whether it is isolated and what it took offline.

// Errors of DecidePayment; test them with errors.Is.
var (
	ErrUnknownCard       = errors.New("unknown card")
	ErrCardBlocked       = errors.New("card blocked")
	ErrInsufficientFunds = errors.New("insufficient funds")
	ErrOfflineCap        = errors.New("offline cap exceeded")
	ErrDailyCap          = errors.New("daily card cap exceeded")
	ErrStaleStamp        = errors.New("card stamp older than the card's known payments")
)

// OfflineLedger is what one venue took while isolated, since its last moment
// in sync: the input of the offline caps. It is the venue's own (not
// replicated) and is rebuilt from the op set after a restart (see
// RebuildOfflineLedger).
type OfflineLedger struct {
	// Since is when the venue lost sync, in Unix ms; 0 when in sync.
	Since  int64
	Total  uint64
	Amount map[CardID]uint64
	Count  map[CardID]uint64
}

// Reset empties the ledger: the venue is in sync again (since = 0) or has
// just lost sync (since = that moment).
func (l *OfflineLedger) Reset(since int64) {
	*l = OfflineLedger{Since: since, Amount: map[CardID]uint64{}, Count: map[CardID]uint64{}}
}

// Record adds an offline payment.
func (l *OfflineLedger) Record(card CardID, amount uint64) {
	if l.Amount == nil {
		l.Amount, l.Count = map[CardID]uint64{}, map[CardID]uint64{}
	}
	l.Total += amount
	l.Amount[card] += amount
	l.Count[card]++
}

// RebuildOfflineLedger recomputes a venue's ledger from its own payments
// made at or after since (Unix ms).
func RebuildOfflineLedger(s *State, venue PublicKey, since int64) OfflineLedger {
	var l OfflineLedger
	l.Reset(since)
	if since == 0 {
		return l
	}
	for _, c := range s.Cards {
		l.recordPayments(c, venue, since)
	}
	return l
}

// recordPayments adds the card's payments at venue from since.
func (l *OfflineLedger) recordPayments(c *Card, venue PublicKey, since int64) {
	for _, e := range c.Entries {
		if e.Kind == KindPayment && e.Venue == venue && e.HLC.Millis() >= since {
			l.Record(c.ID, uint64(-e.Amount))
		}
	}
}

// CardLedger is the offline ledger of one card at one venue from since
// (Unix ms): what a payment taken under the caps counts when the venue
// still believes itself in sync but cannot reach a quorum now.
func CardLedger(s *State, venue PublicKey, card CardID, since int64) OfflineLedger {
	var l OfflineLedger
	l.Reset(since)
	if c := s.Cards[card]; c != nil {
		l.recordPayments(c, venue, since)
	}
	return l
}

// PaymentInput is a payment a cashier asks for.
type PaymentInput struct {
	Card   CardID
	Amount uint64
	// Stamp is the stamp read from the card, if it carries one (already
	// decoded and signature-checked by DecodeStamp).
	Stamp *CardStamp
	// Now is the venue's wall clock, Unix ms.
	Now int64
	// Isolated says whether the venue is out of sync with the federation.
	Isolated bool
}

// PaymentDecision is what the venue signs if the payment is allowed.
type PaymentDecision struct {
	Counter      uint64 // the payment's counter
	StampCounter uint64 // the presented stamp's counter, 0 if none
	Balance      int64  // the card's balance after the payment, as far as this venue knows
}

// DecidePayment applies the rules of a payment at venue: the card must be
// known and not blocked; its balance (the ledger's, or the card's stamp when
// it is newer and lower) must cover the amount; an isolated venue also keeps
// within the federation's offline caps (per payment, per card amount and
// count, venue budget, validity period); the optional daily cap applies
// online. The counter is the next after the highest the venue knows from the
// op set and from the card's stamp.
func (s *State) DecidePayment(venue PublicKey, in PaymentInput, offline *OfflineLedger) (PaymentDecision, error) {
	var d PaymentDecision
	c := s.Cards[in.Card]
	if c == nil && in.Stamp == nil {
		return d, ErrUnknownCard
	}
	var known uint64
	var balance int64
	if c != nil {
		if c.Blocked {
			return d, ErrCardBlocked
		}
		known, balance = c.Counter, c.Balance
	}
	if st := in.Stamp; st != nil {
		if st.Card != in.Card {
			return d, fmt.Errorf("%w: stamp is for card %s", ErrBadStamp, st.Card)
		}
		if !s.wasMember(st.Venue) {
			return d, fmt.Errorf("%w: signed by a venue that is not a member", ErrBadStamp)
		}
		d.StampCounter = st.Counter
		if in.Isolated && st.Counter < known {
			// The card's memory is behind payments this venue knows of:
			// a clone or a rolled-back card. Online the ledger decides
			// (and the payment is flagged); offline it is refused, since
			// the ledger may be missing the rest of the story.
			return d, fmt.Errorf("%w: the card says %d payments, this venue knows %d", ErrStaleStamp, st.Counter, known)
		}
		if st.Counter > known {
			// The card paid somewhere this venue has not heard of yet: its
			// own memory is the newer state.
			known = st.Counter
			if c == nil || st.Balance < balance {
				balance = st.Balance
			}
		}
	}
	if balance < int64(in.Amount) {
		return d, fmt.Errorf("%w: the card holds %d, the payment is %d", ErrInsufficientFunds, balance, in.Amount)
	}
	set := s.Settings
	if in.Isolated {
		switch {
		case offline != nil && offline.Since > 0 && set.OfflineValidity > 0 && uint64(max(0, in.Now-offline.Since)) > set.OfflineValidity:
			return d, fmt.Errorf("%w: this venue has been out of sync for too long to sell offline", ErrOfflineCap)
		case in.Amount > set.OfflinePaymentMax:
			return d, fmt.Errorf("%w: offline, one payment may be at most %d", ErrOfflineCap, set.OfflinePaymentMax)
		case offline != nil && offline.Amount[in.Card]+in.Amount > set.OfflineCardMax:
			return d, fmt.Errorf("%w: offline, this card may spend at most %d here (%d spent)", ErrOfflineCap, set.OfflineCardMax, offline.Amount[in.Card])
		case offline != nil && offline.Count[in.Card]+1 > set.OfflineCardCount:
			return d, fmt.Errorf("%w: offline, this card may pay at most %d times here", ErrOfflineCap, set.OfflineCardCount)
		case offline != nil && offline.Total+in.Amount > set.OfflineVenueBudget:
			return d, fmt.Errorf("%w: this venue's offline budget of %d is used up", ErrOfflineCap, set.OfflineVenueBudget)
		}
	} else if set.DailyCardMax > 0 && c != nil {
		if spent := c.spentSince(in.Now - in.Now%86_400_000); spent+in.Amount > set.DailyCardMax {
			return d, fmt.Errorf("%w: %d spent today, the daily cap is %d", ErrDailyCap, spent, set.DailyCardMax)
		}
	}
	d.Counter = known + 1
	d.Balance = balance - int64(in.Amount)
	return d, nil
}

// wasMember reports whether key is or was an admitted venue (stamps made
// before a revocation stay readable).
func (s *State) wasMember(key PublicKey) bool { return s.Venues[key] != nil }

// spentSince sums the card's counted payments from since (Unix ms).
func (c *Card) spentSince(since int64) uint64 {
	var sum uint64
	for _, e := range c.Entries {
		if e.Kind == KindPayment && e.Counted && e.HLC.Millis() >= since {
			sum += uint64(-e.Amount)
		}
	}
	return sum
}

// Quorum applies the isolation rule. heard holds, for each other admitted
// venue, when it was last heard (Unix ms; 0 if never). A venue is in sync
// when at least MinPeersPercent of the other venues were heard within
// IsolationAfter. quorumAt is the last moment that held (the time the
// required number of venues had all been heard by), 0 if never: an isolated
// venue counts its offline payments from then, so those made while the
// silence was not yet noticed count towards the caps too. With no other
// venue, a venue is always in sync. With MinPeersPercent ≥ 50 two disjoint
// groups of venues can never both be in sync.
func (s Settings) Quorum(heard []int64, now int64) (inSync bool, quorumAt int64, need int) {
	others := uint64(len(heard))
	if others == 0 || s.MinPeersPercent == 0 {
		return true, now, 0
	}
	need = int((s.MinPeersPercent*others + 99) / 100)
	sorted := slices.Clone(heard)
	slices.SortFunc(sorted, func(a, b int64) int { return cmp.Compare(b, a) })
	quorumAt = sorted[need-1]
	return quorumAt > 0 && now-quorumAt <= int64(s.IsolationAfter), quorumAt, need
}
