package p2p

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pubsubpb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// startPubSub starts GossipSub with unsigned messages (ops and heartbeats
// carry their own signatures), peer scoring (unless Config.NoPeerScoring)
// and a member-only peer filter, joins both topics and registers their
// validators.
func (n *Network) startPubSub() error {
	opsTopic, hbTopic := OpsTopic(n.fed), HeartbeatTopic(n.fed)
	opts := []pubsub.Option{
		// Ops and heartbeats carry their authors' Ed25519 signatures, which
		// the validators check: signing each pubsub message again would
		// only double the verifications every node makes per op.
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithMessageIdFn(MessageID),
		pubsub.WithPeerFilter(func(p peer.ID, _ string) bool { return n.gater.member(p) }),
		pubsub.WithMaxMessageSize(n.cfg.MaxMessageSize + 4096),
		pubsub.WithValidateQueueSize(256),
		pubsub.WithGossipSubParams(gossipParams(n.cfg.MeshDegree)),
		// A node's own messages go to every connected peer of the topic
		// (scoring above the publish threshold), not only to its mesh.
		// go-libp2p-pubsub v0.19 no longer turns this on by default: a
		// node then published to its mesh alone, and right after a
		// partition (its mesh peers all across the cut, the mesh refilled
		// only at the next GossipSub heartbeat, which resends nothing and
		// gossips IHAVE to non-mesh peers only) its ops reached no venue
		// of its side until anti-entropy (TestGossipReachesOwnSideRightAfterPartition).
		// A peer on probation scores far below the publish threshold and
		// gets none of them; with NoPeerScoring (simulations on a given
		// host, where non-members are disconnected at once) it would.
		pubsub.WithFloodPublish(true),
		pubsub.WithLogger(pubsubLogger(n.log.Handler())),
	}
	if !n.cfg.NoPeerScoring {
		params, thresholds := scoreParams(opsTopic, hbTopic)
		params.AppSpecificScore = n.appScore // non-members (peers on probation, revoked venues) are graylisted
		opts = append(opts,
			pubsub.WithPeerScore(params, thresholds),
			pubsub.WithPeerScoreInspect(pubsub.PeerScoreInspectFn(n.onScores), time.Second))
	}
	ps, err := pubsub.NewGossipSub(n.ctx, n.host, opts...)
	if err != nil {
		return fmt.Errorf("p2p: gossipsub: %w", err)
	}
	n.ps = ps
	if err := ps.RegisterTopicValidator(opsTopic, pubsub.ValidatorEx(n.validateOps)); err != nil {
		return fmt.Errorf("p2p: ops validator: %w", err)
	}
	if err := ps.RegisterTopicValidator(hbTopic, pubsub.ValidatorEx(n.validateHeartbeat)); err != nil {
		return fmt.Errorf("p2p: heartbeat validator: %w", err)
	}
	if n.opsTopic, err = ps.Join(opsTopic); err != nil {
		return fmt.Errorf("p2p: join %s: %w", opsTopic, err)
	}
	if n.hbTopic, err = ps.Join(hbTopic); err != nil {
		return fmt.Errorf("p2p: join %s: %w", hbTopic, err)
	}
	if n.opsSub, err = n.opsTopic.Subscribe(pubsub.WithBufferSize(256)); err != nil {
		return fmt.Errorf("p2p: subscribe %s: %w", opsTopic, err)
	}
	if n.hbSub, err = n.hbTopic.Subscribe(pubsub.WithBufferSize(256)); err != nil {
		return fmt.Errorf("p2p: subscribe %s: %w", hbTopic, err)
	}
	return nil
}

