package p2p

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Joining. Each venue starts with the federation's chain up to its own
// admission, so a venue admitted after another is unknown to it until the
// admission reaches it. When an unknown peer connects, the member lets the
// connection through on probation (see gater) and asks the peer, over
// JoinProtocol, for the federation ops it lacks; then it tells the peer
// its verdict and sends it the federation ops the peer lacks:
//
//	member → peer: ask     (1): join version (uvarint, = 1) | federation key (32) |
//	                            federation seq the member holds (uvarint)
//	peer → member: ops     (2): count (uvarint, ≤ 4096) | count × (length (uvarint) | canonical op),
//	                            a contiguous run of the federation's ops (as in sync)
//	               end     (3): federation seq the peer holds (uvarint)
//	member → peer: verdict (4): 1 if the peer is now a member, else 0
//	               ops     (2): the federation ops the peer lacks
//	               end     (3): federation seq the member holds (uvarint)
//
// Frames are a length (uvarint, at most Config.MaxMessageSize) then the
// type byte and payload. Each side sends at most MaxJoinOps ops; the whole
// exchange must end within JoinTimeout. Each side takes only federation
// ops (signed by the federation key, checked by the replica's IngestRange
// like any catch-up run). The member keeps the connection if the peer's
// key is now an admitted, unrevoked venue: the peer is then a member like
// any other (gossip, sync), and the admission spreads to the other members
// by gossip at once. Otherwise it closes the connection and refuses the
// peer for JoinRefusal. A peer presenting another venue's admission is
// refused: its peer id is its key, and that key is not the admitted one.
// A revoked venue's node learns its revocation from the verdict's ops the
// first time it tries to connect. A peer answers an ask only from a
// member.

const (
	// JoinProtocol is the stream protocol by which a member asks an
	// unknown peer for the proof of its admission.
	JoinProtocol = "/cagnotte/join/1"
	// JoinTimeout bounds a join exchange, from the connection: an unknown
	// peer that has not proved its admission by then is disconnected.
	JoinTimeout = 5 * time.Second
	// JoinRefusal is how long a peer that failed to prove its admission is
	// refused.
	JoinRefusal = 30 * time.Second
	// MaxJoinOps bounds the federation ops a peer may present.
	MaxJoinOps = 4096
	// maxProbation bounds the unknown peers on probation at once.
	maxProbation = 32
)

// Join frame types and version.
const (
	joinAsk     byte = 1
	joinOps     byte = 2
	joinEnd     byte = 3
	joinVerdict byte = 4
	joinVersion      = 1
)

// errNotAdmitted is returned when a peer's proof does not admit it.
var errNotAdmitted = errors.New("p2p: the peer's federation ops do not admit its key")

// maybeJoin starts the join exchange with p if it is an unknown peer on
// probation, and reports whether p is on probation (the caller then leaves
// it alone until the exchange decides). With a caller-supplied host, which
// has no gater, an unknown peer is put on probation here.
func (n *Network) maybeJoin(p peer.ID) bool {
	if n.gater.member(p) {
		return false
	}
	if !n.gater.onProbation(p) && (n.ownHost || !n.gater.probe(p)) {
		return false
	}
	if n.gater.startJoin(p) {
		if !n.goSafe(func() { n.verifyJoin(p) }) {
			n.gater.endProbation(p, false)
		}
	}
	return true
}

// verifyJoin asks p for the federation ops that admit it, ingests them,
// and admits or refuses p.
func (n *Network) verifyJoin(p peer.ID) {
	ctx, cancel := context.WithTimeout(n.ctx, JoinTimeout)
	defer cancel()
	got, err := n.askAdmission(ctx, p)
	if err == nil && !n.gater.member(p) {
		err = errNotAdmitted
	}
	if n.ctx.Err() != nil {
		return
	}
	if err != nil {
		n.gater.endProbation(p, false)
		n.stats.joinsRefused.Add(1)
		_ = n.host.Network().ClosePeer(p)
		n.log.Warn("refused a peer that did not prove its admission", "peer", p, "ops", got, "err", err, "refused_for", JoinRefusal)
		return
	}
	n.gater.endProbation(p, true)
	n.raisePeerLimits(p) // it came in on a stranger's resource limits (rcmgr.go)
	n.stats.joinsAccepted.Add(1)
	n.log.Info("a venue joined: its admission is proved", "peer", p, "federation_ops", got)
	if n.host.Network().Connectedness(p) == network.Connected {
		n.onConnected(p)
	}
}

