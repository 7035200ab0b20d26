// Package p2p is Cagnotte's network layer: venues replicate their op sets
// over libp2p with no central server. A [Network] runs a libp2p host whose
// identity is the node's Ed25519 key (so a peer id is a venue key, see
// [PeerID] and [KeyOf]), gossips new ops and heartbeats over GossipSub,
// repairs what gossip missed with an anti-entropy stream protocol, finds
// peers (bootstrap peers, mDNS, relays with hole punching) and admits only
// members of the federation. It replicates any [Replica]: a node.Node over
// its Badger store, or a [MemReplica] in tests and simulations.
//
// # Transports and admission
//
// Hosts speak TCP and QUIC, secured by Noise and multiplexed by yamux.
// Each connection is checked by a connection gater once the peer is
// authenticated: only an admitted, unrevoked venue (or the federation key,
// or a configured relay) gets through, inbound or outbound, except that an
// inbound peer this node does not know goes on probation: it may be a
// venue admitted after the chain this node holds, and it gets JoinTimeout
// to prove its admission over JoinProtocol (see join.go for the frames).
// On probation it gets no gossip (GossipSub scores it far below the
// graylist threshold) and cannot sync; proved, it is a member like any
// other and the admission spreads by gossip; otherwise it is disconnected
// and refused for JoinRefusal. When a
// revocation op is committed (or within a second, by a periodic check),
// connections to peers that are no longer members are closed. Block and
// Unblock cut a peer off by the same gater (tests, simulations). With a
// caller-supplied host (Config.Host, e.g. mocknet) there is no gater:
// non-members are disconnected as soon as they connect, and the stream
// handler and validators refuse them anyway.
//
// # Gossip
//
// Topic "/cagnotte/<federation key hex>/ops/1" carries new ops. A node
// publishes its own ops as they are committed (and federation ops that
// reached it other than from the network, so a revocation spreads at once);
// ops committed together go out in one message. A message is
//
//	version (1 byte, = 1) | count (uvarint) | count × (length (uvarint) | canonical op)
//
// with at most Config.GossipBatch ops and Config.MaxMessageSize bytes. A
// node publishes to every connected member and relays through a mesh of
// about Config.MeshDegree peers per topic (default 4, below libp2p's 6: a
// venue federation is tens of nodes, each connected to up to 16 others,
// and every relay costs a venue's uplink and CPU).
// Pubsub messages are not signed (StrictNoSign, ids hash the topic and
// content): every op carries its author's Ed25519 signature and every
// heartbeat its sender's, and the validators check those, so a second
// signature per message would only double each node's verifications. A
// message holds the ops of one venue (its publisher) and federation ops.
// The topic validator rejects, and GossipSub's peer scoring penalises the
// peer that forwarded, any message whose venue is not a member, that does
// not decode, that mixes several venues' ops, or that holds an op the
// replica refuses (bad signature, kind not allowed, …). A
// message with nothing new is ignored (not forwarded, not penalised). Ops
// ahead of their author's chain are accepted and handed to the replica,
// which holds them until the ops between arrive; if the gap is still there
// after Config.GapSyncDelay, anti-entropy runs with the peer that
// forwarded them. A message whose ops are all more than
// Config.GossipBatch past their author's chain is ignored before any
// signature check (not forwarded, not penalised) and anti-entropy brings
// them: the node is catching up (a healed partition, a restart), and
// relaying them would mostly send ops the sync sessions carry anyway to
// peers as far behind. Three invalid messages put a peer below the graylist
// threshold (four if it had earned a good score): its messages are then
// dropped unread until its score decays.
//
// Topic "/cagnotte/<federation key hex>/heartbeat/1" carries each node's
// heartbeat every Config.HeartbeatInterval (±10 %, from a random phase so
// that nodes started together do not beat together) and soon after a new
// connection:
//
//	version (1) | node key (32) | unix ms (8, big endian) | digest (32) |
//	op count (uvarint) | version vector digest (32) | authors (uvarint) |
//	connected peers (uvarint) | flags (1: bit 0 isolated) |
//	address count (uvarint, ≤ 8) | count × (length (uvarint) | multiaddr bytes) |
//	Ed25519 signature (64) over "cagnotte/heartbeat/v1\x00" and all the above
//
// The version vector digest is the SHA-256 of the vector's (key, seq as 8
// big-endian bytes) entries in key order ([VVDigest]). The heartbeat must
// be signed by the member that signed the pubsub message. Peers learn each
// other's addresses from heartbeats and connect directly (up to
// Config.TargetPeers connections). A heartbeat whose digest differs from
// ours while its op count is at least ours asks for anti-entropy with its
// sender after Config.GapSyncDelay, if the peer's latest heartbeat still
// shows it ahead then (ops in flight on gossip make heartbeats differ for
// a few milliseconds); a peer with fewer ops pulls from us when it hears
// ours.
// [Network.Peers] exposes the last heartbeat of each peer and
// [Network.LastHeard] when it arrived: the node's isolation rule uses it.
//
// # Anti-entropy
//
// Stream protocol "/cagnotte/sync/1". Frames are a length (uvarint, at most
// Config.MaxMessageSize) followed by a type byte and a payload; every
// varint has its shortest encoding:
//
//	hello    (1): sync version (uvarint, = 2) | digest (32) | op count (uvarint) |
//	              entries (uvarint, ≤ Config.MaxVVEntries) | entries × (key (32) | seq (uvarint)) |
//	              fork digest (32) | fork ids (uvarint)            (the last two: version 2)
//	ops      (2): count (uvarint, ≤ 4096) | count × (length (uvarint) | canonical op),
//	              one author's contiguous run
//	end      (3): the sender has sent everything it had to send
//	busy     (4): the responder cannot take the session now; retry later
//	sum      (5): heads digest (32) | fork digest (32) | fork ids (uvarint)
//	forks    (6): count (uvarint) | count × (key (32) | kind (1) | seq (uvarint) | id (32))
//	evidence (7): as ops, but ops of any authors, in (author, seq) order
//	more     (8): ends a list of ops frames, as end does, when the sender
//	              stopped at its session budget with more to send
//
// A responder answers a version 1 hello (a node not yet upgraded) in
// version 1, and the session then ends as in version 1, after the ops,
// with R's end instead of the sums (steps 5 and 6 below).
//
// The fork digest is the SHA-256 of every op id a replica holds, chain
// and evidence alike, of each author known to have signed two ops at one
// seq, at or past its lowest fork seq; fork ids counts them. The heads
// digest covers the chain head (key, seq, id) of every other author.
//
// A session, between an initiator I and a responder R:
//
//  1. I sends hello with its digest, version vector and fork digest.
//  2. R answers busy if it cannot take the session (see the limits
//     below; I retries after a short random delay), else its own hello.
//     If the digests and fork digests are equal, the session ends there:
//     its cost is two hellos, about 40 bytes per author.
//  3. R streams, for every author where its vector is ahead of I's (the
//     federation first, so admissions arrive before the ops they admit,
//     then authors in key order), the missing seqs in ops frames of at
//     most Config.SyncBatch ops, each read from the replica just before it
//     is sent (ReadRange), then end. I commits each frame (IngestRange: the
//     chain links are hashed and only the newest signature is verified)
//     before reading the next, so a slow disk slows the sender through the
//     stream's flow control and neither side holds more than a frame.
//  4. I does the same with what R lacks according to R's hello, then end.
//     If either side ended its ops with more (its session budget, see
//     the limits below), the session ends here: R sends end once it has
//     committed, and the side that got more starts another session, with
//     the next connected member in turn, from its advanced vector.
//  5. I sends its sum; R, having committed, answers with its own. Equal
//     sums end the session: both sides hold the same chains and the same
//     ops of every forked author.
//  6. Otherwise they compare forks, which version vectors cannot show: two
//     chains of one author of equal length may hold different ops (a
//     key that signed on two machines), and a side may lack the other
//     branch that the peer keeps as evidence. Each side lists its chain
//     heads and known forks (with the digest of their ops); then, for
//     every author whose chain or fork differs, its chain's ids at a few
//     seqs (seq-1, seq-2, seq-4, …, 1 and around the fork) and the ids it
//     holds from the fork on. R then sends I, in evidence frames, its
//     chain past the highest seq where the two chains agree (when they
//     diverge) and its evidence ops, less the ops I listed; I does the
//     same; the receiver adds them one by one with IngestEvidence
//     (crdt.OpSet.AddEvidence: each signature verified) and commits them.
//     R answers end once committed. Both then hold both branches, the
//     same equivocation conflict and the same digest.
//
// When SyncWith returns, both sides hold the union of what they held.
// Sessions run when a peer connects (one per connection: the side with
// the lower peer id starts it, the other only if none completed within
// half a second, and neither if the peer announced our digest since),
// when a gap seen on gossip persists, when a heartbeat shows a peer ahead
// (from whichever connected member announced the most ops, chosen at
// random among ties; at once when it is GossipBatch ops or more ahead,
// else after GapSyncDelay), after a session that brought at least
// GossipBatch ops (pushed on to two connected members whose heartbeat
// shows fewer ops than we then hold, so that a heal spreads from venue to venue),
// and every Config.SyncInterval (±20 %) with a random connected member
// that is not on penalty. A node that received ops by anti-entropy
// announces its new state with a heartbeat soon after.
//
// # Sync limits
//
// A member must not be able to stall anti-entropy for others:
//
//   - A run the receiver refuses because of its author's state
//     (equivocation, revocation, unknown author, gap, an op stamped too far
//     in the future) skips that author for the rest of the session. A run that is invalid (a bad signature
//     mid-chain shows as a broken link, since an op id covers its
//     signature; an invalid op) skips that author too, and only it: the
//     session goes on with the other authors, and the peer that sent it is
//     put on penalty (not for a bad signature on the run's newest op,
//     which may be its author's doing: the next op may commit to it). So is a peer whose evidence holds an invalid op, or
//     whose frame does not decode (which ends the session).
//   - A peer on penalty is refused sync (busy, before its hello is read)
//     and not asked for it for Config.SyncPenalty (1 min). A penalty
//     given only because a session was too slow is lifted when the link
//     shows it is back (a new connection, or the peer's heartbeat after a
//     silence of more than two heartbeats): a partition that cut a session
//     midway is the link's fault, and the heal's catch-up must not wait a
//     minute for it. Any other fault makes the penalty stick.
//   - A node runs one session at a time as initiator, and as responder
//     takes the same exclusive slot only for a session in which it will
//     receive chain ops (the peer's vector is ahead of its own somewhere):
//     a node that reconnects after a partition thus pulls the missing ops
//     once, from one peer, instead of from every peer at once. A session
//     in which it only sends (a peer that is behind, or asks for
//     everything with an empty vector) does not take the slot.
//   - Inbound sessions are bounded: at most Config.MaxInboundSyncs (4) at
//     once, one per peer; past either bound the stream is answered busy at
//     once and closed, never queued.
//   - What a node sends a peer as responder is charged to that peer's
//     budget, Config.SyncPeerBudget (64 MiB) per minute; a peer whose
//     credit is spent is answered busy until it has refilled.
//   - Sessions are bounded and resumable: each side sends at most
//     Config.SyncSessionBytes (16 MiB) of ops frames for at most
//     Config.SyncSessionTime (20 s), and a responder at most the peer's
//     remaining credit (at least one frame each time). Past that it ends
//     its ops with a more frame. The receiver has committed every frame
//     it read (IngestRange, before reading the next), so the next session
//     starts from its advanced version vector: a long catch-up runs as
//     several short sessions, with the connected members in turn, none
//     holding a peer's slot or budget for long, and a session cut midway
//     (a reset, a timeout) loses only the frame in flight.
//   - Every frame read and write has a deadline: Config.StreamTimeout
//     (30 s) at most, and earlier once the time the session spent blocked
//     on its stream exceeds Config.SyncGrace (10 s) plus its bytes at
//     Config.SyncMinRate (16 KiB/s). A peer that reads our frames, or sends
//     its own, slower than that, or not at all, is cut and put on penalty.
//     A session lasts at most Config.SyncTimeout (2 min), a bound that
//     the session budgets keep it well within.
//   - The fork comparison is bounded: at most Config.MaxForkIDs (100,000)
//     ids listed and evidence ops sent per session, 128 probes per author.
//
// Limits of the protocol: a penalty is local to the node that gave it
// (GossipSub's score is not lowered by it); the fork comparison reads
// the forked authors' chains from their fork on at each session whose
// hellos differ, so a venue that keeps signing on two branches costs each
// such session a pass over both branches; a branch longer than the
// receiver's chain is held only as far as crdt.OpSet.AddEvidence can
// prove it (today: every op, through the branch's own links).
//
// # Checkpoints
//
// Stream protocol "/cagnotte/checkpoint/1" serves the latest checkpoint a
// quorum of venues attested ([Network.ServeCheckpoints],
// [Network.FetchCheckpoint]), after the federation ops the asker lacks;
// topic "/cagnotte/<federation key hex>/attestations/1" carries the
// venues' attestations ([Network.StartAttestations]). The frames and
// limits are described in checkpoint.go; the trust model in
// docs/checkpoints.md. Stream protocol "/cagnotte/history/1" serves the
// ops older than a checkpoint, one bounded range of one author per stream
// ([Network.FetchHistory], at most Config.HistoryBatch ops, 2 requests
// served at once, charged to the asker's SyncPeerBudget), for a venue
// that started from a checkpoint and fetches its history in the
// background; the asker verifies every op (chain links down from the
// attested head, signatures). [Config.HoldCatchUp] starts a network with
// anti-entropy held until [Network.ResumeCatchUp], so that a new venue
// installs a checkpoint before it pulls any history.
//
// # Discovery
//
// Bootstrap peers (Config.Bootstrap) are dialed at start and, like the
// members whose addresses are known (up to Config.TargetPeers
// connections), redialed whenever disconnected, with a backoff that
// doubles from 1 s to only Config.MaxDialBackoff (default 2 s), counted
// from the start of the failed dial; a dial gives up after 5 s. A
// reconnection after a partition must not wait on a backoff grown while
// the links were down, however long that was: libp2p's own dial backoff
// (the swarm's, 5 s growing to 5 min per address) is cleared before each
// dial, and every backoff is reset, with a dial at once, when a member
// connects, when a heartbeat (relayed by others) arrives from a member
// this node is not connected to, and when the host's addresses change.
// Each connection that opens starts an anti-entropy session at once.
// mDNS
// (Config.MDNS) finds the federation's nodes on the LAN under the service
// name "_cagnotte-<first 8 hex digits of the federation key>._udp".
// Behind NATs, libp2p's own features are configured: port mapping
// (Config.NATPortMap), AutoRelay through static relays (Config.Relays) and
// DCUtR hole punching (Config.HolePunching). Gossip and anti-entropy need
// a direct connection: relayed connections are limited in time and bytes,
// and serve to set one up.
package p2p
