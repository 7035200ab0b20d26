package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	pstripe "github.com/cagnotte/cagnotte/node/stripe"
)

// Refunds of a card's remaining balance to the PaymentIntents it was
// topped up with, newest first. A card holder asks (POST
// /api/v1/holder/{token}/refunds); staff approve (or the gateway's
// AutoApproveRefunds does). For each PaymentIntent the card is first
// debited by a refund op under a reference of Cagnotte's own (the ledger's
// rules apply: in sync, balance covers it), then Stripe is asked for the
// refund with that reference as idempotency key and metadata; a Stripe
// failure leaves the item "retrying" (retried every RetryInterval) or
// "failed" (Stripe refused: staff see it, retry, or pay it at the cash
// desk: the card was already debited). What the cash desk took stays for
// the cash desk.

// Refund request statuses.
const (
	refundPending   = "pending"   // waits for staff
	refundApproved  = "approved"  // to plan and make
	refundRefunding = "refunding" // some items not refunded yet (retried)
	refundDone      = "refunded"
	refundPartial   = "partial" // some items failed: staff look
	refundRejected  = "rejected"
	refundNothing   = "nothing_to_refund"
)

// StripeRefundRequest is a card holder's request to refund the card's
// remaining balance.
type StripeRefundRequest struct {
	ID        string      `json:"id"`
	Card      crdt.CardID `json:"card"`
	Status    string      `json:"status"`
	CreatedAt time.Time   `json:"created_at"`
	UpdatedAt time.Time   `json:"updated_at"`
	// BalanceCents is the card's balance when asked.
	BalanceCents int64 `json:"balance_cents"`
	// AmountCents is what goes back to cards through Stripe (once planned).
	AmountCents int64 `json:"amount_cents"`
	// CashCents is what stays for the cash desk (topped up in cash).
	CashCents  int64              `json:"cash_cents"`
	Items      []StripeRefundItem `json:"items"`
	ApprovedBy string             `json:"approved_by,omitempty"`
	Message    string             `json:"message,omitempty"`
	Idem       string             `json:"idempotency_key,omitempty"`
	Reason     string             `json:"reason,omitempty"`
}

// StripeRefundItem is the refund of one PaymentIntent.
type StripeRefundItem struct {
	PaymentIntent string `json:"payment_intent"`
	AmountCents   int64  `json:"amount_cents"`
	// Ref is the ledger reference of the debit and Stripe's idempotency key.
	Ref string `json:"ref"`
	// Status: planned, debited (card debited, Stripe not asked yet),
	// retrying, refunded, failed.
	Status string     `json:"status"`
	OpID   *crdt.OpID `json:"op_id,omitempty"`
	Refund string     `json:"refund,omitempty"`
	Error  string     `json:"error,omitempty"`
	// Attempts counts the calls to Stripe's Refunds API.
	Attempts int `json:"attempts"`
}

type holderRefundRequest struct {
	IdempotencyKey string `json:"idempotency_key"`
}

