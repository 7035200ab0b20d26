package simulations

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/p2p"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

// Scenario transports (Scenario.Network, ScenarioOptions.Network).
const (
	// NetworkAuto is NetworkLibp2p up to AutoLibp2pMax venues,
	// NetworkMocknet beyond.
	NetworkAuto = "auto"
	// NetworkMemory delivers each op directly to the replicas of its
	// author's side (the harness's own delivery; no libp2p).
	NetworkMemory = "memory"
	// NetworkLibp2p gives each venue a p2p.Network on a real libp2p host
	// (TCP, Noise, yamux on 127.0.0.1).
	NetworkLibp2p = "libp2p"
	// NetworkMocknet gives each venue a p2p.Network on a go-libp2p
	// mocknet host, each link with the latency and bandwidth of the two
	// venues' uplinks.
	NetworkMocknet = "mocknet"
	// AutoLibp2pMax is the most venues NetworkAuto runs on real hosts.
	AutoLibp2pMax = 30
)

// DefaultConvergeTimeout bounds, in wall time, each wait for the network
// to carry a step's ops or to converge after a heal.
const DefaultConvergeTimeout = 60 * time.Second

// ResolveNetwork returns the transport a scenario of n venues runs on for
// the asked value ("" and "auto": libp2p up to AutoLibp2pMax venues,
// mocknet beyond).
func ResolveNetwork(asked string, n int) string {
	switch asked {
	case "", NetworkAuto:
		if n <= AutoLibp2pMax {
			return NetworkLibp2p
		}
		return NetworkMocknet
	}
	return asked
}

// venueReplica is the p2p.Replica a venue's network replicates: the
// venue's own crdt.Replica (the one the harness decides on) behind a
// p2p.MemReplica, every method taking the world lock for reading. The
// harness holds the world lock for writing while it plays a step, so the
// network's goroutines and the single-threaded harness never touch a
// replica at the same time, while the networks of different venues
// ingest in parallel between steps.
type venueReplica struct {
	*p2p.MemReplica
	world *sync.RWMutex
	// members is the federation key and the admitted venues, read when
	// the network starts: a scenario admits and revokes no venue after
	// its genesis, and IsMember is asked on every connection, pubsub RPC
	// and message, so it answers without waiting for the harness's step.
	members map[crdt.PublicKey]bool

	hooksMu sync.Mutex
	hooks   []func([]crdt.Op)

	// The digest is asked on every heartbeat a venue receives (p2p's
	// behind check) and by every convergence check; computing it sorts
	// every conflict the replica holds (thousands of double spends in
	// the territory: a quarter of the CPU of a mocknet run). It is kept
	// here, valid while gen is unchanged: gen moves after every change
	// the network makes (Ingest, IngestRange, IngestEvidence) and every
	// time the harness hands the replicas back (netCarrier.unlocked).
	digestMu sync.Mutex
	gen      uint64
	cached   bool
	cacheGen uint64
	dig      [32]byte
	digN     uint64
}

var _ p2p.Replica = (*venueReplica)(nil)

// newVenueReplica wraps r; nothing else may use r while it runs.
func newVenueReplica(r *crdt.Replica, world *sync.RWMutex) *venueReplica {
	v := &venueReplica{MemReplica: p2p.WrapReplica(r), world: world, members: map[crdt.PublicKey]bool{r.Set.Federation(): true}}
	for k, ven := range r.Set.State.Venues {
		if !ven.Revoked {
			v.members[k] = true
		}
	}
	v.MemReplica.OnChange(v.fire)
	return v
}

// fire runs the commit hooks (the network's, the carrier's).
func (v *venueReplica) fire(ops []crdt.Op) {
	if len(ops) == 0 {
		return
	}
	v.hooksMu.Lock()
	hooks := v.hooks
	v.hooksMu.Unlock()
	for _, h := range hooks {
		h(ops)
	}
}

// OnChange implements p2p.Replica.
func (v *venueReplica) OnChange(fn func([]crdt.Op)) {
	v.hooksMu.Lock()
	v.hooks = append(v.hooks, fn)
	v.hooksMu.Unlock()
}

// IsMember implements p2p.Replica.
// (from the membership at the network's start).
func (v *venueReplica) IsMember(k crdt.PublicKey) bool { return v.members[k] }

