package node

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/p2p"
)

// The quorum check and reservations before a payment or refund taken in
// sync (docs/offline.md, "In sync: the quorum check and reservations").
//
//  1. A node that believes itself in sync proves that it reaches a quorum
//     of venues now (p2p.Network.CheckQuorum: pings shared by concurrent
//     payments, recent traffic, relayed heartbeats in a large federation);
//     if it cannot, the payment is taken under the offline caps.
//  2. A payment above the floor limit (crdt.NeedsReservation) then
//     reserves the card with a majority of its coordinators
//     (crdt.Coordinators): refused with 409 card_busy while another venue
//     holds the card, taken under the offline caps (which refuse it) when
//     the coordinators cannot be reached.

// ErrCardBusy refuses a payment of a card that another venue is charging
// at this moment (it holds the card's reservation).
var ErrCardBusy = apiErr(http.StatusConflict, "card_busy", "this card is being charged at another venue right now; try again in a few seconds")

// quorumNeed returns how many other venues the isolation rule needs.
func (n *Node) quorumNeed() int {
	n.mu.RLock()
	settings := n.set.State.Settings
	others := 0
	for k, v := range n.set.State.Venues {
		if !v.Revoked && k != n.cfg.Key.Public() {
			others++
		}
	}
	n.mu.RUnlock()
	_, _, need := settings.Quorum(make([]int64, others), 0)
	return need
}

func (n *Node) isolatedNow() bool {
	n.iso.mu.Lock()
	defer n.iso.mu.Unlock()
	return n.iso.isolated
}

// quorumLost reports whether a node that believes itself in sync cannot
// reach a quorum of venues right now. Heartbeats only tell that the
// quorum was there within IsolationAfter; fresh proof (a ping answered or
// a message received within the last 250 ms, or in a federation larger
// than the node's connections a relayed heartbeat of the current
// interval) tells it is there now, and at most one side of a split can
// reach a majority. A payment that finds the quorum lost is taken under
// the offline caps, as if the node were isolated. The check waits at most
// Config.QuorumTimeout, whatever the request's own deadline.
func (n *Node) quorumLost(ctx context.Context) bool {
	if n.net == nil {
		return false // without a network, isolation comes from heartbeats alone
	}
	if n.isolatedNow() {
		return false // the caps apply anyway
	}
	need := n.quorumNeed()
	if need == 0 {
		return false
	}
	res := n.net.CheckQuorum(ctx, p2p.QuorumQuery{Need: need, Budget: n.cfg.QuorumTimeout})
	if !res.OK {
		n.metrics.quorumLost.Inc()
		n.log.Warn("payment under offline caps: quorum not reachable now", "reached", res.Reached, "direct", res.Direct, "relayed", res.Relayed, "need", need)
		return true
	}
	return false
}

// paymentQuorum runs the checks before a payment or refund of amount on
// card: lost is quorumLost's answer (the caps apply); busy, if not nil, is
// the refusal to answer instead of deciding (another venue holds the
// card). A payment above the floor limit in sync reserves the card; when
// its coordinators cannot be reached, lost is true and the caps refuse it.
func (n *Node) paymentQuorum(ctx context.Context, card crdt.CardID, amount uint64) (lost bool, busy error) {
	if n.quorumLost(ctx) {
		return true, nil
	}
	if n.net == nil || n.isolatedNow() {
		return false, nil
	}
	n.mu.RLock()
	needs := crdt.NeedsReservation(n.set.State.Settings, amount)
	var coords []crdt.PublicKey
	if needs {
		coords = crdt.Coordinators(card, n.set.State.ReservationVenues(), crdt.ReservationCoordinators)
	}
	n.mu.RUnlock()
	if !needs {
		return false, nil
	}
	start := time.Now()
	res, err := n.net.Reserve(ctx, card, amount, coords, n.cfg.QuorumTimeout)
	switch {
	case errors.Is(err, crdt.ErrCardBusy):
		n.log.Warn("payment refused: card reserved by another venue", "card", card, "holder", res.Holder.Short())
		return false, ErrCardBusy
	case err != nil:
		n.metrics.quorumLost.Inc()
		n.log.Warn("payment under offline caps: the card's reservation coordinators are not reachable", "card", card,
			"granted", res.Granted, "busy", res.Busy, "failed", res.Failed, "err", err)
		return true, nil
	}
	// A coordinator that granted after another venue's payment of the card
	// saw that payment: wait until this node knows it too.
	if !n.waitCardCounter(ctx, card, res.Counter, n.cfg.QuorumTimeout-time.Since(start)) {
		n.log.Warn("payment refused: the card was just charged at another venue and that payment has not arrived yet", "card", card, "counter", res.Counter)
		return false, ErrCardBusy
	}
	return false, nil
}

// waitCardCounter waits, at most budget, until this node knows the card's
// payments up to counter.
func (n *Node) waitCardCounter(ctx context.Context, card crdt.CardID, counter uint64, budget time.Duration) bool {
	if n.CardCounter(card) >= counter {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, max(budget, 10*time.Millisecond))
	defer cancel()
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return n.CardCounter(card) >= counter
		case <-t.C:
			if n.CardCounter(card) >= counter {
				return true
			}
		}
	}
}

// CardCounter returns the highest payment counter this node knows for
// card (0 if it does not know the card). The reservation protocol
// (p2p.CardCounters) sends it with each grant.
func (n *Node) CardCounter(card crdt.CardID) uint64 {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if c := n.set.State.Card(card); c != nil {
		return c.Counter
	}
	return 0
}

// writeGated runs fn in the writer like write, unless gate is not nil: the
// gate's refusal is then the answer, given after the idempotency check
// (so a retried request that already succeeded gets its stored answer).
func (n *Node) writeGated(w http.ResponseWriter, r *http.Request, ik *idemKey, gate error, fn func(tx *writeTx) (any, error)) {
	n.write(w, r, ik, func(tx *writeTx) (any, error) {
		if gate != nil {
			return nil, gate
		}
		return fn(tx)
	})
}

// errRefundQuorum refuses a refund when the quorum cannot be proven now
// (issue 9, scenario 6): like a payment under the caps, but a refund has
// no cap.
var errRefundQuorum = apiErr(http.StatusServiceUnavailable, "offline", "refunds need the venue to reach the federation now; try again in a moment")

// refundGate is the gate of a refund: refused when the quorum is lost or
// another venue holds the card.
func refundGate(lost bool, busy error) error {
	if lost {
		return errRefundQuorum
	}
	return busy
}
