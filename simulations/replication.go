// Replication scenarios: real p2p networks in one process.
//
// Unlike the offline-risk harness (a virtual clock and instant delivery),
// these scenarios run the real network layer: every node is a
// [p2p.Network] over a [p2p.MemReplica], with its own libp2p host (TCP,
// Noise and yamux on 127.0.0.1, or go-libp2p's mocknet for clusters too
// large for real hosts on a small machine), its GossipSub topics, its
// heartbeats and its anti-entropy sessions, all on the wall clock.
//
// A [Cluster] builds N nodes of one federation: a federation key derived
// from the seed makes the genesis (crdt.DefaultSettings) and one admission
// per node with crdt.NewAuthor, and that chain is in every replica before
// its network starts. Each node's network starts from p2p.DefaultConfig
// (no mDNS, port mapping nor hole punching) with the federation's
// heartbeat interval, as a node applies it (2 s). The cluster connects the
// nodes (a full mesh up to 10 nodes; above, a ring plus random links, the
// nodes then dialling the members they learn of from heartbeats up to
// their TargetPeers) and waits until the mesh is formed: every node has
// its target number of connections and has heard, since then, a heartbeat
// of every other node. A partition blocks, with [p2p.Network.Block] on
// both sides, every pair of nodes in different groups; healing unblocks
// them. Ops are payments and top-ups on a few hundred cards, each signed
// by the node's own author and committed with [p2p.MemReplica.Make], so
// they gossip like a venue's.
//
// Bytes on the wire are counted by a [WireCounter] per host, installed with
// libp2p.BandwidthReporter through Config.HostOptions: a
// metrics.BandwidthCounter plus exact atomic totals (the counter's own
// totals are swept once a second). libp2p counts what the protocols write
// to their streams: GossipSub RPCs, sync frames, identify, ping and the
// multistream negotiation; not yamux, Noise or TCP/IP framing. Mocknet
// hosts report nothing.
//
// The scenarios:
//
//   - [RunReconvergence]: the nodes split in two halves; OpsPerSide ops are
//     made on each side, spread over its nodes; each side converges
//     internally (gossip, and anti-entropy for what gossip dropped) and
//     its traffic dies down (no ops message nor op carried by anti-entropy
//     for 3 s, the span of GossipSub's gossip window); then the partition
//     heals. Measured: the time from the heal until every node holds every
//     op (hence one digest), and the bytes all hosts sent in that time
//     divided by Σ over nodes of the encoded size of the ops that node
//     lacked at the heal. Targets at 20 nodes × 10,000 ops per side: ≤ 3 s
//     and ≤ 1.3×.
//   - [RunSteady]: no partition; Rate ops/s in total, each made by a random
//     node at its due time, for Duration. Measured: for each op, the time
//     from just before its creation to its arrival at the last node (each
//     replica's commit hook records arrivals, and whether anti-entropy
//     rather than gossip brought it), as p50, p90, p99 and max (target at
//     50 nodes and 100 ops/s: p99 ≤ 250 ms); and the steady-state cost,
//     bytes sent by all hosts from the first op to the last arrival divided
//     by ops × nodes, heartbeats, GossipSub control traffic and periodic
//     anti-entropy included.
//
// Each run checks that every node ends with the same digest and exactly
// the federation ops plus every op made (no op lost, none counted twice),
// reports the CPU the process used (all nodes share the machine), and
// closes every network and host before returning. replication_test.go runs
// the scenarios small; its benchmarks run them at full size
// (docs/benchmarks.md).

package simulations

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"reflect"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/p2p"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

// WireCounter is a host's bandwidth reporter: a metrics.BandwidthCounter
// that also keeps exact running totals (the counter's own are swept once a
// second) and the bytes sent per protocol.
type WireCounter struct {
	*metrics.BandwidthCounter
	sent, recv atomic.Int64
	mu         sync.Mutex
	byProto    map[protocol.ID]int64
}

var _ metrics.Reporter = (*WireCounter)(nil)

// NewWireCounter returns a counter at zero.
func NewWireCounter() *WireCounter {
	return &WireCounter{BandwidthCounter: metrics.NewBandwidthCounter(), byProto: map[protocol.ID]int64{}}
}

// LogSentMessage records bytes sent.
func (w *WireCounter) LogSentMessage(n int64) {
	w.BandwidthCounter.LogSentMessage(n)
	w.sent.Add(n)
}

// LogRecvMessage records bytes received.
func (w *WireCounter) LogRecvMessage(n int64) {
	w.BandwidthCounter.LogRecvMessage(n)
	w.recv.Add(n)
}

// LogSentMessageStream records bytes sent on a stream of protocol proto.
func (w *WireCounter) LogSentMessageStream(n int64, proto protocol.ID, p peer.ID) {
	w.BandwidthCounter.LogSentMessageStream(n, proto, p)
	w.mu.Lock()
	w.byProto[proto] += n
	w.mu.Unlock()
}

// Sent returns the bytes sent so far.
func (w *WireCounter) Sent() int64 { return w.sent.Load() }

// Received returns the bytes received so far.
func (w *WireCounter) Received() int64 { return w.recv.Load() }

// SentByProtocol returns the bytes sent so far per protocol ("" is
// multistream negotiation before a protocol is chosen).
func (w *WireCounter) SentByProtocol() map[protocol.ID]int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.byProto)
}

