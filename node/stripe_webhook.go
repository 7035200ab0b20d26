package node

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	pstripe "github.com/cagnotte/cagnotte/node/stripe"
)

// StripeFailure is a paid webhook the gateway could not credit (unknown,
// blocked or over-ceiling card, another currency): kept for staff, who
// refund it or credit it.
type StripeFailure struct {
	PaymentIntent string    `json:"payment_intent"`
	Event         string    `json:"event"`
	Session       string    `json:"session,omitempty"`
	Card          string    `json:"card,omitempty"`
	Amount        int64     `json:"amount_cents"`
	Currency      string    `json:"currency"`
	Reason        string    `json:"reason"`
	Message       string    `json:"message"`
	At            time.Time `json:"at"`
	// Status: open, refunded (to the payer), credited (later, by staff or
	// another gateway), disputed.
	Status string     `json:"status"`
	Refund string     `json:"refund,omitempty"`
	OpID   *crdt.OpID `json:"op_id,omitempty"`
}

// StripeCredit is an online top-up this gateway credited.
type StripeCredit struct {
	PaymentIntent string      `json:"payment_intent"`
	Session       string      `json:"session,omitempty"`
	Card          crdt.CardID `json:"card"`
	Amount        int64       `json:"amount_cents"`
	OpID          crdt.OpID   `json:"op_id"`
	At            time.Time   `json:"at"`
}

// WebhookAnswer is the webhook's 200 answer.
type WebhookAnswer struct {
	Received bool   `json:"received"`
	Event    string `json:"event"`
	// Outcome: credited, duplicate (already counted), recorded (kept for
	// staff), pending, payment_failed, debited, nothing, ignored.
	Outcome string     `json:"outcome"`
	OpID    *crdt.OpID `json:"op_id,omitempty"`
	Reason  string     `json:"reason,omitempty"`
}

