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
	ErrRefundOffline     = errors.New("refunds need the venue in sync with a quorum of venues")
	ErrBalanceCeiling    = errors.New("top-up beyond the card's balance ceiling")
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
	s.index.VenuePayments(venue, since, l.Record)
	return l
}

// CardLedger is the offline ledger of one card at one venue from since
// (Unix ms): what a payment taken under the caps counts when the venue
// still believes itself in sync but cannot reach a quorum now.
func CardLedger(s *State, venue PublicKey, card CardID, since int64) OfflineLedger {
	var l OfflineLedger
	l.Reset(since)
	s.index.Entries(card, nil, true, func(e Entry) bool {
		if e.HLC.Millis() < since {
			return false
		}
		if e.Kind == KindPayment && e.Counted && e.Venue == venue {
			l.Record(card, uint64(-e.Amount))
		}
		return true
	})
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
	Counter      uint64    // the payment's counter
	StampCounter uint64    // the presented stamp's counter, 0 if none was relied on
	StampVenue   PublicKey // the venue that signed that stamp
	Balance      int64     // the card's balance after the payment, as far as this venue knows
	// StampIgnored says why a presented stamp was not relied on ("" if it
	// was, or if there was none).
	StampIgnored string
}

// DecidePayment applies the rules of a payment at venue: the card must be
// known and not blocked; its balance must cover the amount; an isolated
// venue also keeps within the federation's offline caps (per payment, per
// card amount and count, venue budget, validity period); the optional
// daily cap applies online. The counter is the next after the highest the
// venue knows from the op set and from the card's stamp.
//
// A stamp never creates money online: in sync, the ledger decides the
// balance (a card it does not know is refused), and the stamp only moves
// the counter. Isolated, a stamp newer than the ledger is the card's own
// memory of payments the venue has not heard of: its balance is trusted,
// if lower, or for a card the ledger does not know, within the offline
// caps. Only a stamp signed by a current member is relied on, and a stamp
// counter more than MaxCounterJump ahead of the card is refused.
func (s *State) DecidePayment(venue PublicKey, in PaymentInput, offline *OfflineLedger) (PaymentDecision, error) {
	var d PaymentDecision
	c := s.Cards[in.Card]
	if c == nil && (in.Stamp == nil || !in.Isolated) {
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
		var nPayments uint64
		if c != nil {
			nPayments = c.NPayments
		}
		switch v := s.Venues[st.Venue]; {
		case v == nil || v.Revoked:
			// A revoked key could sign any stamp after its revocation:
			// its word is not relied on.
			d.StampIgnored = "signed by a venue that is not a current member"
			if c == nil {
				return d, fmt.Errorf("%w: the card is unknown here and its stamp is %s", ErrUnknownCard, d.StampIgnored)
			}
		case st.Counter > max(known, nPayments)+MaxCounterJump:
			return d, fmt.Errorf("%w: its counter %d is far beyond the %d payments known for this card", ErrBadStamp, st.Counter, max(known, nPayments))
		case in.Isolated && c != nil && st.Counter < c.StampedCounter:
			// The card's memory is behind a payment made by a venue that
			// read (and wrote) its stamp: a clone or a rolled-back card.
			// Online the ledger decides (and the payment is flagged);
			// offline it is refused, since the ledger may be missing the
			// rest of the story. A stamp behind only payments made through
			// readers that cannot write (no stamp read) is an honest card.
			return d, fmt.Errorf("%w: the card says %d payments, a venue that wrote its stamp recorded %d", ErrStaleStamp, st.Counter, c.StampedCounter)
		default:
			d.StampCounter, d.StampVenue = st.Counter, st.Venue
			if st.Counter > known {
				// The card paid somewhere this venue has not heard of yet.
				known = st.Counter
				if in.Isolated && (c == nil || st.Balance < balance) {
					balance = st.Balance
				}
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
		if spent := s.spentSince(c.ID, in.Now-in.Now%86_400_000); spent+in.Amount > set.DailyCardMax {
			return d, fmt.Errorf("%w: %d spent today, the daily cap is %d", ErrDailyCap, spent, set.DailyCardMax)
		}
	}
	if known >= MaxCounter {
		return d, fmt.Errorf("%w: the card's counter is exhausted", ErrBadStamp)
	}
	d.Counter = known + 1
	d.Balance = balance - int64(in.Amount)
	return d, nil
}

// BlockAfterRefusal reports whether a venue that refused a payment with
// err should block the card: a stale stamp presented while isolated is the
// mark of a cloned or rolled-back card that the venue cannot check.
func BlockAfterRefusal(err error, isolated bool) bool {
	return isolated && errors.Is(err, ErrStaleStamp)
}

// RefundInput is a refund a cashier asks for.
type RefundInput struct {
	Card   CardID
	Amount uint64
	// Isolated is true when the venue is out of sync, or in sync but cannot
	// reach a quorum now (the detection window): refunds are refused then.
	Isolated bool
}

// DecideRefund applies the rules of a refund: a refund gives cash back and
// has no counter nor cap, so it needs the venue in sync with a quorum (as
// a payment above the floor limit does) and the ledger's balance to cover
// it. It returns the balance after the refund.
func (s *State) DecideRefund(in RefundInput) (int64, error) {
	if in.Isolated {
		return 0, ErrRefundOffline
	}
	c := s.Cards[in.Card]
	if c == nil {
		return 0, ErrUnknownCard
	}
	if c.Balance < int64(in.Amount) {
		return 0, fmt.Errorf("%w: the card holds %d, the refund is %d", ErrInsufficientFunds, c.Balance, in.Amount)
	}
	return c.Balance - int64(in.Amount), nil
}

// DecideTopUp applies the rules of a top-up: not on a blocked card, and not
// beyond the federation's balance ceiling (Settings.BalanceMax). It returns
// the balance after the top-up.
func (s *State) DecideTopUp(card CardID, amount uint64) (int64, error) {
	var balance int64
	if c := s.Cards[card]; c != nil {
		if c.Blocked {
			return 0, ErrCardBlocked
		}
		balance = c.Balance
	}
	if max := s.Settings.BalanceMax; max > 0 && balance+int64(amount) > int64(max) {
		return 0, fmt.Errorf("%w: the card holds %d, the ceiling is %d", ErrBalanceCeiling, balance, max)
	}
	return balance + int64(amount), nil
}

// TooFarAhead reports whether op's timestamp is more than the federation's
// clock skew bound ahead of nowMs: such an op is held, not applied, until
// it no longer is (a forged clock cannot win last-writer-wins fields).
func (s Settings) TooFarAhead(op *Op, nowMs int64) bool {
	return op.HLC.Millis() > nowMs+s.Skew()
}

// spentSince sums the card's counted payments from since (Unix ms).
func (s *State) spentSince(card CardID, since int64) uint64 {
	var sum uint64
	s.index.Entries(card, nil, true, func(e Entry) bool {
		if e.HLC.Millis() < since {
			return false
		}
		if e.Kind == KindPayment && e.Counted {
			sum += uint64(-e.Amount)
		}
		return true
	})
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
