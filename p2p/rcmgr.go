package p2p

import (
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/config"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
)

// Limits against rogue peers (docs/operations.md, "Limits against rogue
// peers"). The connection gater keeps non-members out and the protocol
// handlers check membership, but an admitted venue gone rogue, a peer on
// probation (join.go) or a stranger still mid-handshake can open
// connections and streams. libp2p's resource manager bounds them before
// any handler runs: a stream past a limit is reset when it opens or when
// its protocol is negotiated, and counted (LimitStats). The connection
// manager trims connections past a high water mark.

// Limits bounds what peers may take of this node's libp2p host: its
// resource manager (connections, streams, memory, file descriptors; for
// the whole host, per peer and per protocol) and its connection manager.
// The defaults suit a venue node: at most about 100 peers, on a small
// machine giving the node 512 MiB or less. Zero fields take their
// defaults. The limits apply when the network builds its host; a
// caller-supplied Config.Host keeps its own, and a resource or connection
// manager given in Config.HostOptions replaces the network's.
type Limits struct {
	// Memory bounds, in bytes, what libp2p may reserve for all connections
	// together: every open stream reserves its 256 KiB receive window, and
	// windows grow past it only with what is left (a stream that cannot
	// reserve its window is refused). About 100 peers keep two or three
	// streams open each (GossipSub both ways, pings). Default 128 MiB, a
	// quarter of a 512 MiB node.
	Memory int64
	// MemoryPerPeer bounds what one peer's connections may reserve.
	// Default 16 MiB: 64 streams at their initial window.
	MemoryPerPeer int64
	// Conns bounds the open connections, inbound and outbound (each also
	// takes a file descriptor). Default 256: about 100 venues with one or
	// two connections each (TCP and QUIC), relays, and room for dials
	// crossing.
	Conns int
	// ConnsPerPeer bounds the connections with one peer. Default 4.
	ConnsPerPeer int
	// PendingConns bounds the connections not yet attached to a peer:
	// handshakes in progress, where a stranger's connection waits for the
	// gater's verdict. Streams whose protocol is being negotiated are
	// bounded to four times as many. Default 32.
	PendingConns int
	// Streams bounds the open streams, inbound and outbound. Default 2048.
	Streams int
	// StreamsPerPeer bounds the inbound streams one peer has open at once,
	// every protocol together (outbound: twice as many). Default 64.
	StreamsPerPeer int
	// SyncStreamsPerPeer bounds the inbound anti-entropy streams one peer
	// has open at once. The sync handler serves one session per peer and
	// answers busy to the others; past this bound they are reset before
	// the handler runs. All peers together: 16 × MaxInboundSyncs.
	// Default 4.
	SyncStreamsPerPeer int
	// ReserveStreamsPerPeer bounds the reservation requests one peer has in
	// flight at once (one per card it is charging above the floor limit).
	// All peers together: 16 times as many. Default 32.
	ReserveStreamsPerPeer int
	// StrangerStreams and StrangerMemory bound the streams (each way) and
	// the memory of a peer that is neither a member nor a configured
	// relay when its first connection opens: a peer on probation (an
	// unknown venue key proving its admission, a revoked venue trying
	// again; see join.go), at most 32 at once. Once a peer proves its
	// admission its bounds are raised to a member's. Defaults 8 streams
	// and 2 MiB (its streams' initial windows), so that strangers on
	// probation hold at most 64 MiB together.
	StrangerStreams int
	StrangerMemory  int64
	// JoinStreamsPerPeer bounds the inbound streams one peer has open at
	// once on each of the join and checkpoint protocols (a member asks
	// once per connection, a new venue fetches one checkpoint) and on
	// GossipSub (one stream a connection) twice as many. All peers
	// together: 64 join streams and 16 checkpoint streams. Default 2.
	JoinStreamsPerPeer int
	// ConnLowWater and ConnHighWater drive the connection manager: past
	// ConnHighWater connections it closes the least useful ones (GossipSub
	// tags its mesh peers; connections younger than ConnGrace are spared)
	// down to ConnLowWater. Defaults 128 and 192: never reached by a
	// federation of about 100 venues, whose connections the network keeps
	// at TargetPeers and up, but a bound on a flood of connections. The
	// low water mark must be at least TargetPeers.
	ConnLowWater  int
	ConnHighWater int
	// ConnGrace is how long a new connection is spared by the connection
	// manager. Default 20 s.
	ConnGrace time.Duration

	// PeerStreamRate and PeerStreamBurst bound how fast one peer may open
	// inbound streams, every protocol together, allowed or refused: a
	// token bucket holding PeerStreamBurst streams, refilled at
	// PeerStreamRate a second. A peer that empties it is banned (see
	// BanBase). A refused stream still costs this node a protocol
	// negotiation, and the resource manager's limits above bound only
	// what a peer holds at once. An honest venue opens a few streams a
	// second (anti-entropy sessions, a reservation request per payment
	// above the floor limit and its release, quorum pings shared by
	// concurrent payments, one GossipSub stream per connection): about
	// 300 a second in TestHonestPeerNeverPenalised's heavy honest load
	// (100 reservations a second at one coordinator, each released,
	// anti-entropy every 100 ms), never more than a few dozen over the
	// rate at once. An inbound connection counts 20 streams (a handshake
	// costs as much). Defaults 1000 a second, burst 200: a rogue churning
	// streams on loopback (about 17,000 a second) is banned within 15 ms.
	PeerStreamRate  float64
	PeerStreamBurst int
	// PeerRefusalRate and PeerRefusalBurst bound one peer's offences, a
	// token bucket as above: an inbound stream refused by the resource
	// manager's limits (a per-peer bound reached) counts one, an
	// anti-entropy penalty other than slowness (a malformed frame, an
	// invalid range or evidence) counts ten. A peer that empties it is
	// banned. An honest venue stays within the per-peer limits, so it is
	// never refused a stream. Defaults 10 a second, burst 50.
	PeerRefusalRate  float64
	PeerRefusalBurst int
	// BanBase is the first ban of a peer past PeerStreamBurst or
	// PeerRefusalBurst: its connections are closed, and for BanBase the
	// connection gater refuses it (at the handshake: one handshake per
	// attempt, after which a libp2p dialer backs off for 5 s or more),
	// the node neither dials it nor reads its gossip, and every handler
	// refuses it as a non-member. Each ban doubles the next, up to
	// BanMax; a peer not banned for BanForgive after its last ban ended
	// starts again from BanBase. After the ban the peer is readmitted as
	// before (a member reconnects and syncs). Defaults 10 s, 10 min,
	// 10 min.
	BanBase    time.Duration
	BanMax     time.Duration
	BanForgive time.Duration
	// HandshakeRefusalRate and HandshakeRefusalBurst bound the inbound
	// handshakes refused by the connection gater (a banned peer, a
	// revoked venue, a key refused after its probation) per remote IP
	// address, a token bucket as above: past it, inbound connections from
	// that address are refused before their handshake (no cryptography)
	// until the bucket refills. A refused peer that redials in a loop
	// thus costs a TCP accept a try, not a Noise handshake. Outbound
	// connections and relayed ones are not affected: an honest venue
	// behind the same address is still dialed by this node, and an
	// honest venue's handshakes are never refused. A revoked venue's node
	// redialing on its ordinary backoff (a few tries a second at most)
	// stays under the rate. Defaults 10 a second, burst 50.
	HandshakeRefusalRate  float64
	HandshakeRefusalBurst int
}

