package p2p

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// gater is the connection gater: it admits peers whose peer id is the key
// of a member of the federation (an admitted, unrevoked venue, or the
// federation key), plus the configured relays, and never a blocked peer.
// Membership is read from the replica at each connection, so a revocation
// takes effect on the next dial; open connections are closed by the
// network's membership check.
//
// A peer this node does not know may be a venue admitted after the
// federation chain the node holds: an inbound connection from an unknown
// Ed25519 peer id is let through on probation, for JoinTimeout, into the
// join protocol only (see join.go). GossipSub scores a peer on probation
// below its graylist threshold, so that nothing is sent to it and nothing
// from it is read; the sync handler and the pubsub peer filter refuse it as
// a non-member. A peer that fails to prove its admission is refused for
// JoinRefusal.
//
// The gater also holds each peer's conduct (see conduct): a peer that
// opens streams too fast or has too many refused is banned for a back-off
// that grows with each ban. A banned peer counts as blocked: not a
// member, its connections closed (onBan), refused at the handshake, not
// dialed, until the back-off ends.
type gater struct {
	self   peer.ID
	rep    Replica
	relays map[peer.ID]bool
	now    func() time.Time

	mu        sync.RWMutex
	blocked   map[peer.ID]bool
	probation map[peer.ID]*probation
	refused   map[peer.ID]time.Time
	banned    map[peer.ID]time.Time // banned until then (guarded by mu)

	// Conduct (the rates and back-offs of Limits).
	lim   Limits
	onBan func(p peer.ID, d time.Duration, why string)
	cmu   sync.Mutex
	peers map[peer.ID]*conduct
	// hosts is the refused handshakes of each remote IP address (guarded
	// by cmu; see refusedHandshake).
	hosts map[string]*bucket
	// bans counts the bans, bannedConns the connections refused at the
	// handshake because their peer was banned, acceptRefused the inbound
	// connections refused before the handshake (their address's refused
	// handshakes over Limits.HandshakeRefusalBurst).
	bans, bannedConns, acceptRefused atomic.Uint64
}

// probation is an unknown peer's time to prove its admission.
type probation struct {
	until   time.Time
	joining bool // a join exchange with the peer is running
}

var _ connmgr.ConnectionGater = (*gater)(nil)

func newGater(self peer.ID, rep Replica, relays []peer.AddrInfo) *gater {
	g := &gater{self: self, rep: rep, relays: map[peer.ID]bool{}, now: time.Now,
		blocked: map[peer.ID]bool{}, probation: map[peer.ID]*probation{}, refused: map[peer.ID]time.Time{},
		banned: map[peer.ID]time.Time{}, lim: DefaultLimits(), peers: map[peer.ID]*conduct{}, hosts: map[string]*bucket{}}
	for _, r := range relays {
		g.relays[r.ID] = true
	}
	return g
}

// member reports whether p is a member of the federation (and not blocked).
func (g *gater) member(p peer.ID) bool {
	if p == g.self {
		return true
	}
	if g.isBlocked(p) {
		return false
	}
	k, err := KeyOf(p)
	return err == nil && g.rep.IsMember(k)
}

// dialable reports whether this node may dial p: members and relays.
func (g *gater) dialable(p peer.ID) bool {
	if g.relays[p] && !g.isBlocked(p) {
		return true
	}
	return g.member(p)
}

// allowed reports whether a connection with p may exist: members, relays
// and peers on probation.
func (g *gater) allowed(p peer.ID) bool {
	return g.dialable(p) || g.onProbation(p)
}

// isBlocked reports whether p is blocked (Block) or banned for its
// conduct.
func (g *gater) isBlocked(p peer.ID) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.blocked[p] {
		return true
	}
	until, ok := g.banned[p]
	return ok && g.now().Before(until)
}

func (g *gater) setBlocked(p peer.ID, b bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if b {
		g.blocked[p] = true
		delete(g.probation, p)
	} else {
		delete(g.blocked, p)
	}
}

// onProbation reports whether p is an unknown peer whose time to prove its
// admission has not run out.
func (g *gater) onProbation(p peer.ID) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	pr := g.probation[p]
	return pr != nil && g.now().Before(pr.until)
}

