package p2p

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/config"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
)

// Topic and protocol names. <fed> is the federation key in hex.
const (
	// OpsTopicFormat is the GossipSub topic carrying new ops.
	OpsTopicFormat = "/cagnotte/%s/ops/1"
	// HeartbeatTopicFormat is the GossipSub topic carrying heartbeats.
	HeartbeatTopicFormat = "/cagnotte/%s/heartbeat/1"
	// SyncProtocol is the anti-entropy stream protocol.
	SyncProtocol = "/cagnotte/sync/1"
)

// OpsTopic returns the ops topic of a federation.
func OpsTopic(fed crdt.PublicKey) string { return fmt.Sprintf(OpsTopicFormat, fed) }

// HeartbeatTopic returns the heartbeat topic of a federation.
func HeartbeatTopic(fed crdt.PublicKey) string { return fmt.Sprintf(HeartbeatTopicFormat, fed) }

// Network is a node's presence on the federation's libp2p network: its
// host, the gossip topics, discovery and anti-entropy. All methods are safe
// for concurrent use.
type Network struct {
	// syncState is anti-entropy's per-peer limits and counters (sx).
	syncState     *syncState
	syncStateOnce sync.Once

	cfg     Config
	log     *slog.Logger
	rep     Replica
	signer  *crdt.Signer
	key     crdt.PublicKey
	fed     crdt.PublicKey
	host    host.Host
	ownHost bool
	gater   *gater
	// bw gives the wire totals of Stats: the network's own counter, or
	// the reporter given in HostOptions when it has totals (nil otherwise
	// and with a caller-supplied host).
	bw bandwidthTotals
	// limits counts what the resource manager refused (rcmgr.go).
	limits *limitCounter

	ps       *pubsub.PubSub
	opsTopic *pubsub.Topic
	hbTopic  *pubsub.Topic
	opsSub   *pubsub.Subscription
	hbSub    *pubsub.Subscription
	mdns     mdns.Service
	notifiee *network.NotifyBundle

	bootstrap []peer.AddrInfo

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// closeMu guards closing against goroutines started after Close began.
	closeMu sync.RWMutex
	closing bool
	closed  atomic.Bool

	isolated atomic.Bool

	// publishing own ops
	pubMu    sync.Mutex
	pubQueue []crdt.Op
	pubWake  chan struct{}
	// fromNet holds ids of federation ops received from peers, so that only
	// federation ops that entered this node otherwise are relayed.
	fromNet map[crdt.OpID]struct{}

	ingestSem chan struct{}
	vvSnap    atomic.Pointer[vvSnapshot] // see recentVV

	maintainWake chan struct{}
	hbWake       chan struct{}

	peersMu sync.Mutex
	peers   map[peer.ID]*peerInfo
	scores  map[peer.ID]float64

	// anti-entropy
	slot     chan struct{} // one sync session at a time, either role
	syncMu   sync.Mutex
	wants    map[peer.ID]*want
	syncWake chan struct{}

	stats stats

	quorum quorumState     // see quorum.go
	res    reserveState    // see reserve.go
	cp     checkpointState // see checkpoint.go
}

type peerInfo struct {
	lastSeen time.Time
	hb       *Heartbeat
	hbAt     time.Time
	lastSync time.Time
	// synced is when a session with it last completed, on the monotonic
	// clock (lastSync is Config.Now's, which may be coarse or stopped).
	synced      time.Time
	dialing     bool
	nextDial    time.Time
	dialBackoff time.Duration
}

// PeerState is what the network knows of one peer.
type PeerState struct {
	// ID is the peer id; Key the node key it inlines.
	ID  peer.ID
	Key crdt.PublicKey
	// Member is true for an admitted, unrevoked venue.
	Member bool
	// Connected is true while a connection is open.
	Connected bool
	// LastSeen is when the peer was last heard: its last heartbeat, or
	// the last time a connection with it opened or closed. Zero if never.
	// It is not the time of the query, even while connected.
	LastSeen time.Time
	// Heartbeat is the peer's last heartbeat (nil if none yet) and
	// HeartbeatAt when it arrived.
	Heartbeat   *Heartbeat
	HeartbeatAt time.Time
	// Score is the peer's GossipSub score (negative after invalid
	// messages), refreshed every second.
	Score float64
}