// DefaultLimits returns the limits of a venue node: about 100 peers, 512
// MiB or less for the node.
func DefaultLimits() Limits {
	return Limits{
		Memory:                128 << 20,
		MemoryPerPeer:         16 << 20,
		Conns:                 256,
		ConnsPerPeer:          4,
		PendingConns:          32,
		Streams:               2048,
		StreamsPerPeer:        64,
		SyncStreamsPerPeer:    4,
		ReserveStreamsPerPeer: 32,
		JoinStreamsPerPeer:    2,
		StrangerStreams:       8,
		StrangerMemory:        2 << 20,
		ConnLowWater:          128,
		ConnHighWater:         192,
		ConnGrace:             20 * time.Second,
		PeerStreamRate:        1000,
		PeerStreamBurst:       200,
		PeerRefusalRate:       10,
		PeerRefusalBurst:      50,
		BanBase:               10 * time.Second,
		BanMax:                10 * time.Minute,
		BanForgive:            10 * time.Minute,
		HandshakeRefusalRate:  10,
		HandshakeRefusalBurst: 50,
	}
}

// setDefaults fills zero fields and checks the others against each other
// and against the network's configuration.
func (l *Limits) setDefaults(cfg *Config) error {
	d := DefaultLimits()
	num := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	if l.Memory <= 0 {
		l.Memory = d.Memory
	}
	if l.MemoryPerPeer <= 0 {
		l.MemoryPerPeer = d.MemoryPerPeer
	}
	num(&l.Conns, d.Conns)
	num(&l.ConnsPerPeer, d.ConnsPerPeer)
	num(&l.PendingConns, d.PendingConns)
	num(&l.Streams, d.Streams)
	num(&l.StreamsPerPeer, d.StreamsPerPeer)
	num(&l.SyncStreamsPerPeer, d.SyncStreamsPerPeer)
	num(&l.ReserveStreamsPerPeer, d.ReserveStreamsPerPeer)
	num(&l.JoinStreamsPerPeer, d.JoinStreamsPerPeer)
	num(&l.StrangerStreams, d.StrangerStreams)
	if l.StrangerMemory <= 0 {
		l.StrangerMemory = d.StrangerMemory
	}
	num(&l.ConnLowWater, d.ConnLowWater)
	num(&l.ConnHighWater, d.ConnHighWater)
	if l.ConnGrace <= 0 {
		l.ConnGrace = d.ConnGrace
	}
	if l.PeerStreamRate <= 0 {
		l.PeerStreamRate = d.PeerStreamRate
	}
	if l.PeerRefusalRate <= 0 {
		l.PeerRefusalRate = d.PeerRefusalRate
	}
	if l.HandshakeRefusalRate <= 0 {
		l.HandshakeRefusalRate = d.HandshakeRefusalRate
	}
	num(&l.HandshakeRefusalBurst, d.HandshakeRefusalBurst)
	num(&l.PeerStreamBurst, d.PeerStreamBurst)
	num(&l.PeerRefusalBurst, d.PeerRefusalBurst)
	for _, f := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&l.BanBase, d.BanBase}, {&l.BanMax, d.BanMax}, {&l.BanForgive, d.BanForgive}} {
		if *f.v <= 0 {
			*f.v = f.def
		}
	}
	const window = 256 << 10 // a stream's initial receive window (yamux)
	switch {
	case l.MemoryPerPeer > l.Memory:
		return fmt.Errorf("p2p: Limits.MemoryPerPeer %d is over Limits.Memory %d", l.MemoryPerPeer, l.Memory)
	case l.MemoryPerPeer < 8*window:
		return fmt.Errorf("p2p: Limits.MemoryPerPeer %d holds fewer than 8 streams (%d bytes each)", l.MemoryPerPeer, window)
	case l.ConnHighWater <= l.ConnLowWater:
		return fmt.Errorf("p2p: Limits.ConnHighWater %d must be over ConnLowWater %d", l.ConnHighWater, l.ConnLowWater)
	case l.ConnLowWater < cfg.TargetPeers:
		return fmt.Errorf("p2p: Limits.ConnLowWater %d is under TargetPeers %d: the connection manager would close what discovery dials", l.ConnLowWater, cfg.TargetPeers)
	case l.ConnHighWater > l.Conns:
		return fmt.Errorf("p2p: Limits.ConnHighWater %d is over Limits.Conns %d", l.ConnHighWater, l.Conns)
	case l.StreamsPerPeer < 8:
		return fmt.Errorf("p2p: Limits.StreamsPerPeer %d is under 8", l.StreamsPerPeer)
	case l.BanMax < l.BanBase:
		return fmt.Errorf("p2p: Limits.BanMax %s is under BanBase %s", l.BanMax, l.BanBase)
	case l.PeerRefusalBurst < penaltyOffence:
		return fmt.Errorf("p2p: Limits.PeerRefusalBurst %d is under one anti-entropy penalty (%d)", l.PeerRefusalBurst, penaltyOffence)
	}
	return nil
}

