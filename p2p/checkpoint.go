package p2p

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cagnotte/cagnotte/crdt"
)

// Checkpoints (docs/checkpoints.md). Venues attest the checkpoint of a
// state they share by publishing a crdt.Attestation on the federation's
// attestation topic; a node keeps the checkpoint a quorum attested and
// serves it over CheckpointProtocol, so that a new venue starts from it
// instead of folding the whole history:
//
//	joiner → server: ask    (1): checkpoint version (uvarint, = 1) | federation key (32) |
//	                             federation seq the joiner holds (uvarint)
//	server → joiner: ops    (2): the federation ops the joiner lacks (as in JoinProtocol),
//	                 end    (3): federation seq the server holds (uvarint)
//	                 none   (6): the server holds no checkpoint; or
//	                 header (5): size (uvarint) | count (uvarint) | count × attestation
//	                 chunk  (7): bytes of the checkpoint, until size bytes were sent
//
// Frames are a length (uvarint, at most Config.MaxMessageSize) then the
// type byte and payload, as in JoinProtocol. Each read and write has a
// deadline of Config.StreamTimeout and the whole exchange lasts at most
// Config.SyncTimeout. Only members are served, at most
// maxCheckpointServes at once (others are reset). The joiner bounds the
// size it accepts (FetchCheckpoint's max) and verifies everything itself
// (crdt.VerifyCheckpoint against the members of its own federation chain,
// which the federation ops of the same exchange bring up to date): the
// server is not trusted.
//
// The attestation topic "/cagnotte/<federation key hex>/attestations/1"
// carries one encoded crdt.Attestation per message (crdt.AttestationSize
// bytes); its validator rejects anything else, a bad signature, or a
// signer that is not a current venue.

const (
	// CheckpointProtocol is the stream protocol serving checkpoints.
	CheckpointProtocol = "/cagnotte/checkpoint/1"
	// AttestationTopicFormat is the GossipSub topic carrying attestations.
	AttestationTopicFormat = "/cagnotte/%s/attestations/1"
	// maxCheckpointServes bounds the checkpoint exchanges served at once.
	maxCheckpointServes = 4
	checkpointVersion   = 1

	// HistoryProtocol serves the ops older than a checkpoint, one bounded
	// range per stream (see FetchHistory).
	HistoryProtocol = "/cagnotte/history/1"
	// maxHistoryServes bounds the history requests served at once: a
	// joiner's background fetch never takes capacity that payments or
	// anti-entropy need.
	maxHistoryServes = 2
	historyVersion   = 1
)

// Checkpoint frame types (ops and end are JoinProtocol's).
const (
	cpAsk    byte = 1
	cpHeader byte = 5
	cpNone   byte = 6
	cpChunk  byte = 7
)

// ErrNoCheckpoint is returned by FetchCheckpoint when the peer holds no
// checkpoint.
var ErrNoCheckpoint = errors.New("p2p: the peer holds no checkpoint")

// AttestationTopic returns the attestation topic of a federation.
func AttestationTopic(fed crdt.PublicKey) string {
	return fmt.Sprintf(AttestationTopicFormat, fed)
}

// CheckpointSource is what CheckpointProtocol serves: the latest
// checkpoint a quorum attested, with the attestations.
type CheckpointSource interface {
	// WriteCheckpoint hands the checkpoint to the sender without holding
	// it whole (80 MB at 10 M ops): header gets its size and
	// attestations, then chunk its bytes in order (each slice valid only
	// during the call). found is false, and neither is called, when the
	// source holds no checkpoint.
	WriteCheckpoint(header func(size int, atts []crdt.Attestation) error, chunk func([]byte) error) (found bool, err error)
}

// Checkpoint is a checkpoint received from a peer, not verified.
type Checkpoint struct {
	Bytes        []byte
	Attestations []crdt.Attestation
	// From is the peer that served it; FederationOps the federation ops
	// it brought in the same exchange.
	From          peer.ID
	FederationOps int
}

// checkpointState is the network's part of checkpoints.
type checkpointState struct {
	mu      sync.Mutex
	src     CheckpointSource
	serving chan struct{}
	history chan struct{}
	topic   *pubsub.Topic
	sub     *pubsub.Subscription
	// held: the network started with Config.HoldCatchUp and holds its
	// session slot until ResumeCatchUp.
	held atomic.Bool
}

// holdCatchUp takes the session slot for the node's own use: no session
// runs as initiator, and none as responder in which this node would
// receive chain ops, until ResumeCatchUp. Called from New.
func (n *Network) holdCatchUp() {
	n.slot <- struct{}{}
	n.cp.held.Store(true)
}

