package p2p

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/libp2p/go-libp2p/core/peer"
)

// cutter is a MemReplica (the real in-memory replica) that can cut a sync
// session once it has committed a number of catch-up ops: by closing the
// connection (a stream reset), or by blocking until the session's context
// ends (the session timeout).
type cutter struct {
	*MemReplica
	mu      sync.Mutex
	after   int  // cut once this many catch-up ops are committed (0: never)
	block   bool // block until the session times out instead of closing
	close   func()
	ingests int
	// resent counts the ops received that were already committed.
	resent int
	cuts   atomic.Int32
}

func (c *cutter) IngestRange(ctx context.Context, ops []crdt.Op) error {
	held := c.VersionVector()[ops[0].Author]
	if err := c.MemReplica.IngestRange(ctx, ops); err != nil {
		return err
	}
	c.mu.Lock()
	for i := range ops {
		if ops[i].Seq <= held {
			c.resent++
		}
	}
	c.ingests += len(ops)
	fire := c.after > 0 && c.ingests >= c.after
	if fire {
		c.after = 0
	}
	block, closeFn := c.block, c.close
	c.mu.Unlock()
	if !fire {
		return nil
	}
	c.cuts.Add(1)
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	closeFn()
	return nil
}

// resumeNet starts a Network for rep on a real libp2p host on loopback TCP,
// with only the sessions the test asks for or that connections start.
func resumeNet(t *testing.T, rep Replica, s *crdt.Signer, tweak func(*Config)) *Network {
	t.Helper()
	cfg := DefaultConfig()
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.MDNS, cfg.NATPortMap, cfg.HolePunching = false, false, false
	cfg.HeartbeatInterval, cfg.SyncInterval = time.Hour, time.Hour
	cfg.StreamTimeout = 5 * time.Second
	cfg.SyncBatch = 100
	cfg.Logger = quiet().With("venue", s.Public().Short())
	if tweak != nil {
		tweak(&cfg)
	}
	nw, err := New(context.Background(), cfg, rep, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nw.Close() })
	return nw
}

func dial(t *testing.T, from, to *Network) {
	t.Helper()
	if err := from.Connect(context.Background(), peer.AddrInfo{ID: to.ID(), Addrs: to.Addrs()}); err != nil {
		t.Fatal(err)
	}
}

// history makes n ops of one venue on a replica and copies them to others.
func history(t *testing.T, src *MemReplica, n int, copies ...*MemReplica) int {
	t.Helper()
	size := 0
	for k := range n {
		op, err := src.Make(&crdt.TopUp{Card: "04A1B2C3D4E5F6", Amount: uint64(1 + k), Method: crdt.MethodCash})
		if err != nil {
			t.Fatal(err)
		}
		size += op.Size()
		for _, c := range copies {
			if err := c.Replica().Deliver(op); err != nil {
				t.Fatal(err)
			}
		}
	}
	return size
}