// Stats are the network's counters since it started.
type Stats struct {
	// Gossip.
	MessagesPublished uint64 // ops messages published
	OpsPublished      uint64 // own (and relayed federation) ops published
	PublishDropped    uint64 // ops not published because the queue was full
	MessagesAccepted  uint64 // ops messages from peers that validated
	MessagesIgnored   uint64 // ops messages with nothing new
	MessagesAhead     uint64 // ops messages ignored as too far ahead of our chains
	MessagesRejected  uint64 // invalid ops or heartbeat messages
	OpsReceived       uint64 // ops in accepted gossip messages
	Heartbeats        uint64 // heartbeats received
	// Anti-entropy.
	SyncSessions   uint64 // sessions completed (both roles)
	SyncInSync     uint64 // of which ended at the digest comparison
	SyncFailures   uint64 // sessions that failed
	SyncBusy       uint64 // sessions refused because a side was busy
	SyncOpsIn      uint64 // ops received by anti-entropy
	SyncOpsOut     uint64 // ops sent by anti-entropy
	SyncBytesIn    uint64 // sync frame bytes received
	SyncBytesOut   uint64 // sync frame bytes sent
	GapSyncs       uint64 // sessions asked for by a gap seen on gossip
	HeartbeatSyncs uint64 // sessions asked for by a heartbeat ahead of us
	// Joining (see JoinProtocol).
	JoinsAccepted uint64 // unknown peers that proved their admission
	JoinsRefused  uint64 // unknown peers refused
	// Wire totals, when the network built its host (zero otherwise).
	BytesIn, BytesOut int64
}

type stats struct {
	messagesPublished, opsPublished, publishDropped  atomic.Uint64
	messagesAccepted, messagesIgnored, messagesRej   atomic.Uint64
	messagesAhead                                    atomic.Uint64
	opsReceived, heartbeats                          atomic.Uint64
	syncSessions, syncInSync, syncFailures, syncBusy atomic.Uint64
	syncOpsIn, syncOpsOut, syncBytesIn, syncBytesOut atomic.Uint64
	gapSyncs, hbSyncs                                atomic.Uint64
	joinsAccepted, joinsRefused                      atomic.Uint64
}

// bootstrapWait bounds how long New waits for the first bootstrap dials.
const bootstrapWait = 2 * time.Second

// New starts a node's network: it builds the libp2p host with the node key
// as identity (or uses cfg.Host), joins the federation's topics, serves the
// sync protocol, starts discovery and dials the bootstrap peers, waiting at
// most 2 s (and until ctx ends) for them. ctx bounds the start only; the
// network runs until Close.
func New(ctx context.Context, cfg Config, rep Replica, key *crdt.Signer) (*Network, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if rep == nil || key == nil {
		return nil, errors.New("p2p: a replica and a node key are required")
	}
	n := &Network{
		cfg:          cfg,
		rep:          rep,
		signer:       key,
		key:          key.Public(),
		fed:          rep.Federation(),
		pubWake:      make(chan struct{}, 1),
		fromNet:      map[crdt.OpID]struct{}{},
		ingestSem:    make(chan struct{}, cfg.IngestWorkers),
		maintainWake: make(chan struct{}, 1),
		hbWake:       make(chan struct{}, 1),
		peers:        map[peer.ID]*peerInfo{},
		scores:       map[peer.ID]float64{},
		slot:         make(chan struct{}, 1),
		wants:        map[peer.ID]*want{},
		syncWake:     make(chan struct{}, 1),
		limits:       newLimitCounter(),
	}
	n.log = cfg.Logger.With("component", "p2p")
	n.ctx, n.cancel = context.WithCancel(context.Background())
	if cfg.HoldCatchUp {
		n.holdCatchUp()
	}
	var err error
	if n.bootstrap, err = parseAddrInfos("bootstrap peer", cfg.Bootstrap); err != nil {
		return nil, err
	}
	relays, err := parseAddrInfos("relay", cfg.Relays)
	if err != nil {
		return nil, err
	}
	priv, err := PrivKey(key)
	if err != nil {
		return nil, fmt.Errorf("p2p: node key: %w", err)
	}
	self, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("p2p: node key: %w", err)
	}
	n.gater = newGater(self, rep, relays)
	n.gater.lim, n.gater.onBan = cfg.Limits, n.onBan // conduct bans (gater.go)
	if cfg.Host != nil {
		if cfg.Host.ID() != self {
			return nil, fmt.Errorf("p2p: Config.Host is %s, not the node key's peer id %s", cfg.Host.ID(), self)
		}
		n.host = cfg.Host
	} else {
		if n.host, err = n.buildHost(priv, relays); err != nil {
			n.cancel()
			return nil, err
		}
		n.ownHost = true
	}
	if err := n.start(ctx); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// bandwidthTotals is what Stats reads of a bandwidth reporter