// scoreParams are the GossipSub peer-scoring parameters. Invalid messages
// (P4) weigh heavily: one puts the sender below the gossip threshold, three
// graylist it (its messages are then dropped unread) until the counter
// decays (half-life of minutes). Mesh delivery deficits (P3) are off: a
// venue that publishes little is not misbehaving. IP colocation (P6) is
// off: venues may share a NAT, tests share loopback, and only admitted
// keys get in anyway.
func scoreParams(topics ...string) (*pubsub.PeerScoreParams, *pubsub.PeerScoreThresholds) {
	p := &pubsub.PeerScoreParams{
		Topics:                    map[string]*pubsub.TopicScoreParams{},
		TopicScoreCap:             15,
		AppSpecificScore:          func(peer.ID) float64 { return 0 },
		AppSpecificWeight:         1,
		IPColocationFactorWeight:  0,
		BehaviourPenaltyWeight:    -1,
		BehaviourPenaltyThreshold: 6,
		BehaviourPenaltyDecay:     pubsub.ScoreParameterDecay(10 * time.Minute),
		DecayInterval:             pubsub.DefaultDecayInterval,
		DecayToZero:               pubsub.DefaultDecayToZero,
		RetainScore:               30 * time.Minute,
	}
	for _, t := range topics {
		p.Topics[t] = &pubsub.TopicScoreParams{
			TopicWeight:                    1,
			TimeInMeshWeight:               0.01,
			TimeInMeshQuantum:              time.Second,
			TimeInMeshCap:                  300,
			FirstMessageDeliveriesWeight:   1,
			FirstMessageDeliveriesDecay:    pubsub.ScoreParameterDecay(10 * time.Minute),
			FirstMessageDeliveriesCap:      10,
			InvalidMessageDeliveriesWeight: -10,
			InvalidMessageDeliveriesDecay:  pubsub.ScoreParameterDecay(30 * time.Minute),
		}
	}
	t := &pubsub.PeerScoreThresholds{
		GossipThreshold:             ScoreGossipThreshold,
		PublishThreshold:            ScorePublishThreshold,
		GraylistThreshold:           ScoreGraylistThreshold,
		AcceptPXThreshold:           20,
		OpportunisticGraftThreshold: 2,
	}
	return p, t
}

// GossipSub score thresholds (see scoreParams). A peer scoring below
// ScoreGossipThreshold gets no gossip from this node, below
// ScorePublishThreshold none of its messages, and below
// ScoreGraylistThreshold everything it sends is dropped unread.
const (
	ScoreGossipThreshold   = -10
	ScorePublishThreshold  = -50
	ScoreGraylistThreshold = -80
)

// appScore is GossipSub's application-specific score: 0 for a member,
// far below the graylist threshold for anyone else (a peer on probation,
// see gater.pubsubScore; a venue revoked while connected; a blocked
// peer), so that nothing is read from a peer the moment it is not a
// member, whatever its other counters. It follows membership at once: a
// peer on probation that proves its admission scores normally again.
func (n *Network) appScore(p peer.ID) float64 {
	if s := n.gater.pubsubScore(p); s != 0 {
		return s
	}
	if !n.gater.member(p) {
		return probationScore
	}
	return 0
}

func (n *Network) onScores(scores map[peer.ID]float64) {
	n.peersMu.Lock()
	n.scores = scores
	n.peersMu.Unlock()
}

// Scores returns the GossipSub score of every peer GossipSub tracks
// (connected peers, and disconnected ones for 30 minutes), as of its last
// refresh (every second). A score below ScoreGraylistThreshold means the
// peer's messages are dropped unread.
func (n *Network) Scores() map[peer.ID]float64 {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	return maps.Clone(n.scores)
}

// onChange is the replica's commit hook: it queues the node's own new ops
// (and federation ops that did not come from the network) for publishing,
// and wakes the membership check when the federation admits or revokes.
// It never blocks.
func (n *Network) onChange(ops []crdt.Op) {
	if n.closed.Load() {
		return
	}
	members := false
	n.pubMu.Lock()
	for _, op := range ops {
		publish := op.Author == n.key
		if op.Author == n.fed {
			members = members || op.Kind == crdt.KindAdmit || op.Kind == crdt.KindRevoke
			id := op.ID()
			if _, ok := n.fromNet[id]; ok {
				delete(n.fromNet, id)
			} else {
				publish = true
			}
		}
		if !publish {
			continue
		}
		if len(n.pubQueue) >= n.cfg.MaxPublishQueue {
			n.stats.publishDropped.Add(1)
			continue
		}
		n.pubQueue = append(n.pubQueue, op)
	}
	queued := len(n.pubQueue) > 0
	n.pubMu.Unlock()
	if queued {
		wake(n.pubWake)
	}
	if members {
		wake(n.maintainWake)
	}
}

// noteFromNet records the federation ops among ops received from a peer,
// so that onChange does not publish them again.
func (n *Network) noteFromNet(ops []crdt.Op) {
	n.pubMu.Lock()
	defer n.pubMu.Unlock()
	for i := range ops {
		if ops[i].Author == n.fed {
			if len(n.fromNet) > 100000 {
				clear(n.fromNet)
			}
			n.fromNet[ops[i].ID()] = struct{}{}
		}
	}
}

