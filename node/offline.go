package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
)

// Offline selling. A node is in sync when, within the federation's
// IsolationAfter, it has heard heartbeats from at least MinPeersPercent of the
// other admitted venues; otherwise it is isolated and payments must also
// keep within the offline caps (crdt.State.DecidePayment). What the venue
// took while isolated is an OfflineLedger; the moment it lost sync is kept in
// DataDir/offline-since so a restart cannot reset the caps.

// OfflineSinceFile holds the Unix ms when the node lost sync (absent: in sync).
const OfflineSinceFile = "offline-since"

// PeerView tells when each venue was last heard from. p2p.Network
// implements it from heartbeats; tests of the rules may pass their own.
type PeerView interface {
	LastHeard() map[crdt.PublicKey]time.Time
}

// isolation is the node's sync state.
type isolation struct {
	mu       sync.Mutex
	isolated bool
	reason   string
	since    time.Time // when isolated; zero when in sync
	ledger   crdt.OfflineLedger
	peers    PeerView
}

// SetPeerView gives the node its source of heartbeats.
func (n *Node) SetPeerView(p PeerView) {
	n.iso.mu.Lock()
	n.iso.peers = p
	n.iso.mu.Unlock()
	n.evaluateIsolation()
}

// evaluateIsolation recomputes the sync state and returns it. State changes
// are logged, persisted and counted. The decision and the offline ledger's
// rebuild happen under the set's read lock and the isolation lock held
// together: payments take both (in the writer), so none acknowledged while
// the ledger is rebuilt can be left out of it.
func (n *Node) evaluateIsolation() (bool, string) {
	n.iso.mu.Lock()
	peers := n.iso.peers
	n.iso.mu.Unlock()
	var heardMap map[crdt.PublicKey]time.Time
	if peers != nil {
		heardMap = peers.LastHeard()
	}

	n.mu.RLock()
	defer n.mu.RUnlock()
	n.iso.mu.Lock()
	defer n.iso.mu.Unlock()
	now := n.cfg.Now()
	settings := n.set.State.Settings
	var others []crdt.PublicKey
	for k, v := range n.set.State.Venues {
		if !v.Revoked && k != n.cfg.Key.Public() {
			others = append(others, k)
		}
	}
	heard := make([]int64, len(others))
	for i, k := range others {
		if t, ok := heardMap[k]; ok {
			heard[i] = t.UnixMilli()
		}
	}
	inSync, quorumAt, need := settings.Quorum(heard, now.UnixMilli())
	isolated, reason := !inSync, ""
	if len(others) == 0 && n.cfg.P2P != nil && !n.cfg.AloneInSync {
		// A networked venue that knows no other venue has not heard of the
		// others yet (its bundle stops at its own admission): it is not in
		// sync with anyone until a newcomer's admission reaches it.
		isolated, reason = true, "no other venue known yet: waiting for the others to connect (a federation of one venue sets AloneInSync)"
	} else if isolated {
		window := time.Duration(settings.IsolationAfter) * time.Millisecond
		fresh := 0
		for _, h := range heard {
			if h > 0 && now.UnixMilli()-h <= window.Milliseconds() {
				fresh++
			}
		}
		reason = fmt.Sprintf("heard %d of %d other venues in the last %s (need %d)", fresh, len(others), window, need)
	}
	if isolated != n.iso.isolated {
		if isolated {
			// Payments made since the quorum was last heard, before the
			// silence was noticed, count towards the caps too.
			since := now.UnixMilli()
			if quorumAt > 0 && quorumAt < since {
				since = quorumAt
			}
			n.iso.ledger = crdt.RebuildOfflineLedger(n.set.State, n.cfg.Key.Public(), since)
			n.iso.since = time.UnixMilli(since)
			lvl := slog.LevelWarn
			if now.Sub(n.started) < time.Duration(settings.IsolationAfter)*time.Millisecond {
				lvl = slog.LevelInfo // just started: no heartbeat could have arrived yet
			}
			n.log.Log(context.Background(), lvl, "node is isolated: offline caps apply", "reason", reason)
			if err := WriteFileAtomic(filepath.Join(n.cfg.DataDir, OfflineSinceFile), []byte(strconv.FormatInt(since, 10)+"\n"), 0o644); err != nil {
				n.log.Error("persist isolation", "err", err)
			}
		} else {
			n.log.Info("node is back in sync", "isolated_for", now.Sub(n.iso.since).Round(time.Second), "offline_total_cents", n.iso.ledger.Total)
			n.iso.since = time.Time{}
			n.iso.ledger.Reset(0)
			if err := os.Remove(filepath.Join(n.cfg.DataDir, OfflineSinceFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
				n.log.Error("persist isolation", "err", err)
			}
		}
		n.metrics.isolationChanges.Inc()
	}
	n.iso.isolated, n.iso.reason = isolated, reason
	if isolated {
		n.metrics.isolated.Set(1)
	} else {
		n.metrics.isolated.Set(0)
	}
	return isolated, reason
}

// restoreIsolation reads the persisted isolation start and rebuilds the
// offline ledger from the node's own payments since then. Caller has
// exclusive access (during New).
func (n *Node) restoreIsolation() {
	p, err := os.ReadFile(filepath.Join(n.cfg.DataDir, OfflineSinceFile))
	if err != nil {
		return
	}
	ms, err := strconv.ParseInt(strings.TrimSpace(string(p)), 10, 64)
	if err != nil || ms <= 0 {
		return
	}
	n.iso.isolated = true
	n.iso.reason = "restarted while isolated"
	n.iso.since = time.UnixMilli(ms)
	n.iso.ledger = crdt.RebuildOfflineLedger(n.set.State, n.cfg.Key.Public(), ms)
}

// IsolationStatus is the isolation part of the sync status.
type IsolationStatus struct {
	Isolated bool
	Reason   string
	Since    time.Time
	Offline  uint64 // cents taken offline since Since
}

// Isolation returns the node's current sync state.
func (n *Node) Isolation() IsolationStatus {
	n.evaluateIsolation()
	n.iso.mu.Lock()
	defer n.iso.mu.Unlock()
	return IsolationStatus{Isolated: n.iso.isolated, Reason: n.iso.reason, Since: n.iso.since, Offline: n.iso.ledger.Total}
}

// watchIsolation re-evaluates the sync state every second, so that changes
// are logged and exported even when no payment asks.
func (n *Node) watchIsolation(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.evaluateIsolation()
			n.retryFuture(ctx)
			n.judgeSuspects(ctx)
		}
	}
}
