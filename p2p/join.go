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
// JoinProtocol, for the federation ops it lacks:
//
//	member → peer: ask   (1): join version (uvarint, = 1) | federation key (32) |
//	                          federation seq the member holds (uvarint)
//	peer → member: ops   (2): count (uvarint, ≤ 4096) | count × (length (uvarint) | canonical op),
//	                          a contiguous run of the federation's ops (as in sync)
//	               end   (3): nothing more
//
// Frames are a length (uvarint, at most Config.MaxMessageSize) then the
// type byte and payload. The peer sends at most MaxJoinOps ops; the whole
// exchange must end within JoinTimeout. The member takes only federation
// ops (signed by the federation key, checked by the replica's IngestRange
// like any catch-up run), commits them, and keeps the connection if the
// peer's key is now an admitted, unrevoked venue: the peer is then a member
// like any other (gossip, sync), and the admission spreads to the other
// members by gossip at once. Otherwise it closes the connection and
// refuses the peer for JoinRefusal. A peer presenting another venue's
// admission is refused: its peer id is its key, and that key is not the
// admitted one. A peer answers an ask only from a member.

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
	n.stats.joinsAccepted.Add(1)
	n.log.Info("a venue joined: its admission is proved", "peer", p, "federation_ops", got)
	if n.host.Network().Connectedness(p) == network.Connected {
		n.onConnected(p)
	}
}

// askAdmission runs the member's side of the join exchange and returns
// the number of federation ops committed.
func (n *Network) askAdmission(ctx context.Context, p peer.ID) (total int, err error) {
	s, err := n.host.NewStream(network.WithNoDial(ctx, "join"), p, JoinProtocol)
	if err != nil {
		return 0, fmt.Errorf("p2p: open join stream: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	defer func() {
		if err != nil {
			_ = s.Reset()
		} else {
			_ = s.Close()
		}
	}()
	if d, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(d)
	}
	jc := &joinConn{rw: s, r: bufio.NewReader(s), max: n.cfg.MaxMessageSize}
	have := n.rep.VersionVector()[n.fed]
	ask := append([]byte{joinAsk}, binary.AppendUvarint(nil, joinVersion)...)
	ask = append(ask, n.fed[:]...)
	ask = binary.AppendUvarint(ask, have)
	if err := jc.write(ask); err != nil {
		return 0, fmt.Errorf("p2p: join ask: %w", err)
	}
	for {
		t, payload, err := jc.read()
		if err != nil {
			return total, fmt.Errorf("p2p: join: %w", err)
		}
		switch t {
		case joinEnd:
			return total, nil
		case joinOps:
		default:
			return total, malformed("join frame %d", t)
		}
		ops, err := decodeRun(payload)
		if err != nil {
			return total, err
		}
		if ops[0].Author != n.fed {
			return total, malformed("join: ops of %s, not of the federation", ops[0].Author.Short())
		}
		if total += len(ops); total > MaxJoinOps {
			return total, malformed("join: more than %d federation ops", MaxJoinOps)
		}
		if err := n.rep.IngestRange(ctx, ops); err != nil {
			return total, fmt.Errorf("p2p: join: federation ops #%d-%d: %w", ops[0].Seq, ops[len(ops)-1].Seq, err)
		}
	}
}

// handleJoin serves a member's ask: the federation ops it lacks, up to
// MaxJoinOps, then end.
func (n *Network) handleJoin(s network.Stream) {
	p := s.Conn().RemotePeer()
	if !n.gater.member(p) {
		_ = s.Reset()
		return
	}
	n.closeMu.RLock()
	if n.closing {
		n.closeMu.RUnlock()
		_ = s.Reset()
		return
	}
	n.wg.Add(1)
	n.closeMu.RUnlock()
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
	head := n.rep.VersionVector()[n.fed]
	limit := n.cfg.MaxMessageSize - 1 - 10
	batch := min(n.cfg.SyncBatch, MaxSyncBatchOps)
	last := head
	if head > have && head-have > MaxJoinOps {
		last = have + MaxJoinOps
	}
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
	return jc.write([]byte{joinEnd})
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
	_, err := c.rw.Write(append(binary.AppendUvarint(nil, uint64(len(payload))), payload...))
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
