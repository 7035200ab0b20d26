package p2p_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/node"
	"github.com/cagnotte/cagnotte/p2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// newStagedCluster lays out a federation as the README's setup does:
// venues admitted one after another, each holding the federation's chain
// only up to its own admission (what `federation admit --out` writes). It
// returns the cluster and the federation.
func newStagedCluster(t *testing.T, venues int) (*cluster, *node.Federation) {
	t.Helper()
	root := t.TempDir()
	f, err := node.InitFederation(filepath.Join(root, "federation"), crdt.Genesis{Name: "Staged", Currency: "EUR", Settings: crdt.DefaultSettings()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, root: root, venues: make([]node.DemoVenue, venues), nodes: make([]*node.Node, venues), listen: map[int][]string{}}
	for i := range venues {
		dir := filepath.Join(root, fmt.Sprintf("venue-%d", i+1))
		key, _, err := node.LoadOrCreateKey(filepath.Join(dir, node.KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := node.EnsureToken(filepath.Join(dir, node.TokensFile))
		if err != nil {
			t.Fatal(err)
		}
		name := node.DemoVenueName(i)
		if _, err := f.Admit(key.Public(), name); err != nil {
			t.Fatal(err)
		}
		if err := node.WriteFileAtomic(filepath.Join(dir, node.FederationFile), f.Bundle(), 0o644); err != nil {
			t.Fatal(err)
		}
		c.venues[i] = node.DemoVenue{Name: name, Dir: dir, Token: tok, Key: key.Public()}
	}
	t.Cleanup(func() {
		for i := range c.nodes {
			c.stop(i)
		}
	})
	return c, f
}

// TestJoinAdmissionReachesEarlierVenues: three venues admitted one after
// another, each started with only its own bundle and bootstrapping from
// the first, form one network: the first venue learns of the later
// admissions when they connect, every venue knows every other, all hold
// the same ops and nobody is isolated.
func TestJoinAdmissionReachesEarlierVenues(t *testing.T) {
	c, _ := newStagedCluster(t, 3)
	first := c.start(0)
	if first.IsMember(c.venues[1].Key) {
		t.Fatal("the first venue knows a later admission before anyone joined")
	}
	c.start(1, 0)
	c.start(2, 0)
	waitFor(t, converge, "one network", func() bool {
		for i := range 3 {
			for j := range 3 {
				if i != j && (!c.nodes[i].IsMember(c.venues[j].Key) || !c.connected(i, j)) {
					return false
				}
			}
		}
		return c.converged(0, 1, 2)
	})
	waitFor(t, converge, "nobody isolated", func() bool {
		for i := range 3 {
			if c.nodes[i].Status().Isolated {
				return false
			}
		}
		return true
	})
	if s := first.Network().Stats(); s.JoinsAccepted < 2 || s.JoinsRefused != 0 {
		t.Fatalf("first venue's joins: %+v", s)
	}
	// Ops flow both ways on the joined connections.
	c.topUp(2, card(1), 500, "late")
	c.topUp(0, card(2), 500, "early")
	waitFor(t, converge, "ops everywhere", func() bool { return c.converged(0, 1, 2) })
}

// stranger is a raw libp2p host that is not a member of the venue's
// federation view: it subscribes to the federation's topics (to see
// whether anything leaks to it) and answers the join protocol with a
// scripted proof.
type stranger struct {
	host    host.Host
	key     *crdt.Signer
	gossip  chan string // topics of messages received
	answer  func(s network.Stream)
	cancel  context.CancelFunc
	topics  []*pubsub.Topic
	fedSeen crdt.PublicKey
}

func newStranger(t *testing.T, fed crdt.PublicKey, answer func(s network.Stream)) *stranger {
	t.Helper()
	key := newSigner(t)
	st := &stranger{host: rawHost(t, key), key: key, gossip: make(chan string, 1000), answer: answer}
	ctx, cancel := context.WithCancel(context.Background())
	st.cancel = cancel
	t.Cleanup(cancel)
	if answer != nil {
		st.host.SetStreamHandler(p2p.JoinProtocol, answer)
	}
	// FloodSub: a GossipSub node sends its own messages to floodsub peers
	// without its mesh's peer filter, the widest door a stranger can try.
	ps, err := pubsub.NewFloodSub(ctx, st.host, pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign), pubsub.WithMessageIdFn(p2p.MessageID))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{p2p.OpsTopic(fed), p2p.HeartbeatTopic(fed)} {
		tp, err := ps.Join(name)
		if err != nil {
			t.Fatal(err)
		}
		sub, err := tp.Subscribe()
		if err != nil {
			t.Fatal(err)
		}
		st.topics = append(st.topics, tp)
		go func() {
			for {
				m, err := sub.Next(ctx)
				if err != nil {
					return
				}
				st.gossip <- m.GetTopic()
			}
		}()
	}
	return st
}

// connectedTo reports whether the stranger has an open connection to p.
func (s *stranger) connectedTo(p peer.ID) bool {
	return s.host.Network().Connectedness(p) == network.Connected
}

// joinFrame writes one join frame (length, type, payload).
func joinFrame(w io.Writer, typ byte, payload []byte) error {
	b := binary.AppendUvarint(nil, uint64(1+len(payload)))
	b = append(b, typ)
	_, err := w.Write(append(b, payload...))
	return err
}

// readAsk reads the member's ask frame.
func readAsk(s network.Stream) error {
	r := bufio.NewReader(s)
	l, err := binary.ReadUvarint(r)
	if err != nil {
		return err
	}
	_, err = io.ReadFull(r, make([]byte, l))
	return err
}

// proof answers an ask with the given ops frames (each a run), then end.
func proof(runs ...[]crdt.Op) func(s network.Stream) {
	return func(s network.Stream) {
		defer s.Close()
		if readAsk(s) != nil {
			return
		}
		var last uint64
		for _, run := range runs {
			if joinFrame(s, 2, p2p.EncodeOpsMessage(run)[1:]) != nil {
				return
			}
			last = run[len(run)-1].Seq
		}
		_ = joinFrame(s, 3, binary.AppendUvarint(nil, last))
		_, _ = io.Copy(io.Discard, s)
	}
}

// TestJoinBadProofsRefused: an unknown peer that does not prove its own
// admission is disconnected and refused, whatever it presents: nothing, no
// join protocol at all, another venue's admission (its peer id is not the
// admitted key), ops not signed by the federation, a forged federation op,
// garbage, an oversized frame. A real admission it presents is still
// learnt: federation ops are facts whoever carries them.
func TestJoinBadProofsRefused(t *testing.T) {
	c, f := newStagedCluster(t, 2)
	a := c.start(0)
	fed := a.Federation()
	chain := f.Ops() // genesis, venue 0's and venue 1's admissions
	other := newSigner(t)
	ownOps := crdt.NewAuthor(other, crdt.NewClock(func() int64 { return time.Now().UnixMilli() }), 0, crdt.OpID{}).Make(&crdt.VenueInfo{Name: "me"})
	forged := chain[2]
	forged.Body = crdt.EncodeBody(&crdt.Admit{Venue: other.Public(), Name: "forged"})
	cases := []struct {
		name   string
		answer func(s network.Stream)
		learns bool // venue 1's admission reaches venue 0
	}{
		{"no join protocol", nil, false},
		{"nothing to show", proof(), false},
		{"ops of a non-federation author", proof([]crdt.Op{ownOps}), false},
		{"forged federation op", proof([]crdt.Op{forged}), false},
		{"garbage frame", func(s network.Stream) {
			defer s.Close()
			if readAsk(s) == nil {
				_ = joinFrame(s, 2, []byte("not ops"))
			}
		}, false},
		{"oversized frame", func(s network.Stream) {
			defer s.Close()
			if readAsk(s) == nil {
				_, _ = s.Write(binary.AppendUvarint(nil, 1<<30))
			}
		}, false},
		{"another venue's admission", proof(chain[2:3]), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := a.Network().Stats().JoinsRefused
			s := newStranger(t, fed, tc.answer)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = s.host.Connect(ctx, a.Network().AddrInfo())
			waitFor(t, 10*time.Second, "the stranger refused", func() bool {
				return a.Network().Stats().JoinsRefused > before && !s.connectedTo(a.Network().ID())
			})
			if err := s.host.Connect(ctx, a.Network().AddrInfo()); err == nil {
				waitFor(t, 5*time.Second, "the venue to drop the stranger again", func() bool { return !s.connectedTo(a.Network().ID()) })
			}
			if a.IsMember(s.key.Public()) {
				t.Fatal("the stranger became a member")
			}
			if got := a.IsMember(c.venues[1].Key); got != tc.learns {
				t.Fatalf("venue 0 knows venue 1: %v, want %v", got, tc.learns)
			}
			select {
			case topic := <-s.gossip:
				t.Fatalf("the stranger received a message on %s", topic)
			default:
			}
		})
	}
}

// TestJoinProbationGetsNothing: an unknown peer that connects and stays
// silent is on probation for JoinTimeout: meanwhile the venue publishes
// ops and heartbeats, yet the peer receives no gossip and cannot open a
// sync session; then it is disconnected and refused.
func TestJoinProbationGetsNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the join deadline")
	}
	c, _ := newStagedCluster(t, 2)
	a := c.start(0)
	b := c.start(1, 0) // a member, so that the venue's gossip has somewhere to go
	waitFor(t, converge, "venues connected", func() bool { return c.connected(0, 1) && c.connected(1, 0) })
	silent := make(chan struct{})
	t.Cleanup(func() { close(silent) })
	s := newStranger(t, a.Federation(), func(st network.Stream) {
		<-silent // never answers
		st.Reset()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := s.host.Connect(ctx, a.Network().AddrInfo()); err != nil {
		t.Fatalf("an unknown peer's connection must get to the join protocol: %v", err)
	}
	start := time.Now()
	hb := b.Network().Stats().Heartbeats
	for i := 0; s.connectedTo(a.Network().ID()); i++ {
		if i < 20 {
			c.topUp(0, card(i), 100, fmt.Sprintf("probation-%d", i))
		}
		if st, err := s.host.NewStream(ctx, a.Network().ID(), p2p.SyncProtocol); err == nil {
			buf := make([]byte, 1)
			if _, err := st.Read(buf); err == nil {
				t.Fatal("a peer on probation got a sync answer")
			}
			st.Reset()
		}
		if time.Since(start) > p2p.JoinTimeout+5*time.Second {
			t.Fatal("the silent peer was not disconnected")
		}
		time.Sleep(50 * time.Millisecond) // pacing the writes, not waiting for a condition
	}
	if b.Network().Stats().Heartbeats == hb {
		t.Fatal("no heartbeat flowed during the probation: the test proves nothing")
	}
	select {
	case topic := <-s.gossip:
		t.Fatalf("the peer on probation received a message on %s", topic)
	default:
	}
	if err := s.host.Connect(ctx, a.Network().AddrInfo()); err == nil {
		waitFor(t, 5*time.Second, "a refused peer dropped at once", func() bool { return !s.connectedTo(a.Network().ID()) })
	}
	if got := a.Network().Stats().JoinsRefused; got != 1 {
		t.Fatalf("refused joins %d, want 1", got)
	}
}

// TestJoinRevokedVenueLearnsItsRevocation: a venue revoked while its node
// was down is refused when it reconnects, and learns its revocation from
// the member that refuses it: its status says revoked and it refuses
// writes.
func TestJoinRevokedVenueLearnsItsRevocation(t *testing.T) {
	c := newCluster(t, 2)
	a := c.start(0)
	c.start(1, 0)
	c.topUp(1, card(1), 100, "before")
	waitFor(t, converge, "venues in sync", func() bool { return c.connected(0, 1) && c.converged(0, 1) })
	seq := a.VersionVector()[c.venues[1].Key]
	c.stop(1)
	f, err := node.OpenFederation(filepath.Join(c.root, "federation"), nil)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := f.Revoke(c.venues[1].Key, seq, "lost")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Ingest(context.Background(), []crdt.Op{rev}); err != nil {
		t.Fatal(err)
	}
	b := c.start(1, 0)
	waitFor(t, converge, "the revoked venue to learn its revocation", func() bool {
		s := b.Status()
		return s.Revoked && s.RevokedAfter == seq
	})
	waitFor(t, converge, "the revoked venue kept out", func() bool { return !c.connected(0, 1) && !c.connected(1, 0) })
	if st, out := c.do(1, "POST", "/api/v1/topups", map[string]any{"card": card(1), "amount_cents": 100, "method": "cash", "idempotency_key": "after"}); st != 403 || out["error"] != "venue_revoked" {
		t.Fatalf("write on the revoked node: %d %v", st, out)
	}
}