// Members implements p2p.Replica (from the membership at the network's
// start).
func (v *venueReplica) Members() []crdt.PublicKey {
	out := make([]crdt.PublicKey, 0, len(v.members))
	for k := range v.members {
		if k != v.Federation() {
			out = append(out, k)
		}
	}
	return out
}

// VersionVector implements p2p.Replica.
func (v *venueReplica) VersionVector() crdt.VersionVector {
	v.world.RLock()
	defer v.world.RUnlock()
	return v.MemReplica.VersionVector()
}

// Digest implements p2p.Replica.
func (v *venueReplica) Digest() ([32]byte, uint64) {
	v.world.RLock()
	defer v.world.RUnlock()
	return v.digest()
}

// digest returns the replica's digest and op count, from the cache while
// nothing changed. Caller holds the world lock (for reading or writing).
func (v *venueReplica) digest() ([32]byte, uint64) {
	v.digestMu.Lock()
	if v.cached && v.cacheGen == v.gen {
		d, n := v.dig, v.digN
		v.digestMu.Unlock()
		return d, n
	}
	gen := v.gen
	v.digestMu.Unlock()
	// Computed without digestMu (under the MemReplica's lock): a change
	// meanwhile moves gen, and the stale value is not kept.
	d, n := v.MemReplica.Digest()
	v.digestMu.Lock()
	if v.gen == gen {
		v.cached, v.cacheGen, v.dig, v.digN = true, gen, d, n
	}
	v.digestMu.Unlock()
	return d, n
}

// changed invalidates the cached digest (after the replica changed).
func (v *venueReplica) changed() {
	v.digestMu.Lock()
	v.gen++
	v.digestMu.Unlock()
}

// ReadRange implements p2p.Replica (fn runs without the lock, on a copy).
func (v *venueReplica) ReadRange(author crdt.PublicKey, from, to uint64, fn func(crdt.Op) error) error {
	var ops []crdt.Op
	v.world.RLock()
	err := v.MemReplica.ReadRange(author, from, to, func(op crdt.Op) error {
		ops = append(ops, op)
		return nil
	})
	v.world.RUnlock()
	if err != nil {
		return err
	}
	for _, op := range ops {
		if err := fn(op); err != nil {
			return err
		}
	}
	return nil
}

// Check implements p2p.Replica.
func (v *venueReplica) Check(op *crdt.Op) error {
	v.world.RLock()
	defer v.world.RUnlock()
	return v.MemReplica.Check(op)
}

// Ingest implements p2p.Replica.
func (v *venueReplica) Ingest(ctx context.Context, ops []crdt.Op) error {
	v.world.RLock()
	defer v.world.RUnlock()
	defer v.changed()
	return v.MemReplica.Ingest(ctx, ops)
}

// IngestRange implements p2p.Replica.
func (v *venueReplica) IngestRange(ctx context.Context, ops []crdt.Op) error {
	v.world.RLock()
	defer v.world.RUnlock()
	defer v.changed()
	return v.MemReplica.IngestRange(ctx, ops)
}

// Chains implements p2p.Replica.
func (v *venueReplica) Chains() map[crdt.PublicKey]p2p.Chain {
	v.world.RLock()
	defer v.world.RUnlock()
	return v.MemReplica.Chains()
}

// Evidence implements p2p.Replica.
func (v *venueReplica) Evidence() []crdt.Op {
	v.world.RLock()
	defer v.world.RUnlock()
	return v.MemReplica.Evidence()
}

// IngestEvidence implements p2p.Replica.
func (v *venueReplica) IngestEvidence(ctx context.Context, ops []crdt.Op) error {
	v.world.RLock()
	defer v.world.RUnlock()
	defer v.changed()
	return v.MemReplica.IngestEvidence(ctx, ops)
}

// carrierNode is one venue's node on the network.
type carrierNode struct {
	v      int
	signer *crdt.Signer
	rep    *venueReplica
	net    *p2p.Network
	host   host.Host // mocknet: the host the carrier made (and closes)
	wire   *WireCounter
	// sent is what the venue's earlier hosts (before a crash) sent, per
	// protocol.
	sent map[string]int64

	mu      sync.Mutex
	arrived []crdt.Op // ops the network committed, not yet handed to the harness
	// own ops made during the step, published when the network runs.
	own []crdt.Op
}

// opVis follows one op until every venue of its side holds it.
type opVis struct {
	need, got int
	last      time.Time
}