// (*metrics.BandwidthCounter has it).
type bandwidthTotals interface {
	GetBandwidthTotals() metrics.Stats
}

func (n *Network) buildHost(priv crypto.PrivKey, relays []peer.AddrInfo) (host.Host, error) {
	bw := metrics.NewBandwidthCounter()
	opts := []libp2p.Option{
		libp2p.Identity(priv),
		libp2p.ListenAddrStrings(n.cfg.ListenAddrs...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ConnectionGater(n.gater),
		libp2p.UserAgent("cagnotte"),
		libp2p.DisableMetrics(),
	}
	if n.cfg.NATPortMap {
		opts = append(opts, libp2p.NATPortMap())
	}
	if n.cfg.HolePunching {
		opts = append(opts, libp2p.EnableHolePunching())
	}
	if len(relays) > 0 {
		opts = append(opts, libp2p.EnableAutoRelayWithStaticRelays(relays))
	}
	opts = append(opts, n.cfg.HostOptions...)
	// Resource and connection managers (rcmgr.go), unless HostOptions
	// gave their own.
	opts = append(opts, n.limitOption())
	// libp2p takes one bandwidth reporter: a reporter in HostOptions (a
	// simulation counting bytes) replaces the network's own counter, and
	// Stats reads its totals if it keeps any.
	opts = append(opts, func(c *config.Config) error {
		switch r := c.Reporter.(type) {
		case nil:
			c.Reporter = bw
			n.bw = bw
		case bandwidthTotals:
			n.bw = r
		default:
			n.bw = nil
		}
		return nil
	})
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("p2p: libp2p host: %w", err)
	}
	return h, nil
}

// start joins the topics and starts the goroutines.
func (n *Network) start(ctx context.Context) error {
	if err := n.startPubSub(); err != nil {
		return err
	}
	n.host.SetStreamHandler(SyncProtocol, n.handleSync)
	n.host.SetStreamHandler(JoinProtocol, n.handleJoin)
	n.startReservations()
	n.notifiee = &network.NotifyBundle{
		ConnectedF:    func(_ network.Network, c network.Conn) { n.onConnected(c.RemotePeer()) },
		DisconnectedF: func(_ network.Network, c network.Conn) { n.onDisconnected(c.RemotePeer()) },
	}
	n.host.Network().Notify(n.notifiee)
	for _, ai := range n.bootstrap {
		n.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.PermanentAddrTTL)
	}
	n.rep.OnChange(n.onChange)
	for _, f := range []func(){n.publishLoop, n.readOps, n.readHeartbeats, n.heartbeatLoop, n.syncLoop, n.maintainLoop, n.addrLoop} {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			f()
		}()
	}
	if n.cfg.MDNS {
		n.mdns = mdns.NewMdnsService(n.host, "_cagnotte-"+n.fed.Short()+"._udp", mdnsNotifee{n})
		if err := n.mdns.Start(); err != nil {
			return fmt.Errorf("p2p: mdns: %w", err)
		}
	}
	// Peers already connected (a caller-supplied host) get the same
	// treatment as new ones.
	for _, p := range n.host.Network().Peers() {
		n.onConnected(p)
	}
	// First bootstrap dials now, waited for a little (bounded by ctx) so
	// that a node usually starts connected; the maintenance loop redials.
	bctx, cancel := context.WithTimeout(ctx, bootstrapWait)
	n.connectBootstrap(bctx)
	cancel()
	n.log.Info("network started", "peer", n.host.ID(), "addrs", n.host.Addrs(), "bootstrap", len(n.bootstrap), "mdns", n.cfg.MDNS)
	return nil
}