// ClusterConfig configures a Cluster.
type ClusterConfig struct {
	// Nodes is the number of nodes (at least 2).
	Nodes int
	// Seed derives the keys and drives the random choices (links, cards,
	// amounts, which node makes an op).
	Seed uint64
	// Degree is how many random other nodes each node dials at start, on
	// top of its ring neighbour, when there are more than 10 nodes (up to
	// 10 nodes the cluster is a full mesh). Default 3.
	Degree int
	// Cards is the number of cards the ops pay with or top up. Default 300.
	Cards int
	// Network adjusts node i's network configuration, which starts from
	// p2p.DefaultConfig with TCP on 127.0.0.1 only, no mDNS, port mapping
	// nor hole punching, and the federation's heartbeat interval as a node
	// applies it (crdt.DefaultSettings: 2 s; anti-entropy every 10 s).
	Network func(i int, cfg *p2p.Config)
	// Mocknet runs the hosts on go-libp2p's mocknet (in-memory links: no
	// sockets, no encryption, no multiplexer) instead of TCP on loopback,
	// for clusters too large for real hosts on a small machine. Bytes are
	// not counted there (WireSent stays 0), and a partition made with
	// Block is enforced by each node closing the other side's connections
	// (a mocknet host has no gater).
	Mocknet bool
	// Logger receives the nodes' logs. Default: discarded.
	Logger *slog.Logger
}

// Cluster is N in-process nodes of one federation, each a p2p.Network over
// a p2p.MemReplica on its own libp2p host. Close it when done.
type Cluster struct {
	cfg   ClusterConfig
	fed   []crdt.Op
	nodes []*ClusterNode
	mn    mocknet.Mocknet // with ClusterConfig.Mocknet
	gen   *opGen
	// observe, if set, sees every commit of every node (arrival records);
	// bySync tells whether an op came by anti-entropy.
	observe atomic.Pointer[func(node int, at time.Time, ops []crdt.Op, bySync func(crdt.Op) bool)]
}

// ClusterNode is one node of a Cluster.
type ClusterNode struct {
	// Index is the node's place in the cluster; Signer its node key.
	Index  int
	Signer *crdt.Signer
	// Replica holds its ops; Make on it signs and commits one of its own.
	Replica *p2p.MemReplica
	// Net is its network; Wire counts its host's bytes.
	Net  *p2p.Network
	Wire *WireCounter
	// TargetPeers is the node's configured connection target.
	TargetPeers int
	// lastChange is when the replica last committed ops, Unix ns; ops
	// counts the ops committed (the federation's included).
	lastChange atomic.Int64
	ops        atomic.Uint64
	// heartbeat and syncEvery are the node's configured intervals, mesh
	// its GossipSub mesh degree.
	heartbeat, syncEvery time.Duration
	mesh                 int
}

// trackedReplica is the replica a node's network sees: its MemReplica,
// remembering which ops anti-entropy is committing (IngestRange) so that
// the arrival records can tell them from gossip.
type trackedReplica struct {
	*p2p.MemReplica
	mu      sync.Mutex
	inRange map[opKey]bool
}

// IngestRange implements p2p.Replica.
func (t *trackedReplica) IngestRange(ctx context.Context, ops []crdt.Op) error {
	t.mu.Lock()
	for i := range ops {
		t.inRange[opKey{ops[i].Author, ops[i].Seq}] = true
	}
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		for i := range ops {
			delete(t.inRange, opKey{ops[i].Author, ops[i].Seq})
		}
		t.mu.Unlock()
	}()
	return t.MemReplica.IngestRange(ctx, ops)
}

// fromSync reports whether op is being committed by anti-entropy.
func (t *trackedReplica) fromSync(op crdt.Op) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.inRange[opKey{op.Author, op.Seq}]
}

// replSigner derives the key of a role ("federation", "node/3") under the
// seed.
func replSigner(seed uint64, role string) (*crdt.Signer, error) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seed)
	h := sha256.Sum256(append(append([]byte("cagnotte/simulations/replication/"), b[:]...), role...))
	return crdt.SignerFromSeed(h[:])
}