// netCarrier carries a scenario's ops over real p2p.Networks: one per
// venue, on real libp2p hosts on loopback TCP or on a mocknet. It
// implements Carrier: the harness's ops are held until Run lets the
// network move (the world lock released), then published by each venue's
// network as a node publishes its commits.
type netCarrier struct {
	kind    string
	world   *sync.RWMutex
	h       *Harness
	uplinks []Uplink
	mn      mocknet.Mocknet
	nodes   []*carrierNode
	log     *slog.Logger
	netLog  *slog.Logger // the networks' own logs
	noAE    bool
	hb      time.Duration
	mesh    int
	noScore bool
	scale   float64
	timeout time.Duration

	// wake is signalled on every commit a network makes.
	wake chan struct{}

	visMu    sync.Mutex
	vis      map[opKey]*opVis
	released time.Time
	// carried counts the ops given to the networks; stopped sums the
	// counters of the networks closed by crashes.
	carried int
	stopped p2p.Stats
}

// netCarrierConfig configures a netCarrier.
type netCarrierConfig struct {
	Kind    string // NetworkLibp2p or NetworkMocknet
	Uplinks []Uplink
	// NoAntiEntropy starts every network with anti-entropy held
	// (p2p.Config.HoldCatchUp, never resumed): the broken rule.
	NoAntiEntropy bool
	// Timeout bounds each wait (default DefaultConvergeTimeout).
	Timeout time.Duration
	// TimeScale (mocknet, default 1) runs the links that many times
	// faster (p2p's own timers keep their wall-clock values); measured
	// delays are multiplied back by it (Scenario.Transport.TimeScale).
	TimeScale float64
	// Heartbeat is the networks' heartbeat interval (default: the
	// federation's if under 2 s, else 2 s); MeshDegree their GossipSub
	// mesh (default p2p's).
	Heartbeat  time.Duration
	MeshDegree int
	// NoPeerScoring turns GossipSub's peer scoring off in every network
	// (p2p.Config.NoPeerScoring; default false: scoring on, as on a node).
	NoPeerScoring bool
	// Logger receives the carrier's milestones (default: discarded);
	// NetLogger the networks' own logs (default: discarded: on a loaded
	// machine GossipSub logs every heartbeat a busy node could not read).
	Logger, NetLogger *slog.Logger
}

// newNetCarrier starts one network per venue of h over the venue's
// replica, connects them in a full mesh and waits until every node is
// connected to every other. world must be held by the caller (for
// writing) and is released while the networks start.
func newNetCarrier(ctx context.Context, h *Harness, world *sync.RWMutex, cfg netCarrierConfig) (*netCarrier, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultConvergeTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.NetLogger == nil {
		cfg.NetLogger = slog.New(slog.DiscardHandler)
	}
	c := &netCarrier{
		kind: cfg.Kind, world: world, h: h, uplinks: cfg.Uplinks, log: cfg.Logger, netLog: cfg.NetLogger, noAE: cfg.NoAntiEntropy,
		timeout: cfg.Timeout, wake: make(chan struct{}, 1), vis: map[opKey]*opVis{},
	}
	c.hb = 2 * time.Second
	if s := h.Settings().HeartbeatInterval; s > 0 && time.Duration(s)*time.Millisecond < c.hb {
		c.hb = time.Duration(s) * time.Millisecond
	}
	if cfg.Heartbeat > 0 {
		c.hb = cfg.Heartbeat
	}
	c.mesh = cfg.MeshDegree
	c.noScore = cfg.NoPeerScoring
	c.scale = 1
	if cfg.TimeScale > 1 && c.kind == NetworkMocknet {
		c.scale = cfg.TimeScale
	}
	if c.kind == NetworkMocknet {
		c.mn = mocknet.New()
	}
	for v := range h.Len() {
		c.nodes = append(c.nodes, &carrierNode{v: v, signer: h.Venue(v).Signer, sent: map[string]int64{}})
	}
	var err error
	c.unlocked(func() {
		for _, n := range c.nodes {
			if err = c.start(ctx, n); err != nil {
				return
			}
		}
		linked := time.Now()
		if err = c.connectAll(ctx, make([]int, len(c.nodes))); err != nil {
			return
		}
		// The topics are up when every node has heard a heartbeat of
		// every other since the links came up.
		err = poll(ctx, c.timeout, 20*time.Millisecond, "a heartbeat of every venue at every venue", func() bool {
			for _, n := range c.nodes {
				heard := n.net.LastHeard()
				for _, o := range c.nodes {
					if o != n && !heard[o.signer.Public()].After(linked) {
						return false
					}
				}
			}
			return true
		})
	})
	if err != nil {
		// Closed with the world lock released: the networks' goroutines
		// may be waiting for it, and Close waits for them.
		c.unlocked(func() { _ = c.close() })
		return nil, err
	}
	return c, nil
}

