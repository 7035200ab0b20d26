package node

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/p2p"
)

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// TestOfflineOverRealNetwork runs the offline rules end to end over real
// libp2p hosts: heartbeats make the venues in sync, cutting the link makes
// them isolated (caps apply), a card spent on both sides is a double spend
// found on every venue once the link heals, and the auto-block spreads.
func TestOfflineOverRealNetwork(t *testing.T) {
	settings := crdt.DefaultSettings()
	settings.HeartbeatInterval = 100
	settings.IsolationAfter = 600
	nodes := startNetworked(t, 2, settings)
	a, b := nodes[0], nodes[1]
	inSync := func(v *testVenue) bool { return !v.node.Isolation().Isolated }
	waitUntil(t, 10*time.Second, "both venues in sync", func() bool { return inSync(a) && inSync(b) })

	card := "04AABBCCDD0100"
	// 40.00: the clone's two offline payments of 25.00 overdraw it, so
	// money is missing after the merge and the card is blocked.
	if st, r := a.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 4000, "method": "cash", "idempotency_key": "t"}); st != 200 {
		t.Fatal(st, r)
	}
	waitUntil(t, 10*time.Second, "the top-up to reach b", func() bool { return a.digest() == b.digest() })

	// Cut the link: both sides become isolated.
	a.node.Network().Block(b.node.Network().ID())
	b.node.Network().Block(a.node.Network().ID())
	waitUntil(t, 10*time.Second, "both venues isolated", func() bool { return !inSync(a) && !inSync(b) })
	if st, r := a.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 3000, "idempotency_key": "big"}); st != 402 || r["error"] != "offline_cap_exceeded" {
		t.Fatalf("payment above the offline floor: %d %v", st, r)
	}
	// The card and its clone spend on both sides with the same counter.
	if st, r := a.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 2500, "idempotency_key": "x"}); st != 200 || r["offline"] != true {
		t.Fatalf("offline payment at a: %d %v", st, r)
	}
	if st, r := b.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 2500, "idempotency_key": "y"}); st != 200 || r["offline"] != true {
		t.Fatalf("offline payment at b: %d %v", st, r)
	}

	// Heal: back in sync, the double spend is found on both, the card
	// blocked everywhere, and the ledger stays exact.
	a.node.Network().Unblock(b.node.Network().ID())
	b.node.Network().Unblock(a.node.Network().ID())
	waitUntil(t, 15*time.Second, "convergence after heal", func() bool {
		if a.digest() != b.digest() || !inSync(a) || !inSync(b) {
			return false
		}
		_, cv := b.do("GET", "/api/v1/cards/"+card, b.token, nil)
		return cv["blocked"] == true
	})
	for _, v := range nodes {
		_, list := v.do("GET", "/api/v1/conflicts", "", nil)
		if strings.Count(list["raw"].(string), `"kind":"double_spend"`) != 1 {
			t.Fatalf("conflicts: %s", list["raw"])
		}
		_, cv := v.do("GET", "/api/v1/cards/"+card, v.token, nil)
		if cv["balance_cents"] != -1000.0 || cv["blocked"] != true {
			t.Fatalf("card after heal: %v", cv)
		}
		if st, r := v.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 1, "idempotency_key": "after"}); st != 403 || r["error"] != "card_blocked" {
			t.Fatalf("blocked card paid: %d %v", st, r)
		}
	}
}

// startNetworked starts venues of a new federation on real libp2p hosts on
// loopback, each bootstrapping from the first.
func startNetworked(t *testing.T, venues int, settings crdt.Settings) []*testVenue {
	t.Helper()
	vs, err := PrepareFederation(t.TempDir(), venues, settings)
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*testVenue
	for i, v := range vs {
		cfg := p2p.DefaultConfig()
		cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
		cfg.MDNS, cfg.NATPortMap, cfg.HolePunching = false, false, false
		cfg.SyncInterval = 500 * time.Millisecond
		if i > 0 {
			cfg.Bootstrap = nodes[0].node.Network().P2PAddrs()
		}
		n, err := New(Config{DataDir: v.Dir, HTTPAddr: "127.0.0.1:0", Logger: quietLogger(), P2P: &cfg})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		tv := &testVenue{t: t, dir: v.Dir, token: v.Token, node: n, api: "http://" + n.Addr()}
		t.Cleanup(tv.stop)
		nodes = append(nodes, tv)
	}
	return nodes
}

// TestQuorumCheckClosesTheDetectionWindow cuts the link while both venues
// still hold fresh heartbeats (isolation is noticed only after 30 s here):
// the payment's quorum ping fails, so the caps apply at once on both sides
// and a card cannot spend its whole balance twice.
func TestQuorumCheckClosesTheDetectionWindow(t *testing.T) {
	settings := crdt.DefaultSettings()
	settings.BalanceMax = 0 // a large balance, to show what the caps keep
	settings.HeartbeatInterval = 100
	settings.IsolationAfter = 30000
	nodes := startNetworked(t, 2, settings)
	a, b := nodes[0], nodes[1]
	inSync := func(v *testVenue) bool { return !v.node.Isolation().Isolated }
	waitUntil(t, 10*time.Second, "both venues in sync", func() bool { return inSync(a) && inSync(b) })
	card := "04AABBCCDD0200"
	a.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 30000, "method": "cash", "idempotency_key": "t"})
	waitUntil(t, 10*time.Second, "the top-up to reach b", func() bool { return a.digest() == b.digest() })
	if st, r := a.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 1000, "idempotency_key": "online"}); st != 200 || r["offline"] == true {
		t.Fatalf("online payment: %d %v", st, r)
	}
	a.node.Network().Block(b.node.Network().ID())
	b.node.Network().Block(a.node.Network().ID())
	waitUntil(t, 10*time.Second, "the link to drop", func() bool {
		return len(a.node.Network().Host().Network().ConnsToPeer(b.node.Network().ID())) == 0
	})
	if !inSync(a) || !inSync(b) {
		t.Fatal("heartbeats should still look fresh")
	}
	for _, v := range nodes {
		if st, r := v.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 20000, "idempotency_key": "all"}); st != 402 || r["error"] != "offline_cap_exceeded" {
			t.Fatalf("whole balance in the detection window: %d %v", st, r)
		}
		if st, r := v.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 2500, "idempotency_key": "small"}); st != 200 || r["offline"] != true {
			t.Fatalf("small payment under the caps: %d %v", st, r)
		}
	}
	_, m := a.do("GET", "/metrics", "", nil)
	if !strings.Contains(m["raw"].(string), "cagnotte_quorum_lost_total 2") {
		t.Fatal("quorum loss not counted")
	}
}