// goSafe runs f in a goroutine that Close waits for, unless Close began.
func (n *Network) goSafe(f func()) bool {
	n.closeMu.RLock()
	defer n.closeMu.RUnlock()
	if n.closing {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
	return true
}

// Close leaves the network: it stops every goroutine the network started
// and waits for them, and closes the host if the network built it.
func (n *Network) Close() error {
	n.closeMu.Lock()
	if n.closing {
		n.closeMu.Unlock()
		return nil
	}
	n.closing = true
	n.closeMu.Unlock()
	n.closed.Store(true)
	n.cancel()
	var errs []error
	if n.mdns != nil {
		if err := n.mdns.Close(); err != nil {
			errs = append(errs, fmt.Errorf("mdns: %w", err))
		}
	}
	if n.host != nil {
		n.host.RemoveStreamHandler(SyncProtocol)
		n.host.RemoveStreamHandler(JoinProtocol)
		n.host.RemoveStreamHandler(ReserveProtocol)
		if n.notifiee != nil {
			n.host.Network().StopNotify(n.notifiee)
		}
	}
	if n.opsSub != nil {
		n.opsSub.Cancel()
	}
	if n.hbSub != nil {
		n.hbSub.Cancel()
	}
	n.wg.Wait()
	n.closeCheckpoints()
	for _, t := range []*pubsub.Topic{n.opsTopic, n.hbTopic} {
		if t != nil {
			_ = t.Close()
		}
	}
	if n.ownHost && n.host != nil {
		if err := n.host.Close(); err != nil {
			errs = append(errs, fmt.Errorf("host: %w", err))
		}
	}
	n.log.Debug("network stopped")
	return errors.Join(errs...)
}

// ID returns the node's peer id.
func (n *Network) ID() peer.ID { return n.host.ID() }

// Host returns the libp2p host, for simulations and diagnostics.
func (n *Network) Host() host.Host { return n.host }

// Addrs returns the addresses the host listens on (without /p2p/).
func (n *Network) Addrs() []ma.Multiaddr { return n.host.Addrs() }

// AddrInfo returns the node's peer id and addresses, as others connect to it.
func (n *Network) AddrInfo() peer.AddrInfo {
	return peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()}
}

// P2PAddrs returns the node's addresses with /p2p/<peer id>, as given to
// others as bootstrap peers.
func (n *Network) P2PAddrs() []string {
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()})
	if err != nil {
		return nil
	}
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out
}

// Connect connects to a peer (which must be a member: the gater refuses
// others) and remembers its addresses. An explicit connect is not held
// by the backoff of earlier failed dials (libp2p's swarm refuses to dial
// a peer for a while after a failure: a peer that refused us while it
// blocked us, for instance).
func (n *Network) Connect(ctx context.Context, ai peer.AddrInfo) error {
	if ai.ID == n.host.ID() {
		return nil
	}
	n.clearSwarmBackoff(ai.ID)
	if err := n.host.Connect(ctx, ai); err != nil {
		return fmt.Errorf("p2p: connect %s: %w", ai.ID, err)
	}
	return nil
}

