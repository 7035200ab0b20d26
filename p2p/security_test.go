package p2p_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"path/filepath"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/node"
	"github.com/cagnotte/cagnotte/p2p"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// rawHost is a plain libp2p host on loopback with the given key, closed at
// the end of the test.
func rawHost(t *testing.T, s *crdt.Signer) host.Host {
	t.Helper()
	priv, err := p2p.PrivKey(s)
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(libp2p.Identity(priv), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func newSigner(t *testing.T) *crdt.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := crdt.NewSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestUnadmittedPeerRefused: a host whose key was never admitted can
// neither connect to a venue nor be dialed by it.
func TestUnadmittedPeerRefused(t *testing.T) {
	c := newCluster(t, 1)
	v := c.start(0)
	stranger := rawHost(t, newSigner(t))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := stranger.Connect(ctx, v.Network().AddrInfo()); err == nil {
		t.Log("stranger's dial completed on its side")
		// The handshake may complete on the stranger's side before the
		// venue's gater closes the connection: it must not stay open.
		waitFor(t, 5*time.Second, "the venue to drop the stranger", func() bool {
			return len(stranger.Network().ConnsToPeer(v.Network().ID())) == 0
		})
	}
	if s, err := stranger.NewStream(ctx, v.Network().ID(), p2p.SyncProtocol); err == nil {
		s.Reset()
		t.Fatal("stranger opened a sync stream")
	}
	if err := v.Network().Connect(ctx, peer.AddrInfo{ID: stranger.ID(), Addrs: stranger.Addrs()}); err == nil {
		t.Fatal("the venue dialed a peer that is not a member")
	}
	for _, p := range v.Network().Connected() {
		if p == stranger.ID() {
			t.Fatal("stranger connected")
		}
	}
}

// rogue is a raw libp2p host with an admitted venue's key, speaking plain
// GossipSub on the federation's ops topic, connected to one venue only.
type rogue struct {
	key   *crdt.Signer
	host  host.Host
	topic *pubsub.Topic
}

func newRogue(t *testing.T, ctx context.Context, c *cluster, venue, to int) *rogue {
	t.Helper()
	key, _, err := node.LoadOrCreateKey(filepath.Join(c.venues[venue].Dir, node.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	r := &rogue{key: key, host: rawHost(t, key)}
	for i, n := range c.nodes {
		if n != nil && i != to {
			n.Network().Block(r.host.ID()) // the rogue reaches the others only through venue `to`
		}
	}
	ps, err := pubsub.NewGossipSub(ctx, r.host, pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign), pubsub.WithMessageIdFn(p2p.MessageID))
	if err != nil {
		t.Fatal(err)
	}
	if r.topic, err = ps.Join(p2p.OpsTopic(c.nodes[to].Federation())); err != nil {
		t.Fatal(err)
	}
	target := c.nodes[to].Network()
	if err := r.host.Connect(ctx, target.AddrInfo()); err != nil {
		t.Fatalf("an admitted key must be able to connect: %v", err)
	}
	waitFor(t, converge, "the rogue to see its venue on the topic", func() bool {
		for _, p := range r.topic.ListPeers() {
			if p == target.ID() {
				return true
			}
		}
		return false
	})
	return r
}

func (r *rogue) publish(t *testing.T, ctx context.Context, data []byte, opts ...pubsub.PubOpt) {
	t.Helper()
	if err := r.topic.Publish(ctx, data, opts...); err != nil {
		t.Fatal(err)
	}
}

// TestForgedOpsRefused: rogue peers with admitted keys publish, on the raw
// ops topic, garbage, a tampered op, an op in another venue's name, an op
// by an unadmitted key and a message mixing two venues' ops. The
// venue they are connected to rejects them all and scores them down (three
// invalid messages graylist a peer); a third venue, connected only to that
// venue, never sees them, while a valid op still flows to it.
func TestForgedOpsRefused(t *testing.T) {
	c := newCluster(t, 4)
	a := c.start(0)
	b := c.start(1, 0)
	waitFor(t, converge, "venues 0 and 1 connected", func() bool { return c.connected(0, 1) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Venues 2 and 3 are admitted but their nodes do not run: the rogues
	// use their keys.
	r1, r2 := newRogue(t, ctx, c, 2, 0), newRogue(t, ctx, c, 3, 0)

	clock := crdt.NewClock(func() int64 { return time.Now().UnixMilli() })
	mk := func(s *crdt.Signer) crdt.Op {
		return crdt.NewAuthor(s, clock, 0, crdt.OpID{}).Make(&crdt.TopUp{Card: "04A1B2C3D4E5F6", Amount: 100000, Method: crdt.MethodCash})
	}
	tampered := mk(r1.key)
	tampered.Body = crdt.EncodeBody(&crdt.TopUp{Card: "04A1B2C3D4E5F6", Amount: 999999, Method: crdt.MethodCash})
	impersonated := mk(r1.key)
	impersonated.Author = c.venues[1].Key
	outsider := newSigner(t)
	byOutsider := mk(outsider)
	before := c.digest(1)

	rejected := func(n uint64) func() bool {
		return func() bool { return a.Network().Stats().MessagesRejected >= n }
	}
	r1.publish(t, ctx, []byte("garbage"))
	waitFor(t, converge, "garbage rejected", rejected(1))
	r1.publish(t, ctx, p2p.EncodeOpsMessage([]crdt.Op{tampered}))
	waitFor(t, converge, "tampered op rejected", rejected(2))
	r1.publish(t, ctx, p2p.EncodeOpsMessage([]crdt.Op{impersonated}))
	waitFor(t, converge, "impersonation rejected", rejected(3))
	r2.publish(t, ctx, p2p.EncodeOpsMessage([]crdt.Op{byOutsider}))
	waitFor(t, converge, "outsider's op rejected", rejected(4))
	r2.publish(t, ctx, p2p.EncodeOpsMessage([]crdt.Op{mk(r2.key), mk(r1.key)}))
	waitFor(t, converge, "mixed message rejected", rejected(5))
	waitFor(t, converge, "the rogues' scores to go down", func() bool {
		var s1, s2 float64
		for _, p := range a.Network().Peers() {
			switch p.ID {
			case r1.host.ID():
				s1 = p.Score
			case r2.host.ID():
				s2 = p.Score
			}
		}
		return s1 < -80 && s2 < 0 // r1 is graylisted
	})

	// A valid op from venue 0 still reaches venue 1.
	c.topUp(0, card(7), 700, "valid")
	waitFor(t, converge, "the valid op at venue 1", func() bool { return c.converged(0, 1) && c.digest(1) != before })
	if s := b.Network().Stats(); s.MessagesRejected != 0 {
		t.Fatalf("venue 1 saw forged messages: %+v", s)
	}
	for _, i := range []int{0, 1} {
		if st, _ := c.do(i, "GET", "/api/v1/cards/04A1B2C3D4E5F6", nil); st != 404 {
			t.Fatalf("venue %d knows the forged card (%d)", i, st)
		}
	}
}

// TestRevokedVenueDisconnected: when the federation's revocation of a
// venue reaches one node, it spreads and every node drops the revoked
// venue within seconds; it cannot connect again.
func TestRevokedVenueDisconnected(t *testing.T) {
	c := newCluster(t, 3)
	a := c.start(0)
	c.start(1, 0)
	c.start(2, 0)
	c.topUp(2, card(2), 1000, "top")
	waitFor(t, converge, "full mesh", func() bool {
		return c.connected(0, 1) && c.connected(0, 2) && c.connected(1, 2) && c.converged(0, 1, 2)
	})
	f, err := node.OpenFederation(filepath.Join(c.root, "federation"), nil)
	if err != nil {
		t.Fatal(err)
	}
	seq := c.nodes[0].VersionVector()[c.venues[2].Key]
	rev, err := f.Revoke(c.venues[2].Key, seq, "node lost")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := a.Ingest(context.Background(), []crdt.Op{rev}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "venues 0 and 1 to drop venue 2", func() bool {
		return !c.connected(0, 2) && !c.connected(1, 2) && !c.nodes[1].IsMember(c.venues[2].Key)
	})
	t.Logf("revoked venue dropped everywhere after %s", time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.nodes[2].Network().Connect(ctx, a.Network().AddrInfo())
	waitFor(t, 5*time.Second, "venue 0 to keep venue 2 out", func() bool { return !c.connected(0, 2) })
}
