package node

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// A node must never fork its own chain. Two things could make it sign an
// op at a seq it already signed: a data dir restored from an older copy
// (a backup, a VM snapshot), whose newer ops only the peers hold, and a
// node that signs before it has heard what the peers hold of its own
// chain. The sign gate closes signing (payments, top-ups, blocks: 503
// catching_up) from start until one sync with a peer has brought the
// node's own ops (or SignGateTimeout passed without any peer: the node is
// isolated and the offline caps apply), and whenever an op of its own key
// arrives beyond its head, until the chain has caught up.

// errCatchingUp refuses a write while the node catches up its own chain.
var errCatchingUp = apiErr(http.StatusServiceUnavailable, "catching_up",
	"this node is catching up its own ops from the other venues (restarted, or restored from an older copy of its data); try again in a few seconds")

// signGate says whether the node may sign.
type signGate struct {
	mu       sync.Mutex
	checking bool   // true until a peer confirmed the node's own chain
	aheadSeq uint64 // the highest own seq seen from peers
}

// check returns errCatchingUp if the node may not sign now; head is the
// node's own chain seq.
func (g *signGate) check(head uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.checking || g.aheadSeq > head {
		return errCatchingUp
	}
	return nil
}

// ahead records that a peer holds the node's own op at seq.
func (g *signGate) ahead(seq uint64, log *slog.Logger) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if seq > g.aheadSeq {
		if g.aheadSeq == 0 {
			log.Warn("peers hold newer ops of this node than its disk (restored from an older copy?): not signing until they are back", "seq", seq)
		}
		g.aheadSeq = seq
	}
}

// arm closes the gate until confirm is called.
func (g *signGate) arm() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.checking = true
}

// confirm opens the gate's start check.
func (g *signGate) confirm() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.checking = false
}

// waitSignable waits, at most d, until the node may sign: a write that
// arrives just after a start waits for the first sync instead of failing.
func (n *Node) waitSignable(ctx context.Context, d time.Duration) {
	deadline := time.Now().Add(d)
	for {
		n.mu.RLock()
		seq, _ := n.set.Head(n.cfg.Key.Public())
		n.mu.RUnlock()
		if n.gate.check(seq) == nil || time.Now().After(deadline) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// confirmOwnChain runs at start with networking: it syncs with the member
// peers it reaches, all at once (one that hangs must not hold the others
// up), and opens the gate after the first sync that completes (which
// brings this node's own ops if that peer holds newer ones); after timeout
// without any, it opens it anyway (an isolated node sells under the
// offline caps).
func (n *Node) confirmOwnChain(ctx context.Context, timeout time.Duration) {
	defer n.gate.confirm()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	done := make(chan peer.ID, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	// A peer whose sync failed (busy with another session, or not a
	// venue's node at all) is asked again after a pause. A session a peer
	// started with this node counts too: both sides send what the other
	// lacks, this node's own ops included.
	tried := map[peer.ID]time.Time{}
	sessions := n.net.Stats().SyncSessions
	for {
		if n.net.Stats().SyncSessions > sessions {
			n.log.Info("own chain confirmed by a sync session with a peer: signing")
			return
		}
		for _, p := range n.net.Connected() {
			if at, ok := tried[p]; ok && time.Since(at) < 3*time.Second {
				continue
			}
			tried[p] = time.Now()
			wg.Add(1)
			go func(p peer.ID) {
				defer wg.Done()
				sctx, scancel := context.WithTimeout(ctx, 2500*time.Millisecond)
				defer scancel()
				if err := n.net.SyncWith(sctx, p); err != nil {
					n.log.Debug("start sync", "peer", p.ShortString(), "err", err)
					return
				}
				select {
				case done <- p:
				default:
				}
			}(p)
		}
		select {
		case p := <-done:
			n.log.Info("own chain confirmed with a peer: signing", "peer", p.ShortString())
			return
		case <-ctx.Done():
			return
		case <-deadline.C:
			n.log.Warn("no peer reachable to confirm this node's own chain: signing (offline caps apply while isolated)")
			return
		case <-tick.C:
		}
	}
}
