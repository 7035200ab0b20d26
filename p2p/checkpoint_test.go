package p2p_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/node"
	"github.com/cagnotte/cagnotte/p2p"
)

// A venue serves the checkpoint it keeps over CheckpointProtocol: to a
// member, within the size the member accepts, and to nobody else; a
// checkpoint over the asker's bound is refused before it is read.
func TestCheckpointServedToMembersWithinBounds(t *testing.T) {
	c := newCluster(t, 2)
	start := func(i int, boot ...int) *node.Node {
		cfg := testNetConfig()
		for _, b := range boot {
			cfg.Bootstrap = append(cfg.Bootstrap, c.nodes[b].Network().P2PAddrs()...)
		}
		n, err := node.New(node.Config{DataDir: c.venues[i].Dir, HTTPAddr: "127.0.0.1:0", Logger: testLogger(t, c.venues[i].Name), P2P: &cfg,
			Checkpoints: node.CheckpointConfig{Every: 200 * time.Millisecond, QuietFor: 300 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(context.Background()); err != nil {
			n.Close()
			t.Fatal(err)
		}
		c.nodes[i] = n
		return n
	}
	a := start(0)
	b := start(1, 0)
	waitFor(t, 10*time.Second, "both venues connected", func() bool { return c.connected(0, 1) })
	c.topUp(0, card(1), 1000, "t1")
	waitFor(t, 10*time.Second, "the top-up to reach b", func() bool { return c.converged(0, 1) })
	waitFor(t, 15*time.Second, "a checkpoint attested by both", func() bool {
		sa, sb := a.CheckpointStatus(), b.CheckpointStatus()
		return sa.Saved && sb.Saved && sa.Attestations == 2 && sb.Attestations == 2
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := b.Network().FetchCheckpoint(ctx, c.id(0), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	members := map[crdt.PublicKey]bool{c.venues[0].Key: true, c.venues[1].Key: true}
	if _, err := crdt.VerifyCheckpoint(got.Bytes, got.Attestations, members, 2); err != nil {
		t.Fatalf("served checkpoint: %v", err)
	}
	if _, err := b.Network().FetchCheckpoint(ctx, c.id(0), 16); err == nil || errors.Is(err, p2p.ErrNoCheckpoint) {
		t.Fatalf("a checkpoint over the accepted size: %v", err)
	}

	// A host that is no member gets nothing.
	st := newStranger(t, a.Federation(), nil)
	if err := st.host.Connect(ctx, peer.AddrInfo{ID: c.id(0), Addrs: a.Network().Addrs()}); err == nil {
		s, err := st.host.NewStream(ctx, c.id(0), p2p.CheckpointProtocol)
		if err == nil {
			_ = s.SetDeadline(time.Now().Add(5 * time.Second))
			fed := a.Federation()
			_ = joinFrame(s, 1, append(append([]byte{1}, fed[:]...), 0))
			if n, _ := io.ReadFull(s, make([]byte, 1)); n != 0 {
				t.Fatal("a stranger was served")
			}
			s.Reset()
		}
	}
}