// probe puts an unknown peer on probation, unless it is blocked, was
// refused recently, is not a venue key, or too many peers are on
// probation already. It reports whether p is on probation.
func (g *gater) probe(p peer.ID) bool {
	if p == g.self {
		return false
	}
	if _, err := KeyOf(p); err != nil {
		return false
	}
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.blocked[p] || now.Before(g.refused[p]) || now.Before(g.banned[p]) {
		return false
	}
	if pr := g.probation[p]; pr != nil && now.Before(pr.until) {
		return true
	}
	for q, pr := range g.probation {
		if !now.Before(pr.until) {
			delete(g.probation, q)
		}
	}
	for q, until := range g.refused {
		if !now.Before(until) {
			delete(g.refused, q)
		}
	}
	for q, until := range g.banned {
		if !now.Before(until) {
			delete(g.banned, q)
		}
	}
	if len(g.probation) >= maxProbation {
		return false
	}
	// The member opens the join stream as soon as the connection is up;
	// the extra second covers the connection's own setup.
	g.probation[p] = &probation{until: now.Add(JoinTimeout + time.Second)}
	return true
}

// startJoin marks p's join exchange as running; false if p is not on
// probation or an exchange is running already.
func (g *gater) startJoin(p peer.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	pr := g.probation[p]
	if pr == nil || pr.joining || !g.now().Before(pr.until) {
		return false
	}
	pr.joining = true
	return true
}

// endProbation ends p's probation: admitted (it proved its admission) or
// refused for JoinRefusal.
func (g *gater) endProbation(p peer.ID, admitted bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.probation, p)
	if !admitted {
		g.refused[p] = g.now().Add(JoinRefusal)
	}
}

// pubsubScore is GossipSub's application-specific score: a peer on
// probation is far below the graylist threshold, so GossipSub neither
// sends to it (not even this node's own messages, which go to every peer
// scoring above the publish threshold) nor reads what it sends. Its
// subscriptions are recorded all the same, so once it is admitted the
// score is back to normal and gossip flows without reconnecting.
func (g *gater) pubsubScore(p peer.ID) float64 {
	if g.onProbation(p) {
		return probationScore
	}
	return 0
}

// probationScore is a peer on probation's application-specific score:
// below every GossipSub threshold (graylist at -80).
const probationScore = -1000

// InterceptPeerDial refuses to dial non-members.
func (g *gater) InterceptPeerDial(p peer.ID) bool { return g.dialable(p) }

// InterceptAddrDial refuses to dial non-members.
func (g *gater) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return g.dialable(p) }

// InterceptAccept lets an inbound connection reach the handshake (the
// peer is not known before it) unless its IP address had too many
// handshakes refused lately (see refusedHandshake).
func (g *gater) InterceptAccept(cm network.ConnMultiaddrs) bool {
	ip := remoteIP(cm)
	if ip == "" {
		return true
	}
	now := g.now()
	g.cmu.Lock()
	b := g.hosts[ip]
	ok := b == nil || b.level(now, g.lim.HandshakeRefusalRate, g.lim.HandshakeRefusalBurst) >= 1
	g.cmu.Unlock()
	if !ok {
		g.acceptRefused.Add(1)
	}
	return ok
}

// remoteIP is the remote IP address of a direct connection; "" for a
// relayed one (the address is the relay's: other peers come through it).
func remoteIP(cm network.ConnMultiaddrs) string {
	a := cm.RemoteMultiaddr()
	if a == nil {
		return ""
	}
	if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err == nil {
		return ""
	}
	ip, err := manet.ToIP(a)
	if err != nil {
		return ""
	}
	return ip.String()
}

// refusedHandshake charges an inbound handshake refused by the gater to
// the connection's IP address. Past Limits.HandshakeRefusalBurst
// (refilled at HandshakeRefusalRate a second), InterceptAccept refuses the
// address's inbound connections before their handshake, at the cost of
// an accept and a close, until the bucket refills: a banned or refused
// peer that redials in a loop (a stock libp2p host opening streams does,
// each attempt a full Noise handshake) costs this node little. Outbound
// connections are never refused this way, so an honest venue behind the
// same address is still reached by this node's dials.
func (g *gater) refusedHandshake(cm network.ConnMultiaddrs) {
	ip := remoteIP(cm)
	if ip == "" {
		return
	}
	now := g.now()
	g.cmu.Lock()
	defer g.cmu.Unlock()
	b := g.hosts[ip]
	if b == nil {
		if len(g.hosts) >= maxConduct {
			for h, hb := range g.hosts {
				if hb.level(now, g.lim.HandshakeRefusalRate, g.lim.HandshakeRefusalBurst) >= float64(g.lim.HandshakeRefusalBurst) {
					delete(g.hosts, h)
				}
			}
			if len(g.hosts) >= maxConduct {
				return // many addresses refused at once: their peers' own bans hold
			}
		}
		b = &bucket{}
		g.hosts[ip] = b
	}
	b.take(now, g.lim.HandshakeRefusalRate, g.lim.HandshakeRefusalBurst, 1)
}

