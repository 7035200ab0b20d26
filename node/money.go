package node

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
)

// The money rules. They run in the writer with the op set locked, so the
// check and the op that follows see the same state.

// CardView is a card's state as the API shows it.
type CardView struct {
	Card        crdt.CardID    `json:"card"`
	Balance     int64          `json:"balance_cents"`
	Counter     uint64         `json:"counter"`
	Blocked     bool           `json:"blocked"`
	BlockReason string         `json:"block_reason,omitempty"`
	Holder      string         `json:"holder,omitempty"`
	History     []HistoryEntry `json:"history"`
}

// HistoryEntry is one money op of a card.
type HistoryEntry struct {
	OpID    crdt.OpID `json:"op_id"`
	Kind    string    `json:"kind"`
	Amount  int64     `json:"amount_cents"`
	Venue   string    `json:"venue"`
	VenueID string    `json:"venue_id"`
	At      time.Time `json:"at"`
	Counter uint64    `json:"counter,omitempty"`
	Label   string    `json:"label,omitempty"`
	Counted bool      `json:"counted"`
}

func venueName(set *crdt.OpSet, k crdt.PublicKey) string {
	if v := set.State.Venues[k]; v != nil {
		return v.DisplayName()
	}
	return k.Short()
}

// cardView is a card's state with up to limit of its history entries,
// newest first, after the entry at from (from the newest if nil); limit 0
// means no history, below 0 all of it.
func cardView(set *crdt.OpSet, c *crdt.Card, from *crdt.Stamp, limit int) CardView {
	v := CardView{Card: c.ID, Balance: c.Balance, Counter: c.Counter, Blocked: c.Blocked, BlockReason: c.BlockReason, Holder: c.Holder, History: []HistoryEntry{}}
	if limit == 0 {
		return v
	}
	for _, e := range set.State.CardHistory(c.ID, from, true, max(limit, 0)) {
		v.History = append(v.History, historyEntry(set, e))
	}
	return v
}

func historyEntry(set *crdt.OpSet, e crdt.Entry) HistoryEntry {
	amt := e.Amount
	if amt < 0 {
		amt = -amt
	}
	return HistoryEntry{
		OpID: e.Op, Kind: e.Kind.String(), Amount: amt, Venue: venueName(set, e.Venue), VenueID: e.Venue.String(),
		At: time.UnixMilli(e.HLC.Millis()).UTC(), Counter: e.Counter, Label: e.Label, Counted: e.Counted,
	}
}

// MoneyAnswer is the API's answer to a payment, top-up or refund.
type MoneyAnswer struct {
	OpID    crdt.OpID   `json:"op_id"`
	Card    crdt.CardID `json:"card"`
	Balance int64       `json:"balance_cents"`
	Counter uint64      `json:"counter,omitempty"`
	// Stamp is the new signed stamp to write on a writable card (base64).
	Stamp []byte `json:"stamp,omitempty"`
	// StampError says why no stamp was issued for this payment, when none
	// was (the card then keeps its previous stamp).
	StampError string `json:"stamp_error,omitempty"`
	// StampIgnored says why the stamp the card presented was not relied on.
	StampIgnored string `json:"stamp_ignored,omitempty"`
	// Offline is true when the venue took the payment while isolated.
	Offline bool `json:"offline,omitempty"`
}

// pay applies crdt.State.DecidePayment with the node's sync state and
// offline ledger, signs the payment and a new stamp for the card.
func (tx *writeTx) pay(card crdt.CardID, amount uint64, label string, stamp *crdt.CardStamp, quorumLost bool) (MoneyAnswer, error) {
	n := tx.n
	now := n.cfg.Now()
	n.iso.mu.Lock()
	defer n.iso.mu.Unlock()
	in := crdt.PaymentInput{Card: card, Amount: amount, Stamp: stamp, Now: now.UnixMilli(), Isolated: n.iso.isolated || quorumLost}
	ledger := &n.iso.ledger
	if quorumLost && !n.iso.isolated {
		window := int64(n.set.State.Settings.IsolationAfter)
		l := crdt.CardLedger(n.set.State, n.cfg.Key.Public(), card, now.UnixMilli()-window)
		ledger = &l
	}
	d, err := n.set.State.DecidePayment(n.cfg.Key.Public(), in, ledger)
	if err != nil {
		if crdt.BlockAfterRefusal(err, in.Isolated) && n.set.State.Settings.AutoBlock {
			// A stale stamp while isolated: a clone this venue cannot check.
			if _, berr := tx.make(&crdt.CardBlock{Card: card, Reason: "automatic: stale card stamp presented while the venue was isolated"}); berr == nil {
				n.metrics.autoBlocks.Inc()
				n.log.Warn("card blocked: stale stamp presented while isolated", "card", card)
			}
		}
		return MoneyAnswer{}, paymentError(err)
	}
	op, err := tx.make(&crdt.Payment{Card: card, Amount: amount, Counter: d.Counter, Label: label, StampCounter: d.StampCounter, StampVenue: d.StampVenue})
	if err != nil {
		return MoneyAnswer{}, err
	}
	if in.Isolated {
		if n.iso.isolated {
			n.iso.ledger.Record(card, amount)
		}
		n.metrics.offlinePayments.Inc()
	}
	n.metrics.payments.Inc()
	ans := MoneyAnswer{OpID: op.ID(), Card: card, Balance: d.Balance, Counter: d.Counter, Offline: in.Isolated, StampIgnored: d.StampIgnored}
	ns := crdt.CardStamp{Card: card, Counter: d.Counter, Balance: d.Balance, Time: now.Unix()}
	if err := n.cfg.Key.SignStamp(&ns); err == nil {
		ans.Stamp = ns.Encode()
	} else {
		ans.StampError = err.Error()
		n.log.Warn("no stamp for this payment", "card", card, "err", err)
	}
	return ans, nil
}

