package p2p

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
)

// Discovery and membership upkeep: the maintenance loop closes connections
// to peers that are no longer members (a revocation arrived) or are
// blocked, dials the bootstrap peers and, up to TargetPeers connections,
// the members whose addresses it learnt (identify, heartbeats, mDNS).
//
// Reconnection after a partition must not wait on a backoff grown while
// the links were down, however long that was. So:
//   - a peer's redials back off from 1 s to only Config.MaxDialBackoff
//     (default 2 s: a dial is a few packets, cheap for a federation of
//     100 venues), counted from the start of the failed dial (a dial that
//     hung until dialTimeout has waited already);
//   - libp2p's own per-address dial backoff (swarm, 5 s growing to 5 min)
//     is cleared before each of our dials: ours paces them;
//   - any sign that the network is back resets every backoff and dials at
//     once: a member connecting, a heartbeat (relayed by others) from a
//     member we are not connected to, a change of the host's addresses;
//   - a connection that opens starts an anti-entropy session at once
//     (onConnected).

const (
	maintainInterval = time.Second
	// dialTimeout bounds one dial. Over a link that drops packets TCP
	// sends its SYN at 0, 1 and 3 s: a 5 s bound then a new dial leaves
	// no gap of more than 2 s without a SYN after the link comes back.
	dialTimeout    = 5 * time.Second
	minDialBackoff = time.Second
	maxDialsAtOnce = 8
)

func (n *Network) maintainLoop() {
	t := time.NewTicker(maintainInterval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		case <-n.maintainWake:
		}
		n.enforceMembership()
		n.dialMissing()
	}
}

// enforceMembership closes the connections of peers the gater would now
// refuse: revoked venues, blocked peers, and (with a caller-supplied host,
// which has no gater) anything that is not a member.
func (n *Network) enforceMembership() {
	for _, p := range n.host.Network().Peers() {
		if !n.gater.allowed(p) {
			n.log.Info("disconnecting a peer that is not a member", "peer", p)
			_ = n.host.Network().ClosePeer(p)
		}
	}
}

// connectBootstrap dials the bootstrap peers not connected yet, waiting at
// most until ctx ends; failures are retried by the maintenance loop.
func (n *Network) connectBootstrap(ctx context.Context) {
	done := make(chan struct{}, len(n.bootstrap))
	started := 0
	for _, ai := range n.bootstrap {
		if ai.ID == n.host.ID() || n.host.Network().Connectedness(ai.ID) == network.Connected {
			continue
		}
		if n.startDial(ai.ID, func() { done <- struct{}{} }) {
			started++
		}
	}
	for range started {
		select {
		case <-done:
		case <-ctx.Done():
			return
		}
	}
}

// dialMissing dials bootstrap peers and known members not connected.
func (n *Network) dialMissing() {
	for _, ai := range n.bootstrap {
		if ai.ID != n.host.ID() && n.host.Network().Connectedness(ai.ID) != network.Connected {
			n.startDial(ai.ID, nil)
		}
	}
	connected := 0
	for _, p := range n.Connected() {
		if n.gater.member(p) {
			connected++
		}
	}
	if connected >= n.cfg.TargetPeers {
		return
	}
	for _, k := range n.rep.Members() {
		if k == n.key {
			continue
		}
		p, err := PeerID(k)
		if err != nil || n.host.Network().Connectedness(p) == network.Connected {
			continue
		}
		if len(n.host.Peerstore().Addrs(p)) == 0 {
			continue
		}
		if n.startDial(p, nil) {
			if connected++; connected >= n.cfg.TargetPeers {
				return
			}
		}
	}
}

// startDial dials p in the background unless it is blocked, being dialed,
// in backoff, or too many dials are running. done, if set, is called when
// the dial ends.
func (n *Network) startDial(p peer.ID, done func()) bool {
	if n.gater.isBlocked(p) {
		return false
	}
	now := time.Now()
	n.peersMu.Lock()
	dialing := 0
	for _, pi := range n.peers {
		if pi.dialing {
			dialing++
		}
	}
	pi := n.peer(p)
	if pi.dialing || now.Before(pi.nextDial) || dialing >= maxDialsAtOnce {
		n.peersMu.Unlock()
		return false
	}
	pi.dialing = true
	n.peersMu.Unlock()
	ok := n.goSafe(func() {
		if done != nil {
			defer done()
		}
		n.clearSwarmBackoff(p)
		ctx, cancel := context.WithTimeout(n.ctx, dialTimeout)
		err := n.host.Connect(ctx, peer.AddrInfo{ID: p})
		cancel()
		n.peersMu.Lock()
		pi := n.peer(p)
		pi.dialing = false
		if err != nil {
			lo := min(minDialBackoff, n.cfg.MaxDialBackoff)
			pi.dialBackoff = min(max(2*pi.dialBackoff, lo), n.cfg.MaxDialBackoff)
			pi.nextDial = now.Add(jitter(pi.dialBackoff, 0.2))
		} else {
			pi.dialBackoff, pi.nextDial = 0, time.Time{}
		}
		n.peersMu.Unlock()
		if err != nil && n.ctx.Err() == nil {
			n.log.Debug("dial failed", "peer", p, "err", err)
		}
	})
	if !ok {
		n.peersMu.Lock()
		pi.dialing = false
		n.peersMu.Unlock()
		if done != nil {
			done()
		}
	}
	return ok
}

// mdnsNotifee receives peers found by mDNS on the local network.
type mdnsNotifee struct{ n *Network }

// HandlePeerFound remembers a member found on the LAN and wakes the dialer.
func (m mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	n := m.n
	if n.closed.Load() || ai.ID == n.host.ID() || !n.gater.member(ai.ID) {
		return
	}
	n.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, heartbeatAddrTTL)
	wake(n.maintainWake)
}

// clearSwarmBackoff forgets libp2p's dial backoff for p (the swarm's, when
// the host has one): the maintenance loop paces the dials itself, and the
// swarm's backoff, grown over a long partition, would refuse the dial that
// finds the link back.
func (n *Network) clearSwarmBackoff(p peer.ID) {
	if sw, ok := n.host.Network().(*swarm.Swarm); ok {
		sw.Backoff().Clear(p)
	}
}

// redialNow resets the dial backoff of the given peers (every peer if
// none is given) and wakes the maintenance loop: something showed that
// the network, or the way to these peers, is back.
func (n *Network) redialNow(peers ...peer.ID) {
	n.peersMu.Lock()
	if len(peers) == 0 {
		for _, pi := range n.peers {
			pi.nextDial, pi.dialBackoff = time.Time{}, 0
		}
	}
	for _, p := range peers {
		if pi := n.peers[p]; pi != nil {
			pi.nextDial, pi.dialBackoff = time.Time{}, 0
		}
	}
	n.peersMu.Unlock()
	wake(n.maintainWake)
}

// addrLoop redials every disconnected peer at once when the host's own
// addresses change (an interface came up, a new lease, a port mapping):
// the way to them may be back.
func (n *Network) addrLoop() {
	sub, err := n.host.EventBus().Subscribe(new(event.EvtLocalAddressesUpdated))
	if err != nil {
		n.log.Warn("cannot watch the host's addresses", "err", err)
		return
	}
	defer sub.Close()
	for {
		select {
		case <-n.ctx.Done():
			return
		case e, ok := <-sub.Out():
			if !ok {
				return
			}
			if ev, isEv := e.(event.EvtLocalAddressesUpdated); isEv && ev.Diffs {
				n.log.Debug("host addresses changed: redialing", "addrs", len(ev.Current))
				n.redialNow()
			}
		}
	}
}
