package p2p

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
)

// Scenario 9 of issue 9: a member cannot stall sync for others. Real
// libp2p hosts on loopback (TCP, Noise, yamux) over MemReplicas.

// loopConfig is a network on loopback TCP with no discovery, no periodic
// sync and no heartbeat-triggered sync during the test: only the sessions
// a connection starts and those the test runs.
func loopConfig(tweak func(*Config)) Config {
	cfg := DefaultConfig()
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.MDNS, cfg.NATPortMap, cfg.HolePunching = false, false, false
	cfg.HeartbeatInterval = time.Hour
	cfg.SyncInterval = time.Hour
	cfg.StreamTimeout = 5 * time.Second
	cfg.Logger = quiet()
	if tweak != nil {
		tweak(&cfg)
	}
	return cfg
}

func loopNet(t *testing.T, rep Replica, s *crdt.Signer, tweak func(*Config)) *Network {
	t.Helper()
	n, err := New(context.Background(), loopConfig(tweak), rep, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func memRep(t testing.TB, fed []crdt.Op, s *crdt.Signer, ops ...[]crdt.Op) *MemReplica {
	t.Helper()
	m, err := NewMemReplica(fed, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, run := range ops {
		for _, op := range run {
			if err := m.Replica().Deliver(op); err != nil {
				t.Fatal(err)
			}
		}
	}
	return m
}

func link(t *testing.T, a, b *Network) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Connect(ctx, b.AddrInfo()); err != nil {
		t.Fatal(err)
	}
}

func vvOf(m *MemReplica, k crdt.PublicKey) uint64 { return m.VersionVector()[k] }

// tamperReplica serves one op of one author with a flipped signature
// byte: a range that carries it has a bad signature mid-chain, which the
// receiver sees as a broken link.
type tamperReplica struct {
	*MemReplica
	author crdt.PublicKey
	seq    uint64
}

func (r *tamperReplica) ReadRange(author crdt.PublicKey, from, to uint64, fn func(crdt.Op) error) error {
	return r.MemReplica.ReadRange(author, from, to, func(op crdt.Op) error {
		if op.Author == r.author && op.Seq == r.seq {
			op.Sig[0] ^= 0xff
		}
		return fn(op)
	})
}

// TestSyncBadSignatureMidRangeRefusedForThatAuthorOnly: a peer serves a
// range of author X whose op 150 (of 300) carries a bad signature, and
// then author Y's 300 ops. The receiver refuses X's range, goes on with
// Y's in the same session, and puts the peer on penalty. A bad signature
// on the newest op of a frame (256, with frames of 256 ops) is refused
// too, without penalty: its author may have signed the next op over it.
func TestSyncBadSignatureMidRangeRefusedForThatAuthorOnly(t *testing.T) {
	for _, tc := range []struct {
		name    string
		seq     uint64
		penalty bool
	}{
		{"mid-range", 150, true},
		{"newest op of a frame", 256, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, v := seedSigner(t, 10), seedSigner(t, 11)
			x, y := seedSigner(t, 12), seedSigner(t, 13)
			if cmpKey(x.Public(), y.Public()) > 0 {
				x, y = y, x // X's range is sent first
			}
			fed := testFederation(t, s, v, x, y)
			xs, ys := topUps(t, x, 300), topUps(t, y, 300)
			sender := &tamperReplica{MemReplica: memRep(t, fed, s, xs, ys), author: x.Public(), seq: tc.seq}
			recv := memRep(t, fed, v)
			ns := loopNet(t, sender, s, nil)
			nv := loopNet(t, recv, v, nil)
			link(t, nv, ns)
			// The sessions the connection starts (both ways) carry Y's ops.
			waitUntil(t, 10*time.Second, "Y's ops despite X's bad range", func() bool {
				return vvOf(recv, y.Public()) == 300
			})
			if got := vvOf(recv, x.Public()); got >= tc.seq {
				t.Fatalf("X's chain reached %d past its bad op", got)
			}
			st := nv.SyncStats()
			if st.RangesRefused == 0 {
				t.Fatalf("no range refused: %+v", st)
			}
			if got := nv.SyncPenalized(ns.ID()); got != tc.penalty || (st.Penalties > 0) != tc.penalty {
				t.Fatalf("sender on penalty: %v, want %v (%+v)", got, tc.penalty, st)
			}
		})
	}
}

// attacker is a raw libp2p host with an admitted venue's key that speaks
// the sync protocol by hand.
type attacker struct {
	h host.Host
}

func newAttacker(t *testing.T, key *crdt.Signer, target *Network) *attacker {
	t.Helper()
	priv, err := PrivKey(key)
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(libp2p.Identity(priv), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Connect(ctx, target.AddrInfo()); err != nil {
		t.Fatalf("an admitted key must be able to connect: %v", err)
	}
	return &attacker{h: h}
}

// emptyHello is a version 1 hello with an empty version vector: "send me
// everything".
func emptyHello() []byte {
	p := []byte{frameHello, 1}
	p = append(p, make([]byte, 32)...)
	p = append(p, 0, 0) // op count, vv entries
	return append(binary.AppendUvarint(nil, uint64(len(p))), p...)
}

// open starts a session asking for everything.
func (a *attacker) open(t *testing.T, target *Network) network.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := a.h.NewStream(ctx, target.ID(), SyncProtocol)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(emptyHello()); err != nil {
		t.Fatal(err)
	}
	return s
}

// readFrameRaw reads one frame's type and payload size.
func readFrameRaw(r *bufio.Reader) (byte, int, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, 0, err
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, 0, err
	}
	return p[0], int(n), nil
}