// TestLongCatchUpResumesAcrossSessions: a venue that lacks a history far
// larger than one session's budget gets it in several sessions, each
// within its byte or time budget, from the two peers that hold it in
// turn, each op once, and ends with their digest.
func TestLongCatchUpResumesAcrossSessions(t *testing.T) {
	const missing = 3000
	cases := []struct {
		name  string
		tweak func(*Config)
		// minSessions is the fewest sessions the budget allows.
		minSessions int
	}{
		{"byte budget", func(c *Config) { c.SyncSessionBytes = 48 << 10 }, 0},
		// A time budget shorter than a frame: each session sends one
		// frame (SyncBatch ops), so 30 sessions at least.
		{"time budget", func(c *Config) { c.SyncSessionTime = time.Nanosecond }, missing / 100},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sa, sb, sc := seedSigner(t, 70), seedSigner(t, 71), seedSigner(t, 72)
			fed := testFederation(t, sa, sb, sc)
			mk := func(s *crdt.Signer) *MemReplica {
				m, err := NewMemReplica(fed, s, nil)
				if err != nil {
					t.Fatal(err)
				}
				return m
			}
			ra, rc := mk(sa), mk(sc)
			rb := &cutter{MemReplica: mk(sb)} // counts what it receives; never cuts
			size := history(t, ra, missing, rc)
			var cfg Config
			tc.tweak(&cfg)
			minSessions := tc.minSessions
			if cfg.SyncSessionBytes > 0 {
				minSessions = size / cfg.SyncSessionBytes
			}
			a, c := resumeNet(t, ra, sa, tc.tweak), resumeNet(t, rc, sc, tc.tweak)
			b := resumeNet(t, rb, sb, tc.tweak)
			start := time.Now()
			dial(t, b, a)
			dial(t, b, c)
			waitUntil(t, 60*time.Second, "the joiner to catch up", func() bool {
				da, _ := ra.Digest()
				db, _ := rb.Digest()
				return da == db
			})
			took := time.Since(start)
			sta, stc, stb := a.SyncStats(), c.SyncStats(), b.SyncStats()
			oa, oc := a.Stats().SyncOpsOut, c.Stats().SyncOpsOut
			t.Logf("%d ops (%d bytes) in %s: sessions stopped at budget: a %d, c %d; resumed by b %d; ops sent a %d, c %d; largest session %d bytes, longest %s",
				missing, size, took.Round(time.Millisecond), sta.StoppedAtBudget, stc.StoppedAtBudget, stb.Resumed, oa, oc,
				max(sta.MaxSessionSent, stc.MaxSessionSent), max(sta.MaxSessionTime, stc.MaxSessionTime).Round(time.Millisecond))
			if got := int(sta.StoppedAtBudget + stc.StoppedAtBudget); got < minSessions-1 {
				t.Errorf("%d sessions stopped at their budget, want at least %d", got, minSessions-1)
			}
			if stb.Resumed == 0 {
				t.Error("the joiner never resumed its catch-up")
			}
			if oa == 0 || oc == 0 {
				t.Errorf("ops sent by a %d, by c %d: want both peers to serve in turn", oa, oc)
			}
			rb.mu.Lock()
			ingested, resent := rb.ingests, rb.resent
			rb.mu.Unlock()
			if ingested != missing || resent != 0 {
				t.Errorf("the joiner received %d ops by sync (%d already held), want %d, each once", ingested, resent, missing)
			}
			if cfg.SyncSessionBytes > 0 {
				for name, st := range map[string]SyncStats{"a": sta, "c": stc} {
					if st.MaxSessionSent > uint64(cfg.SyncSessionBytes) {
						t.Errorf("%s sent %d bytes in one session, over the %d budget", name, st.MaxSessionSent, cfg.SyncSessionBytes)
					}
				}
			}
			for name, st := range map[string]SyncStats{"a": sta, "b": stb, "c": stc} {
				if st.MaxSessionTime > 10*time.Second {
					t.Errorf("%s: a session of %s", name, st.MaxSessionTime)
				}
			}
		})
	}
}

// TestCutSyncSessionResumesWithoutResending: a catch-up session cut
// midway (the connection closed: its stream reset; or the session timing
// out) keeps every frame committed before the cut, and the next session
// starts from the advanced version vector: the peer sends exactly the
// ops still missing, none of those committed.
func TestCutSyncSessionResumesWithoutResending(t *testing.T) {
	const missing, cutAfter = 3000, 1000
	cases := []struct {
		name  string
		block bool
	}{
		{"stream reset", false},
		{"session timeout", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sa, sb := seedSigner(t, 80), seedSigner(t, 81)
			fed := testFederation(t, sa, sb)
			ra, err := NewMemReplica(fed, sa, nil)
			if err != nil {
				t.Fatal(err)
			}
			mb, err := NewMemReplica(fed, sb, nil)
			if err != nil {
				t.Fatal(err)
			}
			history(t, ra, missing)
			rb := &cutter{MemReplica: mb, after: cutAfter, block: tc.block}
			a := resumeNet(t, ra, sa, nil)
			b := resumeNet(t, rb, sb, func(c *Config) { c.SyncTimeout = 3 * time.Second })
			rb.close = func() { _ = b.host.Network().ClosePeer(a.ID()) }
			dial(t, b, a)
			waitUntil(t, 30*time.Second, "the cut", func() bool { return rb.cuts.Load() == 1 })
			waitUntil(t, 30*time.Second, "the cut sessions to end", func() bool {
				return a.Stats().SyncFailures+b.Stats().SyncFailures > 0
			})
			// What the joiner committed before the cut is in its version
			// vector: the next hello carries it.
			held := rb.VersionVector()[sa.Public()]
			if held < cutAfter || held >= missing {
				t.Fatalf("the joiner holds %d ops of the venue after the cut, want %d to %d", held, cutAfter, missing-1)
			}
			dial(t, b, a)
			if err := b.SyncWith(context.Background(), a.ID()); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, 30*time.Second, "one digest", func() bool {
				da, _ := ra.Digest()
				db, _ := rb.Digest()
				return da == db
			})
			// Sessions the reconnection started may still be finishing.
			waitUntil(t, 10*time.Second, "the sessions to end", func() bool {
				return !a.sx().inboundOf(b.ID())
			})
			rb.mu.Lock()
			resent, ingested := rb.resent, rb.ingests
			rb.mu.Unlock()
			// Ops in flight at the cut (sent, not committed) may be sent
			// again; none committed may.
			t.Logf("cut with %d ops committed (cut armed at %d); %d ops received in all for %d missing, %d of them already committed; %d sync bytes sent",
				held, cutAfter, ingested, missing, resent, a.Stats().SyncBytesOut)
			if resent != 0 || ingested != missing {
				t.Fatalf("%d ops received for %d missing, %d re-sent after being committed", ingested, missing, resent)
			}
		})
	}
}