// unlocked runs fn with the world lock released (the harness holds it
// otherwise).
func (c *netCarrier) unlocked(fn func()) {
	// The harness may have changed any replica while it held the lock.
	for _, n := range c.nodes {
		if n.rep != nil {
			n.rep.changed()
		}
	}
	c.world.Unlock()
	defer c.world.Lock()
	fn()
}

// start builds venue n's host and network over its current replica.
func (c *netCarrier) start(ctx context.Context, n *carrierNode) error {
	n.rep = newVenueReplica(c.h.Venue(n.v).Replica, c.world)
	self := n.signer.Public()
	n.rep.OnChange(func(ops []crdt.Op) { c.committed(n, self, ops) })
	cfg := p2p.DefaultConfig()
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.MDNS, cfg.NATPortMap, cfg.HolePunching = false, false, false
	cfg.Logger = c.netLog.With("venue", n.v)
	cfg.HeartbeatInterval = c.hb
	if c.mesh > 0 {
		cfg.MeshDegree = c.mesh
	}
	// A full mesh: a venue's own ops reach every other in one hop.
	cfg.TargetPeers = max(len(c.nodes)-1, 1)
	cfg.HoldCatchUp = c.noAE
	cfg.NoPeerScoring = c.noScore
	n.wire = NewWireCounter()
	cfg.HostOptions = []libp2p.Option{libp2p.BandwidthReporter(n.wire)}
	if c.mn != nil {
		priv, err := p2p.PrivKey(n.signer)
		if err != nil {
			return err
		}
		addr, err := ma.NewMultiaddr(fmt.Sprintf("/ip4/10.%d.%d.1/tcp/4001", n.v/250, n.v%250))
		if err != nil {
			return err
		}
		if n.host, err = c.mn.AddPeer(priv, addr); err != nil {
			return fmt.Errorf("simulations: mocknet peer %d: %w", n.v, err)
		}
		for _, o := range c.nodes {
			if o == n || o.host == nil {
				continue
			}
			l, err := c.mn.LinkPeers(n.host.ID(), o.host.ID())
			if err != nil {
				return fmt.Errorf("simulations: mocknet link %d-%d: %w", n.v, o.v, err)
			}
			l.SetOptions(c.linkOptions(n.v, o.v))
		}
		cfg.Host = n.host
	}
	net, err := p2p.New(ctx, cfg, n.rep, n.signer)
	if err != nil {
		return fmt.Errorf("simulations: network of venue %d: %w", n.v, err)
	}
	n.net = net
	return nil
}

// linkOptions is the mocknet link between venues a and b: the latency of
// both uplinks (one way each), the narrower bandwidth, both sped up by the
// time scale. Loss is not modelled (mocknet links are reliable streams).
func (c *netCarrier) linkOptions(a, b int) mocknet.LinkOptions {
	ua, ub := c.uplinks[a], c.uplinks[b]
	return mocknet.LinkOptions{
		Latency:   c.scaled(time.Duration(ua.LatencyMs+ub.LatencyMs) * time.Millisecond),
		Bandwidth: float64(min(ua.BandwidthKbps, ub.BandwidthKbps)) * 1000 / 8 * c.scale,
	}
}

// scaled is d run at the time scale (d / scale), at least 10 ms for a
// non-zero d (p2p's least timer).
func (c *netCarrier) scaled(d time.Duration) time.Duration {
	if c.scale <= 1 || d <= 0 {
		return d
	}
	return max(time.Duration(float64(d)/c.scale), 10*time.Millisecond)
}

// unscaled converts a measured wall time to the time on the scenario's
// uplinks (wall × scale), in milliseconds.
func (c *netCarrier) unscaled(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000 * c.scale
}