// InterceptSecured refuses authenticated connections from non-members,
// inbound and outbound, except an inbound connection from an unknown venue
// key, which goes on probation (see probe).
//
// An inbound connection counts connectionStreams streams in its peer's
// conduct: a peer reconnecting in a loop (a stranger whose connections
// yamux closes when their streams overrun its memory) is banned as one
// opening streams too fast; this connection is then refused too.
func (g *gater) InterceptSecured(dir network.Direction, p peer.ID, cm network.ConnMultiaddrs) bool {
	if dir != network.DirInbound {
		return g.dialable(p)
	}
	if g.dialable(p) || g.probe(p) {
		g.charge(p, connectionStreams, 0, "stream")
		if !g.bannedNow(p) {
			return true
		}
	}
	if g.bannedNow(p) {
		g.bannedConns.Add(1)
	}
	g.refusedHandshake(cm)
	return false
}

// connectionStreams is what an inbound connection counts in its peer's
// stream bucket: a handshake costs about as much as twenty stream
// negotiations. With the defaults, a peer may connect 10 times at once
// and 50 times a second; an honest venue connects a few times a minute
// at most.
const connectionStreams = 20

// InterceptUpgraded accepts: the peer was checked when secured.
func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// Conduct: the rate of a peer's inbound streams and of its offences.
//
// Every inbound stream a peer opens costs this node a multistream
// negotiation and a yamux frame even when it is refused at once, and a
// peer on a fast link can open tens of thousands a second: the resource
// manager's limits bound what a peer holds at once, not how fast it
// churns. So each peer has two token buckets: its inbound streams
// (allowed or refused: Limits.PeerStreamRate, PeerStreamBurst) and its
// offences (a stream refused by the resource manager's per-peer limits
// counts one, an anti-entropy penalty other than slowness counts
// penaltyOffence: Limits.PeerRefusalRate, PeerRefusalBurst). A peer that
// empties either is banned: onBan closes its connections, and the gater
// refuses it (blocked, not a member: no gossip read, no handler serves
// it, no dial) for Limits.BanBase, doubled at each ban up to
// Limits.BanMax; a peer not banned for Limits.BanForgive after its last
// ban ended starts again from BanBase. A banned peer that redials costs
// one handshake, refused at InterceptSecured, and a stock libp2p dialer
// then backs off for at least 5 s. Honest traffic stays far below the
// bounds (TestHonestPeerNeverPenalised).

// penaltyOffence is what an anti-entropy penalty (a malformed frame, an
// invalid range or evidence) counts in the offence bucket: five such
// sessions at once ban the peer with the default burst of 50.
const penaltyOffence = 10

// maxConduct bounds the peers whose conduct is kept: past it, the
// records of peers neither banned nor recently active are dropped.
const maxConduct = 1024

// conduct is one peer's buckets and bans.
type conduct struct {
	streams, offences bucket
	bans              int       // bans in a row (the back-off's exponent)
	until             time.Time // banned until then
	last              time.Time // last stream or offence
}

// bucket is a token bucket: tokens refill at a rate up to a burst.
type bucket struct {
	tokens float64
	at     time.Time
}

// take refills b to now and takes n tokens; false if it had fewer.
func (b *bucket) take(now time.Time, rate float64, burst int, n float64) bool {
	if b.at.IsZero() {
		b.tokens = float64(burst)
	} else if el := now.Sub(b.at).Seconds(); el > 0 {
		b.tokens = min(float64(burst), b.tokens+el*rate)
	}
	b.at = now
	if b.tokens < n {
		b.tokens = 0
		return false
	}
	b.tokens -= n
	return true
}

// level is the bucket's tokens at now, without taking any.
func (b *bucket) level(now time.Time, rate float64, burst int) float64 {
	if b.at.IsZero() {
		return float64(burst)
	}
	return min(float64(burst), b.tokens+max(0, now.Sub(b.at).Seconds())*rate)
}

// streamOpened charges p an inbound stream (refused: also an offence).
func (g *gater) streamOpened(p peer.ID, refused bool) {
	off := 0.0
	if refused {
		off = 1
	}
	g.charge(p, 1, off, "stream")
}

