package p2p

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Discovery and membership upkeep: the maintenance loop closes connections
// to peers that are no longer members (a revocation arrived) or are
// blocked, dials the bootstrap peers and, up to TargetPeers connections,
// the members whose addresses it learnt (identify, heartbeats, mDNS), each
// with exponential backoff.

const (
	maintainInterval = time.Second
	dialTimeout      = 10 * time.Second
	minDialBackoff   = time.Second
	maxDialBackoff   = time.Minute
	maxDialsAtOnce   = 8
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
		ctx, cancel := context.WithTimeout(n.ctx, dialTimeout)
		err := n.host.Connect(ctx, peer.AddrInfo{ID: p})
		cancel()
		n.peersMu.Lock()
		pi := n.peer(p)
		pi.dialing = false
		if err != nil {
			pi.dialBackoff = min(max(2*pi.dialBackoff, minDialBackoff), maxDialBackoff)
			pi.nextDial = time.Now().Add(jitter(pi.dialBackoff, 0.2))
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
