package p2p

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

func quiet() *slog.Logger {
	if os.Getenv("P2P_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// recorder is a MemReplica that remembers the size of each catch-up run.
type recorder struct {
	*MemReplica
	mu   sync.Mutex
	runs []int
}

func (r *recorder) IngestRange(ctx context.Context, ops []crdt.Op) error {
	r.mu.Lock()
	r.runs = append(r.runs, len(ops))
	r.mu.Unlock()
	return r.MemReplica.IngestRange(ctx, ops)
}

type memNode struct {
	rep *recorder
	net *Network
}

// memCluster runs n in-memory replicas on a mocknet (no sockets), each
// with its own Network on a caller-supplied host.
func memCluster(t *testing.T, n int, tweak func(*Config)) (mocknet.Mocknet, []*memNode) {
	t.Helper()
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	return mn, replicaCluster(t, n, mn, tweak)
}

// replicaCluster runs n in-memory replicas of one federation, each with
// its own Network: on hosts of mn, linked all to all, or on real hosts
// listening on loopback TCP when mn is nil. Heartbeats every 100 ms,
// periodic sync every second, then tweak.
func replicaCluster(t *testing.T, n int, mn mocknet.Mocknet, tweak func(*Config)) []*memNode {
	t.Helper()
	signers := make([]*crdt.Signer, n)
	for i := range signers {
		signers[i] = seedSigner(t, byte(10+i))
	}
	fed := testFederation(t, signers...)
	nodes := make([]*memNode, n)
	for i, s := range signers {
		m, err := NewMemReplica(fed, s, nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.MDNS = false
		if mn != nil {
			priv, _ := PrivKey(s)
			h, err := mn.AddPeer(priv, ma.StringCast(fmt.Sprintf("/ip4/10.0.0.%d/tcp/4001", i+1)))
			if err != nil {
				t.Fatal(err)
			}
			cfg.Host = h
		} else {
			cfg.NATPortMap, cfg.HolePunching = false, false
			cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
		}
		cfg.HeartbeatInterval, cfg.SyncInterval, cfg.GapSyncDelay = 100*time.Millisecond, time.Second, 100*time.Millisecond
		cfg.Logger = quiet().With("node", i)
		if tweak != nil {
			tweak(&cfg)
		}
		rec := &recorder{MemReplica: m}
		nw, err := New(context.Background(), cfg, rec, s)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nw.Close() })
		nodes[i] = &memNode{rep: rec, net: nw}
	}
	if mn != nil {
		if err := mn.LinkAll(); err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}

func digestOf(m *memNode) [32]byte { d, _ := m.rep.Digest(); return d }

func sameDigest(nodes ...*memNode) bool {
	d := digestOf(nodes[0])
	for _, n := range nodes[1:] {
		if digestOf(n) != d {
			return false
		}
	}
	return true
}

func connect(t *testing.T, a, b *memNode) {
	t.Helper()
	if err := a.net.Connect(context.Background(), peer.AddrInfo{ID: b.net.ID(), Addrs: b.net.Addrs()}); err != nil {
		t.Fatal(err)
	}
}

// TestMocknetLine: in-memory replicas on a mocknet, connected in a line,
// each making ops: gossip and anti-entropy bring them all to one digest.
func TestMocknetLine(t *testing.T) {
	_, nodes := memCluster(t, 4, nil)
	for i := 1; i < len(nodes); i++ {
		connect(t, nodes[i-1], nodes[i])
	}
	for k := range 20 {
		for i, n := range nodes {
			if _, err := n.rep.Make(&crdt.TopUp{Card: crdt.CardID(fmt.Sprintf("04A1B2C3D4E5%02X", i)), Amount: uint64(100 + k), Method: crdt.MethodCash}); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitUntil(t, 10*time.Second, "one digest", func() bool { return sameDigest(nodes...) })
	_, ops := nodes[3].rep.Digest()
	if ops != 4*20+5 {
		t.Fatalf("%d ops", ops)
	}
}

// TestCatchUpInBatches: a replica that missed thousands of ops gets them
// in runs of at most SyncBatch ops, committed one at a time, and the sync
// bytes are close to the encoded size of the missing ops; when nothing is
// missing a session costs two hellos.
func TestCatchUpInBatches(t *testing.T) {
	const missing = 3000
	_, nodes := memCluster(t, 2, func(c *Config) {
		c.SyncBatch = 200
		c.SyncInterval = time.Hour // only the sessions this test asks for
		c.HeartbeatInterval = time.Hour
	})
	a, b := nodes[0], nodes[1]
	size := 0
	for k := range missing {
		op, err := a.rep.Make(&crdt.TopUp{Card: "04A1B2C3D4E5F6", Amount: uint64(1 + k), Method: crdt.MethodCash})
		if err != nil {
			t.Fatal(err)
		}
		size += op.Size()
	}
	// The ops were made before the peers connected: only anti-entropy
	// can carry them.
	start := time.Now()
	connect(t, b, a)
	waitUntil(t, 20*time.Second, "catch-up", func() bool { return sameDigest(a, b) })
	took := time.Since(start)
	// One side starts a session on connect (the other's is dropped once
	// that one completed): wait for it to end on both sides.
	waitUntil(t, 20*time.Second, "the on-connect session", func() bool {
		return a.net.Stats().SyncSessions >= 1 && b.net.Stats().SyncSessions >= 1
	})
	sb := b.net.Stats()
	sa := a.net.Stats()
	if sb.SyncOpsIn+sa.SyncOpsIn != missing {
		t.Fatalf("ops received by sync: %d + %d, want %d", sb.SyncOpsIn, sa.SyncOpsIn, missing)
	}
	b.rep.mu.Lock()
	runs := append([]int(nil), b.rep.runs...)
	b.rep.mu.Unlock()
	total := 0
	for _, r := range runs {
		if r > 200 {
			t.Fatalf("a run of %d ops (SyncBatch 200)", r)
		}
		total += r
	}
	if total != missing {
		t.Fatalf("runs %v", runs)
	}
	wire := sa.SyncBytesOut + sb.SyncBytesOut + sa.SyncBytesIn + sb.SyncBytesIn
	ratio := float64(wire) / 2 / float64(size)
	t.Logf("%d ops (%d bytes) in %d runs, %s; sync bytes / op bytes = %.3f", missing, size, len(runs), took.Round(time.Millisecond), ratio)
	if ratio > 1.05 {
		t.Fatalf("sync sent %.2f× the ops' size", ratio)
	}
	// In sync: a session is two hellos.
	before := b.net.Stats()
	if err := b.net.SyncWith(context.Background(), a.net.ID()); err != nil {
		t.Fatal(err)
	}
	after := b.net.Stats()
	if after.SyncInSync != before.SyncInSync+1 || after.SyncBytesOut-before.SyncBytesOut > 200 {
		t.Fatalf("in-sync session: %+v -> %+v", before, after)
	}
}

// TestMocknetNonMemberDropped: with a caller-supplied host there is no
// gater; a non-member that connects is disconnected at once.
func TestMocknetNonMemberDropped(t *testing.T) {
	mn, nodes := memCluster(t, 1, nil)
	stranger := seedSigner(t, 99)
	priv, _ := PrivKey(stranger)
	h, err := mn.AddPeer(priv, ma.StringCast("/ip4/10.0.9.9/tcp/4001"))
	if err != nil {
		t.Fatal(err)
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	_ = h.Connect(context.Background(), peer.AddrInfo{ID: nodes[0].net.ID(), Addrs: nodes[0].net.Addrs()})
	waitUntil(t, 5*time.Second, "the stranger to be dropped", func() bool {
		return len(nodes[0].net.host.Network().ConnsToPeer(h.ID())) == 0
	})
}
