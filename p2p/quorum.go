package p2p

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
)

// Reachable pings the connected member venues at once (libp2p's ping
// protocol) and returns how many answered within timeout, stopping early
// once need have. Heartbeats arrive every few seconds, so a venue cut off a
// moment ago still holds fresh ones: a node asks Reachable before taking a
// payment as "in sync", and at most one side of a split can reach a
// majority.
func (n *Network) Reachable(ctx context.Context, need int, timeout time.Duration) int {
	if need <= 0 {
		return 0
	}
	members := map[peer.ID]bool{}
	for _, k := range n.rep.Members() {
		if k == n.key {
			continue
		}
		if id, err := PeerID(k); err == nil {
			members[id] = true
		}
	}
	var peers []peer.ID
	for _, p := range n.host.Network().Peers() {
		if members[p] && n.host.Network().Connectedness(p) == network.Connected {
			peers = append(peers, p)
		}
	}
	if len(peers) < need {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	answers := make(chan bool, len(peers))
	for _, p := range peers {
		go func(p peer.ID) {
			select {
			case res, ok := <-ping.Ping(ctx, n.host, p):
				answers <- ok && res.Error == nil
			case <-ctx.Done():
				answers <- false
			}
		}(p)
	}
	got := 0
	for range peers {
		if <-answers {
			got++
			if got >= need {
				return got // the others stop with ctx
			}
		}
	}
	return got
}