// limitConfig builds the resource manager's limits: libp2p's defaults
// (with its service limits for identify, ping, relays and hole punching)
// at the scale of Memory, then this node's own.
func (l *Limits) limitConfig(maxInboundSyncs int) rcmgr.ConcreteLimitConfig {
	scaling := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&scaling)
	fds := l.Conns + 64
	base := scaling.Scale(l.Memory, fds)

	v := func(n int) rcmgr.LimitVal { return rcmgr.LimitVal(n) }
	all := func(conns, streamsIn, streamsOut, fd int, mem int64) rcmgr.ResourceLimits {
		r := rcmgr.ResourceLimits{
			Streams: v(streamsIn + streamsOut), StreamsInbound: v(streamsIn), StreamsOutbound: v(streamsOut),
			Memory: rcmgr.LimitVal64(mem),
		}
		if conns > 0 {
			r.Conns, r.ConnsInbound, r.ConnsOutbound, r.FD = v(conns), v(conns), v(conns), v(fd)
		}
		return r
	}
	streams := func(in, out int) rcmgr.ResourceLimits {
		return rcmgr.ResourceLimits{Streams: v(in + out), StreamsInbound: v(in), StreamsOutbound: v(out)}
	}
	system := all(l.Conns, l.Streams, l.Streams, fds, l.Memory)
	system.Streams = v(l.Streams)
	transient := all(l.PendingConns, 4*l.PendingConns, 4*l.PendingConns, l.PendingConns, l.Memory/8)
	perPeer := all(l.ConnsPerPeer, l.StreamsPerPeer, 2*l.StreamsPerPeer, l.ConnsPerPeer, l.MemoryPerPeer)

	protocols := map[protocol.ID]rcmgr.ResourceLimits{
		SyncProtocol:       streams(16*maxInboundSyncs, 64),
		JoinProtocol:       streams(2*maxProbation, 2*maxProbation),
		CheckpointProtocol: streams(4*maxCheckpointServes, 16),
		HistoryProtocol:    streams(4*maxHistoryServes, 16),
		ReserveProtocol:    streams(16*l.ReserveStreamsPerPeer, 16*l.ReserveStreamsPerPeer),
		// Every connected peer pings in a quorum round and identifies on
		// connect: libp2p's totals (64 at this scale) are below the
		// connections a venue keeps.
		ping.ID:     streams(l.Conns, l.Conns),
		identify.ID: streams(l.Conns, l.Conns),
	}
	perPeerProtocols := map[protocol.ID]rcmgr.ResourceLimits{
		SyncProtocol:       streams(l.SyncStreamsPerPeer, l.SyncStreamsPerPeer),
		JoinProtocol:       streams(l.JoinStreamsPerPeer, l.JoinStreamsPerPeer),
		CheckpointProtocol: streams(l.JoinStreamsPerPeer, l.JoinStreamsPerPeer),
		HistoryProtocol:    streams(l.JoinStreamsPerPeer, l.JoinStreamsPerPeer),
		ReserveProtocol:    streams(l.ReserveStreamsPerPeer, l.ReserveStreamsPerPeer),
	}
	for _, id := range pubsub.GossipSubDefaultProtocols {
		perPeerProtocols[id] = streams(2*l.JoinStreamsPerPeer, 2*l.JoinStreamsPerPeer)
	}
	partial := rcmgr.PartialLimitConfig{
		System:               system,
		Transient:            transient,
		AllowlistedSystem:    system,
		AllowlistedTransient: transient,
		PeerDefault:          perPeer,
		Protocol:             protocols,
		ProtocolPeer:         perPeerProtocols,
		Service: map[string]rcmgr.ResourceLimits{
			ping.ServiceName:     streams(l.Conns, l.Conns),
			identify.ServiceName: streams(l.Conns, l.Conns),
		},
	}
	return partial.Build(base)
}

