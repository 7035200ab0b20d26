package p2p

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Protocol limits that do not depend on configuration.
const (
	// MaxSyncBatchOps bounds the ops of one anti-entropy frame, whatever
	// the sender's SyncBatch.
	MaxSyncBatchOps = 4096
	// MaxHeartbeatAddrs bounds the addresses a heartbeat advertises.
	MaxHeartbeatAddrs = 8
	// maxAddrLen bounds one advertised multiaddr.
	maxAddrLen = 256
	// minMessageSize is the smallest MaxMessageSize that still carries one
	// op of the largest size with its framing.
	minMessageSize = crdt.MaxOpSize + 64
)

// Config configures a Network. Start from DefaultConfig: zero durations
// and sizes take their defaults in New, but booleans are taken as given.
type Config struct {
	// ListenAddrs are the multiaddrs the host listens on. Default
	// /ip4/0.0.0.0/tcp/0 and /ip4/0.0.0.0/udp/0/quic-v1 (TCP and QUIC on
	// every interface, ports chosen by the system). Set fixed ports
	// (…/tcp/4001, …/udp/4001/quic-v1) on a node others bootstrap from.
	ListenAddrs []string
	// Bootstrap are peers to connect to at start and to keep reconnecting
	// to (with backoff), as multiaddrs ending in /p2p/<peer id>, e.g.
	// /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW…. They must be admitted venues.
	Bootstrap []string
	// MDNS finds the federation's other nodes on the local network
	// (multicast DNS). Default true.
	MDNS bool
	// Relays are static circuit-relay v2 peers (multiaddrs with /p2p/) that
	// AutoRelay reserves a slot on when this node is not reachable from the
	// internet, so that others reach it through the relay and then, with
	// hole punching, directly. Relays are let through the connection gater
	// but cannot publish or sync unless they are also admitted venues.
	Relays []string
	// HolePunching enables libp2p's DCUtR hole punching over relayed
	// connections. Default true.
	HolePunching bool
	// NATPortMap asks the home router for a port mapping (UPnP, NAT-PMP).
	// Default true.
	NATPortMap bool

	// HeartbeatInterval is how often the node gossips its signed heartbeat.
	// Default 5 s.
	HeartbeatInterval time.Duration
	// SyncInterval is the mean time between two periodic anti-entropy
	// sessions with a random connected peer (±20 % jitter). Default 10 s.
	SyncInterval time.Duration
	// SyncBatch is the number of ops per anti-entropy frame (at most
	// MaxSyncBatchOps); the receiver commits a frame before reading the
	// next. Default 256.
	SyncBatch int
	// SyncTimeout bounds one whole anti-entropy session. Default 2 min.
	SyncTimeout time.Duration
	// StreamTimeout bounds each read and write of a sync session (a silent
	// peer is dropped after it). Default 30 s.
	StreamTimeout time.Duration
	// GapSyncDelay is how long an author gap seen on gossip may last
	// before it triggers anti-entropy with the peer that relayed it (ops
	// of one author often arrive a few milliseconds out of order).
	// Default 500 ms.
	GapSyncDelay time.Duration
	// MaxMessageSize bounds a gossip message and a sync frame, in bytes.
	// Default 1 MiB.
	MaxMessageSize int
	// GossipBatch bounds the ops in one gossip message: ops committed
	// together are published together, split past this. Default 128.
	GossipBatch int
	// MaxVVEntries bounds the authors in a received version vector.
	// Default 4096.
	MaxVVEntries int
	// MeshDegree is the number of peers each GossipSub topic mesh aims at
	// (kept between 3/4 and 3/2 of it). A node forwards each message it
	// relays to about MeshDegree-1 peers: a larger mesh is more redundant,
	// a smaller one spends less bandwidth and CPU per op; a node's own ops
	// go to every connected member anyway. Default 4 (at least 2).
	MeshDegree int
	// TargetPeers is the number of connections the node keeps up by dialing
	// the members it learns of (bootstrap peers are always dialed).
	// Default 16.
	TargetPeers int
	// MaxDialBackoff bounds the wait between two dials of a disconnected
	// bootstrap peer or member (the wait doubles from 1 s up to it), so
	// that a link that comes back is found within it however long it was
	// down. Default 2 s.
	MaxDialBackoff time.Duration
	// MaxPublishQueue bounds the own ops waiting to be published; past it,
	// ops are left to anti-entropy. Default 10,000.
	MaxPublishQueue int
	// IngestWorkers bounds the gossip messages being committed at once
	// (the replica groups them into one durable commit). Default 4.
	IngestWorkers int
	// NoPeerScoring turns GossipSub's peer scoring off: no score is kept
	// or refreshed for any peer, so none is graylisted, neither for
	// invalid messages nor for leaving the membership (the member-only
	// peer filter, the validators, and the connection gater or, on a
	// given Host, the closing of non-members' connections still keep
	// non-members out). For simulations of many honest venues in one
	// process, where 50 routers rescoring 49 peers every second took a
	// twentieth of the CPU; a venue node keeps scoring on. Default false
	// (scoring on).
	NoPeerScoring bool

	// Isolated, if set, is asked at each heartbeat whether the node
	// considers itself cut off from the network; the answer is announced
	// in the heartbeat. Without it, the flag is what SetIsolated last set
	// (default false).
	Isolated func() bool

	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
	// Now is the wall clock (heartbeat times, last seen). Default time.Now.
	Now func() time.Time

	// Host, if set, is used instead of building a libp2p host (for example
	// a mocknet host in simulations). Its identity must be the node key.
	// The network does not close it, and since a gater cannot be added to
	// a built host, membership is then enforced by closing connections to
	// non-members as soon as they open, and in the stream handler and the
	// pubsub validators. ListenAddrs, Relays, HolePunching, NATPortMap and
	// HostOptions are ignored.
	Host host.Host
	// HostOptions are extra libp2p options appended when the network builds
	// its host (e.g. libp2p.BandwidthReporter, libp2p.PrivateNetwork). A
	// bandwidth reporter given here replaces the network's own counter
	// (libp2p takes one); Stats reports its totals if it has
	// GetBandwidthTotals, as *metrics.BandwidthCounter does.
	HostOptions []libp2p.Option

	// MaxInboundSyncs bounds the anti-entropy sessions this node serves at
	// once as responder, at most one per peer; a session past either bound
	// is answered "busy" at once, before its hello is read. Only sessions
	// in which this node also receives ops take its exclusive session
	// slot (see doc.go); sessions in which it only sends do not, so a peer
	// that asks for everything cannot keep others from syncing. Default 4.
	MaxInboundSyncs int
	// SyncMinRate, in bytes per second, is the slowest a sync peer may
	// read our frames or send its own: a session is cut once the time it
	// spent blocked on its stream exceeds SyncGrace plus its bytes at this
	// rate, and the peer is refused for SyncPenalty. Default 16 KiB/s.
	SyncMinRate int
	// SyncGrace is the blocked time a sync session is allowed on top of
	// SyncMinRate (peers committing frames, reading their store, a busy
	// machine). Default 10 s.
	SyncGrace time.Duration
	// SyncPeerBudget, in bytes per minute, bounds what this node sends one
	// peer as sync responder on average: each session is charged what it
	// sent, the credit refills at this rate up to one minute's worth, and
	// a peer whose credit is spent is answered "busy" until it is back in
	// credit (a session sends at most its credit and SyncSessionBytes, so
	// a new venue gets a long history in several sessions). A peer that announces an empty version vector
	// again and again thus costs at most this much. Default 64 MiB.
	SyncPeerBudget int
	// SyncPenalty is how long a peer is refused anti-entropy (and not
	// asked for it) after it sent an invalid range, invalid evidence or
	// a malformed frame, or was cut for reading or writing too slowly.
	// Default 1 min.
	SyncPenalty time.Duration
	// HoldCatchUp starts the network with anti-entropy held: no session as
	// initiator, and none as responder in which this node would receive
	// chain ops (they are answered busy), until Network.ResumeCatchUp. A
	// new venue sets it to fetch a checkpoint (FetchCheckpoint) before the
	// ordinary catch-up pulls the whole history. Default false.
	HoldCatchUp bool
	// MaxForkIDs bounds the op ids a sync peer may list for forked authors
	// in the fork comparison, and the evidence ops sent in one session.
	// Default 100,000.
	MaxForkIDs int
	// SyncSessionBytes bounds the chain ops one side sends in one
	// anti-entropy session, in bytes (one frame may pass it): past it the
	// sender ends its ops early, the session ends after the ops, and the
	// receiver, having committed what it got, starts another session
	// (with the next peer in turn) from its advanced version vector.
	// Default 16 MiB.
	SyncSessionBytes int
	// SyncSessionTime bounds how long one side keeps sending chain ops in
	// one session, as SyncSessionBytes does. Default 20 s (SyncTimeout
	// still cuts a session that hangs).
	SyncSessionTime time.Duration
	// HistoryBatch bounds the ops served per request of HistoryProtocol
	// (the history older than a checkpoint, fetched in the background).
	// Default 1024.
	HistoryBatch int

	// Limits bounds the connections, streams and memory peers may take of
	// the host: libp2p's resource manager and connection manager enforce
	// them (rcmgr.go). Zero fields take the defaults of DefaultLimits: a
	// venue node with about 100 peers and 512 MiB or less.
	Limits Limits
}

