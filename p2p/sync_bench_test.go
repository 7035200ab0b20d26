package p2p

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

// BenchmarkSyncCatchUp: a replica holding 20,000 ops of one venue, and a
// fresh one that connects and pulls them all by anti-entropy (mocknet: no
// sockets). Reports the time per op from connect to the last op committed.
func BenchmarkSyncCatchUp(b *testing.B) {
	const ops = 20000
	src, dst := seedSigner(b, 60), seedSigner(b, 61)
	fed := testFederation(b, src, dst)
	history := topUps(b, src, ops)
	repSrc, err := NewMemReplica(fed, src, nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, op := range history {
		if err := repSrc.Replica().Deliver(op); err != nil {
			b.Fatal(err)
		}
	}
	mn := mocknet.New()
	defer mn.Close()
	start := func(rep Replica, s *crdt.Signer, i int) *Network {
		priv, _ := PrivKey(s)
		h, err := mn.AddPeer(priv, ma.StringCast(fmt.Sprintf("/ip4/10.0.1.%d/tcp/4001", i)))
		if err != nil {
			b.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.Host, cfg.MDNS = h, false
		cfg.HeartbeatInterval, cfg.SyncInterval = time.Hour, time.Hour
		cfg.Logger = quiet()
		n, err := New(context.Background(), cfg, rep, s)
		if err != nil {
			b.Fatal(err)
		}
		return n
	}
	ns := start(repSrc, src, 1)
	defer ns.Close()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		repDst, err := NewMemReplica(fed, dst, nil)
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		var once sync.Once
		repDst.OnChange(func(added []crdt.Op) {
			for _, op := range added {
				if op.Author == src.Public() && op.Seq == ops {
					once.Do(func() { close(done) })
				}
			}
		})
		nd := start(repDst, dst, 2+i)
		if err := mn.LinkAll(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := nd.Connect(context.Background(), peer.AddrInfo{ID: ns.ID(), Addrs: ns.Addrs()}); err != nil {
			b.Fatal(err)
		}
		select {
		case <-done:
		case <-time.After(time.Minute):
			b.Fatal("catch-up did not finish")
		}
		b.StopTimer()
		nd.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*ops), "ns/op-each")
}