// limitOption is the host option that sets the resource manager and the
// connection manager, unless Config.HostOptions set them already (it is
// applied after them).
func (n *Network) limitOption() libp2p.Option {
	return func(c *config.Config) error {
		if c.ResourceManager == nil {
			lim := &memberLimiter{
				Limiter: rcmgr.NewFixedLimiter(n.cfg.Limits.limitConfig(n.cfg.MaxInboundSyncs)),
				member:  n.gater.dialable,
				stranger: rcmgr.BaseLimit{
					Conns: 2, ConnsInbound: 2, ConnsOutbound: 2, FD: 2,
					Streams: 2 * n.cfg.Limits.StrangerStreams, StreamsInbound: n.cfg.Limits.StrangerStreams,
					StreamsOutbound: n.cfg.Limits.StrangerStreams, Memory: n.cfg.Limits.StrangerMemory,
				},
			}
			mgr, err := rcmgr.NewResourceManager(lim, rcmgr.WithMetrics(n.limits))
			if err != nil {
				return fmt.Errorf("p2p: resource manager: %w", err)
			}
			c.ResourceManager = mgr
			n.limits.conduct = n.gater // set before the host exists: read without a lock
			n.limits.mu.Lock()
			n.limits.manager, n.limits.limiter = mgr, lim
			n.limits.mu.Unlock()
		}
		if c.ConnManager == nil {
			cm, err := connmgr.NewConnManager(n.cfg.Limits.ConnLowWater, n.cfg.Limits.ConnHighWater,
				connmgr.WithGracePeriod(n.cfg.Limits.ConnGrace))
			if err != nil {
				if c.ResourceManager != nil {
					_ = c.ResourceManager.Close()
				}
				return fmt.Errorf("p2p: connection manager: %w", err)
			}
			c.ConnManager = cm
		}
		return nil
	}
}

