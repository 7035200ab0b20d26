package p2p

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
)

// partitionNet builds n venues (in-memory replicas) connected in a full
// mesh, on real libp2p hosts over loopback TCP or on a mocknet, with
// heartbeats and periodic anti-entropy far away, so that what reaches a
// venue within seconds came by gossip.
func partitionNet(t *testing.T, n int, mock bool) []*memNode {
	t.Helper()
	var mn mocknet.Mocknet
	if mock {
		mn = mocknet.New()
		t.Cleanup(func() { _ = mn.Close() })
	}
	nodes := replicaCluster(t, n, mn, func(cfg *Config) {
		// Heartbeats (which start a sync with a peer seen ahead) and the
		// periodic sync are far apart: within seconds, ops move by gossip.
		cfg.HeartbeatInterval = 30 * time.Second
		cfg.SyncInterval, cfg.GapSyncDelay = time.Minute, time.Minute
		cfg.TargetPeers = n - 1
	})
	layoutGroups(t, nodes, make([]int, n))
	return nodes
}

// layoutGroups applies a partition the way the simulations and the fault
// tests do: every pair on different sides blocks each other (both ways),
// the test waits until no connection crosses sides, then every pair on one
// side is unblocked (both ways) and only then connected.
func layoutGroups(t *testing.T, nodes []*memNode, group []int) {
	t.Helper()
	for i, a := range nodes {
		for j, b := range nodes {
			if i != j && group[i] != group[j] {
				a.net.Block(b.net.ID())
			}
		}
	}
	waitUntil(t, 20*time.Second, "the partition", func() bool {
		for i, a := range nodes {
			for j, b := range nodes {
				if i != j && group[i] != group[j] && len(a.net.host.Network().ConnsToPeer(b.net.ID())) > 0 {
					return false
				}
			}
		}
		return true
	})
	for i, a := range nodes {
		for j, b := range nodes {
			if i != j && group[i] == group[j] {
				a.net.Unblock(b.net.ID())
			}
		}
	}
	var wg sync.WaitGroup
	for i, a := range nodes {
		for j, b := range nodes {
			if i >= j || group[i] != group[j] || slices.Contains(a.net.Connected(), b.net.ID()) {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_ = a.net.Connect(ctx, b.net.AddrInfo())
			}()
		}
	}
	wg.Wait()
}

// subscribedAll reports whether every venue sees every other subscribed
// to the ops topic.
func subscribedAll(nodes []*memNode) bool {
	for _, nd := range nodes {
		if len(nd.net.opsTopic.ListPeers()) < len(nodes)-1 {
			return false
		}
	}
	return true
}

// holds reports whether m holds op (author, seq).
func holds(m *memNode, author crdt.PublicKey, seq uint64) bool {
	return m.rep.VersionVector()[author] >= seq
}

// TestGossipReachesOwnSideRightAfterPartition: a full mesh of venues,
// every venue subscribed at every other, is cut in two random sides, and
// at once every venue makes an op: each op reaches every venue of its
// author's side within 3 s (heartbeats and periodic anti-entropy are far
// away: it is gossip that carries them), on real hosts over loopback TCP
// and on a mocknet, for several random cuts (a fresh federation each).
// It failed before flood publishing was turned on (go-libp2p-pubsub v0.19
// has it off): a venue whose GossipSub mesh peers were all across the cut
// reached none of its side until anti-entropy.
func TestGossipReachesOwnSideRightAfterPartition(t *testing.T) {
	for _, tc := range []struct {
		name string
		mock bool
	}{{"tcp", false}, {"mocknet", true}} {
		t.Run(tc.name, func(t *testing.T) {
			const n, rounds = 12, 3
			rng := rand.New(rand.NewPCG(7, 11))
			for r := range rounds {
				group := make([]int, n)
				for i := range group {
					group[i] = rng.IntN(2)
				}
				t.Run(fmt.Sprint("cut", r), func(t *testing.T) {
					gossipAfterCut(t, partitionNet(t, n, tc.mock), group)
				})
			}
		})
	}
}

// gossipAfterCut waits until every venue is subscribed at every other,
// cuts the venues into the sides of group, makes an op at each and
// checks that each op reaches its author's side within 3 s.
func gossipAfterCut(t *testing.T, nodes []*memNode, group []int) {
	waitUntil(t, 30*time.Second, "every venue subscribed at every other", func() bool { return subscribedAll(nodes) })
	layoutGroups(t, nodes, group)
	before := make([]Stats, len(nodes))
	for i, nd := range nodes {
		before[i] = nd.net.Stats()
	}
	start := time.Now()
	type mark struct {
		author crdt.PublicKey
		seq    uint64
	}
	made := make([]mark, len(nodes))
	for i, nd := range nodes {
		op, err := nd.rep.Make(&crdt.TopUp{Card: crdt.CardID(fmt.Sprintf("04A1B2C3%06X", i)), Amount: 100, Method: crdt.MethodCash})
		if err != nil {
			t.Fatal(err)
		}
		made[i] = mark{op.Author, op.Seq}
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		var missing []string
		for i := range nodes {
			for j, nd := range nodes {
				if i != j && group[i] == group[j] && !holds(nd, made[i].author, made[i].seq) {
					missing = append(missing, fmt.Sprintf("%d->%d", i, j))
				}
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sides %v: ops not on their own side within 3 s (author->venue): %v", group, missing)
		}
		time.Sleep(10 * time.Millisecond) // polling the condition above, with its deadline
	}
	var gossip, synced uint64
	for j, nd := range nodes {
		st := nd.net.Stats()
		gossip += st.OpsReceived - before[j].OpsReceived
		synced += st.SyncOpsIn - before[j].SyncOpsIn
	}
	t.Logf("sides %v: every op on its side in %s; ops taken by gossip %d, by anti-entropy (sync on connect) %d", group, time.Since(start), gossip, synced)
}