// TestSyncSlowReaderCannotHoldCapacity: a member opens a session asking
// for everything (12,000 ops, 1.8 MB) and reads the answer at 32 KB/s:
// fast enough for each write to meet its deadline (the stream's window
// reopens as it reads), slow enough to hold the session for about a
// minute. Meanwhile another peer syncs with the node both ways at once,
// a second session by the slow peer is refused at once, and a member
// that reads nothing is cut within the minimum rate's allowance and put
// on penalty.
func TestSyncSlowReaderCannotHoldCapacity(t *testing.T) {
	v, h, m, z := seedSigner(t, 20), seedSigner(t, 21), seedSigner(t, 22), seedSigner(t, 23)
	fed := testFederation(t, v, h, m, z)
	tweak := func(c *Config) {
		c.SyncBatch = 32 // small frames: each write needs little window
		c.SyncGrace = time.Second
		c.SyncMinRate = 64 << 10
	}
	repV := memRep(t, fed, v, topUps(t, v, 12000))
	repH := memRep(t, fed, h, topUps(t, h, 200))
	nv := loopNet(t, repV, v, tweak)
	slowpoke := newAttacker(t, m, nv)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := slowpoke.open(t, nv)
	defer st.Reset()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 16<<10)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(st, buf); err != nil {
				return
			}
		}
	}()
	defer func() { cancel(); <-done }()
	// Let the slow session start: the node has filled the stream's window.
	waitUntil(t, 5*time.Second, "the slow session to start", func() bool { return nv.sx().inboundOf(slowpoke.h.ID()) })

	// A second session by the same peer is refused at once.
	second := slowpoke.open(t, nv)
	_ = second.SetReadDeadline(time.Now().Add(2 * time.Second))
	if typ, _, err := readFrameRaw(bufio.NewReader(second)); err != nil || typ != frameBusy {
		t.Fatalf("second session of the slow peer: frame %d, %v; want busy", typ, err)
	}
	second.Reset()

	// An honest peer syncs with the node, both ways, within seconds.
	nh := loopNet(t, repH, h, tweak)
	link(t, nh, nv)
	sctx, scancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer scancel()
	start := time.Now()
	if err := nh.SyncWith(sctx, nv.ID()); err != nil {
		t.Fatalf("honest peer -> node while a slow reader is served: %v", err)
	}
	if err := nv.SyncWith(sctx, nh.ID()); err != nil {
		t.Fatalf("node -> honest peer while a slow reader is served: %v", err)
	}
	waitUntil(t, 5*time.Second, "the honest peer in sync", func() bool {
		return vvOf(repV, h.Public()) == 200 && vvOf(repH, v.Public()) == 12000
	})
	t.Logf("honest sessions done in %s while the slow reader was served", time.Since(start).Round(time.Millisecond))

	// A peer that reads nothing is cut once it exceeds the allowance
	// (grace + the bytes the stream buffered at the minimum rate), and
	// then refused.
	mute := newAttacker(t, z, nv)
	ms := mute.open(t, nv)
	defer ms.Reset()
	cut := time.Now()
	waitUntil(t, 15*time.Second, "the mute reader cut and on penalty", func() bool { return nv.SyncPenalized(mute.h.ID()) })
	t.Logf("mute reader cut after %s; sync stats %+v", time.Since(cut).Round(time.Millisecond), nv.SyncStats())
	if nv.SyncStats().SlowCuts == 0 {
		t.Fatal("no slow cut counted")
	}
	again := mute.open(t, nv)
	_ = again.SetReadDeadline(time.Now().Add(2 * time.Second))
	if typ, _, err := readFrameRaw(bufio.NewReader(again)); err != nil || typ != frameBusy {
		t.Fatalf("peer on penalty: frame %d, %v; want busy", typ, err)
	}
	again.Reset()
}

