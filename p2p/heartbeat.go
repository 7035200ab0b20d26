package p2p

import (
	"context"
	"math/rand/v2"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// heartbeatAddrTTL is how long an address learnt from a heartbeat is kept.
const heartbeatAddrTTL = 10 * time.Minute

// connectHeartbeatDelay is how soon after a new connection the node
// announces itself, so that a new peer need not wait a whole interval.
const connectHeartbeatDelay = 300 * time.Millisecond

// heartbeatLoop publishes the node's heartbeat at start, then every
// HeartbeatInterval (±10 %) from a random phase, and once soon after a
// member connects, without moving the periodic schedule: nodes that start
// or reconnect together keep their heartbeats spread over the interval
// instead of all publishing (and all verifying the others') at one instant.
func (n *Network) heartbeatLoop() {
	start := time.Now()
	periodic := start.Add(time.Duration(rand.Int64N(int64(n.cfg.HeartbeatInterval))))
	extra := start // the start heartbeat; zero when none is due
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.hbWake:
			if at := time.Now().Add(connectHeartbeatDelay); extra.IsZero() && periodic.After(at) {
				extra = at
				t.Reset(connectHeartbeatDelay)
			}
			continue
		case <-t.C:
		}
		now := time.Now()
		if now.Before(periodic) && (extra.IsZero() || now.Before(extra)) {
			t.Reset(time.Until(nextBeat(periodic, extra)))
			continue // an earlier timer that was moved
		}
		hb := n.makeHeartbeat()
		if err := n.hbTopic.Publish(n.ctx, EncodeHeartbeat(hb, n.signer)); err != nil && n.ctx.Err() == nil {
			n.log.Debug("publish heartbeat", "err", err)
		}
		if !now.Before(periodic) {
			periodic = now.Add(jitter(n.cfg.HeartbeatInterval, 0.1))
		}
		if !extra.IsZero() && !now.Before(extra) {
			extra = time.Time{}
		}
		t.Reset(time.Until(nextBeat(periodic, extra)))
	}
}

// nextBeat returns the earlier of the periodic and the extra heartbeat
// times (extra zero: none).
func nextBeat(periodic, extra time.Time) time.Time {
	if !extra.IsZero() && extra.Before(periodic) {
		return extra
	}
	return periodic
}

// makeHeartbeat describes the node's current state.
func (n *Network) makeHeartbeat() *Heartbeat {
	vv := n.rep.VersionVector()
	digest, ops := n.rep.Digest()
	hb := &Heartbeat{
		Peer:     n.key,
		Time:     n.cfg.Now(),
		Digest:   digest,
		Ops:      ops,
		VVDigest: VVDigest(vv),
		Authors:  len(vv),
		Peers:    len(n.Connected()),
		Isolated: n.isolated.Load(),
	}
	if n.cfg.Isolated != nil {
		hb.Isolated = n.cfg.Isolated()
	}
	for _, a := range n.host.Addrs() {
		// Loopback addresses only help peers on this machine (tests, the
		// demo); advertise them only when there is nothing else.
		if len(hb.Addrs) < MaxHeartbeatAddrs && (!manet.IsIPLoopback(a) || onlyLoopback(n.host.Addrs())) {
			hb.Addrs = append(hb.Addrs, a)
		}
	}
	return hb
}

func onlyLoopback(addrs []ma.Multiaddr) bool {
	for _, a := range addrs {
		if !manet.IsIPLoopback(a) {
			return false
		}
	}
	return true
}

// validateHeartbeat accepts a well-formed heartbeat signed by a member (the
// heartbeat carries its sender's key and signature); it ignores one too old or from the
// future (clock skew is not misbehaviour) and rejects anything else.
func (n *Network) validateHeartbeat(_ context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	if from == n.host.ID() {
		return pubsub.ValidationAccept
	}
	reject := func(why string, err error) pubsub.ValidationResult {
		n.stats.messagesRej.Add(1)
		n.log.Warn("rejected heartbeat", "from", from, "why", why, "err", err)
		return pubsub.ValidationReject
	}
	hb, err := DecodeHeartbeat(msg.Data) // checks the heartbeat's own signature
	if err != nil {
		return reject("malformed", err)
	}
	if hb.Peer == n.key {
		return pubsub.ValidationIgnore
	}
	if !n.rep.IsMember(hb.Peer) {
		return reject("sender is not a member", nil)
	}
	now := n.cfg.Now()
	if age := now.Sub(hb.Time); age > 10*n.cfg.HeartbeatInterval+time.Minute || age < -time.Minute {
		return pubsub.ValidationIgnore
	}
	msg.ValidatorData = hb
	return pubsub.ValidationAccept
}

// readHeartbeats records heartbeats, learns addresses of members it is not
// connected to, and asks for anti-entropy with a peer that is ahead.
func (n *Network) readHeartbeats() {
	for {
		msg, err := n.hbSub.Next(n.ctx)
		if err != nil {
			return
		}
		if msg.ReceivedFrom == n.host.ID() {
			continue
		}
		// The peer that forwarded it reached us just now (quorum.go).
		n.noteTraffic(msg.ReceivedFrom)
		hb, ok := msg.ValidatorData.(*Heartbeat)
		if !ok {
			continue
		}
		p, err := PeerID(hb.Peer)
		if err != nil {
			continue
		}
		n.onHeartbeat(p, hb)
	}
}

func (n *Network) onHeartbeat(p peer.ID, hb *Heartbeat) {
	n.stats.heartbeats.Add(1)
	now := n.cfg.Now()
	n.peersMu.Lock()
	pi := n.peer(p)
	if pi.hb != nil && hb.Time.Before(pi.hb.Time) {
		n.peersMu.Unlock()
		return // an older heartbeat arriving late
	}
	// Silent for more than two heartbeats: the link was down (a partition
	// without a disconnection), so a penalty for slowness was the link's.
	silent := !pi.lastSeen.IsZero() && now.Sub(pi.lastSeen) > 2*n.cfg.HeartbeatInterval
	pi.hb, pi.hbAt, pi.lastSeen = hb, now, now
	recent := now.Sub(pi.lastSync) < n.cfg.HeartbeatInterval
	n.peersMu.Unlock()
	if silent && n.liftSlowPenalty(p) {
		n.log.Info("sync: penalty for slowness lifted, the peer is heard again", "peer", p)
		recent = false
	}

	connected := n.host.Network().Connectedness(p) == network.Connected
	if !connected && len(hb.Addrs) > 0 && !n.gater.isBlocked(p) {
		n.host.Peerstore().AddAddrs(p, hb.Addrs, heartbeatAddrTTL)
		n.redialNow(p) // it is alive and reachable by others: dial it now
	}
	if connected && (!recent || n.farAhead(hb)) && n.behind(hb) {
		// After GapSyncDelay, and only if the peer's latest heartbeat
		// still shows it ahead then: under load a heartbeat is often ahead
		// by ops still in flight on gossip, which arrive within
		// milliseconds.
		n.stats.hbSyncs.Add(1)
		n.wantSync(p, n.pullDelay(hb), func(w *want) { w.hb = true })
	}
}

// behind reports whether a peer's heartbeat shows a state this node should
// pull: a different digest with at least as many ops. (A peer with fewer
// ops pulls from us when it hears our heartbeat.)
func (n *Network) behind(hb *Heartbeat) bool {
	digest, ops := n.rep.Digest()
	return hb.Digest != digest && hb.Ops >= ops
}
