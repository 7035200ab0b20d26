package p2p

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
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
type gater struct {
	self   peer.ID
	rep    Replica
	relays map[peer.ID]bool
	now    func() time.Time

	mu        sync.RWMutex
	blocked   map[peer.ID]bool
	probation map[peer.ID]*probation
	refused   map[peer.ID]time.Time
}

// probation is an unknown peer's time to prove its admission.
type probation struct {
	until   time.Time
	joining bool // a join exchange with the peer is running
}

var _ connmgr.ConnectionGater = (*gater)(nil)

func newGater(self peer.ID, rep Replica, relays []peer.AddrInfo) *gater {
	g := &gater{self: self, rep: rep, relays: map[peer.ID]bool{}, now: time.Now,
		blocked: map[peer.ID]bool{}, probation: map[peer.ID]*probation{}, refused: map[peer.ID]time.Time{}}
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

func (g *gater) isBlocked(p peer.ID) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.blocked[p]
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
	if g.blocked[p] || now.Before(g.refused[p]) {
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

// InterceptAccept lets every inbound connection reach the handshake: the
// peer is not known before it.
func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

// InterceptSecured refuses authenticated connections from non-members,
// inbound and outbound, except an inbound connection from an unknown venue
// key, which goes on probation (see probe).
func (g *gater) InterceptSecured(dir network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	if g.dialable(p) {
		return true
	}
	return dir == network.DirInbound && g.probe(p)
}

// InterceptUpgraded accepts: the peer was checked when secured.
func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
