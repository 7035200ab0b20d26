package p2p_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

const converge = 15 * time.Second

// TestThreeVenuesConverge: three venues, the second and third bootstrap
// from the first; top-ups, payments and events made on each through the
// HTTP API reach every venue, which all end with the same digest and the
// same card histories; every venue sees the others' heartbeats. The third
// venue speaks QUIC only.
func TestThreeVenuesConverge(t *testing.T) {
	c := newCluster(t, 3)
	c.listen[0] = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	c.listen[2] = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
	c.start(0)
	c.start(1, 0)
	c.start(2, 0)
	waitFor(t, converge, "connections", func() bool { return c.connected(0, 1) && c.connected(0, 2) })
	for _, conn := range c.nodes[2].Network().Host().Network().ConnsToPeer(c.id(0)) {
		if !strings.Contains(conn.RemoteMultiaddr().String(), "/quic-v1") {
			t.Fatalf("venue 2 connected over %s", conn.RemoteMultiaddr())
		}
	}

	for i := range 3 {
		c.topUp(i, card(i), 5000, fmt.Sprintf("top-%d", i))
		c.event(i, fmt.Sprintf("ev%d", i), fmt.Sprintf("Concert %d", i))
		for k := range 3 {
			c.pay(i, card(i), 100+k, fmt.Sprintf("pay-%d-%d", i, k))
		}
	}
	waitFor(t, converge, "same digest", func() bool { return c.converged(0, 1, 2) })
	// Every card is now known everywhere: pay at another venue.
	for i := range 3 {
		c.pay((i+1)%3, card(i), 50, fmt.Sprintf("cross-%d", i))
	}
	waitFor(t, converge, "same digest after cross payments", func() bool { return c.converged(0, 1, 2) })
	for i := range 3 {
		h0 := c.history(0, card(i))
		if len(h0) != 5 {
			t.Fatalf("card %d: %d history entries, want 5", i, len(h0))
		}
		for j := 1; j < 3; j++ {
			if h := c.history(j, card(i)); !slices.Equal(h, h0) {
				t.Fatalf("card %d history differs at venue %d", i, j)
			}
		}
		if n := c.events(i); n != 3 {
			t.Fatalf("venue %d sees %d events, want 3", i, n)
		}
	}
	// Heartbeats: every venue hears the two others, and the status API
	// lists them.
	waitFor(t, converge, "heartbeats", func() bool {
		for i := range 3 {
			heard := 0
			for _, p := range c.nodes[i].Network().Peers() {
				if p.Heartbeat != nil && p.Member {
					heard++
				}
			}
			if heard != 2 {
				return false
			}
		}
		return true
	})
	st := c.nodes[1].Status()
	if len(st.Peers) != 2 {
		t.Fatalf("status peers %+v", st.Peers)
	}
	for _, p := range st.Peers {
		if p.Venue == "" || p.LastSeen.IsZero() || p.Digest == "" {
			t.Fatalf("status peer %+v", p)
		}
	}
	s := c.nodes[0].Network().Stats()
	if s.OpsPublished == 0 || s.OpsReceived == 0 || s.MessagesRejected != 0 {
		t.Fatalf("stats %+v", s)
	}
	t.Logf("venue 0 stats: %+v", s)
}