// CatchUpHeld reports whether anti-entropy is held (Config.HoldCatchUp)
// and not resumed yet.
func (n *Network) CatchUpHeld() bool { return n.cp.held.Load() }

// ResumeCatchUp lets anti-entropy run after a start with
// Config.HoldCatchUp. It does nothing otherwise, or when called again.
func (n *Network) ResumeCatchUp() {
	if n.cp.held.CompareAndSwap(true, false) {
		<-n.slot
		wake(n.syncWake)
		for _, p := range n.Connected() {
			if n.gater.member(p) {
				n.wantSync(p, jitter(50*time.Millisecond, 1), func(w *want) { w.force = true })
				break
			}
		}
	}
}

// ServeCheckpoints serves src's checkpoint over CheckpointProtocol to
// members, until Close.
func (n *Network) ServeCheckpoints(src CheckpointSource) {
	n.cp.mu.Lock()
	n.cp.src = src
	if n.cp.serving == nil {
		n.cp.serving = make(chan struct{}, maxCheckpointServes)
		n.cp.history = make(chan struct{}, maxHistoryServes)
	}
	n.cp.mu.Unlock()
	n.host.SetStreamHandler(CheckpointProtocol, n.handleCheckpoint)
	n.host.SetStreamHandler(HistoryProtocol, n.handleHistory)
}

// closeCheckpoints is called by Close once the goroutines stopped.
func (n *Network) closeCheckpoints() {
	if n.host != nil {
		n.host.RemoveStreamHandler(CheckpointProtocol)
		n.host.RemoveStreamHandler(HistoryProtocol)
	}
	n.cp.mu.Lock()
	defer n.cp.mu.Unlock()
	if n.cp.sub != nil {
		n.cp.sub.Cancel()
	}
	if n.cp.topic != nil {
		_ = n.cp.topic.Close()
	}
}

// deadlineRW gives each read and write of a stream its own deadline.
type deadlineRW struct {
	s       network.Stream
	timeout time.Duration
}

func (d deadlineRW) Read(p []byte) (int, error) {
	_ = d.s.SetReadDeadline(time.Now().Add(d.timeout))
	return d.s.Read(p)
}

func (d deadlineRW) Write(p []byte) (int, error) {
	_ = d.s.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.s.Write(p)
}

func (n *Network) checkpointConn(s network.Stream) *joinConn {
	rw := deadlineRW{s: s, timeout: n.cfg.StreamTimeout}
	return &joinConn{rw: rw, r: bufio.NewReader(rw), max: n.cfg.MaxMessageSize}
}

// maxHeaderAttestations is how many attestations fit in a header frame.
func (n *Network) maxHeaderAttestations() int {
	return (n.cfg.MaxMessageSize - 32) / crdt.AttestationSize
}

func (n *Network) handleCheckpoint(s network.Stream) {
	p, ok := n.acceptMember(s)
	if !ok {
		return
	}
	defer n.wg.Done()
	n.cp.mu.Lock()
	src, sem := n.cp.src, n.cp.serving
	n.cp.mu.Unlock()
	ctx, done, ok := n.serveSlot(s, sem)
	if !ok {
		return
	}
	defer done()
	if err := n.serveCheckpoint(ctx, s, src); err != nil {
		_ = s.Reset()
		if n.ctx.Err() == nil {
			n.log.Info("checkpoint: could not serve a peer", "peer", p, "err", err)
		}
		return
	}
	_ = s.Close()
}

