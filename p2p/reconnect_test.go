package p2p_test

import (
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"
)

var partitionFor = flag.Duration("p2p.partition", 0,
	"TestReconnectAfterLongPartitionIgnoresBackoff: how long the partition lasts (default 12 s; e.g. 3m drives the former 1 min dial backoff to its maximum)")

// TestReconnectAfterLongPartitionIgnoresBackoff cuts venue C off from A
// and B (A and B stay connected) with the network's default dial settings:
// every listener is closed and C's connections dropped, so that every dial
// either way is refused by the system (ECONNREFUSED, counted in our
// backoff and in libp2p's swarm backoff) for much longer than the maximum
// dial backoff. Both sides write meanwhile. Once the listeners are back on
// the same ports, the three venues hold the same digest within 5 s.
func TestReconnectAfterLongPartitionIgnoresBackoff(t *testing.T) {
	cut := 12 * time.Second
	if *partitionFor > 0 {
		cut = *partitionFor
	}
	c := newCluster(t, 3)
	c.start(0)
	c.start(1, 0)
	c.start(2, 0)
	waitFor(t, 10*time.Second, "a full mesh", func() bool {
		return c.connected(0, 1) && c.connected(0, 2) && c.connected(1, 2) && c.connected(2, 1)
	})
	c.event(0, "before", "before the cut")
	waitFor(t, 10*time.Second, "convergence before the cut", func() bool { return c.converged(0, 1, 2) })

	swarms := make([]*swarm.Swarm, 3)
	listen := make([][]ma.Multiaddr, 3)
	for i := range swarms {
		sw, ok := c.nodes[i].Network().Host().Network().(*swarm.Swarm)
		if !ok {
			t.Fatalf("venue %d's host has no swarm", i)
		}
		swarms[i], listen[i] = sw, sw.ListenAddresses()
		if len(listen[i]) == 0 {
			t.Fatalf("venue %d listens nowhere", i)
		}
	}
	// The cut: nobody accepts connections, and C's are closed. A and B
	// keep theirs.
	for i, sw := range swarms {
		sw.ListenClose(listen[i]...)
	}
	for _, i := range []int{0, 1} {
		_ = swarms[i].ClosePeer(c.id(2))
		_ = swarms[2].ClosePeer(c.id(i))
	}
	start := time.Now()
	waitFor(t, 5*time.Second, "C cut off", func() bool { return !c.connected(2, 0) && !c.connected(2, 1) })
	for k := 0; time.Since(start) < cut; k++ {
		c.event(0, fmt.Sprintf("a%d", k), "written at A during the cut")
		c.event(2, fmt.Sprintf("c%d", k), "written at C during the cut")
		time.Sleep(time.Second) // the partition's length, not a wait on a condition
	}
	if c.connected(2, 0) || c.connected(2, 1) || c.converged(0, 2) {
		t.Fatal("the cut let C through")
	}
	if !c.converged(0, 1) {
		// A and B, still connected, hold the same ops.
		waitFor(t, 5*time.Second, "A and B in sync during the cut", func() bool { return c.converged(0, 1) })
	}

	// The links come back.
	for i, sw := range swarms {
		if err := sw.Listen(listen[i]...); err != nil {
			t.Fatalf("venue %d listens again on %v: %v", i, listen[i], err)
		}
	}
	healed := time.Now()
	waitFor(t, 5*time.Second, "one digest at A, B and C after the heal", func() bool { return c.converged(0, 1, 2) })
	t.Logf("partition of %s: one digest everywhere %s after the links came back",
		cut.Round(time.Second), time.Since(healed).Round(time.Millisecond))
}