// memberLimiter gives a peer that is neither a member nor a relay, when
// its resource scope is made (its first connection), the stranger's
// limits instead of a member's.
type memberLimiter struct {
	rcmgr.Limiter
	member   func(peer.ID) bool
	stranger rcmgr.BaseLimit
}

// GetPeerLimits implements rcmgr.Limiter.
func (l *memberLimiter) GetPeerLimits(p peer.ID) rcmgr.Limit {
	if l.member(p) {
		return l.Limiter.GetPeerLimits(p)
	}
	return &l.stranger
}

// raisePeerLimits gives p, a peer that proved its admission while
// connected on a stranger's limits, a member's.
func (n *Network) raisePeerLimits(p peer.ID) {
	rm := n.host.Network().ResourceManager()
	lim, ok := n.limiter(rm)
	if !ok {
		return
	}
	_ = rm.ViewPeer(p, func(s network.PeerScope) error {
		if sl, ok := s.(rcmgr.ResourceScopeLimiter); ok {
			sl.SetLimit(lim.Limiter.GetPeerLimits(p))
		}
		return nil
	})
}

// limiter returns the network's own limiter when rm is the resource
// manager it built.
func (n *Network) limiter(rm network.ResourceManager) (*memberLimiter, bool) {
	n.limits.mu.Lock()
	defer n.limits.mu.Unlock()
	return n.limits.limiter, n.limits.limiter != nil && rm == n.limits.manager
}

// LimitStats counts what the resource manager refused since the network
// started. All zero with a caller-supplied host.
type LimitStats struct {
	// Conns counts connections refused: too many in all, pending, or with
	// one peer.
	Conns uint64
	// Streams counts streams refused before their protocol was known: too
	// many in all, pending, or with one peer.
	Streams uint64
	// Protocols counts, per protocol, streams refused by the protocol's
	// limits (all peers together, or one peer's) or by its service's.
	Protocols map[protocol.ID]uint64
	// Memory counts memory reservations refused (a stream's window not
	// grown, or a stream refused).
	Memory uint64
	// Bans counts the bans of peers for their conduct (Limits.BanBase);
	// BannedConns the connections refused at the handshake because their
	// peer was banned; AcceptRefused the inbound connections refused
	// before their handshake (Limits.HandshakeRefusalBurst).
	Bans, BannedConns, AcceptRefused uint64
}