// NewCluster builds the federation, starts every node's network (not yet
// connected: see Connect) and returns the cluster. On error, whatever was
// started is closed.
func NewCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	if cfg.Nodes < 2 {
		return nil, fmt.Errorf("simulations: a cluster needs at least 2 nodes, got %d", cfg.Nodes)
	}
	if cfg.Degree <= 0 {
		cfg.Degree = 3
	}
	if cfg.Cards <= 0 {
		cfg.Cards = 300
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	fedSigner, err := replSigner(cfg.Seed, "federation")
	if err != nil {
		return nil, err
	}
	fed := crdt.NewAuthor(fedSigner, crdt.NewClock(func() int64 { return time.Now().UnixMilli() }), 0, crdt.OpID{})
	settings := crdt.DefaultSettings()
	chain := []crdt.Op{fed.Make(&crdt.Genesis{Name: "Replication simulation", Currency: "EUR", Settings: settings})}
	signers := make([]*crdt.Signer, cfg.Nodes)
	for i := range signers {
		if signers[i], err = replSigner(cfg.Seed, fmt.Sprintf("node/%d", i)); err != nil {
			return nil, err
		}
		chain = append(chain, fed.Make(&crdt.Admit{Venue: signers[i].Public(), Name: fmt.Sprintf("Node %d", i)}))
	}
	c := &Cluster{cfg: cfg, fed: chain, gen: newOpGen(cfg.Seed, cfg.Cards)}
	if cfg.Mocknet {
		c.mn = mocknet.New()
	}
	for i, s := range signers {
		rep, err := p2p.NewMemReplica(chain, s, nil)
		if err != nil {
			c.Close()
			return nil, err
		}
		n := &ClusterNode{Index: i, Signer: s, Replica: rep, Wire: NewWireCounter()}
		n.ops.Store(uint64(len(chain)))
		tr := &trackedReplica{MemReplica: rep, inRange: map[opKey]bool{}}
		rep.OnChange(func(ops []crdt.Op) {
			now := time.Now()
			n.lastChange.Store(now.UnixNano())
			n.ops.Add(uint64(len(ops)))
			if f := c.observe.Load(); f != nil {
				(*f)(i, now, ops, tr.fromSync)
			}
		})
		ncfg := p2p.DefaultConfig()
		ncfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
		ncfg.MDNS, ncfg.NATPortMap, ncfg.HolePunching = false, false, false
		ncfg.Logger = cfg.Logger.With("node", i)
		// Heartbeats follow the federation's settings, as a node sets them
		// (node.startNetwork).
		if hb := time.Duration(settings.HeartbeatInterval) * time.Millisecond; hb > 0 && hb < ncfg.HeartbeatInterval {
			ncfg.HeartbeatInterval = hb
		}
		if cfg.Network != nil {
			cfg.Network(i, &ncfg)
		}
		ncfg.HostOptions = append(slices.Clip(ncfg.HostOptions), libp2p.BandwidthReporter(n.Wire))
		if c.mn != nil {
			priv, err := p2p.PrivKey(s)
			if err != nil {
				c.Close()
				return nil, err
			}
			// 10.<i/250>.<i%250>.1: distinct, not loopback (heartbeats
			// advertise it).
			addr, err := ma.NewMultiaddr(fmt.Sprintf("/ip4/10.%d.%d.1/tcp/4001", i/250, i%250))
			if err != nil {
				c.Close()
				return nil, err
			}
			if ncfg.Host, err = c.mn.AddPeer(priv, addr); err != nil {
				c.Close()
				return nil, fmt.Errorf("simulations: mocknet peer %d: %w", i, err)
			}
		}
		n.TargetPeers = ncfg.TargetPeers
		if n.TargetPeers <= 0 {
			n.TargetPeers = p2p.DefaultConfig().TargetPeers
		}
		n.heartbeat, n.syncEvery, n.mesh = ncfg.HeartbeatInterval, ncfg.SyncInterval, ncfg.MeshDegree
		if n.mesh <= 0 {
			n.mesh = p2p.DefaultConfig().MeshDegree
		}
		if n.Net, err = p2p.New(ctx, ncfg, tr, s); err != nil {
			c.Close()
			return nil, fmt.Errorf("simulations: node %d: %w", i, err)
		}
		c.nodes = append(c.nodes, n)
	}
	if c.mn != nil {
		// Every pair may connect; who does is up to Connect and the nodes.
		if err := c.mn.LinkAll(); err != nil {
			c.Close()
			return nil, fmt.Errorf("simulations: mocknet links: %w", err)
		}
	}
	return c, nil
}

// Nodes returns the cluster's nodes.
func (c *Cluster) Nodes() []*ClusterNode { return c.nodes }

// FederationOps returns the number of federation ops (genesis and
// admissions) every replica starts with.
func (c *Cluster) FederationOps() int { return len(c.fed) }

