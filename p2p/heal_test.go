package p2p

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

// healRuns repeats each heal of TestHealAtFiftyVenuesNoStampede to
// measure it (go test ./p2p -run TestHealAtFiftyVenuesNoStampede -v
// -args -p2p.healruns 5); the default run heals each partition once.
var healRuns = flag.Int("p2p.healruns", 1, "heals of each partition in TestHealAtFiftyVenuesNoStampede")

// fleet is a federation of in-memory replicas (MemReplica), each with its
// own Network on a go-libp2p mocknet host, with the settings a node uses
// (heartbeats every 2 s, as the default federation settings say; every
// other setting its default).
type fleet struct {
	t     *testing.T
	mn    mocknet.Mocknet
	nodes []*memNode
	ops   int // ops each replica should hold
	cards int
}

func newFleet(t *testing.T, n int, tweak func(*Config)) *fleet {
	t.Helper()
	mn := mocknet.New()
	signers := make([]*crdt.Signer, n)
	for i := range signers {
		signers[i] = seedSigner(t, byte(10+i))
	}
	fed := testFederation(t, signers...)
	f := &fleet{t: t, mn: mn, nodes: make([]*memNode, n), ops: len(fed)}
	t.Cleanup(func() {
		for _, nd := range f.nodes {
			if nd != nil {
				_ = nd.net.Close()
			}
		}
		_ = mn.Close()
	})
	for i, s := range signers {
		m, err := NewMemReplica(fed, s, nil)
		if err != nil {
			t.Fatal(err)
		}
		priv, _ := PrivKey(s)
		h, err := mn.AddPeer(priv, ma.StringCast(fmt.Sprintf("/ip4/10.1.%d.1/tcp/4001", i)))
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.Host, cfg.MDNS = h, false
		cfg.HeartbeatInterval = time.Duration(crdt.DefaultSettings().HeartbeatInterval) * time.Millisecond
		cfg.Logger = quiet().With("node", i)
		if tweak != nil {
			tweak(&cfg)
		}
		rec := &recorder{MemReplica: m}
		nw, err := New(context.Background(), cfg, rec, s)
		if err != nil {
			t.Fatal(err)
		}
		f.nodes[i] = &memNode{rep: rec, net: nw}
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	// Each venue dials its successor and seven others; the networks
	// then find the rest from heartbeats, up to TargetPeers.
	rng := rand.New(rand.NewPCG(1, 2))
	for i, a := range f.nodes {
		for _, j := range []int{(i + 1) % n, rng.IntN(n), rng.IntN(n), rng.IntN(n), rng.IntN(n), rng.IntN(n), rng.IntN(n), rng.IntN(n)} {
			if j != i {
				b := f.nodes[j]
				if err := a.net.Connect(context.Background(), peer.AddrInfo{ID: b.net.ID(), Addrs: b.net.Addrs()}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	target := min(DefaultConfig().TargetPeers, n-1)
	waitUntil(t, 60*time.Second, "every venue at its connection target", func() bool {
		for _, nd := range f.nodes {
			if len(nd.net.Connected()) < target {
				return false
			}
		}
		return true
	})
	return f
}

// sides returns the venues in group and the others.
func (f *fleet) sides(group []int) (in, out []*memNode) {
	for i, nd := range f.nodes {
		if slices.Contains(group, i) {
			in = append(in, nd)
		} else {
			out = append(out, nd)
		}
	}
	return in, out
}

// partition blocks every link between group and the others, both ways,
// and waits until no such connection is left.
func (f *fleet) partition(group []int) {
	in, out := f.sides(group)
	for _, a := range in {
		for _, b := range out {
			a.net.Block(b.net.ID())
			b.net.Block(a.net.ID())
		}
	}
	waitUntil(f.t, 20*time.Second, "the partition", func() bool {
		for _, a := range in {
			for _, b := range out {
				if len(a.net.host.Network().ConnsToPeer(b.net.ID())) > 0 {
					return false
				}
			}
		}
		return true
	})
}

// heal unblocks every pair of the two sides.
func (f *fleet) heal(group []int) {
	in, out := f.sides(group)
	for _, a := range in {
		for _, b := range out {
			a.net.Unblock(b.net.ID())
			b.net.Unblock(a.net.ID())
		}
	}
}

// makeOps makes n top-ups spread round-robin over the venues.
func (f *fleet) makeOps(venues []*memNode, n int) {
	f.t.Helper()
	for k := range n {
		nd := venues[k%len(venues)]
		f.cards++
		if _, err := nd.rep.Make(&crdt.TopUp{Card: crdt.CardID(fmt.Sprintf("04A1B2C3%06X", f.cards)), Amount: uint64(100 + k), Method: crdt.MethodCash}); err != nil {
			f.t.Fatal(err)
		}
	}
	f.ops += n
}

// converged reports whether the venues all hold f.ops ops and one digest.
func (f *fleet) converged(venues ...*memNode) bool {
	d, ops := venues[0].rep.Digest()
	if ops != uint64(f.ops) {
		return false
	}
	for _, nd := range venues[1:] {
		if d2, _ := nd.rep.Digest(); d2 != d {
			return false
		}
	}
	return true
}

// resetPeaks restarts each network's count of the most sessions served
// at once.
func (f *fleet) resetPeaks() {
	for _, nd := range f.nodes {
		sx := nd.net.sx()
		sx.mu.Lock()
		sx.peakInbound = sx.inbound
		sx.mu.Unlock()
	}
}

// healFigures is what one heal cost.
type healFigures struct {
	took time.Duration
	// sessions: completed sessions (both roles) over the fleet, and at
	// the busiest venue; busy: sessions refused busy over the fleet;
	// failures: failed sessions.
	sessions, maxSessions, busy, failures uint64
	// rejoinPeak is the most sessions a venue of the partitioned group
	// served at once; peak the most any venue did.
	rejoinPeak, peak int
	// rejoinSessions is the most sessions a venue of the partitioned
	// group completed (both roles, those that found nothing to exchange
	// included).
	rejoinSessions uint64
	// rejoinWork is the most sessions a venue of the partitioned group
	// completed that exchanged ops (those that ended at the digest
	// comparison left out).
	rejoinWork uint64
	// bytes: sync frame bytes sent over the fleet; opsIn: ops received
	// by sync over the fleet (each op a venue lacked counts once when
	// sent once).
	bytes, opsIn uint64
}

func (h healFigures) String() string {
	return fmt.Sprintf("converged in %s; sessions %d (busiest venue %d, busiest rejoining venue %d, %d of them exchanging ops), busy %d, failed %d; sessions served at once: partitioned side %d, any venue %d; sync bytes %d, ops received by sync %d",
		h.took.Round(time.Millisecond), h.sessions, h.maxSessions, h.rejoinSessions, h.rejoinWork, h.busy, h.failures, h.rejoinPeak, h.peak, h.bytes, h.opsIn)
}

// TestHealAtFiftyVenuesNoStampede: 50 venues on a mocknet; one venue, then
// a group of ten, is cut off while each side makes ops; when the links
// come back, every venue holds every op within a (loose) bound, and the
// rejoining venues are not swamped: none serves more than MaxInboundSyncs
// sessions at once, and each completes about one session per new
// connection instead of two (one started by each side).
func TestHealAtFiftyVenuesNoStampede(t *testing.T) {
	if testing.Short() {
		t.Skip("50 networks: not in -short")
	}
	const venues, ops = 50, 200
	f := newFleet(t, venues, nil)
	// The bounds, measured on this 2-core machine shared with other jobs
	// (docs/benchmarks.md, "Catch-up at 50 venues (p2p)"): before, the
	// rejoining venue completed 32 sessions in every heal of one venue
	// (it and each of its ~16 peers started one on each connection), and
	// the busiest venue of the ten 16-21; now 9-23 and 11-19. The ten's
	// figure overlaps before and after, so it cannot tell them apart: it
	// is bounded as the one venue's is (24, where two sessions on each
	// of ~16 connections would make 32), and the one-venue case is the
	// check that each connection starts one session. (17 for the ten
	// failed a clean-clone CI run with 19; 2026-11-30, ten heals under
	// two busy loops: 10-13 sessions, 4-8 of them exchanging ops.) The time
	// bound is loose: on a loaded machine a heal's time is mostly CPU
	// (every venue verifies every op it lacks) and varies several-fold
	// from run to run, before and after alike.
	cases := []struct {
		name  string
		group []int
		// bound is the longest a heal may take to converge;
		// maxSessions the most sessions a venue of the group may
		// complete in it (both roles).
		bound       time.Duration
		maxSessions uint64
	}{
		{"one venue", []int{0}, 20 * time.Second, 24},
		{"a group of ten", []int{10, 11, 12, 13, 14, 15, 16, 17, 18, 19}, 20 * time.Second, 24},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.t = t
			for run := range max(1, *healRuns) {
				in, out := f.sides(tc.group)
				f.partition(tc.group)
				base := uint64(f.ops)
				f.makeOps(in, ops)
				f.makeOps(out, ops)
				// Each side holds its own ops and none of the other's.
				waitUntil(t, 60*time.Second, "each side to hold its own ops", func() bool {
					for _, side := range [][]*memNode{in, out} {
						for _, nd := range side {
							if _, n := nd.rep.Digest(); n != base+ops {
								return false
							}
						}
						if !sameDigest(side...) {
							return false
						}
					}
					return true
				})
				before := make([]Stats, len(f.nodes))
				for i, nd := range f.nodes {
					before[i] = nd.net.Stats()
				}
				f.resetPeaks()
				quiet().Info("heal", "case", tc.name, "run", run+1)
				start := time.Now()
				f.heal(tc.group)
				// When each venue first holds every op: the spread shows
				// how the ops travelled.
				at := make([]time.Duration, len(f.nodes))
				done := make([]bool, len(f.nodes))
				waitUntil(t, 2*time.Minute, "one digest after the heal", func() bool {
					for i, nd := range f.nodes {
						if !done[i] {
							if _, n := nd.rep.Digest(); n == uint64(f.ops) {
								at[i], done[i] = time.Since(start), true
							}
						}
					}
					return f.converged(f.nodes...)
				})
				h := healFigures{took: time.Since(start)}
				slices.Sort(at)
				t.Logf("venues complete after the heal: first %s, median %s, 90%% %s, last %s",
					at[0].Round(time.Millisecond), at[len(at)/2].Round(time.Millisecond), at[len(at)*9/10].Round(time.Millisecond), at[len(at)-1].Round(time.Millisecond))
				for i, nd := range f.nodes {
					st := nd.net.Stats()
					s := st.SyncSessions - before[i].SyncSessions
					h.sessions += s
					h.maxSessions = max(h.maxSessions, s)
					h.busy += st.SyncBusy - before[i].SyncBusy
					h.failures += st.SyncFailures - before[i].SyncFailures
					h.bytes += st.SyncBytesOut - before[i].SyncBytesOut
					h.opsIn += st.SyncOpsIn - before[i].SyncOpsIn
					peak := nd.net.SyncStats().PeakInbound
					h.peak = max(h.peak, peak)
					if slices.Contains(tc.group, i) {
						h.rejoinPeak = max(h.rejoinPeak, peak)
						h.rejoinSessions = max(h.rejoinSessions, s)
						h.rejoinWork = max(h.rejoinWork, s-(st.SyncInSync-before[i].SyncInSync))
					}
				}
				t.Logf("run %d: %s", run+1, h)
				if h.took > tc.bound {
					t.Errorf("the heal took %s, over %s", h.took, tc.bound)
				}
				if h.rejoinSessions > tc.maxSessions {
					t.Errorf("a rejoining venue completed %d sessions in the heal, over %d", h.rejoinSessions, tc.maxSessions)
				}
				if limit := DefaultConfig().MaxInboundSyncs; h.peak > limit {
					t.Errorf("a venue served %d sessions at once, over MaxInboundSyncs (%d)", h.peak, limit)
				}
			}
		})
	}
}