// Block cuts a peer off: its connections are closed and the gater refuses
// new ones both ways until Unblock. Tests and simulations use it to make
// partitions. With a caller-supplied host (no gater) the peer can still
// dial in and is only disconnected once connected: block on both sides.
func (n *Network) Block(p peer.ID) {
	n.gater.setBlocked(p, true)
	n.syncMu.Lock()
	delete(n.wants, p)
	n.syncMu.Unlock()
	_ = n.host.Network().ClosePeer(p)
}

// Unblock lets a blocked peer connect again and dials it at once if its
// address is known.
func (n *Network) Unblock(p peer.ID) {
	n.gater.setBlocked(p, false)
	n.clearSwarmBackoff(p)
	n.peersMu.Lock()
	if pi := n.peers[p]; pi != nil {
		pi.nextDial, pi.dialBackoff = time.Time{}, 0
	}
	n.peersMu.Unlock()
	wake(n.maintainWake)
}

// SetIsolated sets the isolation flag announced in heartbeats: the node
// sets it when it considers itself cut off from the network.
func (n *Network) SetIsolated(v bool) { n.isolated.Store(v) }

// Connected returns the peers with an open connection.
func (n *Network) Connected() []peer.ID {
	var out []peer.ID
	for _, p := range n.host.Network().Peers() {
		if n.host.Network().Connectedness(p) == network.Connected {
			out = append(out, p)
		}
	}
	return out
}