// Close closes every node's network and host and waits for their
// goroutines.
func (c *Cluster) Close() error {
	c.observe.Store(nil)
	var errs []error
	for _, n := range c.nodes {
		if n.Net != nil {
			if err := n.Net.Close(); err != nil {
				errs = append(errs, fmt.Errorf("node %d: %w", n.Index, err))
			}
		}
	}
	if c.mn != nil {
		if err := c.mn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("mocknet: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Connect dials the initial links: a full mesh up to 10 nodes; above, each
// node dials its ring successor and Degree random others.
func (c *Cluster) Connect(ctx context.Context) error {
	n := len(c.nodes)
	links := map[[2]int]bool{}
	add := func(i, j int) {
		if i != j && !links[[2]int{j, i}] {
			links[[2]int{i, j}] = true
		}
	}
	if n <= 10 {
		for i := range n {
			for j := i + 1; j < n; j++ {
				add(i, j)
			}
		}
	} else {
		rng := newReplRng(c.cfg.Seed ^ 0x6c696e6b73)
		for i := range n {
			add(i, (i+1)%n)
			for range c.cfg.Degree {
				add(i, rng.IntN(n))
			}
		}
	}
	keys := slices.SortedFunc(maps.Keys(links), func(a, b [2]int) int {
		if a[0] != b[0] {
			return a[0] - b[0]
		}
		return a[1] - b[1]
	})
	for _, l := range keys {
		a, b := c.nodes[l[0]], c.nodes[l[1]]
		if err := a.Net.Connect(ctx, b.Net.AddrInfo()); err != nil {
			return fmt.Errorf("simulations: link %d-%d: %w", l[0], l[1], err)
		}
	}
	return nil
}

// poll checks cond every interval until it holds, ctx ends or timeout
// passes.
func poll(ctx context.Context, timeout, interval time.Duration, what string, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("simulations: waiting for %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// connectedMembers counts n's open connections to other cluster nodes.
func (c *Cluster) connectedMembers(n *ClusterNode) int {
	return len(n.Net.Connected())
}

// WaitMesh waits until every node has min(TargetPeers, N-1) connections
// and has then heard a heartbeat from every other node (within timeout).
// With HeartbeatInterval h this takes up to about h after the links are
// up.
func (c *Cluster) WaitMesh(ctx context.Context, timeout time.Duration) error {
	start := time.Now()
	n := len(c.nodes)
	err := poll(ctx, timeout, 20*time.Millisecond, "the connections", func() bool {
		for _, nd := range c.nodes {
			if c.connectedMembers(nd) < min(nd.TargetPeers, n-1) {
				return false
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	linked := time.Now()
	return poll(ctx, timeout-time.Since(start), 20*time.Millisecond, "a heartbeat of every node at every node", func() bool {
		for _, nd := range c.nodes {
			heard := nd.Net.LastHeard()
			for _, o := range c.nodes {
				if o != nd && !heard[o.Signer.Public()].After(linked) {
					return false
				}
			}
		}
		return true
	})
}

// Partition cuts every link between nodes of different groups (Block on
// both sides) and waits until no such connection is left. Nodes in no
// group keep all their links.
func (c *Cluster) Partition(ctx context.Context, groups [][]int) error {
	group := make([]int, len(c.nodes))
	for i := range group {
		group[i] = -1
	}
	for g, members := range groups {
		for _, i := range members {
			group[i] = g
		}
	}
	apart := func(i, j int) bool { return group[i] >= 0 && group[j] >= 0 && group[i] != group[j] }
	for i, a := range c.nodes {
		for j, b := range c.nodes {
			if apart(i, j) {
				a.Net.Block(b.Net.ID())
			}
		}
	}
	return poll(ctx, 10*time.Second, 5*time.Millisecond, "the partition", func() bool {
		for i, a := range c.nodes {
			for _, p := range a.Net.Connected() {
				for j, b := range c.nodes {
					if b.Net.ID() == p && apart(i, j) {
						return false
					}
				}
			}
		}
		return true
	})
}

// Heal unblocks every pair of nodes: each node redials the members it
// knows of up to its connection target.
func (c *Cluster) Heal() {
	for _, a := range c.nodes {
		for _, b := range c.nodes {
			if a != b {
				a.Net.Unblock(b.Net.ID())
			}
		}
	}
}

// Converged reports whether the nodes idx (all if none) hold want ops
// each and one digest.
func (c *Cluster) Converged(want uint64, idx ...int) bool {
	if len(idx) == 0 {
		idx = c.all()
	}
	// The commit hooks' counts first: cheap enough to poll every few
	// milliseconds while the nodes work.
	for _, i := range idx {
		if c.nodes[i].ops.Load() != want {
			return false
		}
	}
	var d0 [32]byte
	for k, i := range idx {
		d, l := c.nodes[i].Replica.Digest()
		if l != want {
			return false
		}
		if k == 0 {
			d0 = d
		} else if d != d0 {
			return false
		}
	}
	return true
}

// index returns the index of the node with peer id p, or -1.
func (c *Cluster) index(p peer.ID) int {
	for i, n := range c.nodes {
		if n.Net.ID() == p {
			return i
		}
	}
	return -1
}

func (c *Cluster) all() []int {
	out := make([]int, len(c.nodes))
	for i := range out {
		out[i] = i
	}
	return out
}

// CheckConverged returns an error unless every node holds exactly want ops
// and all have one digest.
func (c *Cluster) CheckConverged(want uint64) error {
	d0, _ := c.nodes[0].Replica.Digest()
	for _, n := range c.nodes {
		d, l := n.Replica.Digest()
		if l != want {
			return fmt.Errorf("simulations: node %d holds %d ops, want %d", n.Index, l, want)
		}
		if d != d0 {
			return fmt.Errorf("simulations: node %d has digest %x, node 0 %x", n.Index, d[:6], d0[:6])
		}
	}
	return nil
}

// WireSent returns the bytes sent so far by all hosts.
func (c *Cluster) WireSent() int64 {
	var t int64
	for _, n := range c.nodes {
		t += n.Wire.Sent()
	}
	return t
}

// wireByProto returns the bytes sent so far by all hosts per protocol.
func (c *Cluster) wireByProto() map[string]int64 {
	out := map[string]int64{}
	for _, n := range c.nodes {
		for p, b := range n.Wire.SentByProtocol() {
			out[string(p)] += b
		}
	}
	return out
}

// netStats sums the nodes' network counters.
func (c *Cluster) netStats() p2p.Stats {
	var t p2p.Stats
	for _, n := range c.nodes {
		t = combineStats(t, n.Net.Stats(), 1)
	}
	return t
}

// statsDelta returns b - a for every counter.
func statsDelta(a, b p2p.Stats) p2p.Stats { return combineStats(b, a, -1) }

// combineStats returns a + sign×b, counter by counter (every field of
// p2p.Stats is an integer counter).
func combineStats(a, b p2p.Stats, sign int64) p2p.Stats {
	va, vb := reflect.ValueOf(&a).Elem(), reflect.ValueOf(b)
	for i := range va.NumField() {
		f := va.Field(i)
		switch f.Kind() {
		case reflect.Uint64:
			f.SetUint(f.Uint() + uint64(sign)*vb.Field(i).Uint())
		case reflect.Int64:
			f.SetInt(f.Int() + sign*vb.Field(i).Int())
		}
	}
	return a
}

// missing returns, summed over the nodes, the number and encoded size of
// the ops some node holds and that node lacks.
func (c *Cluster) missing() (ops, bytes int64) {
	union := crdt.VersionVector{}
	holder := map[crdt.PublicKey]*ClusterNode{}
	vvs := make([]crdt.VersionVector, len(c.nodes))
	for i, n := range c.nodes {
		vvs[i] = n.Replica.VersionVector()
		for a, s := range vvs[i] {
			if s > union[a] {
				union[a], holder[a] = s, n
			}
		}
	}
	// Sizes of every op of the union, read once per author.
	sizes := map[crdt.PublicKey][]int64{} // sizes[a][seq-1]
	for a, s := range union {
		sz := make([]int64, 0, s)
		_ = holder[a].Replica.ReadRange(a, 1, s, func(op crdt.Op) error {
			sz = append(sz, int64(op.Size()))
			return nil
		})
		sizes[a] = sz
	}
	for _, vv := range vvs {
		for a, s := range union {
			for seq := vv[a] + 1; seq <= s; seq++ {
				ops++
				bytes += sizes[a][seq-1]
			}
		}
	}
	return ops, bytes
}

// opGen makes the bodies of the scenarios' ops: payments (three in four)
// and cash top-ups on a fixed set of cards, with each card's payment
// counter increasing across the whole cluster (no double spend).
type opGen struct {
	mu       sync.Mutex
	rng      *rand.Rand
	cards    []crdt.CardID
	counters []uint64
}

func newOpGen(seed uint64, cards int) *opGen {
	g := &opGen{rng: newReplRng(seed ^ 0x63617264), counters: make([]uint64, cards)}
	for i := range cards {
		g.cards = append(g.cards, crdt.CardID(fmt.Sprintf("04C0FFEE%06X", i)))
	}
	return g
}

func (g *opGen) body() crdt.Body {
	g.mu.Lock()
	defer g.mu.Unlock()
	i := g.rng.IntN(len(g.cards))
	if g.rng.IntN(4) == 0 {
		return &crdt.TopUp{Card: g.cards[i], Amount: uint64(1000 + 500*g.rng.IntN(9)), Method: crdt.MethodCash}
	}
	g.counters[i]++
	p := &crdt.Payment{Card: g.cards[i], Amount: uint64(50 + 10*g.rng.IntN(200)), Counter: g.counters[i], Label: "bar", StampCounter: g.counters[i] - 1}
	if p.StampCounter > 0 {
		// A payment that relied on a stamp names its signer; any key
		// gives the op its real size.
		p.StampVenue = stampVenue
	}
	return p
}

// stampVenue stands for the venue that signed the stamps the scenarios'
// payments rely on.
var stampVenue = crdt.PublicKey(sha256.Sum256([]byte("cagnotte/simulations/stamp-venue")))

// intn returns a random int in [0, n).
func (g *opGen) intn(n int) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.rng.IntN(n)
}

// Make has node i make one op (a payment or a top-up) and returns it.
func (c *Cluster) Make(i int) (crdt.Op, error) {
	op, err := c.nodes[i].Replica.Make(c.gen.body())
	if err != nil {
		return op, fmt.Errorf("simulations: node %d: %w", i, err)
	}
	return op, nil
}

func newReplRng(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x7265706c)) }

// ReconvergenceConfig configures RunReconvergence.
type ReconvergenceConfig struct {
	// Cluster is the cluster to run (Nodes split in two halves).
	Cluster ClusterConfig
	// OpsPerSide is the number of ops made on each side of the partition.
	OpsPerSide int
	// Timeout bounds each wait (mesh, each side's convergence, the
	// reconvergence). Default 2 min.
	Timeout time.Duration
	// Profile, if set, receives a CPU profile (pprof format) of the
	// process from the heal until convergence.
	Profile io.Writer
}

// ReconvergenceReport is what RunReconvergence measured.
type ReconvergenceReport struct {
	// Nodes and OpsPerSide are the run's size.
	Nodes, OpsPerSide int
	// Transport is "tcp" (real hosts on 127.0.0.1) or "mocknet".
	Transport string
	// Ops is what every node holds at the end: federation ops and both
	// sides' ops.
	Ops uint64
	// SideConverged is how long the sides took to converge internally
	// after the first op was made.
	SideConverged time.Duration
	// MissingOps and MissingBytes are, summed over the nodes, the number
	// and encoded size of the ops the node lacked at the heal.
	MissingOps, MissingBytes int64
	// Took is the time from the heal to the last node's last commit, when
	// every node held every op.
	Took time.Duration
	// Linked is the time from the heal until every node had a connection
	// across the former partition; Done[k] when the node that finished
	// k-th (0-based) held every op.
	Linked time.Duration
	Done   []time.Duration
	// WireBytes is what all hosts sent from the heal until convergence was
	// seen; ByProtocol splits it.
	WireBytes  int64
	ByProtocol map[string]int64
	// Net sums the nodes' network counters from the heal until the sync
	// sessions that carried ops have ended.
	Net p2p.Stats
	// CPU is the process's CPU time from the heal to convergence divided
	// by that time (2 = two cores busy).
	CPU float64
	// HeartbeatInterval, SyncInterval and MeshDegree are the nodes'
	// settings.
	HeartbeatInterval, SyncInterval time.Duration
	MeshDegree                      int
}

// Ratio is WireBytes / MissingBytes.
func (r *ReconvergenceReport) Ratio() float64 {
	if r.MissingBytes == 0 {
		return 0
	}
	return float64(r.WireBytes) / float64(r.MissingBytes)
}

// String describes the run.
func (r ReconvergenceReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "reconvergence: %d nodes (%s), %d ops per side (heartbeat %s, periodic sync %s, mesh degree %d)\n", r.Nodes, r.Transport, r.OpsPerSide, r.HeartbeatInterval, r.SyncInterval, r.MeshDegree)
	fmt.Fprintf(&b, "  sides converged %s after the first op\n", r.SideConverged.Round(time.Millisecond))
	fmt.Fprintf(&b, "  missing at heal: %d ops, %d bytes (Σ over nodes)\n", r.MissingOps, r.MissingBytes)
	fmt.Fprintf(&b, "  heal -> one digest (%d ops everywhere): %s (process CPU %.2f cores)\n", r.Ops, r.Took.Round(time.Millisecond), r.CPU)
	if len(r.Done) > 0 {
		fmt.Fprintf(&b, "  every node linked across after %s; nodes done after: first %s, median %s, last %s\n", r.Linked.Round(time.Millisecond),
			r.Done[0].Round(time.Millisecond), r.Done[len(r.Done)/2].Round(time.Millisecond), r.Done[len(r.Done)-1].Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "  wire: %d bytes sent, %.3f× the missing ops (%s)\n", r.WireBytes, r.Ratio(), formatProtos(r.ByProtocol))
	s := r.Net
	fmt.Fprintf(&b, "  sync: %d sessions (%d in sync, %d busy refusals, %d failed), %d ops received, %d frame bytes sent; gossip: %d ops messages accepted, %d ignored as too far ahead\n",
		s.SyncSessions, s.SyncInSync, s.SyncBusy, s.SyncFailures, s.SyncOpsIn, s.SyncBytesOut, s.MessagesAccepted, s.MessagesAhead)
	return b.String()
}

// formatProtos lists the bytes per protocol, largest first.
func formatProtos(m map[string]int64) string {
	keys := slices.Collect(maps.Keys(m))
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] })
	var parts []string
	for _, k := range keys {
		name := k
		if name == "" {
			name = "negotiation"
		}
		parts = append(parts, fmt.Sprintf("%s %d", name, m[k]))
	}
	return strings.Join(parts, ", ")
}

// healQuiet is how long gossip and anti-entropy must have been idle before
// the heal: GossipSub advertises the messages of its last 3 heartbeats (1
// s each) to new peers, and the scenario measures a heal that comes after
// the partition's traffic has died down, as it does when venues
// reconnect after minutes or hours apart.
const healQuiet = 3 * time.Second

// waitQuiet waits until no node has processed an ops message or received
// an op by anti-entropy for the last quiet (periodic sessions that find
// nothing to do go on).
func (c *Cluster) waitQuiet(ctx context.Context, timeout, quiet time.Duration) error {
	activity := func() uint64 {
		s := c.netStats()
		return s.MessagesAccepted + s.MessagesIgnored + s.MessagesAhead + s.MessagesRejected + s.SyncOpsIn
	}
	last, since := activity(), time.Now()
	return poll(ctx, timeout, 20*time.Millisecond, "gossip and anti-entropy to go quiet", func() bool {
		if a := activity(); a != last {
			last, since = a, time.Now()
		}
		return time.Since(since) >= quiet
	})
}

// startCluster builds, connects and meshes a cluster.
func startCluster(ctx context.Context, cfg ClusterConfig, timeout time.Duration) (*Cluster, error) {
	c, err := NewCluster(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := c.Connect(ctx); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.WaitMesh(ctx, timeout); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// RunReconvergence runs the partition-and-heal scenario: see the top of
// this file.
func RunReconvergence(ctx context.Context, cfg ReconvergenceConfig) (ReconvergenceReport, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.OpsPerSide <= 0 {
		return ReconvergenceReport{}, errors.New("simulations: OpsPerSide must be positive")
	}
	c, err := startCluster(ctx, cfg.Cluster, cfg.Timeout)
	if err != nil {
		return ReconvergenceReport{}, err
	}
	rep, err := c.reconverge(ctx, cfg)
	if cerr := c.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return rep, err
}

// transport names the hosts' transport.
func (c *Cluster) transport() string {
	if c.mn != nil {
		return "mocknet"
	}
	return "tcp"
}

// settings returns node 0's heartbeat and sync intervals and mesh degree.
func (c *Cluster) settings() (hb, sync time.Duration, mesh int) {
	return c.nodes[0].heartbeat, c.nodes[0].syncEvery, c.nodes[0].mesh
}

func (c *Cluster) reconverge(ctx context.Context, cfg ReconvergenceConfig) (ReconvergenceReport, error) {
	n := len(c.nodes)
	r := ReconvergenceReport{Nodes: n, OpsPerSide: cfg.OpsPerSide, Transport: c.transport()}
	r.HeartbeatInterval, r.SyncInterval, r.MeshDegree = c.settings()
	sides := [2][]int{}
	for i := range n {
		sides[i*2/n] = append(sides[i*2/n], i)
	}
	if err := c.Partition(ctx, sides[:]); err != nil {
		return r, err
	}
	start := time.Now()
	for k := range cfg.OpsPerSide {
		for _, side := range sides {
			if _, err := c.Make(side[k%len(side)]); err != nil {
				return r, err
			}
		}
	}
	sideOps := uint64(c.FederationOps() + cfg.OpsPerSide)
	err := poll(ctx, cfg.Timeout, 10*time.Millisecond, "each side to converge", func() bool {
		return c.Converged(sideOps, sides[0]...) && c.Converged(sideOps, sides[1]...)
	})
	if err != nil {
		return r, err
	}
	r.SideConverged = time.Since(start)
	if err := c.waitQuiet(ctx, cfg.Timeout, healQuiet); err != nil {
		return r, err
	}
	r.Ops = uint64(c.FederationOps() + 2*cfg.OpsPerSide)
	r.MissingOps, r.MissingBytes = c.missing()

	st0, wire0, proto0 := c.netStats(), c.WireSent(), c.wireByProto()
	side := make([]int, n)
	for _, i := range sides[1] {
		side[i] = 1
	}
	linked := make([]bool, n)
	if cfg.Profile != nil {
		if err := pprof.StartCPUProfile(cfg.Profile); err != nil {
			return r, fmt.Errorf("simulations: heal profile: %w", err)
		}
	}
	cpu0 := processCPU()
	heal := time.Now()
	c.Heal()
	err = poll(ctx, cfg.Timeout, 2*time.Millisecond, "every node to converge after the heal", func() bool {
		if r.Linked == 0 {
			all := true
			for i, nd := range c.nodes {
				for _, p := range nd.Net.Connected() {
					if j := c.index(p); j >= 0 && side[j] != side[i] {
						linked[i] = true
					}
				}
				all = all && linked[i]
			}
			if all {
				r.Linked = time.Since(heal)
			}
		}
		return c.Converged(r.Ops)
	})
	if cfg.Profile != nil {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return r, err
	}
	r.CPU = (processCPU() - cpu0).Seconds() / time.Since(heal).Seconds()
	r.WireBytes = c.WireSent() - wire0
	r.ByProtocol = c.wireByProto()
	for p, b := range proto0 {
		r.ByProtocol[p] -= b
	}
	// The sessions count their ops when they end, a moment after the last
	// commit: wait for the ops of every session that carried some.
	_ = poll(ctx, 10*time.Second, 5*time.Millisecond, "the sync sessions to end", func() bool {
		d := statsDelta(st0, c.netStats())
		return d.SyncOpsIn+d.OpsReceived >= uint64(r.MissingOps)
	})
	r.Net = statsDelta(st0, c.netStats())
	for _, nd := range c.nodes {
		r.Done = append(r.Done, time.Unix(0, nd.lastChange.Load()).Sub(heal))
	}
	slices.Sort(r.Done)
	r.Took = r.Done[len(r.Done)-1]
	return r, c.CheckConverged(r.Ops)
}

// SteadyConfig configures RunSteady.
type SteadyConfig struct {
	// Cluster is the cluster to run.
	Cluster ClusterConfig
	// Rate is the number of ops per second made by the whole cluster, each
	// by a random node.
	Rate float64
	// Duration is how long ops are made.
	Duration time.Duration
	// Timeout bounds each wait (mesh, last arrivals). Default 1 min.
	Timeout time.Duration
	// Profile, if set, receives a CPU profile (pprof format) of the
	// process from the first op to the last arrival.
	Profile io.Writer
}

// SteadyReport is what RunSteady measured.
type SteadyReport struct {
	// Nodes, Ops and Rate are the run's size: Ops made at Rate per second.
	Nodes, Ops int
	Rate       float64
	// Transport is "tcp" (real hosts on 127.0.0.1) or "mocknet".
	Transport string
	// P50, P90, P99 and Max are the times from an op's creation to its
	// arrival at the last node.
	P50, P90, P99, Max time.Duration
	// BySync counts the ops that reached at least one node by
	// anti-entropy rather than gossip; TailBySync those of the slowest 1 %
	// whose last arrival came that way.
	BySync, TailBySync int
	// CPU is the process's CPU time over the window divided by the
	// window (2 = two cores busy): every node runs in this process.
	CPU float64
	// Window is the time from the first op to the last arrival; WireBytes
	// what all hosts sent in it; ByProtocol splits it.
	Window     time.Duration
	WireBytes  int64
	ByProtocol map[string]int64
	// Net sums the nodes' network counters over the window.
	Net p2p.Stats
	// HeartbeatInterval, SyncInterval and MeshDegree are the nodes'
	// settings.
	HeartbeatInterval, SyncInterval time.Duration
	MeshDegree                      int
}

// BytesPerOpPerNode is WireBytes / (Ops × Nodes).
func (r *SteadyReport) BytesPerOpPerNode() float64 {
	if r.Ops == 0 || r.Nodes == 0 {
		return 0
	}
	return float64(r.WireBytes) / float64(r.Ops) / float64(r.Nodes)
}

// String describes the run.
func (r SteadyReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "steady: %d nodes (%s), %d ops at %.0f ops/s (heartbeat %s, periodic sync %s, mesh degree %d)\n", r.Nodes, r.Transport, r.Ops, r.Rate, r.HeartbeatInterval, r.SyncInterval, r.MeshDegree)
	ms := func(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }
	fmt.Fprintf(&b, "  creation -> every node: p50 %s, p90 %s, p99 %s, max %s (process CPU %.2f cores)\n", ms(r.P50), ms(r.P90), ms(r.P99), ms(r.Max), r.CPU)
	fmt.Fprintf(&b, "  %d ops reached some node by anti-entropy; %d of the slowest 1%% reached the last node that way\n", r.BySync, r.TailBySync)
	if r.Transport == "mocknet" {
		fmt.Fprintf(&b, "  window %s; wire bytes not counted on mocknet\n", r.Window.Round(time.Millisecond))
	} else {
		fmt.Fprintf(&b, "  wire: %d bytes sent in %s, %.0f bytes per op per node (%s)\n", r.WireBytes, r.Window.Round(time.Millisecond), r.BytesPerOpPerNode(), formatProtos(r.ByProtocol))
	}
	s := r.Net
	fmt.Fprintf(&b, "  gossip: %d ops messages published, %d accepted, %d ignored; %d heartbeats received; sync: %d sessions (%d in sync), %d ops received\n",
		s.MessagesPublished, s.MessagesAccepted, s.MessagesIgnored, s.Heartbeats, s.SyncSessions, s.SyncInSync, s.SyncOpsIn)
	return b.String()
}

// opKey identifies an op (no equivocation in these scenarios).
type opKey struct {
	author crdt.PublicKey
	seq    uint64
}

// arrivals records when each op reached each node.
type arrivals struct {
	mu    sync.Mutex
	nodes int
	ops   map[opKey]*opTrack
}

type opTrack struct {
	created time.Time
	seen    int
	last    time.Time
	// bySync counts the nodes it reached by anti-entropy; lastBySync is
	// true when the last node got it that way.
	bySync     int
	lastBySync bool
}

func (a *arrivals) track(k opKey) *opTrack {
	t := a.ops[k]
	if t == nil {
		t = &opTrack{}
		a.ops[k] = t
	}
	return t
}

func (a *arrivals) observe(_ int, at time.Time, ops []crdt.Op, bySync func(crdt.Op) bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range ops {
		t := a.track(opKey{ops[i].Author, ops[i].Seq})
		t.seen++
		s := bySync(ops[i])
		if s {
			t.bySync++
		}
		if at.After(t.last) {
			t.last, t.lastBySync = at, s
		}
	}
}

func (a *arrivals) created(op crdt.Op, at time.Time) {
	a.mu.Lock()
	a.track(opKey{op.Author, op.Seq}).created = at
	a.mu.Unlock()
}

// RunSteady runs the steady-load scenario: see the top of this file.
func RunSteady(ctx context.Context, cfg SteadyConfig) (SteadyReport, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Minute
	}
	if cfg.Rate <= 0 || cfg.Duration <= 0 {
		return SteadyReport{}, errors.New("simulations: Rate and Duration must be positive")
	}
	c, err := startCluster(ctx, cfg.Cluster, cfg.Timeout)
	if err != nil {
		return SteadyReport{}, err
	}
	rep, err := c.steady(ctx, cfg)
	if cerr := c.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return rep, err
}

func (c *Cluster) steady(ctx context.Context, cfg SteadyConfig) (SteadyReport, error) {
	n := len(c.nodes)
	r := SteadyReport{Nodes: n, Rate: cfg.Rate, Transport: c.transport()}
	r.HeartbeatInterval, r.SyncInterval, r.MeshDegree = c.settings()
	arr := &arrivals{nodes: n, ops: map[opKey]*opTrack{}}
	obs := arr.observe
	c.observe.Store(&obs)
	defer c.observe.Store(nil)

	total := int(cfg.Rate * cfg.Duration.Seconds())
	every := time.Duration(float64(time.Second) / cfg.Rate)
	if cfg.Profile != nil {
		if err := pprof.StartCPUProfile(cfg.Profile); err != nil {
			return r, fmt.Errorf("simulations: profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	st0, wire0, proto0 := c.netStats(), c.WireSent(), c.wireByProto()
	cpu0 := processCPU()
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for k := range total {
		// Pace the load: op k is due at start + k×every.
		if d := time.Until(start.Add(time.Duration(k) * every)); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return r, ctx.Err()
			case <-timer.C:
			}
		}
		i := c.gen.intn(n)
		at := time.Now()
		op, err := c.Make(i)
		if err != nil {
			return r, err
		}
		arr.created(op, at)
	}
	r.Ops = total
	want := uint64(c.FederationOps() + total)
	if err := poll(ctx, cfg.Timeout, 2*time.Millisecond, "every op at every node", func() bool { return c.Converged(want) }); err != nil {
		return r, err
	}
	r.CPU = (processCPU() - cpu0).Seconds() / time.Since(start).Seconds()
	r.WireBytes = c.WireSent() - wire0
	r.Net = statsDelta(st0, c.netStats())
	r.ByProtocol = c.wireByProto()
	for p, b := range proto0 {
		r.ByProtocol[p] -= b
	}
	if err := c.CheckConverged(want); err != nil {
		return r, err
	}
	c.observe.Store(nil)
	arr.mu.Lock()
	defer arr.mu.Unlock()
	type sample struct {
		d      time.Duration
		bySync bool
	}
	lat := make([]time.Duration, 0, len(arr.ops))
	samples := make([]sample, 0, len(arr.ops))
	var last time.Time
	for k, t := range arr.ops {
		if t.seen != n || t.created.IsZero() {
			return r, fmt.Errorf("simulations: op %s#%d arrived %d times at %d nodes", k.author.Short(), k.seq, t.seen, n)
		}
		d := t.last.Sub(t.created)
		lat = append(lat, d)
		samples = append(samples, sample{d, t.lastBySync})
		if t.bySync > 0 {
			r.BySync++
		}
		if t.last.After(last) {
			last = t.last
		}
	}
	if len(lat) != total {
		return r, fmt.Errorf("simulations: %d ops tracked, %d made", len(lat), total)
	}
	slices.Sort(lat)
	r.P50, r.P90, r.P99, r.Max = quantile(lat, 0.50), quantile(lat, 0.90), quantile(lat, 0.99), lat[len(lat)-1]
	slices.SortFunc(samples, func(a, b sample) int { return cmp.Compare(b.d, a.d) })
	for _, sm := range samples[:max(1, len(samples)/100)] {
		if sm.bySync {
			r.TailBySync++
		}
	}
	r.Window = last.Sub(start)
	return r, nil
}

// quantile returns the q-quantile of sorted durations (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