// askAdmission runs the member's side of the join exchange and returns
// the number of federation ops committed. It tells the peer the verdict
// and sends it the federation ops it lacks before returning.
func (n *Network) askAdmission(ctx context.Context, p peer.ID) (total int, err error) {
	s, err := n.host.NewStream(network.WithNoDial(ctx, "join"), p, JoinProtocol)
	if err != nil {
		return 0, fmt.Errorf("p2p: open join stream: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	defer s.Reset() // after the peer closed, or on error
	if d, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(d)
	}
	jc := &joinConn{rw: s, r: bufio.NewReader(s), max: n.cfg.MaxMessageSize}
	ask := append([]byte{joinAsk}, binary.AppendUvarint(nil, joinVersion)...)
	ask = append(ask, n.fed[:]...)
	ask = binary.AppendUvarint(ask, n.rep.VersionVector()[n.fed])
	if err := jc.write(ask); err != nil {
		return 0, fmt.Errorf("p2p: join ask: %w", err)
	}
	total, theirs, err := n.receiveFedOps(ctx, jc)
	if err != nil {
		return total, fmt.Errorf("p2p: join: %w", err)
	}
	// The verdict and what the peer lacks: informational, so a peer that
	// does not read them changes nothing.
	admitted := byte(0)
	if n.gater.member(p) {
		admitted = 1
	}
	if jc.write([]byte{joinVerdict, admitted}) == nil && n.sendFedOps(ctx, jc, theirs) == nil {
		_ = s.CloseWrite()
		_, _ = io.Copy(io.Discard, io.LimitReader(jc.r, 1)) // until the peer has read it all and closed
	}
	return total, nil
}

// receiveFedOps reads runs of federation ops until the end frame,
// committing each, and returns how many it committed and the sender's
// federation seq.
func (n *Network) receiveFedOps(ctx context.Context, jc *joinConn) (int, uint64, error) {
	total := 0
	for {
		t, payload, err := jc.read()
		if err != nil {
			return total, 0, err
		}
		switch t {
		case joinEnd:
			seq, k := binary.Uvarint(payload)
			if k <= 0 || k != len(payload) {
				return total, 0, malformed("join end")
			}
			return total, seq, nil
		case joinOps:
		default:
			return total, 0, malformed("join frame %d where ops were expected", t)
		}
		ops, err := decodeRun(payload)
		if err != nil {
			return total, 0, err
		}
		if ops[0].Author != n.fed {
			return total, 0, malformed("join: ops of %s, not of the federation", ops[0].Author.Short())
		}
		if total += len(ops); total > MaxJoinOps {
			return total, 0, malformed("join: more than %d federation ops", MaxJoinOps)
		}
		if err := n.rep.IngestRange(ctx, ops); err != nil {
			return total, 0, fmt.Errorf("federation ops #%d-%d: %w", ops[0].Seq, ops[len(ops)-1].Seq, err)
		}
	}
}

// sendFedOps sends the federation ops after seq have, at most MaxJoinOps,
// in runs, then end with this node's federation seq.
func (n *Network) sendFedOps(ctx context.Context, jc *joinConn, have uint64) error {
	head := n.rep.VersionVector()[n.fed]
	last := head
	if head > have && head-have > MaxJoinOps {
		last = have + MaxJoinOps
	}
	limit := n.cfg.MaxMessageSize - 1 - 10
	batch := min(n.cfg.SyncBatch, MaxSyncBatchOps)
	for from := have + 1; have < last && from <= last; {
		if err := ctx.Err(); err != nil {
			return err
		}
		to := min(last, from+uint64(batch)-1)
		var ops []crdt.Op
		size := 0
		err := n.rep.ReadRange(n.fed, from, to, func(op crdt.Op) error {
			if len(ops) > 0 && size+op.Size()+3 > limit {
				return errFrameFull
			}
			ops = append(ops, op)
			size += op.Size() + 3
			return nil
		})
		if err != nil && !errors.Is(err, errFrameFull) {
			return fmt.Errorf("read federation ops #%d-%d: %w", from, to, err)
		}
		if len(ops) == 0 || ops[0].Seq != from {
			return fmt.Errorf("read federation ops #%d-%d: missing", from, to)
		}
		if err := jc.write(appendOps([]byte{joinOps}, ops)); err != nil {
			return err
		}
		from += uint64(len(ops))
	}
	return jc.write(binary.AppendUvarint([]byte{joinEnd}, head))
}

// handleJoin serves a member's ask: the federation ops it lacks, up to
// MaxJoinOps, then end.
func (n *Network) handleJoin(s network.Stream) {
	p, ok := n.acceptMember(s)
	if !ok {
		return
	}
	defer n.wg.Done()
	ctx, cancel := context.WithTimeout(n.ctx, JoinTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	_ = s.SetDeadline(time.Now().Add(JoinTimeout))
	if err := n.proveAdmission(ctx, s); err != nil {
		_ = s.Reset()
		if n.ctx.Err() == nil {
			n.log.Info("join: could not answer a member", "peer", p, "err", err)
		}
		return
	}
	_ = s.Close()
}

func (n *Network) proveAdmission(ctx context.Context, s network.Stream) error {
	jc := &joinConn{rw: s, r: bufio.NewReader(s), max: n.cfg.MaxMessageSize}
	t, p, err := jc.read()
	if err != nil {
		return fmt.Errorf("ask: %w", err)
	}
	if t != joinAsk {
		return malformed("join frame %d where an ask was expected", t)
	}
	v, k := binary.Uvarint(p)
	if k <= 0 || v != joinVersion {
		return malformed("join version")
	}
	p = p[k:]
	if len(p) < len(n.fed) {
		return malformed("join federation key")
	}
	var fed crdt.PublicKey
	copy(fed[:], p)
	if fed != n.fed {
		return fmt.Errorf("p2p: join: the member is of another federation (%s)", fed.Short())
	}
	have, k := binary.Uvarint(p[len(fed):])
	if k <= 0 || len(p) != len(fed)+k {
		return malformed("join seq")
	}
	if err := n.sendFedOps(ctx, jc, have); err != nil {
		return err
	}
	// The verdict, then the federation ops we lack (a revocation of this
	// venue, admissions made since ours).
	t, p, err = jc.read()
	if err != nil {
		return fmt.Errorf("verdict: %w", err)
	}
	if t != joinVerdict || len(p) != 1 {
		return malformed("join frame %d where the verdict was expected", t)
	}
	got, _, err := n.receiveFedOps(ctx, jc)
	if err != nil {
		return fmt.Errorf("federation ops from the member: %w", err)
	}
	if p[0] != 1 {
		n.log.Warn("a venue refused this node's admission", "peer", s.Conn().RemotePeer(), "federation_ops_received", got)
	} else if got > 0 {
		n.log.Info("learnt federation ops from a member", "peer", s.Conn().RemotePeer(), "ops", got)
	}
	return nil
}

// joinConn reads and writes join frames: a length (uvarint, at most max)
// then the payload, whose first byte is the frame type. The stream's
// deadline bounds every read and write.
type joinConn struct {
	rw  io.Writer
	r   *bufio.Reader
	max int
}

func (c *joinConn) write(payload []byte) error {
	if len(payload) > c.max {
		return fmt.Errorf("p2p: join frame of %d bytes over %d", len(payload), c.max)
	}
	// Two writes, not a copy of the payload behind its length: a
	// checkpoint goes out in frames of up to MaxMessageSize.
	if _, err := c.rw.Write(binary.AppendUvarint(nil, uint64(len(payload)))); err != nil {
		return err
	}
	_, err := c.rw.Write(payload)
	return err
}

func (c *joinConn) read() (byte, []byte, error) {
	l, err := binary.ReadUvarint(c.r)
	if err != nil {
		return 0, nil, err
	}
	if l == 0 || l > uint64(c.max) {
		return 0, nil, malformed("join frame of %d bytes (max %d)", l, c.max)
	}
	p := make([]byte, l)
	if _, err := io.ReadFull(c.r, p); err != nil {
		return 0, nil, err
	}
	return p[0], p[1:], nil
}