// DefaultConfig returns the defaults: TCP and QUIC on every interface,
// mDNS, hole punching and port mapping on, no bootstrap peer, no relay.
func DefaultConfig() Config {
	return Config{
		ListenAddrs:       []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"},
		MDNS:              true,
		HolePunching:      true,
		NATPortMap:        true,
		HeartbeatInterval: 5 * time.Second,
		SyncInterval:      10 * time.Second,
		SyncBatch:         256,
		SyncTimeout:       2 * time.Minute,
		StreamTimeout:     30 * time.Second,
		GapSyncDelay:      500 * time.Millisecond,
		MaxMessageSize:    1 << 20,
		GossipBatch:       128,
		MaxVVEntries:      4096,
		MeshDegree:        4,
		TargetPeers:       16,
		MaxDialBackoff:    2 * time.Second,
		MaxPublishQueue:   10000,
		IngestWorkers:     4,
		MaxInboundSyncs:   4,
		SyncMinRate:       16 << 10,
		SyncGrace:         10 * time.Second,
		SyncPeerBudget:    64 << 20,
		SyncPenalty:       time.Minute,
		MaxForkIDs:        100000,
		SyncSessionBytes:  16 << 20,
		SyncSessionTime:   20 * time.Second,
		HistoryBatch:      1024,
		Limits:            DefaultLimits(),
	}
}