// handleStripeWebhook is Stripe's webhook endpoint. It answers 2xx only
// once what the event calls for is durable (the op fsync'd, or the failure
// journaled), so Stripe redelivers whatever a crash interrupted; the
// ledger's external references make the redelivery count nothing twice.
func (n *Node) handleStripeWebhook(w http.ResponseWriter, r *http.Request) {
	g := n.stripe
	if g.client == nil {
		writeError(w, errNotGateway)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
	if err != nil {
		writeError(w, apiErr(http.StatusRequestEntityTooLarge, "invalid_request", "webhook body unreadable or over 256 KiB"))
		return
	}
	ev, err := pstripe.ParseWebhook(body, r.Header.Get("Stripe-Signature"), g.cfg.WebhookSecret, g.cfg.Tolerance)
	switch {
	case errors.Is(err, pstripe.ErrStale):
		n.log.Warn("stripe webhook refused: stale timestamp", "remote", r.RemoteAddr)
		g.webhooks.WithLabelValues("stale_signature").Inc()
		writeError(w, apiErr(http.StatusBadRequest, "stale_signature", "the signed timestamp is outside the tolerance"))
		return
	case errors.Is(err, pstripe.ErrBadSignature):
		n.log.Warn("stripe webhook refused: bad signature", "remote", r.RemoteAddr)
		g.webhooks.WithLabelValues("bad_signature").Inc()
		writeError(w, apiErr(http.StatusBadRequest, "bad_signature", "the Stripe-Signature header does not sign this body"))
		return
	case err != nil:
		n.log.Error("stripe webhook not readable", "event", ev.ID, "type", ev.Type, "err", err)
		g.webhooks.WithLabelValues("unreadable").Inc()
		writeError(w, badRequest("%v", err))
		return
	}
	ans, err := n.applyStripeEvent(r.Context(), ev)
	if err != nil {
		n.log.Warn("stripe webhook not recorded: Stripe will retry", "event", ev.ID, "type", ev.Type, "err", err)
		g.webhooks.WithLabelValues("error").Inc()
		var ae *APIError
		if errors.As(err, &ae) && ae.Status < 500 {
			// A refusal of the node (say, revoked): Stripe must retry,
			// maybe at another gateway.
			err = apiErr(http.StatusServiceUnavailable, "unavailable", ae.Message)
		}
		writeError(w, err)
		return
	}
	if g.cfg.afterDurable != nil {
		g.cfg.afterDurable()
	}
	n.log.Info("stripe webhook", "event", ev.ID, "type", ev.Type, "outcome", ans.Outcome, "payment_intent", ev.PaymentIntent)
	g.webhooks.WithLabelValues(ans.Outcome).Inc()
	writeJSON(w, http.StatusOK, ans)
}

// applyStripeEvent records what ev calls for, durably.
func (n *Node) applyStripeEvent(ctx context.Context, ev pstripe.Event) (WebhookAnswer, error) {
	ans := WebhookAnswer{Received: true, Event: ev.ID, Outcome: "ignored"}
	switch ev.Kind {
	case pstripe.Paid:
		return n.stripePaid(ctx, ev)
	case pstripe.Pending, pstripe.Failed:
		state, outcome := "pending", "pending"
		if ev.Kind == pstripe.Failed {
			state, outcome = "failed", "payment_failed"
		}
		if ev.Session != "" {
			s, _ := n.stripe.session(ev.Session)
			card, _ := crdt.ParseCardID(ev.Card)
			s.Card, s.Amount, s.TopUp, s.PI, s.State = card, ev.Amount, ev.TopUp, ev.PaymentIntent, state
			if err := n.stripe.journal.Put(jSession, ev.Session, s); err != nil {
				return ans, err
			}
		}
		ans.Outcome = outcome
		return ans, nil
	case pstripe.Refunded, pstripe.Disputed:
		return n.stripeExternalDebit(ctx, ev)
	}
	return ans, nil
}

// creditOutcome is what the writer decided for a paid event.
type creditOutcome struct {
	outcome string // credited, duplicate, failed
	op      crdt.OpID
	reason  string
	message string
}

// stripePaid credits a paid event's card once, or records why it cannot.
func (n *Node) stripePaid(ctx context.Context, ev pstripe.Event) (WebhookAnswer, error) {
	g := n.stripe
	ans := WebhookAnswer{Received: true, Event: ev.ID}
	fail := StripeFailure{PaymentIntent: ev.PaymentIntent, Event: ev.ID, Session: ev.Session, Card: ev.Card, Amount: ev.Amount,
		Currency: ev.Currency, At: n.cfg.Now().UTC(), Status: "open"}
	var prior StripeFailure
	if ok, _ := g.journal.Get(jFailure, ev.PaymentIntent, &prior); ok {
		// Already kept for staff: a redelivery changes nothing.
		ans.Outcome, ans.Reason = "recorded", prior.Reason
		return ans, nil
	}
	card, cerr := crdt.ParseCardID(ev.Card)
	var fed string
	n.View(func(set *crdt.OpSet) { fed = set.State.Currency })
	var out creditOutcome
	switch {
	case ev.Currency != fed:
		out = creditOutcome{outcome: "failed", reason: "currency_mismatch", message: fmt.Sprintf("paid in %s, the federation counts in %s", ev.Currency, fed)}
	case cerr != nil:
		out = creditOutcome{outcome: "failed", reason: "unknown_card", message: fmt.Sprintf("the payment names no valid card (%q)", ev.Card)}
	case ev.Amount <= 0 || ev.Amount > crdt.MaxAmount:
		out = creditOutcome{outcome: "failed", reason: "bad_amount", message: fmt.Sprintf("amount %d out of range", ev.Amount)}
	default:
		n.staggerCredit(ctx, ev.PaymentIntent)
		v, err := n.stripeSubmit(ctx, func(tx *writeTx) (any, error) {
			return tx.stripeCredit(card, uint64(ev.Amount), ev.PaymentIntent)
		})
		if err != nil {
			return ans, err
		}
		out = v.(creditOutcome)
	}
	switch out.outcome {
	case "failed":
		fail.Reason, fail.Message = out.reason, out.message
		if err := g.journal.Put(jFailure, ev.PaymentIntent, fail); err != nil {
			return ans, err
		}
		n.log.Warn("stripe payment not credited: kept for staff", "payment_intent", ev.PaymentIntent, "card", ev.Card, "reason", out.reason)
		ans.Outcome, ans.Reason = "recorded", out.reason
	default:
		ans.Outcome = out.outcome
		op := out.op
		ans.OpID = &op
		var c StripeCredit
		if ok, _ := g.journal.Get(jCredit, ev.PaymentIntent, &c); !ok {
			c = StripeCredit{PaymentIntent: ev.PaymentIntent, Session: ev.Session, Card: card, Amount: ev.Amount, OpID: op, At: n.cfg.Now().UTC()}
			if err := g.journal.Put(jCredit, ev.PaymentIntent, c); err != nil {
				n.log.Warn("stripe credit not listed in the journal", "err", err) // the ledger has it
			}
		}
	}
	if ev.Session != "" {
		s, _ := g.session(ev.Session)
		s.Card, s.Amount, s.TopUp, s.PI, s.State = card, ev.Amount, ev.TopUp, ev.PaymentIntent, "paid"
		if err := g.journal.Put(jSession, ev.Session, s); err != nil {
			n.log.Warn("stripe session not journaled", "err", err)
		}
	}
	return ans, nil
}

// stripeCredit makes the online top-up op of a payment, unless the ledger
// already counts its PaymentIntent. A card that cannot be credited is an
// outcome, not an error: the caller records it for staff.
func (tx *writeTx) stripeCredit(card crdt.CardID, amount uint64, pi string) (creditOutcome, error) {
	set := tx.n.set
	if e, ok := ledgerRef(set, "topup/"+pi); ok {
		return creditOutcome{outcome: "duplicate", op: e.Winner.ID}, nil
	}
	if set.State.Card(card) == nil {
		return creditOutcome{outcome: "failed", reason: "unknown_card", message: "no op mentions card " + string(card)}, nil
	}
	_, err := set.State.DecideTopUp(card, amount)
	switch {
	case errors.Is(err, crdt.ErrCardBlocked):
		return creditOutcome{outcome: "failed", reason: "card_blocked", message: "card " + string(card) + " is blocked"}, nil
	case errors.Is(err, crdt.ErrBalanceCeiling):
		return creditOutcome{outcome: "failed", reason: "balance_ceiling", message: err.Error()}, nil
	case err != nil:
		return creditOutcome{}, err
	}
	op, err := tx.make(&crdt.TopUp{Card: card, Amount: amount, Method: crdt.MethodOnline, ExternalRef: pi})
	if err != nil {
		return creditOutcome{}, err
	}
	tx.n.metrics.topups.Inc()
	return creditOutcome{outcome: "credited", op: op.ID()}, nil
}

// stripeExternalDebit records refunds made outside Cagnotte (Stripe's
// dashboard) and disputes: a debit op per refund or dispute, referenced
// by its Stripe id so it counts once, and a block on the card for staff to
// look at. Refunds Cagnotte made itself carry their ledger reference and
// were debited before they were asked for: they are skipped.
func (n *Node) stripeExternalDebit(ctx context.Context, ev pstripe.Event) (WebhookAnswer, error) {
	g := n.stripe
	ans := WebhookAnswer{Received: true, Event: ev.ID, Outcome: "nothing"}
	type result struct {
		credited bool
		ops      []crdt.OpID
	}
	v, err := n.stripeSubmit(ctx, func(tx *writeTx) (any, error) {
		set := tx.n.set
		e, ok := ledgerRef(set, "topup/"+ev.PaymentIntent)
		if !ok {
			return result{}, nil
		}
		var res result
		res.credited = true
		debit := func(amount int64, ref, reason string) error {
			if amount <= 0 || amount > crdt.MaxAmount {
				return nil
			}
			if _, done := ledgerRef(set, "refund/"+ref); done {
				return nil
			}
			op, err := tx.make(&crdt.Refund{Card: e.Card, Amount: uint64(amount), Reason: reason, ExternalRef: ref})
			if err != nil {
				return err
			}
			res.ops = append(res.ops, op.ID())
			tx.n.metrics.refunds.Inc()
			return nil
		}
		flag := ""
		if ev.Kind == pstripe.Disputed {
			flag = "Stripe dispute " + ev.Dispute + " on " + ev.PaymentIntent
			if err := debit(ev.Amount, ev.Dispute, flag); err != nil {
				return nil, err
			}
		}
		for _, r := range ev.Refunds {
			if r.Ref != "" || r.ID == "" || (r.Status != "succeeded" && r.Status != "pending") {
				continue // Cagnotte's own refund (debited first), or no money moved
			}
			reason := "refunded from the Stripe dashboard (" + ev.PaymentIntent + ", " + r.ID + ")"
			before := len(res.ops)
			if err := debit(r.Amount, r.ID, reason); err != nil {
				return nil, err
			}
			if len(res.ops) > before {
				flag = reason
			}
		}
		if flag != "" && len(res.ops) > 0 {
			if c := set.State.Card(e.Card); c != nil && !c.Blocked {
				op, err := tx.make(&crdt.CardBlock{Card: e.Card, Reason: flag + ": check with the holder, then unblock"})
				if err != nil {
					return nil, err
				}
				res.ops = append(res.ops, op.ID())
			}
		}
		return res, nil
	})
	if err != nil {
		return ans, err
	}
	res := v.(result)
	if len(res.ops) > 0 {
		ans.Outcome = "debited"
		ans.OpID = &res.ops[0]
		n.log.Warn("stripe refund or dispute made outside Cagnotte: card debited and blocked", "payment_intent", ev.PaymentIntent, "type", ev.Type)
	}
	if !res.credited {
		// A payment that was never credited (kept for staff): mark it.
		var f StripeFailure
		if ok, _ := g.journal.Get(jFailure, ev.PaymentIntent, &f); ok && f.Status == "open" {
			f.Status = "refunded"
			if ev.Kind == pstripe.Disputed {
				f.Status = "disputed"
			}
			if len(ev.Refunds) > 0 {
				f.Refund = ev.Refunds[0].ID
			}
			if err := g.journal.Put(jFailure, ev.PaymentIntent, f); err != nil {
				return ans, err
			}
			ans.Outcome = "recorded"
		}
	}
	return ans, nil
}

// handleStripeFailures lists the webhook failures kept for staff, newest
// first; a failure another gateway (or staff) credited since shows as
// credited.
func (n *Node) handleStripeFailures(w http.ResponseWriter, r *http.Request) {
	g := n.stripe
	list := journalList[StripeFailure](g.journal, jFailure)
	n.View(func(set *crdt.OpSet) {
		for i := range list {
			if e, ok := ledgerRef(set, "topup/"+list[i].PaymentIntent); ok && list[i].Status == "open" {
				id := e.Winner.ID
				list[i].Status, list[i].OpID = "credited", &id
			}
		}
	})
	writeJSON(w, http.StatusOK, list)
}

// handleStripeTopUps lists the online top-ups this gateway credited,
// newest first (?card= filters one card).
func (n *Node) handleStripeTopUps(w http.ResponseWriter, r *http.Request) {
	list := journalList[StripeCredit](n.stripe.journal, jCredit)
	if c := r.URL.Query().Get("card"); c != "" {
		card, err := parseCard(c)
		if err != nil {
			writeError(w, err)
			return
		}
		kept := list[:0]
		for _, x := range list {
			if x.Card == card {
				kept = append(kept, x)
			}
		}
		list = kept
	}
	writeJSON(w, http.StatusOK, list)
}

type failureActionRequest struct {
	Reason string `json:"reason,omitempty"`
}

// handleStripeFailureAction refunds a failure to its payer, or credits it
// (once the card can take it: unblocked, or below the ceiling).
func (n *Node) handleStripeFailureAction(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		g := n.stripe
		if g.client == nil {
			writeError(w, errNotGateway)
			return
		}
		var req failureActionRequest
		if err := n.decode(w, r, &req); err != nil {
			writeError(w, err)
			return
		}
		pi := r.PathValue("pi")
		var f StripeFailure
		if ok, _ := g.journal.Get(jFailure, pi, &f); !ok {
			writeError(w, apiErr(http.StatusNotFound, "not_found", "no webhook failure for "+pi))
			return
		}
		credited := false
		n.View(func(set *crdt.OpSet) { _, credited = ledgerRef(set, "topup/"+pi) })
		if credited && f.Status == "open" {
			f.Status = "credited"
		}
		if f.Status != "open" {
			writeError(w, apiErr(http.StatusConflict, "conflict", "this payment is already "+f.Status))
			return
		}
		switch action {
		case "refund":
			res, err := g.client.Refund(r.Context(), pstripe.RefundRequest{PaymentIntent: pi, Amount: f.Amount, Ref: "cagnotte-failure-" + pi, Card: f.Card})
			if err != nil {
				writeError(w, stripeError(err))
				return
			}
			f.Status, f.Refund = "refunded", res.ID
		case "credit":
			card, err := crdt.ParseCardID(f.Card)
			if err != nil {
				writeError(w, badRequest("this payment names no valid card"))
				return
			}
			var fed string
			n.View(func(set *crdt.OpSet) { fed = set.State.Currency })
			if f.Currency != fed {
				writeError(w, apiErr(http.StatusConflict, "conflict", "paid in "+f.Currency+": refund it instead"))
				return
			}
			v, err := n.stripeSubmit(r.Context(), func(tx *writeTx) (any, error) {
				return tx.stripeCredit(card, uint64(f.Amount), pi)
			})
			if err != nil {
				writeError(w, err)
				return
			}
			out := v.(creditOutcome)
			if out.outcome == "failed" {
				writeError(w, apiErr(http.StatusConflict, out.reason, "still cannot credit: "+out.message))
				return
			}
			op := out.op
			f.Status, f.OpID = "credited", &op
		}
		if err := g.journal.Put(jFailure, pi, f); err != nil {
			writeError(w, err)
			return
		}
		n.log.Info("stripe webhook failure resolved", "payment_intent", pi, "status", f.Status)
		writeJSON(w, http.StatusOK, f)
	}
}

// staggerCredit waits this gateway's delay for pi (see
// StripeConfig.StaggerWindow), or less if the ledger counts pi already.
func (n *Node) staggerCredit(ctx context.Context, pi string) {
	window := n.stripe.cfg.StaggerWindow
	if window <= 0 {
		return
	}
	key := n.cfg.Key.Public()
	h := sha256.Sum256(append([]byte(pi+"\x00"), key[:]...))
	delay := time.Duration(binary.BigEndian.Uint64(h[:8]) % uint64(window))
	credited := func() (ok bool) {
		n.View(func(set *crdt.OpSet) { _, ok = ledgerRef(set, "topup/"+pi) })
		return ok
	}
	if credited() {
		return
	}
	timer := time.NewTimer(delay)
	defer timer.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			return
		case <-tick.C:
			if credited() {
				return
			}
		}
	}
}