func (n *Network) serveCheckpoint(ctx context.Context, s network.Stream, src CheckpointSource) error {
	jc := n.checkpointConn(s)
	t, p, err := jc.read()
	if err != nil {
		return fmt.Errorf("ask: %w", err)
	}
	if t != cpAsk {
		return malformed("checkpoint frame %d where an ask was expected", t)
	}
	v, k := binary.Uvarint(p)
	if k <= 0 || v != checkpointVersion {
		return malformed("checkpoint version")
	}
	p = p[k:]
	var fed crdt.PublicKey
	if len(p) < len(fed) {
		return malformed("checkpoint federation key")
	}
	copy(fed[:], p)
	if fed != n.fed {
		return fmt.Errorf("p2p: checkpoint: the peer is of another federation (%s)", fed.Short())
	}
	have, k := binary.Uvarint(p[len(fed):])
	if k <= 0 || len(p) != len(fed)+k {
		return malformed("checkpoint federation seq")
	}
	if err := n.sendFedOps(ctx, jc, have); err != nil {
		return err
	}
	// The checkpoint goes out in frames of MaxMessageSize-1 bytes, filled
	// from the source's chunks: one frame's buffer is held, not the
	// checkpoint.
	frame := make([]byte, 1, n.cfg.MaxMessageSize)
	frame[0] = cpChunk
	found := false
	if src != nil {
		found, err = src.WriteCheckpoint(func(size int, atts []crdt.Attestation) error {
			if size <= 0 {
				return fmt.Errorf("p2p: checkpoint of %d bytes", size)
			}
			atts = atts[:min(len(atts), n.maxHeaderAttestations())]
			h := binary.AppendUvarint([]byte{cpHeader}, uint64(size))
			h = binary.AppendUvarint(h, uint64(len(atts)))
			for i := range atts {
				h = append(h, atts[i].Encode()...)
			}
			return jc.write(h)
		}, func(p []byte) error {
			for len(p) > 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
				k := min(len(p), cap(frame)-len(frame))
				frame, p = append(frame, p[:k]...), p[k:]
				if len(frame) == cap(frame) {
					if err := jc.write(frame); err != nil {
						return err
					}
					frame = frame[:1]
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("read the checkpoint: %w", err)
		}
	}
	if !found {
		return jc.write([]byte{cpNone})
	}
	if len(frame) > 1 {
		if err := jc.write(frame); err != nil {
			return err
		}
	}
	_ = s.CloseWrite()
	_, _ = io.Copy(io.Discard, io.LimitReader(jc.r, 1)) // until the peer has read it all and closed
	return nil
}

// FetchCheckpoint asks p for its checkpoint. The federation ops p holds
// and this node lacks come first and are committed (the replica's
// IngestRange), so that the caller verifies the checkpoint against an
// up-to-date list of members. A checkpoint over max bytes is refused. The
// result is not verified: see crdt.VerifyCheckpoint.
func (n *Network) FetchCheckpoint(ctx context.Context, p peer.ID, max int) (Checkpoint, error) {
	out := Checkpoint{From: p}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.SyncTimeout)
	defer cancel()
	s, err := n.host.NewStream(network.WithNoDial(ctx, "checkpoint"), p, CheckpointProtocol)
	if err != nil {
		return out, fmt.Errorf("p2p: open checkpoint stream: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	defer s.Reset() // after the exchange, or on error
	jc := n.checkpointConn(s)
	ask := append([]byte{cpAsk}, binary.AppendUvarint(nil, checkpointVersion)...)
	ask = append(ask, n.fed[:]...)
	ask = binary.AppendUvarint(ask, n.rep.VersionVector()[n.fed])
	if err := jc.write(ask); err != nil {
		return out, fmt.Errorf("p2p: checkpoint ask: %w", err)
	}
	if out.FederationOps, _, err = n.receiveFedOps(ctx, jc); err != nil {
		return out, fmt.Errorf("p2p: checkpoint: federation ops: %w", err)
	}
	t, h, err := jc.read()
	if err != nil {
		return out, fmt.Errorf("p2p: checkpoint header: %w", err)
	}
	switch t {
	case cpNone:
		return out, ErrNoCheckpoint
	case cpHeader:
	default:
		return out, malformed("checkpoint frame %d where a header was expected", t)
	}
	size, k := binary.Uvarint(h)
	if k <= 0 || size == 0 {
		return out, malformed("checkpoint size")
	}
	if size > uint64(max) {
		return out, fmt.Errorf("p2p: checkpoint of %d bytes, over the %d accepted", size, max)
	}
	h = h[k:]
	count, k := binary.Uvarint(h)
	if k <= 0 || uint64(len(h)-k) != count*crdt.AttestationSize {
		return out, malformed("checkpoint attestations")
	}
	h = h[k:]
	for range count {
		// A bad signature is the peer's problem, not a reason to refuse
		// the others: VerifyCheckpoint counts only valid ones.
		if a, err := crdt.DecodeAttestation(h[:crdt.AttestationSize]); err == nil {
			out.Attestations = append(out.Attestations, a)
		}
		h = h[crdt.AttestationSize:]
	}
	out.Bytes = make([]byte, 0, size)
	for uint64(len(out.Bytes)) < size {
		t, c, err := jc.read()
		if err != nil {
			return out, fmt.Errorf("p2p: checkpoint bytes: %w", err)
		}
		if t != cpChunk || len(c) == 0 || uint64(len(out.Bytes)+len(c)) > size {
			return out, malformed("checkpoint chunk")
		}
		out.Bytes = append(out.Bytes, c...)
	}
	_ = s.CloseWrite()
	return out, nil
}

// StartAttestations joins the federation's attestation topic and calls fn
// (which must not block long) with each valid attestation received from
// another node, until Close.
func (n *Network) StartAttestations(fn func(crdt.Attestation)) error {
	name := AttestationTopic(n.fed)
	if err := n.ps.RegisterTopicValidator(name, pubsub.ValidatorEx(n.validateAttestation)); err != nil {
		return fmt.Errorf("p2p: attestation validator: %w", err)
	}
	topic, err := n.ps.Join(name)
	if err != nil {
		return fmt.Errorf("p2p: join %s: %w", name, err)
	}
	sub, err := topic.Subscribe(pubsub.WithBufferSize(64))
	if err != nil {
		_ = topic.Close()
		return fmt.Errorf("p2p: subscribe %s: %w", name, err)
	}
	n.cp.mu.Lock()
	n.cp.topic, n.cp.sub = topic, sub
	n.cp.mu.Unlock()
	if !n.goSafe(func() {
		for {
			msg, err := sub.Next(n.ctx)
			if err != nil {
				return
			}
			if msg.ReceivedFrom == n.host.ID() {
				continue
			}
			if a, ok := msg.ValidatorData.(crdt.Attestation); ok {
				fn(a)
			}
		}
	}) {
		return errors.New("p2p: network closed")
	}
	return nil
}

// PublishAttestation publishes this node's attestation.
func (n *Network) PublishAttestation(ctx context.Context, a crdt.Attestation) error {
	n.cp.mu.Lock()
	topic := n.cp.topic
	n.cp.mu.Unlock()
	if topic == nil {
		return errors.New("p2p: attestations not started")
	}
	if err := topic.Publish(ctx, a.Encode()); err != nil {
		return fmt.Errorf("p2p: publish attestation: %w", err)
	}
	return nil
}

// validateAttestation accepts one well-formed attestation signed by a
// current venue and rejects anything else.
func (n *Network) validateAttestation(_ context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	if from == n.host.ID() {
		return pubsub.ValidationAccept
	}
	reject := func(why string, err error) pubsub.ValidationResult {
		n.stats.messagesRej.Add(1)
		n.log.Warn("rejected attestation", "from", from, "why", why, "err", err)
		return pubsub.ValidationReject
	}
	if len(msg.Data) != crdt.AttestationSize {
		return reject("size", nil)
	}
	a, err := crdt.DecodeAttestation(msg.Data) // checks the signature
	if err != nil {
		return reject("malformed", err)
	}
	if a.Venue == n.fed || !n.rep.IsMember(a.Venue) {
		return reject("signer is not a current venue", nil)
	}
	msg.ValidatorData = a
	return pubsub.ValidationAccept
}

// History older than a checkpoint. A venue that started from a checkpoint
// holds each author's chain state at the checkpoint but not the ops it
// summarizes; it may fetch them in the background, one bounded range at a
// time, from the venues in turn:
//
//	asker → server: ask (1): history version (uvarint, = 1) | author (32) |
//	                         from (uvarint) | to (uvarint)
//	server → asker: ops (2): count | count × (length | canonical op), one
//	                         contiguous run of the author from from on
//	                end (3)
//
// The server sends at most Config.HistoryBatch ops (the run stops earlier
// at the first op it lacks: a server that started from a checkpoint too
// may hold none), in frames of at most MaxMessageSize, each write with a
// StreamTimeout deadline. At most maxHistoryServes requests are served at
// once (others are reset: the asker tries another venue), only to members,
// and what is sent is charged to the peer's sync byte budget
// (Config.SyncPeerBudget), a peer in debt being refused. The asker
// verifies everything (FetchHistory's caller: the chain links down from
// the attested head, every signature).

// historyAsk is a request of HistoryProtocol.
type historyAsk struct {
	author   crdt.PublicKey
	from, to uint64
}

func (n *Network) handleHistory(s network.Stream) {
	p, ok := n.acceptMember(s)
	if !ok {
		return
	}
	defer n.wg.Done()
	n.cp.mu.Lock()
	sem := n.cp.history
	n.cp.mu.Unlock()
	sx := n.sx()
	if sx.credit(p, &n.cfg, time.Now()) == 0 {
		_ = s.Reset()
		return
	}
	ctx, done, ok := n.serveSlot(s, sem)
	if !ok {
		return
	}
	defer done()
	sent, err := n.serveHistory(ctx, s)
	sx.charge(p, sent)
	if err != nil {
		_ = s.Reset()
		if n.ctx.Err() == nil {
			n.log.Info("history: could not serve a peer", "peer", p, "err", err)
		}
		return
	}
	_ = s.Close()
}

func (n *Network) serveHistory(ctx context.Context, s network.Stream) (uint64, error) {
	jc := n.checkpointConn(s)
	t, p, err := jc.read()
	if err != nil {
		return 0, fmt.Errorf("ask: %w", err)
	}
	if t != cpAsk {
		return 0, malformed("history frame %d where an ask was expected", t)
	}
	ask, err := decodeHistoryAsk(p)
	if err != nil {
		return 0, err
	}
	to := min(ask.to, ask.from+uint64(n.cfg.HistoryBatch)-1)
	limit := n.cfg.MaxMessageSize - 1 - 10
	var sent uint64
	var ops []crdt.Op
	size := 0
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		f := appendOps([]byte{frameOps}, ops)
		if err := jc.write(f); err != nil {
			return err
		}
		sent += uint64(len(f))
		ops, size = ops[:0], 0
		return nil
	}
	err = n.rep.ReadRange(ask.author, ask.from, to, func(op crdt.Op) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if len(ops) > 0 && (size+op.Size()+3 > limit || len(ops) >= n.cfg.SyncBatch) {
			if err := flush(); err != nil {
				return err
			}
		}
		ops = append(ops, op)
		size += op.Size() + 3
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return sent, err
	}
	return sent + 2, jc.write([]byte{frameEnd})
}

func appendHistoryAsk(a historyAsk) []byte {
	b := binary.AppendUvarint([]byte{cpAsk}, historyVersion)
	b = append(b, a.author[:]...)
	b = binary.AppendUvarint(b, a.from)
	return binary.AppendUvarint(b, a.to)
}

func decodeHistoryAsk(p []byte) (historyAsk, error) {
	var a historyAsk
	v, k := binary.Uvarint(p)
	if k <= 0 || v != historyVersion {
		return a, malformed("history version")
	}
	p = p[k:]
	if len(p) < len(a.author) {
		return a, malformed("history author")
	}
	copy(a.author[:], p)
	p = p[len(a.author):]
	if a.from, k = binary.Uvarint(p); k <= 0 {
		return a, malformed("history from")
	}
	p = p[k:]
	if a.to, k = binary.Uvarint(p); k <= 0 || k != len(p) {
		return a, malformed("history to")
	}
	if a.from == 0 || a.to < a.from {
		return a, malformed("history range %d-%d", a.from, a.to)
	}
	return a, nil
}

// FetchHistory asks p for the ops of author with from <= seq <= to (p
// sends at most its Config.HistoryBatch of them, and stops at the first
// it lacks). It returns the run received, contiguous from from on, not
// verified beyond its shape: the caller checks the chain links and the
// signatures. An empty run means p holds none of them.
func (n *Network) FetchHistory(ctx context.Context, p peer.ID, author crdt.PublicKey, from, to uint64) ([]crdt.Op, error) {
	if from == 0 || to < from {
		return nil, fmt.Errorf("p2p: history range %d-%d", from, to)
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.SyncTimeout)
	defer cancel()
	s, err := n.host.NewStream(network.WithNoDial(ctx, "history"), p, HistoryProtocol)
	if err != nil {
		return nil, fmt.Errorf("p2p: open history stream: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	defer s.Reset() // after the exchange, or on error
	jc := n.checkpointConn(s)
	if err := jc.write(appendHistoryAsk(historyAsk{author: author, from: from, to: to})); err != nil {
		return nil, fmt.Errorf("p2p: history ask: %w", err)
	}
	var out []crdt.Op
	want := to - from + 1
	for {
		t, f, err := jc.read()
		if err != nil {
			return out, fmt.Errorf("p2p: history: %w", err)
		}
		if t == frameEnd {
			_ = s.CloseWrite()
			return out, nil
		}
		if t != frameOps {
			return out, malformed("history frame %d where ops were expected", t)
		}
		ops, err := decodeRun(f)
		if err != nil {
			return out, err
		}
		if len(ops) == 0 {
			return out, malformed("empty history run")
		}
		next := from + uint64(len(out))
		if ops[0].Author != author || ops[0].Seq != next || uint64(len(out)+len(ops)) > want {
			return out, malformed("history run %s#%d+%d where %s#%d was expected", ops[0].Author.Short(), ops[0].Seq, len(ops), author.Short(), next)
		}
		out = append(out, ops...)
	}
}

// serveSlot takes one of sem's serving slots for stream s, or resets s
// when none is free; the context it returns ends after SyncTimeout and
// then resets s. done gives the slot back.
func (n *Network) serveSlot(s network.Stream, sem chan struct{}) (ctx context.Context, done func(), ok bool) {
	select {
	case sem <- struct{}{}:
	default:
		_ = s.Reset()
		return nil, nil, false
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.SyncTimeout)
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	return ctx, func() { stop(); cancel(); <-sem }, true
}
