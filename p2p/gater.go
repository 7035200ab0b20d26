package p2p

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// gater is the connection gater: it admits only peers whose peer id is the
// key of a member of the federation (an admitted, unrevoked venue, or the
// federation key), plus the configured relays, and never a blocked peer.
// Membership is read from the replica at each connection, so a revocation
// takes effect on the next dial; open connections are closed by the
// network's membership check.
type gater struct {
	self   peer.ID
	rep    Replica
	relays map[peer.ID]bool

	mu      sync.RWMutex
	blocked map[peer.ID]bool
}

var _ connmgr.ConnectionGater = (*gater)(nil)

func newGater(self peer.ID, rep Replica, relays []peer.AddrInfo) *gater {
	g := &gater{self: self, rep: rep, relays: map[peer.ID]bool{}, blocked: map[peer.ID]bool{}}
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

// allowed reports whether a connection with p may exist: members and relays.
func (g *gater) allowed(p peer.ID) bool {
	if g.relays[p] && !g.isBlocked(p) {
		return true
	}
	return g.member(p)
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
	} else {
		delete(g.blocked, p)
	}
}

// InterceptPeerDial refuses to dial non-members.
func (g *gater) InterceptPeerDial(p peer.ID) bool { return g.allowed(p) }

// InterceptAddrDial refuses to dial non-members.
func (g *gater) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return g.allowed(p) }

// InterceptAccept lets every inbound connection reach the handshake: the
// peer is not known before it.
func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

// InterceptSecured refuses authenticated connections from non-members,
// inbound and outbound.
func (g *gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.allowed(p)
}

// InterceptUpgraded accepts: the peer was checked when secured.
func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
