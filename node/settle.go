package node

import (
	"context"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
)

// Auto-blocking judges a card on its merged balance, so it must not judge
// a ledger that is still arriving. A node catching up (a new venue, or one
// back from a long partition) receives one venue's history after another:
// for a while it may hold a card's payments without the top-ups that paid
// for them, and the card looks overdrawn. So a node blocks a card at once
// only when it has caught up — it holds about as many ops as the venues it
// hears announce in their heartbeats — and otherwise keeps the card as a
// suspect, judged again once it has.

// refreshCaughtUp recomputes whether the node has caught up with the
// venues it hears, from their heartbeats. Without networking it always has.
func (n *Node) refreshCaughtUp() bool {
	if n.net == nil {
		n.caughtUp.Store(true)
		return true
	}
	n.mu.RLock()
	settings := n.set.State.Settings
	own := n.set.Len()
	n.mu.RUnlock()
	window := 2 * time.Duration(settings.IsolationAfter) * time.Millisecond
	now := n.cfg.Now()
	var most uint64
	heard := false
	for _, p := range n.net.Peers() {
		if p.Heartbeat == nil || !p.Member || now.Sub(p.HeartbeatAt) > window {
			continue
		}
		heard = true
		most = max(most, p.Heartbeat.Ops)
	}
	// Heartbeats are a few seconds old: a node that holds at least what
	// they announced, twice in a row, has caught up with what was there.
	ok := heard && own >= most
	was := n.caughtUpOnce.Swap(ok)
	n.caughtUp.Store(ok && was)
	return ok && was
}

// judgeSuspects blocks the suspect cards that still need it, once the node
// has caught up.
func (n *Node) judgeSuspects(ctx context.Context) {
	if !n.refreshCaughtUp() {
		return
	}
	n.mu.RLock()
	pending := len(n.suspects)
	n.mu.RUnlock()
	if pending == 0 {
		return
	}
	r := n.submit(ctx, nil, func(tx *writeTx) result {
		cards := make([]crdt.CardID, 0, len(n.suspects))
		for c := range n.suspects {
			cards = append(cards, c)
		}
		clear(n.suspects)
		if b := n.autoBlock(cards); b != nil {
			tx.ops = append(tx.ops, b.ops...)
		}
		return result{}
	})
	if r.err != nil {
		n.log.Debug("judge suspect cards", "err", r.err)
	}
}

// suspect keeps cards for judging once the node has caught up. Caller
// holds mu.
func (n *Node) suspect(cards []crdt.CardID) {
	for _, c := range cards {
		if n.set.State.Card(c).NeedsAutoBlock() {
			n.suspects[c] = struct{}{}
		}
	}
}