// setDefaults fills zero fields and checks the others.
func (c *Config) setDefaults() error {
	d := DefaultConfig()
	if len(c.ListenAddrs) == 0 {
		c.ListenAddrs = d.ListenAddrs
	}
	dur := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	num := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	dur(&c.HeartbeatInterval, d.HeartbeatInterval)
	dur(&c.SyncInterval, d.SyncInterval)
	dur(&c.SyncTimeout, d.SyncTimeout)
	dur(&c.StreamTimeout, d.StreamTimeout)
	dur(&c.GapSyncDelay, d.GapSyncDelay)
	num(&c.SyncBatch, d.SyncBatch)
	num(&c.MaxMessageSize, d.MaxMessageSize)
	num(&c.GossipBatch, d.GossipBatch)
	num(&c.MaxVVEntries, d.MaxVVEntries)
	num(&c.MeshDegree, d.MeshDegree)
	num(&c.TargetPeers, d.TargetPeers)
	dur(&c.MaxDialBackoff, d.MaxDialBackoff)
	num(&c.MaxPublishQueue, d.MaxPublishQueue)
	num(&c.IngestWorkers, d.IngestWorkers)
	num(&c.MaxInboundSyncs, d.MaxInboundSyncs)
	num(&c.SyncMinRate, d.SyncMinRate)
	dur(&c.SyncGrace, d.SyncGrace)
	num(&c.SyncPeerBudget, d.SyncPeerBudget)
	dur(&c.SyncPenalty, d.SyncPenalty)
	num(&c.MaxForkIDs, d.MaxForkIDs)
	num(&c.SyncSessionBytes, d.SyncSessionBytes)
	dur(&c.SyncSessionTime, d.SyncSessionTime)
	num(&c.HistoryBatch, d.HistoryBatch)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if err := c.Limits.setDefaults(c); err != nil {
		return err
	}
	if c.SyncBatch > MaxSyncBatchOps {
		return fmt.Errorf("p2p: SyncBatch %d is over %d", c.SyncBatch, MaxSyncBatchOps)
	}
	if c.MaxMessageSize < minMessageSize {
		return fmt.Errorf("p2p: MaxMessageSize %d cannot carry one op (min %d)", c.MaxMessageSize, minMessageSize)
	}
	if c.MeshDegree < 2 {
		return fmt.Errorf("p2p: MeshDegree %d is under 2", c.MeshDegree)
	}
	if c.HeartbeatInterval < 10*time.Millisecond || c.SyncInterval < 10*time.Millisecond {
		return errors.New("p2p: HeartbeatInterval and SyncInterval must be at least 10 ms")
	}
	return nil
}

// parseAddrInfos parses multiaddrs ending in /p2p/<id>, merging the
// addresses of one peer.
func parseAddrInfos(what string, addrs []string) ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	idx := map[peer.ID]int{}
	for _, s := range addrs {
		ai, err := peer.AddrInfoFromString(s)
		if err != nil {
			return nil, fmt.Errorf("p2p: %s %q (want a multiaddr ending in /p2p/<peer id>): %w", what, s, err)
		}
		if i, ok := idx[ai.ID]; ok {
			out[i].Addrs = append(out[i].Addrs, ai.Addrs...)
			continue
		}
		idx[ai.ID] = len(out)
		out = append(out, *ai)
	}
	return out, nil
}