// TestSyncRepeatedEmptyVersionVectorBounded: a member announces an empty
// version vector twenty times in a row, reading every answer in full.
// The node sends it its whole history a bounded number of times (its
// byte budget per peer), answers busy at once after that, and still
// syncs with an honest peer.
func TestSyncRepeatedEmptyVersionVectorBounded(t *testing.T) {
	v, h, m := seedSigner(t, 30), seedSigner(t, 31), seedSigner(t, 32)
	fed := testFederation(t, v, h, m)
	const budget = 1 << 20
	tweak := func(c *Config) { c.SyncPeerBudget = budget }
	repV := memRep(t, fed, v, topUps(t, v, 2000))
	nv := loopNet(t, repV, v, tweak)
	greedy := newAttacker(t, m, nv)

	served, partial, busy, bytes := 0, 0, 0, 0
	for range 20 {
		s := greedy.open(t, nv)
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(s)
		typ, size, err := readFrameRaw(r)
		if err != nil {
			t.Fatal(err)
		}
		bytes += size
		if typ == frameBusy {
			busy++
			s.Reset()
			continue
		}
		// A session stops at the peer's remaining credit: more (8)
		// instead of end.
		for typ != frameEnd && typ != frameMore && err == nil {
			typ, size, err = readFrameRaw(r)
			bytes += size
		}
		if err != nil {
			t.Fatal(err)
		}
		full := typ == frameEnd
		// Nothing to send back; wait for the node's final end.
		if _, err := s.Write([]byte{1, frameEnd}); err != nil {
			t.Fatal(err)
		}
		if typ, _, err := readFrameRaw(r); err != nil || typ != frameEnd {
			t.Fatalf("final frame %d: %v", typ, err)
		}
		s.Close()
		if full {
			served++
		} else {
			partial++
		}
	}
	t.Logf("20 sessions asking for everything: %d served in full, %d stopped at the budget, %d refused busy, %d bytes received; stats %+v", served, partial, busy, bytes, nv.SyncStats())
	if bytes > budget+budget/2 {
		t.Fatalf("%d bytes sent for a budget of %d", bytes, budget)
	}
	size := 0
	for _, op := range topUps(t, v, 2000) {
		size += op.Size()
	}
	if limit := budget/size + 2; served > limit {
		t.Fatalf("%d full sends (history %d bytes, budget %d bytes/min): want at most %d", served, size, budget, limit)
	}
	if nv.SyncStats().Limited == 0 {
		t.Fatal("no session refused by the limits")
	}

	// An honest peer still syncs at once.
	repH := memRep(t, fed, h, topUps(t, h, 100))
	nh := loopNet(t, repH, h, tweak)
	link(t, nh, nv)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	if err := nh.SyncWith(ctx, nv.ID()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "the honest peer in sync", func() bool {
		return vvOf(repV, h.Public()) == 100 && vvOf(repH, v.Public()) == 2000
	})
}