// publishLoop publishes queued own ops: everything queued since the last
// publish goes out together, in messages of at most GossipBatch ops and
// MaxMessageSize bytes.
func (n *Network) publishLoop() {
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.pubWake:
		}
		n.pubMu.Lock()
		ops := n.pubQueue
		n.pubQueue = nil
		n.pubMu.Unlock()
		for len(ops) > 0 {
			k, size := 0, 1+10
			for k < len(ops) && k < n.cfg.GossipBatch && size+ops[k].Size()+3 <= n.cfg.MaxMessageSize {
				size += ops[k].Size() + 3
				k++
			}
			msg := EncodeOpsMessage(ops[:k])
			if err := n.opsTopic.Publish(n.ctx, msg); err != nil {
				if n.ctx.Err() != nil {
					return
				}
				n.log.Warn("publish ops", "ops", k, "err", err)
			} else {
				n.stats.messagesPublished.Add(1)
				n.stats.opsPublished.Add(uint64(k))
			}
			ops = ops[k:]
		}
	}
}

// validateOps is the ops topic validator. It accepts a message whose ops
// are all valid and at least one new; it ignores a message with nothing
// new; it rejects (and so penalises the peer that relayed it) anything
// invalid: an author that is not a member, garbage, ops of several venues
// (a node publishes its own and federation ops), a bad signature, an op the
// rules refuse. Ops ahead of their author's chain are accepted (a peer may
// hold the ops between) and anti-entropy with the relaying peer is asked
// for if the gap is still there after GapSyncDelay; but a message whose ops
// are all more than GossipBatch past their author's chain is ignored
// unchecked, and anti-entropy alone brings them.
func (n *Network) validateOps(_ context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	if from == n.host.ID() {
		return pubsub.ValidationAccept // our own publish: ops already committed
	}
	reject := func(why string, err error) pubsub.ValidationResult {
		n.stats.messagesRej.Add(1)
		n.log.Warn("rejected ops message", "from", from, "why", why, "err", err)
		return pubsub.ValidationReject
	}
	if len(msg.Data) > n.cfg.MaxMessageSize {
		return reject("too large", nil)
	}
	ops, err := DecodeOpsMessage(msg.Data, n.cfg.GossipBatch)
	if err != nil {
		return reject("malformed", err)
	}
	// A node publishes its own ops and federation ops: the message's
	// author is its one non-federation author (or the federation).
	skey := n.fed
	for i := range ops {
		if ops[i].Author != n.fed {
			skey = ops[i].Author
			break
		}
	}
	if skey == n.key {
		return pubsub.ValidationIgnore // our own ops, back from a peer
	}
	if !n.rep.IsMember(skey) {
		// We may lack its admission: catch up with the relaying peer.
		n.wantSync(from, n.cfg.GapSyncDelay, func(w *want) { w.force = true })
		return reject("author is not a member", nil)
	}
	// Ops all more than a gossip batch past our chains: we are catching
	// up (a heal, a restart), anti-entropy brings them in order, and
	// relaying them would only send them to peers likely as far behind.
	// Ignored before any signature is checked.
	vv := n.recentVV()
	far := 0
	for i := range ops {
		if ops[i].Author != skey && ops[i].Author != n.fed {
			return reject("ops of several venues in one message", nil)
		}
		if ops[i].Seq > vv[ops[i].Author]+uint64(n.cfg.GossipBatch) {
			far++
		}
	}
	if far == len(ops) {
		n.stats.messagesAhead.Add(1)
		n.wantSync(from, n.cfg.GapSyncDelay, func(w *want) { w.addGaps(ops) })
		return pubsub.ValidationIgnore
	}
	fresh := 0
	var gaps []crdt.Op
	for i := range ops {
		op := &ops[i]
		err := n.rep.Check(op)
		switch {
		case err == nil:
			fresh++
		case errors.Is(err, crdt.ErrDuplicate):
		case errors.Is(err, crdt.ErrGap), errors.Is(err, crdt.ErrUnknownAuthor):
			fresh++
			gaps = append(gaps, *op)
		case errors.Is(err, crdt.ErrStale):
			// A seq the replica covers whose held op it could not compare
			// (not committed yet): nothing new to relay. Real evidence
			// comes back from Check as nil.
		default:
			return reject("invalid op", err)
		}
	}
	if fresh == 0 {
		n.stats.messagesIgnored.Add(1)
		return pubsub.ValidationIgnore
	}
	if len(gaps) > 0 {
		n.wantSync(from, n.cfg.GapSyncDelay, func(w *want) { w.addGaps(gaps) })
	}
	msg.ValidatorData = ops
	return pubsub.ValidationAccept
}