// LimitStats returns what the resource manager refused.
func (n *Network) LimitStats() LimitStats {
	s := n.limits.stats()
	s.Bans, s.BannedConns, s.AcceptRefused = n.gater.bans.Load(), n.gater.bannedConns.Load(), n.gater.acceptRefused.Load()
	return s
}

// limitCounter is the resource manager's metrics reporter: it counts what
// was refused.
type limitCounter struct {
	conns, streams, memory atomic.Uint64
	mu                     sync.Mutex
	protocols              map[protocol.ID]uint64
	services               map[string]uint64
	// manager and limiter are the resource manager the network built and
	// its limiter (nil with a caller-supplied host or manager).
	manager network.ResourceManager
	limiter *memberLimiter
	// conduct, if set, is charged every inbound stream (gater.go).
	conduct *gater
}

var _ rcmgr.MetricsReporter = (*limitCounter)(nil)

func newLimitCounter() *limitCounter {
	return &limitCounter{protocols: map[protocol.ID]uint64{}, services: map[string]uint64{}}
}

func (c *limitCounter) stats() LimitStats {
	if c == nil {
		return LimitStats{Protocols: map[protocol.ID]uint64{}}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := LimitStats{Conns: c.conns.Load(), Streams: c.streams.Load(), Memory: c.memory.Load(), Protocols: maps.Clone(c.protocols)}
	for svc, k := range c.services {
		out.Protocols[protocol.ID(svc)] += k
	}
	return out
}

func (c *limitCounter) protocol(p protocol.ID) {
	c.mu.Lock()
	c.protocols[p]++
	c.mu.Unlock()
}

func (c *limitCounter) service(s string) {
	c.mu.Lock()
	c.services[s]++
	c.mu.Unlock()
}

// AllowConn implements rcmgr.MetricsReporter.
func (c *limitCounter) AllowConn(network.Direction, bool) {}

// BlockConn implements rcmgr.MetricsReporter.
func (c *limitCounter) BlockConn(network.Direction, bool) { c.conns.Add(1) }

// AllowStream implements rcmgr.MetricsReporter: an inbound stream is
// charged to its peer's conduct.
func (c *limitCounter) AllowStream(p peer.ID, dir network.Direction) {
	if dir == network.DirInbound && c.conduct != nil {
		c.conduct.streamOpened(p, false)
	}
}

// BlockStream implements rcmgr.MetricsReporter: an inbound stream refused
// at its peer's scope is charged to the peer's conduct as an offence
// (a stream refused by a protocol's limits is not: the reporter is not
// told its direction, and this node's own streams must not count against
// the peer).
func (c *limitCounter) BlockStream(p peer.ID, dir network.Direction) {
	c.streams.Add(1)
	if dir == network.DirInbound && c.conduct != nil {
		c.conduct.streamOpened(p, true)
	}
}

// AllowPeer implements rcmgr.MetricsReporter.
func (c *limitCounter) AllowPeer(peer.ID) {}

// BlockPeer implements rcmgr.MetricsReporter: a connection refused by its
// peer's limits.
func (c *limitCounter) BlockPeer(peer.ID) { c.conns.Add(1) }

// AllowProtocol implements rcmgr.MetricsReporter.
func (c *limitCounter) AllowProtocol(protocol.ID) {}

// BlockProtocol implements rcmgr.MetricsReporter.
func (c *limitCounter) BlockProtocol(p protocol.ID) { c.protocol(p) }

// BlockProtocolPeer implements rcmgr.MetricsReporter.
func (c *limitCounter) BlockProtocolPeer(p protocol.ID, _ peer.ID) { c.protocol(p) }

// AllowService implements rcmgr.MetricsReporter.
func (c *limitCounter) AllowService(string) {}

// BlockService implements rcmgr.MetricsReporter.
func (c *limitCounter) BlockService(s string) { c.service(s) }

// BlockServicePeer implements rcmgr.MetricsReporter.
func (c *limitCounter) BlockServicePeer(s string, _ peer.ID) { c.service(s) }

// AllowMemory implements rcmgr.MetricsReporter.
func (c *limitCounter) AllowMemory(int) {}

// BlockMemory implements rcmgr.MetricsReporter.
func (c *limitCounter) BlockMemory(int) { c.memory.Add(1) }