// Peers returns what the network knows of the other members and of any
// other peer it is connected to or heard from, sorted by peer id.
func (n *Network) Peers() []PeerState {
	ids := map[peer.ID]crdt.PublicKey{}
	for _, k := range n.rep.Members() {
		if k == n.key {
			continue
		}
		if id, err := PeerID(k); err == nil {
			ids[id] = k
		}
	}
	for _, p := range n.host.Network().Peers() {
		if k, err := KeyOf(p); err == nil {
			ids[p] = k
		}
	}
	n.peersMu.Lock()
	for p := range n.peers {
		if k, err := KeyOf(p); err == nil {
			ids[p] = k
		}
	}
	out := make([]PeerState, 0, len(ids))
	for id, k := range ids {
		st := PeerState{ID: id, Key: k, Connected: n.host.Network().Connectedness(id) == network.Connected, Score: n.scores[id]}
		if pi := n.peers[id]; pi != nil {
			st.LastSeen = pi.lastSeen
			if pi.hb != nil {
				hb := *pi.hb
				st.Heartbeat, st.HeartbeatAt = &hb, pi.hbAt
			}
		}
		out = append(out, st)
	}
	n.peersMu.Unlock()
	for i := range out {
		out[i].Member = n.rep.IsMember(out[i].Key)
	}
	slices.SortFunc(out, func(a, b PeerState) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// LastHeard returns, for each peer heard from, when its last heartbeat
// arrived. The node's isolation rule reads it (node.PeerView).
func (n *Network) LastHeard() map[crdt.PublicKey]time.Time {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	out := make(map[crdt.PublicKey]time.Time, len(n.peers))
	for p, pi := range n.peers {
		if pi.hb != nil {
			if k, err := KeyOf(p); err == nil {
				out[k] = pi.hbAt
			}
		}
	}
	return out
}

// Stats returns the network's counters.
func (n *Network) Stats() Stats {
	s := &n.stats
	out := Stats{
		MessagesPublished: s.messagesPublished.Load(),
		OpsPublished:      s.opsPublished.Load(),
		PublishDropped:    s.publishDropped.Load(),
		MessagesAccepted:  s.messagesAccepted.Load(),
		MessagesIgnored:   s.messagesIgnored.Load(),
		MessagesAhead:     s.messagesAhead.Load(),
		MessagesRejected:  s.messagesRej.Load(),
		OpsReceived:       s.opsReceived.Load(),
		Heartbeats:        s.heartbeats.Load(),
		SyncSessions:      s.syncSessions.Load(),
		SyncInSync:        s.syncInSync.Load(),
		SyncFailures:      s.syncFailures.Load(),
		SyncBusy:          s.syncBusy.Load(),
		SyncOpsIn:         s.syncOpsIn.Load(),
		SyncOpsOut:        s.syncOpsOut.Load(),
		SyncBytesIn:       s.syncBytesIn.Load(),
		SyncBytesOut:      s.syncBytesOut.Load(),
		GapSyncs:          s.gapSyncs.Load(),
		HeartbeatSyncs:    s.hbSyncs.Load(),
		JoinsAccepted:     s.joinsAccepted.Load(),
		JoinsRefused:      s.joinsRefused.Load(),
	}
	if n.bw != nil {
		t := n.bw.GetBandwidthTotals()
		out.BytesIn, out.BytesOut = t.TotalIn, t.TotalOut
	}
	return out
}

// peer returns the info of p, creating it. Caller holds peersMu.
func (n *Network) peer(p peer.ID) *peerInfo {
	pi := n.peers[p]
	if pi == nil {
		pi = &peerInfo{}
		n.peers[p] = pi
	}
	return pi
}

func (n *Network) onConnected(p peer.ID) {
	if n.closed.Load() || n.maybeJoin(p) {
		return
	}
	if !n.gater.member(p) {
		// Relays stay connected (they carry circuits); anything else that
		// got through (a caller-supplied host has no gater) is dropped by
		// the maintenance loop.
		if !n.gater.allowed(p) {
			wake(n.maintainWake)
		}
		return
	}
	n.peersMu.Lock()
	pi := n.peer(p)
	pi.lastSeen = n.cfg.Now()
	pi.nextDial, pi.dialBackoff = time.Time{}, 0
	n.peersMu.Unlock()
	// A new connection: a penalty for a session that a dead link made slow
	// would otherwise hold this heal's catch-up for SyncPenalty.
	if n.liftSlowPenalty(p) {
		n.log.Info("sync: penalty for slowness lifted, the peer reconnected", "peer", p)
	}
	// A member reached: the network may be back for the others too.
	n.redialNow()
	wake(n.hbWake)
	// Anti-entropy on connect: one session per connection, started by
	// the side with the lower peer id after a short random delay; the
	// other side waits longer and runs its own only if that one did not
	// happen (refused busy, or the peer's want was dropped), see
	// want.connect. A session exchanges both ways, so a second one would
	// only compare digests again; after a heal, when dozens of venues
	// connect at once, it halves the sessions a rejoining venue sees.
	at, mono := n.cfg.Now(), time.Now()
	delay := jitter(connectSyncJitter, 1)
	if n.host.ID() > p {
		delay += connectSyncDefer
	}
	n.wantSync(p, delay, func(w *want) { w.connect, w.connAt, w.connMono = true, at, mono })
}

// The anti-entropy asked for on a new connection waits a random 0 to
// twice connectSyncJitter, plus connectSyncDefer on the side with the
// higher peer id (time for the other side's session to complete).
const (
	connectSyncJitter = 50 * time.Millisecond
	connectSyncDefer  = 500 * time.Millisecond
)

func (n *Network) onDisconnected(p peer.ID) {
	if n.closed.Load() {
		return
	}
	n.peersMu.Lock()
	if pi := n.peers[p]; pi != nil {
		pi.lastSeen = n.cfg.Now()
	}
	n.peersMu.Unlock()
}

// wake signals a goroutine waiting on ch without blocking.
func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// jitter returns d scaled by a random factor in [1-f, 1+f].
func jitter(d time.Duration, f float64) time.Duration {
	return time.Duration(float64(d) * (1 - f + 2*f*rand.Float64()))
}

// acceptMember admits an inbound stream of a member protocol: the peer must
// be a member and the network not closing. On success the stream counts in
// the network's wait group: the caller calls n.wg.Done when it is done.
func (n *Network) acceptMember(s network.Stream) (peer.ID, bool) {
	p := s.Conn().RemotePeer()
	if !n.gater.member(p) {
		_ = s.Reset()
		return p, false
	}
	n.closeMu.RLock()
	defer n.closeMu.RUnlock()
	if n.closing {
		_ = s.Reset()
		return p, false
	}
	n.wg.Add(1)
	return p, true
}