// handleStripeRefundRequest records a card holder's refund request (one
// open request per card at a gateway: asking again returns it).
func (n *Node) handleStripeRefundRequest(w http.ResponseWriter, r *http.Request) {
	g := n.stripe
	card, err := n.holderCard(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req holderRefundRequest
	if err := n.decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if len(req.IdempotencyKey) > 128 {
		writeError(w, badRequest("idempotency_key longer than 128 bytes"))
		return
	}
	if g.client == nil {
		writeError(w, errNotGateway)
		return
	}
	g.refundMu.Lock()
	for _, x := range journalList[StripeRefundRequest](g.journal, jRefund) {
		if x.Card == card && (x.Status == refundPending || x.Status == refundApproved || x.Status == refundRefunding) {
			g.refundMu.Unlock()
			writeJSON(w, http.StatusOK, x)
			return
		}
	}
	var balance int64
	known := false
	n.View(func(set *crdt.OpSet) {
		if c := set.State.Card(card); c != nil {
			known, balance = true, c.Balance
		}
	})
	if !known {
		g.refundMu.Unlock()
		writeError(w, ErrUnknownCard)
		return
	}
	if balance <= 0 {
		g.refundMu.Unlock()
		writeError(w, apiErr(http.StatusUnprocessableEntity, "nothing_to_refund", "the card holds nothing to refund"))
		return
	}
	now := n.cfg.Now().UTC()
	rr := StripeRefundRequest{ID: newRefundID(), Card: card, Status: refundPending, CreatedAt: now, UpdatedAt: now, BalanceCents: balance, Items: []StripeRefundItem{}, Idem: req.IdempotencyKey}
	if g.cfg.AutoApproveRefunds {
		rr.Status, rr.ApprovedBy = refundApproved, "auto"
	}
	err = g.journal.Put(jRefund, rr.ID, rr)
	g.refundMu.Unlock()
	if err != nil {
		writeError(w, err)
		return
	}
	n.log.Info("stripe refund requested", "card", card, "request", rr.ID, "status", rr.Status)
	if rr.Status == refundApproved {
		select {
		case g.wake <- struct{}{}:
		default:
		}
	}
	writeJSON(w, http.StatusOK, rr)
}

func newRefundID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// handleStripeHolderRefunds lists the card's refund requests at this
// gateway.
func (n *Node) handleStripeHolderRefunds(w http.ResponseWriter, r *http.Request) {
	card, err := n.holderCard(r)
	if err != nil {
		writeError(w, err)
		return
	}
	out := []StripeRefundRequest{}
	for _, x := range journalList[StripeRefundRequest](n.stripe.journal, jRefund) {
		if x.Card == card {
			x.Idem = ""
			out = append(out, x)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// handleStripeRefunds lists refund requests for staff (?status= filters).
func (n *Node) handleStripeRefunds(w http.ResponseWriter, r *http.Request) {
	st := r.URL.Query().Get("status")
	out := []StripeRefundRequest{}
	for _, x := range journalList[StripeRefundRequest](n.stripe.journal, jRefund) {
		if st == "" || x.Status == st {
			out = append(out, x)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

type refundActionRequest struct {
	Reason         string `json:"reason,omitempty"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

// handleStripeRefundAction approves, retries or rejects a request. Approve
// and retry make the refunds before answering (within the request's
// timeout; what is left is retried in the background).
func (n *Node) handleStripeRefundAction(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		g := n.stripe
		if g.client == nil {
			writeError(w, errNotGateway)
			return
		}
		var req refundActionRequest
		if err := n.decode(w, r, &req); err != nil {
			writeError(w, err)
			return
		}
		if action == "reject" {
			if err := checkReason(req.Reason, "the rejection"); err != nil {
				writeError(w, err)
				return
			}
		}
		id := r.PathValue("id")
		g.refundMu.Lock()
		var rr StripeRefundRequest
		ok, _ := g.journal.Get(jRefund, id, &rr)
		if !ok {
			g.refundMu.Unlock()
			writeError(w, apiErr(http.StatusNotFound, "not_found", "no refund request "+id))
			return
		}
		var err error
		switch action {
		case "approve":
			switch rr.Status {
			case refundPending:
				rr.Status, rr.ApprovedBy = refundApproved, "staff"
			case refundRejected:
				err = apiErr(http.StatusConflict, "conflict", "this request was rejected")
			}
		case "retry":
			if rr.Status != refundPartial && rr.Status != refundRefunding {
				err = apiErr(http.StatusConflict, "conflict", "nothing to retry: the request is "+rr.Status)
				break
			}
			for i := range rr.Items {
				if rr.Items[i].Status == "failed" {
					rr.Items[i].Status, rr.Items[i].Error = "retrying", ""
				}
			}
			rr.Status = refundRefunding
		case "reject":
			if rr.Status != refundPending && rr.Status != refundApproved {
				err = apiErr(http.StatusConflict, "conflict", "only a request not started can be rejected; it is "+rr.Status)
				break
			}
			rr.Status, rr.Reason = refundRejected, req.Reason
		}
		if err == nil {
			rr.UpdatedAt = n.cfg.Now().UTC()
			err = g.journal.Put(jRefund, rr.ID, rr)
		}
		if err == nil && (rr.Status == refundApproved || rr.Status == refundRefunding) {
			rr, err = n.processRefund(r.Context(), rr)
		}
		g.refundMu.Unlock()
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, rr)
	}
}

// processRefunds works through the approved and unfinished requests (the
// background loop).
func (n *Node) processRefunds(ctx context.Context) {
	g := n.stripe
	g.refundMu.Lock()
	defer g.refundMu.Unlock()
	for _, rr := range journalList[StripeRefundRequest](g.journal, jRefund) {
		if ctx.Err() != nil {
			return
		}
		if rr.Status != refundApproved && rr.Status != refundRefunding {
			continue
		}
		if _, err := n.processRefund(ctx, rr); err != nil {
			n.log.Warn("stripe refund not finished; retried later", "request", rr.ID, "err", err)
		}
	}
}

// processRefund plans an approved request, then debits and refunds each
// item not done yet. Caller holds refundMu. It journals every step, and
// returns an error only when the journal fails: Stripe's and the ledger's
// refusals are in the request's state.
func (n *Node) processRefund(ctx context.Context, rr StripeRefundRequest) (StripeRefundRequest, error) {
	g := n.stripe
	save := func() error {
		rr.UpdatedAt = n.cfg.Now().UTC()
		return g.journal.Put(jRefund, rr.ID, rr)
	}
	if rr.Status == refundApproved && len(rr.Items) == 0 {
		if err := n.planRefund(ctx, &rr); err != nil {
			rr.Message = err.Error()
			return rr, save()
		}
		if err := save(); err != nil {
			return rr, err
		}
	}
	for i := range rr.Items {
		it := &rr.Items[i]
		if it.Status == "refunded" || it.Status == "failed" {
			continue
		}
		if it.OpID == nil {
			lost, busy := n.paymentQuorum(ctx, rr.Card, uint64(it.AmountCents))
			v, err := n.stripeSubmit(ctx, func(tx *writeTx) (any, error) {
				if err := refundGate(lost, busy); err != nil {
					if _, done := ledgerRef(tx.n.set, "refund/"+it.Ref); !done {
						return nil, err
					}
				}
				return tx.stripeDebit(rr.Card, it.AmountCents, it.Ref, "online refund to "+it.PaymentIntent)
			})
			if err != nil {
				var ae *APIError
				if errors.As(err, &ae) && ae.Code == "insufficient_funds" {
					it.Status, it.Error = "failed", "the card no longer holds this amount: "+ae.Message
				} else {
					it.Error = "card not debited yet: " + err.Error()
				}
				if err := save(); err != nil {
					return rr, err
				}
				continue
			}
			op := v.(crdt.OpID)
			it.OpID, it.Status, it.Error = &op, "debited", ""
			if err := save(); err != nil {
				return rr, err
			}
		}
		res, err := n.stripeRefundOnce(ctx, it, rr.Card, save)
		switch {
		case err == nil:
			it.Status, it.Refund, it.Error = "refunded", res.ID, ""
		case errors.Is(err, pstripe.ErrUnavailable):
			it.Status, it.Error = "retrying", err.Error()
		default:
			it.Status, it.Error = "failed", err.Error()
			n.log.Warn("stripe refused a refund: the card is debited, the holder is owed it", "request", rr.ID, "payment_intent", it.PaymentIntent, "err", err)
		}
		if err := save(); err != nil {
			return rr, err
		}
	}
	rr.Status = refundDone
	for _, it := range rr.Items {
		switch it.Status {
		case "failed":
			rr.Status = refundPartial
		case "refunded":
		default:
			if rr.Status != refundPartial {
				rr.Status = refundRefunding
			}
		}
	}
	if len(rr.Items) == 0 {
		rr.Status = refundNothing
	}
	return rr, save()
}

// planRefund splits the card's balance over its online payments, newest
// first: each payment gives back at most what the ledger credited for it
// less what Stripe already refunded of it.
func (n *Node) planRefund(ctx context.Context, rr *StripeRefundRequest) error {
	g := n.stripe
	pays, err := g.client.CardPayments(ctx, string(rr.Card))
	if err != nil {
		return fmt.Errorf("cannot list the card's payments: %w", err)
	}
	var balance int64
	n.View(func(set *crdt.OpSet) {
		if c := set.State.Card(rr.Card); c != nil {
			balance = c.Balance
		}
		left := balance
		for i, p := range pays {
			if left <= 0 {
				break
			}
			e, ok := ledgerRef(set, "topup/"+p.PaymentIntent)
			if !ok || e.Card != rr.Card {
				continue // not credited to this card (the ledger decides)
			}
			amt := min(e.Amount-p.Refunded, left)
			if amt <= 0 {
				continue
			}
			rr.Items = append(rr.Items, StripeRefundItem{PaymentIntent: p.PaymentIntent, AmountCents: amt,
				Ref: fmt.Sprintf("%s%s-%d", stripeRefundPrefix, rr.ID, i), Status: "planned"})
			left -= amt
		}
	})
	rr.AmountCents = 0
	for _, it := range rr.Items {
		rr.AmountCents += it.AmountCents
	}
	rr.CashCents = balance - rr.AmountCents
	rr.Status = refundRefunding
	if len(rr.Items) == 0 {
		rr.Status = refundNothing
		rr.Message = "no online payment of this card to refund to: the cash desk refunds the balance"
	}
	return nil
}

// stripeDebit debits card by amount under ref (once: a ref the ledger
// counts is not debited again), with the refund rules: in sync, and the
// balance covers it.
func (tx *writeTx) stripeDebit(card crdt.CardID, amount int64, ref, reason string) (crdt.OpID, error) {
	set := tx.n.set
	if e, ok := ledgerRef(set, "refund/"+ref); ok {
		return e.Winner.ID, nil
	}
	tx.n.iso.mu.Lock()
	isolated := tx.n.iso.isolated
	tx.n.iso.mu.Unlock()
	_, err := set.State.DecideRefund(crdt.RefundInput{Card: card, Amount: uint64(amount), Isolated: isolated})
	switch {
	case errors.Is(err, crdt.ErrRefundOffline):
		return crdt.OpID{}, apiErr(http.StatusServiceUnavailable, "offline", "refunds need the venue to be in sync with the federation")
	case errors.Is(err, crdt.ErrUnknownCard):
		return crdt.OpID{}, ErrUnknownCard
	case errors.Is(err, crdt.ErrInsufficientFunds):
		return crdt.OpID{}, apiErr(http.StatusPaymentRequired, "insufficient_funds", err.Error())
	case err != nil:
		return crdt.OpID{}, err
	}
	op, err := tx.make(&crdt.Refund{Card: card, Amount: uint64(amount), Reason: reason, ExternalRef: ref})
	if err != nil {
		return crdt.OpID{}, err
	}
	tx.n.metrics.refunds.Inc()
	return op.ID(), nil
}

// stripeRefundOnce asks Stripe for an item's refund. A retry first looks
// for the refund a previous attempt may have made (Stripe's idempotency
// keys last 24 hours; a request retried later would refund again).
// The attempt is journaled (save) before the call, so that a crash during
// it makes the next try look first.
func (n *Node) stripeRefundOnce(ctx context.Context, it *StripeRefundItem, card crdt.CardID, save func() error) (pstripe.RefundResult, error) {
	g := n.stripe
	if it.Attempts > 0 {
		res, found, err := g.client.FindRefund(ctx, it.PaymentIntent, it.Ref)
		if err != nil {
			return res, err
		}
		if found {
			return res, nil
		}
	}
	it.Attempts++
	if err := save(); err != nil {
		return pstripe.RefundResult{}, fmt.Errorf("%w: journal: %v", pstripe.ErrUnavailable, err)
	}
	return g.client.Refund(ctx, pstripe.RefundRequest{PaymentIntent: it.PaymentIntent, Amount: it.AmountCents, Ref: it.Ref, Card: string(card)})
}
