package p2p_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/node"
	"github.com/cagnotte/cagnotte/p2p"
)

// TestPeersLastSeenIsWhenHeard: a connected peer's LastSeen (the sync
// status's last_seen) is when it was last heard (its last heartbeat), not
// the time of the query: with the clock moved an hour on, it stays put.
func TestPeersLastSeenIsWhenHeard(t *testing.T) {
	c := newCluster(t, 2)
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	for i := range 2 {
		cfg := testNetConfig()
		cfg.Now = now
		if i == 1 {
			cfg.Bootstrap = c.nodes[0].Network().P2PAddrs()
		}
		n, err := node.New(node.Config{DataDir: c.venues[i].Dir, HTTPAddr: "127.0.0.1:0", Logger: testLogger(t, c.venues[i].Name), P2P: &cfg, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(context.Background()); err != nil {
			n.Close()
			t.Fatal(err)
		}
		c.nodes[i] = n
	}
	peerOf := func() p2p.PeerState {
		for _, p := range c.nodes[0].Network().Peers() {
			if p.ID == c.id(1) {
				return p
			}
		}
		return p2p.PeerState{}
	}
	waitFor(t, converge, "a heartbeat from the peer", func() bool {
		p := peerOf()
		return p.Connected && p.Heartbeat != nil && p.LastSeen.Equal(p.HeartbeatAt)
	})
	offset.Store(int64(time.Hour))
	// Heartbeats keep coming (every 100 ms): LastSeen follows them, never
	// the query.
	p := peerOf()
	if !p.Connected || !p.LastSeen.Equal(p.HeartbeatAt) {
		t.Fatalf("LastSeen %s, last heartbeat at %s", p.LastSeen, p.HeartbeatAt)
	}
	// The node's sync status shows the same: between the heartbeats seen
	// just before and just after it.
	before := peerOf().HeartbeatAt
	st := c.nodes[0].Status()
	after := peerOf().HeartbeatAt
	found := false
	for _, ps := range st.Peers {
		if ps.ID == c.id(1).String() {
			found = true
			if ps.LastSeen.Before(before) || ps.LastSeen.After(after) {
				t.Fatalf("sync status last_seen %s, heartbeats at %s and %s", ps.LastSeen, before, after)
			}
		}
	}
	if !found {
		t.Fatal("the peer is not in the sync status")
	}
}