// offence charges p an offence of weight w (see penaltyOffence).
func (g *gater) offence(p peer.ID, w float64, why string) { g.charge(p, 0, w, why) }

// charge takes streams and offences tokens from p's buckets and bans p if
// either bucket is empty.
func (g *gater) charge(p peer.ID, streams, offences float64, why string) {
	if p == g.self || p == "" {
		return
	}
	now := g.now()
	g.cmu.Lock()
	c := g.peers[p]
	if c == nil {
		if len(g.peers) >= maxConduct {
			g.pruneConduct(now)
		}
		c = &conduct{}
		g.peers[p] = c
	}
	c.last = now
	if now.Before(c.until) {
		g.cmu.Unlock() // banned already: its connections are being closed
		return
	}
	okS := streams == 0 || c.streams.take(now, g.lim.PeerStreamRate, g.lim.PeerStreamBurst, streams)
	okO := offences == 0 || c.offences.take(now, g.lim.PeerRefusalRate, g.lim.PeerRefusalBurst, offences)
	if okS && okO {
		g.cmu.Unlock()
		return
	}
	if !okS {
		why = "streams or connections opened too fast"
	} else if why == "stream" {
		why = "too many streams refused"
	}
	if !c.until.IsZero() && now.Sub(c.until) >= g.lim.BanForgive {
		c.bans = 0
	}
	d := g.lim.BanBase
	for i := 0; i < c.bans && d < g.lim.BanMax; i++ {
		d *= 2
	}
	d = min(d, g.lim.BanMax)
	c.bans++
	c.until = now.Add(d)
	// Back from the ban with full buckets.
	c.streams, c.offences = bucket{}, bucket{}
	g.cmu.Unlock()

	g.mu.Lock()
	g.banned[p] = now.Add(d)
	delete(g.probation, p)
	g.mu.Unlock()
	g.bans.Add(1)
	if g.onBan != nil {
		g.onBan(p, d, why)
	}
}

// pruneConduct drops the records of peers not banned and not heard for a
// minute, or, if that is not enough, of every peer not banned. Caller
// holds cmu.
func (g *gater) pruneConduct(now time.Time) {
	for _, idle := range []time.Duration{time.Minute, 0} {
		for q, c := range g.peers {
			if !now.Before(c.until.Add(g.lim.BanForgive)) && now.Sub(c.last) >= idle {
				delete(g.peers, q)
			}
		}
		if len(g.peers) < maxConduct {
			return
		}
	}
}

// bannedNow reports whether p is banned for its conduct now.
func (g *gater) bannedNow(p peer.ID) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	until, ok := g.banned[p]
	return ok && g.now().Before(until)
}

// ConductState is what a node holds of one peer's conduct (see
// Limits.PeerStreamRate).
type ConductState struct {
	// Streams and Offences are the tokens left in the peer's buckets now
	// (at most Limits.PeerStreamBurst and PeerRefusalBurst): the lower,
	// the closer the peer is to a ban.
	Streams, Offences float64
	// Bans counts the peer's bans in a row; BannedUntil is when its
	// current or last ban ends (zero if never banned).
	Bans        int
	BannedUntil time.Time
}

// Conduct returns what the node holds of p's conduct.
func (n *Network) Conduct(p peer.ID) ConductState {
	g := n.gater
	now := g.now()
	g.cmu.Lock()
	defer g.cmu.Unlock()
	c := g.peers[p]
	if c == nil {
		return ConductState{Streams: float64(g.lim.PeerStreamBurst), Offences: float64(g.lim.PeerRefusalBurst)}
	}
	return ConductState{
		Streams:     c.streams.level(now, g.lim.PeerStreamRate, g.lim.PeerStreamBurst),
		Offences:    c.offences.level(now, g.lim.PeerRefusalRate, g.lim.PeerRefusalBurst),
		Bans:        c.bans,
		BannedUntil: c.until,
	}
}

// Banned reports whether p is banned for its conduct now.
func (n *Network) Banned(p peer.ID) bool { return n.gater.bannedNow(p) }

// onBan closes a banned peer's connections (in the background: the ban
// may be decided inside the resource manager) and logs the ban.
func (n *Network) onBan(p peer.ID, d time.Duration, why string) {
	n.log.Warn("peer banned: connections closed and refused", "peer", p, "why", why, "for", d)
	n.goSafe(func() { _ = n.host.Network().ClosePeer(p) })
}
