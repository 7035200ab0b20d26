package node

import (
	"context"
	"strings"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/p2p"
)

// The first venue of a federation set up as the README says starts with a
// bundle that stops at its own admission: it knows no other venue. It must
// not count itself in sync (and sell without caps) until the others reach
// it, unless the federation really has a single venue (AloneInSync).
func TestVenueThatKnowsNoOtherIsNotInSync(t *testing.T) {
	for _, alone := range []bool{false, true} {
		vs, err := PrepareFederation(t.TempDir(), 1, crdt.DefaultSettings())
		if err != nil {
			t.Fatal(err)
		}
		cfg := p2p.DefaultConfig()
		cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
		cfg.MDNS, cfg.NATPortMap, cfg.HolePunching = false, false, false
		n, err := New(Config{DataDir: vs[0].Dir, HTTPAddr: "127.0.0.1:0", Logger: quietLogger(), P2P: &cfg, AloneInSync: alone})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		iso := n.Isolation()
		if iso.Isolated == alone || !alone && !strings.Contains(iso.Reason, "no other venue known") {
			t.Errorf("AloneInSync=%v: isolation %+v", alone, iso)
		}
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