// paymentError maps the payment rules' errors to API errors.
func paymentError(err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, crdt.ErrUnknownCard):
		return ErrUnknownCard
	case errors.Is(err, crdt.ErrCardBlocked):
		return ErrCardBlocked
	case errors.Is(err, crdt.ErrInsufficientFunds):
		return apiErr(http.StatusPaymentRequired, "insufficient_funds", "the card's balance is too low: "+msg)
	case errors.Is(err, crdt.ErrOfflineCap):
		return apiErr(http.StatusPaymentRequired, "offline_cap_exceeded", "the venue is offline and this payment is beyond its offline limits: "+msg)
	case errors.Is(err, crdt.ErrDailyCap):
		return apiErr(http.StatusPaymentRequired, "daily_cap_exceeded", msg)
	case errors.Is(err, crdt.ErrStaleStamp):
		return apiErr(http.StatusConflict, "stale_stamp", "this card's memory is older than its payments known here (possible cloned card); the venue is offline, so the payment is refused: "+msg)
	case errors.Is(err, crdt.ErrBadStamp):
		return apiErr(http.StatusBadRequest, "invalid_request", "the card's stamp is not valid: "+msg)
	}
	return err
}

func (tx *writeTx) topUp(card crdt.CardID, amount uint64, method, ref string) (MoneyAnswer, error) {
	balance, err := tx.n.set.State.DecideTopUp(card, amount)
	switch {
	case errors.Is(err, crdt.ErrCardBlocked):
		return MoneyAnswer{}, ErrCardBlocked
	case errors.Is(err, crdt.ErrBalanceCeiling):
		return MoneyAnswer{}, apiErr(http.StatusUnprocessableEntity, "balance_ceiling", "this top-up would take the card beyond the federation's balance ceiling: "+err.Error())
	case err != nil:
		return MoneyAnswer{}, err
	}
	op, err := tx.make(&crdt.TopUp{Card: card, Amount: amount, Method: method, ExternalRef: ref})
	if err != nil {
		return MoneyAnswer{}, err
	}
	tx.n.metrics.topups.Inc()
	if c := tx.n.set.State.Card(card); c != nil {
		balance = c.Balance
	}
	return MoneyAnswer{OpID: op.ID(), Card: card, Balance: balance}, nil
}

func (tx *writeTx) refund(card crdt.CardID, amount uint64, reason string) (MoneyAnswer, error) {
	tx.n.iso.mu.Lock()
	isolated := tx.n.iso.isolated
	tx.n.iso.mu.Unlock()
	_, err := tx.n.set.State.DecideRefund(crdt.RefundInput{Card: card, Amount: amount, Isolated: isolated})
	switch {
	case errors.Is(err, crdt.ErrRefundOffline):
		// A refund in cash has no counter and no cap: offline, the card
		// could be spent on the other side of the partition meanwhile.
		return MoneyAnswer{}, apiErr(http.StatusServiceUnavailable, "offline", "refunds need the venue to be in sync with the federation; try again once it is")
	case errors.Is(err, crdt.ErrUnknownCard):
		return MoneyAnswer{}, ErrUnknownCard
	case errors.Is(err, crdt.ErrInsufficientFunds):
		c := tx.n.set.State.Card(card)
		return MoneyAnswer{}, &APIError{Status: http.StatusPaymentRequired, Code: "insufficient_funds",
			Message: fmt.Sprintf("the card holds %s, the refund is %s", cents(c.Balance), cents(int64(amount)))}
	case err != nil:
		return MoneyAnswer{}, err
	}
	op, err := tx.make(&crdt.Refund{Card: card, Amount: amount, Reason: reason})
	if err != nil {
		return MoneyAnswer{}, err
	}
	tx.n.metrics.refunds.Inc()
	c := tx.n.set.State.Card(card)
	return MoneyAnswer{OpID: op.ID(), Card: card, Balance: c.Balance}, nil
}

func (tx *writeTx) block(card crdt.CardID, reason string, blocked bool) error {
	c := tx.n.set.State.Card(card)
	if c == nil {
		return ErrUnknownCard
	}
	var b crdt.Body = &crdt.CardBlock{Card: card, Reason: reason}
	if !blocked {
		b = &crdt.CardUnblock{Card: card, Reason: reason}
	}
	_, err := tx.make(b)
	return err
}

func cents(v int64) string {
	sign := ""
	if v < 0 {
		sign, v = "-", -v
	}
	return fmt.Sprintf("%s%d.%02d", sign, v/100, v%100)
}