// TestRestartCatchesUp: a venue is stopped right after taking a payment,
// the others keep writing, it restarts on the same data directory and
// takes payments at once: everything reaches everyone, nothing twice.
func TestRestartCatchesUp(t *testing.T) {
	c := newCluster(t, 3)
	c.start(0)
	c.start(1, 0)
	c.start(2, 0)
	for i := range 3 {
		c.topUp(i, card(i), 5000, fmt.Sprintf("top-%d", i))
	}
	c.topUp(1, card(3), 5000, "top-3")
	waitFor(t, converge, "same digest", func() bool { return c.converged(0, 1, 2) })

	// Payments use one card per venue: one card paying at two venues at
	// the same instant is a double spend (and blocks the card).
	c.pay(2, card(2), 10, "before-stop") // durable, maybe not gossiped yet
	c.stop(2)
	for k := range 4 {
		c.pay(0, card(0), 20+k, fmt.Sprintf("down-0-%d", k))
		c.pay(1, card(1), 30+k, fmt.Sprintf("down-1-%d", k))
		c.pay(1, card(3), 5, fmt.Sprintf("down-1-c3-%d", k))
	}
	c.event(0, "while-down", "Held while venue 2 was down")
	c.start(2, 0)
	c.pay(2, card(2), 15, "after-restart")
	c.pay(0, card(0), 25, "after-restart-0")
	waitFor(t, converge, "same digest after restart", func() bool { return c.converged(0, 1, 2) })
	want := map[int]int{0: 1 + 5, 1: 1 + 4, 2: 1 + 1 + 1, 3: 1 + 4}
	for cd, n := range want {
		h0 := c.history(0, card(cd))
		if len(h0) != n || !unique(h0) {
			t.Fatalf("card %d: history %d entries (unique %v), want %d", cd, len(h0), unique(h0), n)
		}
		for i := 1; i < 3; i++ {
			if h := c.history(i, card(cd)); !slices.Equal(h, h0) {
				t.Fatalf("card %d: history differs at venue %d", cd, i)
			}
		}
	}
}

// TestPartitionHeals: a venue cut off by its gater keeps taking payments
// while the others do too; once let back in it reconnects by itself and
// every venue ends with the same ops, none lost or doubled.
func TestPartitionHeals(t *testing.T) {
	c := newCluster(t, 3)
	c.start(0)
	c.start(1, 0)
	c.start(2, 0)
	c.topUp(0, card(1), 5000, "top-x")
	c.topUp(1, card(3), 5000, "top-z")
	c.topUp(2, card(2), 5000, "top-y")
	waitFor(t, converge, "same digest", func() bool { return c.converged(0, 1, 2) })
	waitFor(t, converge, "full mesh", func() bool { return c.connected(2, 0) && c.connected(2, 1) })

	nw := c.nodes[2].Network()
	nw.Block(c.id(0))
	nw.Block(c.id(1))
	waitFor(t, converge, "venue 2 cut off", func() bool {
		return !c.connected(0, 2) && !c.connected(1, 2) && !c.connected(2, 0) && !c.connected(2, 1)
	})

	for k := range 5 {
		c.pay(2, card(2), 100+k, fmt.Sprintf("cut-2-%d", k))
		c.pay(0, card(1), 200+k, fmt.Sprintf("cut-0-%d", k))
	}
	for k := range 3 {
		c.pay(1, card(3), 300+k, fmt.Sprintf("cut-1-%d", k))
	}
	c.event(2, "cut", "Announced while cut off")
	waitFor(t, converge, "venues 0 and 1 in sync", func() bool { return c.converged(0, 1) })
	if c.converged(0, 2) || c.connected(0, 2) || c.connected(1, 2) {
		t.Fatal("venue 2 was not cut off")
	}

	nw.Unblock(c.id(0))
	nw.Unblock(c.id(1))
	waitFor(t, converge, "same digest after healing", func() bool { return c.converged(0, 1, 2) })
	for cd, n := range map[int]int{1: 1 + 5, 2: 1 + 5, 3: 1 + 3} {
		h0 := c.history(0, card(cd))
		if len(h0) != n || !unique(h0) {
			t.Fatalf("card %d: %d history entries (unique %v), want %d", cd, len(h0), unique(h0), n)
		}
		for i := 1; i < 3; i++ {
			if h := c.history(i, card(cd)); !slices.Equal(h, h0) {
				t.Fatalf("card %d: history differs at venue %d", cd, i)
			}
		}
	}
	if c.events(0) != 1 {
		t.Fatal("event made while cut off is missing")
	}
}

func unique(sorted []string) bool {
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			return false
		}
	}
	return true
}