// stop closes venue n's network and host (kill -9: nothing flushed; the
// replica is what the harness keeps as durable), keeping its wire counts.
func (c *netCarrier) stop(n *carrierNode) error {
	var errs []error
	if n.net != nil {
		errs = append(errs, n.net.Close())
		c.stopped = combineStats(c.stopped, n.net.Stats(), 1)
		n.net = nil
	}
	if n.wire != nil {
		for p, b := range n.wire.SentByProtocol() {
			n.sent[string(p)] += b
		}
		n.wire = nil
	}
	if n.host != nil {
		errs = append(errs, n.host.Close())
		for _, o := range c.nodes {
			if o != n && o.host != nil {
				_ = c.mn.UnlinkPeers(n.host.ID(), o.host.ID())
			}
		}
		n.host = nil
	}
	n.mu.Lock()
	n.arrived, n.own = nil, nil
	n.mu.Unlock()
	return errors.Join(errs...)
}

// restart is a crash of venue v: its network is closed and a new one
// started over the replica the harness restarted it with. Called with
// the world lock held.
func (c *netCarrier) restart(ctx context.Context, v int) error {
	n := c.nodes[v]
	var err error
	c.unlocked(func() {
		if err = c.stop(n); err != nil {
			return
		}
		err = c.start(ctx, n)
	})
	return err
}

// close stops every network.
func (c *netCarrier) close() error {
	var errs []error
	for _, n := range c.nodes {
		errs = append(errs, c.stop(n))
	}
	if c.mn != nil {
		errs = append(errs, c.mn.Close())
	}
	return errors.Join(errs...)
}

// Emitted implements Carrier: the op waits until the network runs.
func (c *netCarrier) Emitted(v int, op crdt.Op) {
	c.carried++
	n := c.nodes[v]
	n.mu.Lock()
	n.own = append(n.own, op)
	n.mu.Unlock()
	need := 0
	for _, u := range c.h.Active() {
		if u != v && c.h.Group(u) == c.h.Group(v) {
			need++
		}
	}
	if need > 0 {
		c.visMu.Lock()
		c.vis[opKey{op.Author, op.Seq}] = &opVis{need: need}
		c.visMu.Unlock()
	}
}

