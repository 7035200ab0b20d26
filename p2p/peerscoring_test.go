package p2p

import (
	"fmt"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
)

// TestNoPeerScoringKeepsNoScores runs two small mocknet federations side
// by side, one with GossipSub's peer scoring (the default) and one with
// Config.NoPeerScoring: both carry every venue's ops to one digest, the
// first keeps a score for each peer (refreshed every second), the second
// none, though it ran at least as long, and still gossips heartbeats.
func TestNoPeerScoringKeepsNoScores(t *testing.T) {
	_, off := memCluster(t, 3, func(c *Config) { c.NoPeerScoring = true })
	_, on := memCluster(t, 3, nil)
	for _, nodes := range [][]*memNode{off, on} {
		for i := range nodes {
			for j := i + 1; j < len(nodes); j++ {
				connect(t, nodes[i], nodes[j])
			}
		}
		for k := range 10 {
			for i, n := range nodes {
				if _, err := n.rep.Make(&crdt.TopUp{Card: crdt.CardID(fmt.Sprintf("04A1B2C3D4E5%02X", i)), Amount: uint64(100 + k), Method: crdt.MethodCash}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for _, tc := range []struct {
		name  string
		nodes []*memNode
	}{
		{"scoring on", on},
		{"scoring off", off},
	} {
		waitUntil(t, 10*time.Second, tc.name+": one digest", func() bool { return sameDigest(tc.nodes...) })
		if _, ops := tc.nodes[0].rep.Digest(); ops != 3*10+4 {
			t.Fatalf("%s: %d ops", tc.name, ops)
		}
	}
	waitUntil(t, 10*time.Second, "scores of the scoring federation", func() bool {
		for _, n := range on {
			if len(n.net.Scores()) < len(on)-1 {
				return false
			}
		}
		return true
	})
	for i, n := range off {
		if s := n.net.Scores(); len(s) != 0 {
			t.Fatalf("node %d kept scores with NoPeerScoring: %v", i, s)
		}
	}
	// Heartbeats travel only on GossipSub: without scoring it still
	// delivers them.
	waitUntil(t, 10*time.Second, "heartbeats gossiped without scoring", func() bool {
		for _, n := range off {
			if n.net.Stats().Heartbeats < uint64(len(off)-1) {
				return false
			}
		}
		return true
	})
}