// vvMaxAge bounds the age of the version vector the ops validator
// compares messages with (copying it for every message is costly with
// many authors; a vector a little old only makes the far-ahead test a
// little stricter).
const vvMaxAge = 100 * time.Millisecond

type vvSnapshot struct {
	vv crdt.VersionVector
	at time.Time
}

// recentVV returns the replica's version vector as of at most vvMaxAge
// ago. The caller must not modify it.
func (n *Network) recentVV() crdt.VersionVector {
	if s := n.vvSnap.Load(); s != nil && time.Since(s.at) < vvMaxAge {
		return s.vv
	}
	s := &vvSnapshot{vv: n.rep.VersionVector(), at: time.Now()}
	n.vvSnap.Store(s)
	return s.vv
}

// readOps hands validated ops messages to the replica, several at once so
// that the replica can commit them together.
func (n *Network) readOps() {
	for {
		msg, err := n.opsSub.Next(n.ctx)
		if err != nil {
			return
		}
		if msg.ReceivedFrom == n.host.ID() {
			continue // our own publish, delivered to ourselves
		}
		ops, ok := msg.ValidatorData.([]crdt.Op)
		if !ok {
			continue
		}
		n.stats.messagesAccepted.Add(1)
		n.stats.opsReceived.Add(uint64(len(ops)))
		select {
		case n.ingestSem <- struct{}{}:
		case <-n.ctx.Done():
			return
		}
		n.noteFromNet(ops)
		from := msg.ReceivedFrom
		if !n.goSafe(func() {
			defer func() { <-n.ingestSem }()
			if err := n.rep.Ingest(n.ctx, ops); err != nil && n.ctx.Err() == nil {
				n.log.Warn("ingest gossiped ops", "from", from, "ops", len(ops), "err", err)
			}
		}) {
			return
		}
	}
}

// gossipParams are GossipSub's defaults with a mesh of d peers per topic
// (libp2p's default is 6, kept between 5 and 12): each node forwards each
// message to about d-1 peers, so d sets the bytes and CPU a venue spends
// per op, while a node's own messages still go to every connected peer
// (flood publishing) and anti-entropy repairs what the mesh misses.
func gossipParams(d int) pubsub.GossipSubParams {
	p := pubsub.DefaultGossipSubParams()
	p.D = d
	p.Dlo = d - d/4
	p.Dhi = d + d/2
	p.Dout = max(0, min(d/2-1, p.Dlo-1))
	p.Dscore = d * 2 / 3
	p.Dlazy = d
	return p
}

// pubsubLogger is the logger go-libp2p-pubsub gets: the node's, with
// component=pubsub, through quietPubSub.
func pubsubLogger(h slog.Handler) *slog.Logger {
	return slog.New(quietPubSub{h}).With("component", "pubsub")
}

// quietPubSub drops the log records go-libp2p-pubsub emits for every
// delivered message: the warnings it logs when the host's connection
// manager has no decaying tags (the default one has none), and its debug
// records ("validation done", one per message: one per payment of the
// federation in a node run at --log-level debug).
type quietPubSub struct{ slog.Handler }

// Enabled drops pubsub's debug records.
func (q quietPubSub) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo && q.Handler.Enabled(ctx, l)
}

// Handle drops the per-message warnings.
func (q quietPubSub) Handle(ctx context.Context, r slog.Record) error {
	switch r.Message {
	case "error bumping delivery tag", "unable to create decaying delivery tag":
		return nil
	}
	return q.Handler.Handle(ctx, r)
}

// WithAttrs keeps the filter (the embedded handler's would return a
// handler without it).
func (q quietPubSub) WithAttrs(as []slog.Attr) slog.Handler {
	return quietPubSub{q.Handler.WithAttrs(as)}
}

// WithGroup keeps the filter, as WithAttrs does.
func (q quietPubSub) WithGroup(name string) slog.Handler {
	return quietPubSub{q.Handler.WithGroup(name)}
}

// MessageID identifies a gossip message by its topic and content: messages
// are not signed (StrictNoSign), so the same ops relayed by several peers
// are one message.
func MessageID(m *pubsubpb.Message) string {
	h := sha256.New()
	h.Write([]byte(m.GetTopic()))
	h.Write([]byte{0})
	h.Write(m.Data)
	return string(h.Sum(nil))
}