// committed is a venue's commit hook: ops from the network are kept for
// the harness and their arrival recorded.
func (c *netCarrier) committed(n *carrierNode, self crdt.PublicKey, ops []crdt.Op) {
	now := time.Now()
	var in []crdt.Op
	for _, op := range ops {
		if op.Author != self {
			in = append(in, op)
		}
	}
	if len(in) == 0 {
		return
	}
	n.mu.Lock()
	n.arrived = append(n.arrived, in...)
	n.mu.Unlock()
	c.visMu.Lock()
	for i := range in {
		if t := c.vis[opKey{in[i].Author, in[i].Seq}]; t != nil {
			t.got++
			t.last = now
		}
	}
	c.visMu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// layout applies the harness's groups to the network: every pair of
// venues on different sides blocks each other (p2p.Network.Block: the
// connection gater on real hosts, closing connections on mocknet) and
// every pair on one side is unblocked and connected. A down venue (down[v])
// is cut from everyone. Called with the world lock held; the network runs
// meanwhile.
func (c *netCarrier) layout(ctx context.Context, down []bool) error {
	group := make([]int, len(c.nodes))
	for v := range group {
		group[v] = c.h.Group(v)
		if down[v] {
			group[v] = -1 - v
		}
	}
	var err error
	c.unlocked(func() { err = c.connectAll(ctx, group) })
	return err
}

// connectAll blocks the pairs on different sides, waits until no
// connection crosses sides, then unblocks and connects the pairs on one
// side.
func (c *netCarrier) connectAll(ctx context.Context, group []int) error {
	for i, a := range c.nodes {
		for j, b := range c.nodes {
			if i != j && group[i] != group[j] {
				a.net.Block(b.net.ID())
			}
		}
	}
	err := poll(ctx, c.timeout, 5*time.Millisecond, "the partition", func() bool {
		for i, a := range c.nodes {
			for _, p := range a.net.Connected() {
				if j := c.index(p); j >= 0 && group[j] != group[i] {
					return false
				}
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, a := range c.nodes {
		for j, b := range c.nodes {
			if i == j || group[i] != group[j] {
				continue
			}
			a.net.Unblock(b.net.ID())
			if i > j || slices.Contains(a.net.Connected(), b.net.ID()) {
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				// A failed dial is left to the node's own redials.
				if err := a.net.Connect(cctx, b.net.AddrInfo()); err != nil {
					c.log.Debug("simulate: connect", "from", i, "to", j, "err", err)
				}
			}()
		}
	}
	wg.Wait()
	return nil
}

// index returns the venue whose network has peer id p, or -1.
func (c *netCarrier) index(p peer.ID) int {
	for i, n := range c.nodes {
		if n.net != nil && n.net.ID() == p {
			return i
		}
	}
	return -1
}

// converged reports whether every venue of each side holds the same ops
// (one digest per side). It reads each replica under its MemReplica's
// lock, as the venue's network may be ingesting. Caller holds the world
// lock for reading.
func (c *netCarrier) converged(down []bool) bool {
	first := map[int][32]byte{}
	count := map[int]uint64{}
	for _, v := range c.h.Active() {
		if down[v] || c.nodes[v].rep == nil {
			continue
		}
		g := c.h.Group(v)
		d, n := c.nodes[v].rep.digest()
		if _, ok := first[g]; !ok {
			first[g], count[g] = d, n
		} else if count[g] != n || first[g] != d {
			return false
		}
	}
	return true
}

// errNotConverged is returned by run when the network did not converge
// within the timeout.
var errNotConverged = errors.New("the network did not converge in time")

// run lets the network move: the world lock is released, each venue's
// network publishes the ops the venue made during the step (one commit:
// batched into gossip messages as a node does), and run waits — on the
// networks' commits, with a deadline, never a sleep — until every venue
// of each side holds the same ops. It returns the wall time that took and
// the ops each venue received, by venue. Called with the world lock
// held for writing; returns with it held.
func (c *netCarrier) run(ctx context.Context, down []bool) (time.Duration, [][]crdt.Op, error) {
	start := time.Now()
	c.visMu.Lock()
	c.released = start
	c.visMu.Unlock()
	var err error
	c.unlocked(func() {
		for _, n := range c.nodes {
			n.mu.Lock()
			own := n.own
			n.own = nil
			n.mu.Unlock()
			if len(own) > 0 && n.rep != nil {
				n.rep.fire(own)
			}
		}
		err = c.wait(ctx, down)
	})
	took := time.Since(start)
	got := make([][]crdt.Op, len(c.nodes))
	for v, n := range c.nodes {
		n.mu.Lock()
		got[v], n.arrived = n.arrived, nil
		n.mu.Unlock()
	}
	return took, got, err
}

// wait polls converged when a network commits (at most once per
// checkGap: each check reads every replica's digest) and every 20 ms,
// until it holds or the timeout passes.
func (c *netCarrier) wait(ctx context.Context, down []bool) error {
	check := func() bool {
		c.world.RLock()
		defer c.world.RUnlock()
		return c.converged(down)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	gap := time.NewTimer(checkGap)
	defer gap.Stop()
	done := func() error {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("%w (%s)", errNotConverged, c.timeout)
		}
		return ctx.Err()
	}
	for !check() {
		gap.Reset(checkGap)
		select {
		case <-ctx.Done():
			return done()
		case <-c.wake:
		case <-tick.C:
		}
		select {
		case <-ctx.Done():
			return done()
		case <-gap.C:
		}
	}
	return nil
}

// checkGap is the least time between two convergence checks.
const checkGap = 2 * time.Millisecond

// visibility returns, in ms from the release of the step that made them
// (wall time × the time scale), the delay until the last venue of its side
// held each op that reached all of them, and forgets every op followed.
func (c *netCarrier) visibility() []float64 {
	c.visMu.Lock()
	defer c.visMu.Unlock()
	var out []float64
	for _, t := range c.vis {
		if t.got >= t.need && !t.last.IsZero() {
			out = append(out, c.unscaled(t.last.Sub(c.released)))
		}
	}
	clear(c.vis)
	slices.Sort(out)
	return out
}

// wire returns the bytes venue v's hosts sent so far, per protocol.
func (c *netCarrier) wire(v int) map[string]int64 {
	n := c.nodes[v]
	out := maps.Clone(n.sent)
	if n.wire != nil {
		for p, b := range n.wire.SentByProtocol() {
			out[string(p)] += b
		}
	}
	return out
}

// stats sums the networks' counters, those closed by crashes included.
func (c *netCarrier) stats() p2p.Stats {
	t := c.stopped
	for _, n := range c.nodes {
		if n.net != nil {
			t = combineStats(t, n.net.Stats(), 1)
		}
	}
	return t
}

// pendingOwn reports whether a venue made ops the network has not been
// given yet.
func (c *netCarrier) pendingOwn() bool {
	for _, n := range c.nodes {
		n.mu.Lock()
		k := len(n.own)
		n.mu.Unlock()
		if k > 0 {
			return true
		}
	}
	return false
}
