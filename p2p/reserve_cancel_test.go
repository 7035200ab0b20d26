package p2p

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// freezer is a TCP proxy that can stop forwarding: a link that goes dead
// without closing, as a partition makes it. While frozen it reads nothing
// more, so the sender's socket buffers fill and its writes block.
type freezer struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	frozen bool
	thaw   chan struct{}
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target, thaw: make(chan struct{})}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			// Small buffers: little is absorbed once frozen.
			_ = c.(*net.TCPConn).SetReadBuffer(4096)
			_ = d.(*net.TCPConn).SetReadBuffer(4096)
			f.mu.Lock()
			f.conns = append(f.conns, c, d)
			f.mu.Unlock()
			f.wg.Add(2)
			go f.pipe(d, c)
			go f.pipe(c, d)
		}
	}()
	t.Cleanup(f.close)
	return f
}

// pipe copies from src to dst, holding each chunk while frozen.
func (f *freezer) pipe(dst, src net.Conn) {
	defer f.wg.Done()
	buf := make([]byte, 4096)
	for {
		k, err := src.Read(buf)
		if err != nil {
			_ = dst.Close()
			return
		}
		f.mu.Lock()
		frozen, thaw := f.frozen, f.thaw
		f.mu.Unlock()
		if frozen {
			<-thaw
		}
		if _, err := dst.Write(buf[:k]); err != nil {
			_ = src.Close()
			return
		}
	}
}

func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frozen = true
}

// close thaws the pipes, closes every connection and waits for them.
func (f *freezer) close() {
	f.mu.Lock()
	if f.frozen {
		f.frozen = false
		close(f.thaw)
	}
	conns := f.conns
	f.mu.Unlock()
	_ = f.ln.Close()
	for _, c := range conns {
		_ = c.Close()
	}
	f.wg.Wait()
}

// TestReserveAskReturnsOnCancel: a reservation request on a connection
// whose writes are stalled (the link went dead without closing, and the
// connection's send queue is full) returns as soon as its context is
// cancelled. Before, the request's write, and then the stream's Close,
// each waited for the connection's write timeout (10 s).
func TestReserveAskReturnsOnCancel(t *testing.T) {
	sa, sc := seedSigner(t, 70), seedSigner(t, 71)
	fed := testFederation(t, sa, sc)
	ra, err := NewMemReplica(fed, sa, nil)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := NewMemReplica(fed, sc, nil)
	if err != nil {
		t.Fatal(err)
	}
	asker := resumeNet(t, ra, sa, nil)
	coord := resumeNet(t, rc, sc, nil)
	var target string
	for _, a := range coord.Addrs() {
		if na, err := manet.ToNetAddr(a); err == nil && na.Network() == "tcp" {
			target = na.String()
		}
	}
	f := newFreezer(t, target)
	proxy, err := manet.FromNetAddr(f.ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := asker.Connect(ctx, peer.AddrInfo{ID: coord.ID(), Addrs: []ma.Multiaddr{proxy}}); err != nil {
		t.Fatal(err)
	}
	// The request's stream is open (negotiated) before the link dies.
	s, err := asker.host.NewStream(ctx, coord.ID(), ReserveProtocol)
	if err != nil {
		t.Fatal(err)
	}
	// Streams to fill the connection once frozen: raw streams (no
	// protocol negotiation), each written up to its window.
	const fillers = 48
	fill := make([]network.Stream, fillers)
	for i := range fill {
		if fill[i], err = asker.host.Network().NewStream(ctx, coord.ID()); err != nil {
			t.Fatal(err)
		}
	}
	probe, err := asker.host.Network().NewStream(ctx, coord.ID())
	if err != nil {
		t.Fatal(err)
	}
	f.freeze()
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, fs := range fill {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = fs.SetWriteDeadline(time.Now().Add(30 * time.Second))
			_, _ = fs.Write(make([]byte, 256<<10))
			_ = fs.Reset()
		}()
	}
	// Closing the connection ends the blocked writes at once.
	defer func() { _ = asker.host.Network().ClosePeer(coord.ID()) }()
	// The send queue is full once a one-byte write cannot be queued
	// within its deadline.
	waitUntil(t, 20*time.Second, "the connection's send queue to fill", func() bool {
		_ = probe.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := probe.Write([]byte{0})
		return err != nil
	})

	actx, cancel := context.WithCancel(ctx)
	done := make(chan reserveAnswer, 1)
	go func() {
		done <- asker.exchangeReserve(actx, s, sc.Public(), encodeReserveRequest(reserveOpReserve, "04A1B2C3D4", 3000))
	}()
	cancel()
	start := time.Now()
	select {
	case a := <-done:
		if !errors.Is(a.err, context.Canceled) {
			t.Fatalf("answer %+v, want an error wrapping context.Canceled", a)
		}
		if took := time.Since(start); took > time.Second {
			t.Fatalf("returned %s after the cancel", took)
		}
		t.Logf("returned %s after the cancel", time.Since(start).Round(time.Microsecond))
	case <-time.After(5 * time.Second):
		t.Fatal("the request still blocks 5 s after its context was cancelled")
	}
}
