package p2p

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Anti-entropy. A node takes part in one session at a time, as initiator
// or responder: a responder already in a session answers "busy" and the
// initiator retries a little later. This keeps a node that was cut off
// from receiving the same missing ops from several peers at once when it
// reconnects. See doc.go for the protocol.

// errBusy is returned when the responder is in another session.
var errBusy = errors.New("p2p: peer busy with another sync session")

// want is a pending request for a session with one peer. Its reasons are
// checked again when it runs, so that a request made moot by gossip or by
// another session costs nothing.
type want struct {
	due      time.Time
	force    bool                      // connect, periodic, explicit: always run
	hb       bool                      // the peer's heartbeat is ahead of us
	gaps     map[crdt.PublicKey]uint64 // author -> a seq seen on gossip past our chain
	attempts int
}

func (w *want) addGaps(ops []crdt.Op) {
	if w.gaps == nil {
		w.gaps = map[crdt.PublicKey]uint64{}
	}
	for i := range ops {
		w.gaps[ops[i].Author] = max(w.gaps[ops[i].Author], ops[i].Seq)
	}
}

func (w *want) merge(o *want) {
	w.force = w.force || o.force
	w.hb = w.hb || o.hb
	for a, s := range o.gaps {
		if w.gaps == nil {
			w.gaps = map[crdt.PublicKey]uint64{}
		}
		w.gaps[a] = max(w.gaps[a], s)
	}
	w.attempts = max(w.attempts, o.attempts)
}

// wantSync asks for a session with p after delay; mod sets the reason.
func (n *Network) wantSync(p peer.ID, delay time.Duration, mod func(*want)) {
	if n.closed.Load() || p == n.host.ID() || n.gater.isBlocked(p) {
		return
	}
	due := time.Now().Add(delay)
	n.syncMu.Lock()
	w := n.wants[p]
	if w == nil {
		w = &want{due: due}
		n.wants[p] = w
	} else if due.Before(w.due) && w.attempts == 0 {
		w.due = due
	}
	mod(w)
	n.syncMu.Unlock()
	wake(n.syncWake)
}

// nextWant returns the earliest request, removed from the set if it is due,
// and how long to wait otherwise.
func (n *Network) nextWant() (peer.ID, *want, time.Duration) {
	n.syncMu.Lock()
	defer n.syncMu.Unlock()
	var best peer.ID
	var bw *want
	for p, w := range n.wants {
		if bw == nil || w.due.Before(bw.due) {
			best, bw = p, w
		}
	}
	if bw == nil {
		return "", nil, 0
	}
	wait := time.Until(bw.due)
	if wait <= 0 {
		delete(n.wants, best)
	}
	return best, bw, wait
}

// syncLoop runs requested sessions one at a time, and asks for one with a
// random connected peer every SyncInterval (±20 %).
func (n *Network) syncLoop() {
	periodic := time.NewTimer(jitter(n.cfg.SyncInterval, 0.2))
	defer periodic.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-periodic.C:
			if p := n.randomPeer(); p != "" {
				n.wantSync(p, 0, func(w *want) { w.force = true })
			}
			periodic.Reset(jitter(n.cfg.SyncInterval, 0.2))
		default:
		}
		p, w, wait := n.nextWant()
		if p != "" && wait <= 0 {
			n.runWant(p, w)
			continue
		}
		var tc <-chan time.Time
		if p != "" {
			timer.Reset(wait)
			tc = timer.C
		}
		select {
		case <-n.ctx.Done():
			return
		case <-n.syncWake:
		case <-tc:
		case <-periodic.C:
			if p := n.randomPeer(); p != "" {
				n.wantSync(p, 0, func(w *want) { w.force = true })
			}
			periodic.Reset(jitter(n.cfg.SyncInterval, 0.2))
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// randomPeer returns a random connected member, or "".
func (n *Network) randomPeer() peer.ID {
	var ps []peer.ID
	for _, p := range n.Connected() {
		if n.gater.member(p) {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return ""
	}
	return ps[rand.IntN(len(ps))]
}

// needed reports whether a request still has a reason to run.
func (n *Network) needed(p peer.ID, w *want) bool {
	if w.force {
		return true
	}
	if len(w.gaps) > 0 {
		vv := n.rep.VersionVector()
		for a, seq := range w.gaps {
			if vv[a] < seq {
				return true
			}
		}
	}
	if w.hb {
		n.peersMu.Lock()
		var hb *Heartbeat
		if pi := n.peers[p]; pi != nil {
			hb = pi.hb
		}
		n.peersMu.Unlock()
		if hb != nil && n.behind(hb) {
			return true
		}
	}
	return false
}

func (n *Network) runWant(p peer.ID, w *want) {
	if n.host.Network().Connectedness(p) != network.Connected || !n.needed(p, w) {
		return
	}
	if len(w.gaps) > 0 && !w.force {
		n.stats.gapSyncs.Add(1)
	}
	err := n.syncOnce(n.ctx, p)
	switch {
	case err == nil || n.ctx.Err() != nil:
	case errors.Is(err, errBusy):
		if w.attempts++; w.attempts > 50 {
			return
		}
		// Retry soon, with a random delay so that two peers that refused
		// each other do not collide again.
		w.due = time.Now().Add(time.Duration(20+rand.IntN(80)) * time.Millisecond * time.Duration(min(w.attempts, 10)))
		n.syncMu.Lock()
		if o := n.wants[p]; o != nil {
			w.merge(o)
		}
		n.wants[p] = w
		n.syncMu.Unlock()
	default:
		n.log.Info("sync failed", "peer", p, "err", err)
	}
}

// SyncWith runs one anti-entropy session with p now (retrying while p is
// busy with another session) and returns once both sides have committed
// what they received.
func (n *Network) SyncWith(ctx context.Context, p peer.ID) error {
	for attempt := 1; ; attempt++ {
		err := n.syncOnce(ctx, p)
		if !errors.Is(err, errBusy) {
			return err
		}
		t := time.NewTimer(time.Duration(10+rand.IntN(40)) * time.Millisecond * time.Duration(min(attempt, 10)))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("p2p: sync with %s: %w", p, ctx.Err())
		case <-n.ctx.Done():
			t.Stop()
			return errors.New("p2p: network closed")
		case <-t.C:
		}
	}
}

// syncOnce takes the session slot and runs one session as initiator.
func (n *Network) syncOnce(ctx context.Context, p peer.ID) error {
	select {
	case n.slot <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.ctx.Done():
		return errors.New("p2p: network closed")
	}
	defer func() { <-n.slot }()
	err := n.initiate(ctx, p)
	if err != nil && !errors.Is(err, errBusy) {
		n.stats.syncFailures.Add(1)
	}
	return err
}

// session state shared by both roles.
type session struct {
	n    *Network
	p    peer.ID
	c    *frameConn
	in   int
	out  int
	role string
}

func (n *Network) newSession(s network.Stream, role string) *session {
	return &session{n: n, p: s.Conn().RemotePeer(), role: role, c: &frameConn{
		rw: s, r: bufio.NewReaderSize(s, 32<<10), max: n.cfg.MaxMessageSize, timeout: n.cfg.StreamTimeout,
	}}
}

func (ss *session) hello() hello {
	d, ops := ss.n.rep.Digest()
	return hello{digest: d, ops: ops, vv: ss.n.rep.VersionVector()}
}

func (ss *session) readHello() (hello, error) {
	t, p, err := ss.c.readFrame()
	if err != nil {
		return hello{}, err
	}
	switch t {
	case frameHello:
		return decodeHello(p, ss.n.cfg.MaxVVEntries)
	case frameBusy:
		return hello{}, errBusy
	}
	return hello{}, malformed("frame %d where a hello was expected", t)
}

func (ss *session) readEnd() error {
	t, _, err := ss.c.readFrame()
	if err != nil {
		return err
	}
	if t != frameEnd {
		return malformed("frame %d where the end was expected", t)
	}
	return nil
}

func (ss *session) finish(start time.Time, inSync bool) {
	n := ss.n
	n.stats.syncSessions.Add(1)
	if inSync {
		n.stats.syncInSync.Add(1)
	}
	n.stats.syncOpsIn.Add(uint64(ss.in))
	n.stats.syncOpsOut.Add(uint64(ss.out))
	n.peersMu.Lock()
	n.peer(ss.p).lastSync = n.cfg.Now()
	n.peersMu.Unlock()
	if ss.in+ss.out > 0 {
		n.log.Info("synced", "peer", ss.p, "role", ss.role, "ops_in", ss.in, "ops_out", ss.out,
			"bytes_in", ss.c.read, "bytes_out", ss.c.written, "took", time.Since(start).Round(time.Millisecond))
	}
}

// initiate runs a session as initiator:
//
//	I→R hello(I); R→I hello(R) or busy; if the digests match, done.
//	R→I ops I lacks, end; I→R ops R lacks, end; R→I end (R committed).
func (n *Network) initiate(ctx context.Context, p peer.ID) (err error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, n.cfg.SyncTimeout)
	defer cancel()
	s, err := n.host.NewStream(ctx, p, SyncProtocol)
	if err != nil {
		return fmt.Errorf("p2p: open sync stream to %s: %w", p, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	ss := n.newSession(s, "initiator")
	defer func() {
		n.stats.syncBytesIn.Add(ss.c.read)
		n.stats.syncBytesOut.Add(ss.c.written)
		if err != nil {
			_ = s.Reset()
			if ctx.Err() != nil && !errors.Is(err, errBusy) {
				err = fmt.Errorf("%w (%w)", err, ctx.Err())
			}
		} else {
			_ = s.Close()
		}
	}()
	mine := ss.hello()
	if err := ss.c.writeFrame(appendHello(nil, mine)); err != nil {
		return fmt.Errorf("p2p: sync with %s: hello: %w", p, err)
	}
	theirs, err := ss.readHello()
	if err != nil {
		if errors.Is(err, errBusy) {
			n.stats.syncBusy.Add(1)
			return err
		}
		return fmt.Errorf("p2p: sync with %s: hello: %w", p, err)
	}
	if theirs.digest == mine.digest {
		ss.finish(start, true)
		return nil
	}
	if err := ss.receive(ctx); err != nil {
		return fmt.Errorf("p2p: sync with %s: receive: %w", p, err)
	}
	if err := ss.send(ctx, n.rep.VersionVector(), theirs.vv); err != nil {
		return fmt.Errorf("p2p: sync with %s: send: %w", p, err)
	}
	if err := ss.readEnd(); err != nil {
		return fmt.Errorf("p2p: sync with %s: final: %w", p, err)
	}
	ss.finish(start, false)
	return nil
}

// handleSync serves a session as responder.
func (n *Network) handleSync(s network.Stream) {
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

	start := time.Now()
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.SyncTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	ss := n.newSession(s, "responder")
	err := ss.respond(ctx, start)
	n.stats.syncBytesIn.Add(ss.c.read)
	n.stats.syncBytesOut.Add(ss.c.written)
	if err != nil {
		_ = s.Reset()
		n.stats.syncFailures.Add(1)
		if n.ctx.Err() == nil {
			n.log.Info("sync failed", "peer", p, "role", "responder", "err", err)
		}
		return
	}
	_ = s.Close()
}

func (ss *session) respond(ctx context.Context, start time.Time) error {
	n := ss.n
	theirs, err := ss.readHello()
	if err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	select {
	case n.slot <- struct{}{}:
	default:
		n.stats.syncBusy.Add(1)
		return ss.c.writeFrame([]byte{frameBusy})
	}
	defer func() { <-n.slot }()
	mine := ss.hello()
	if err := ss.c.writeFrame(appendHello(nil, mine)); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	if theirs.digest == mine.digest {
		ss.finish(start, true)
		return nil
	}
	if err := ss.send(ctx, mine.vv, theirs.vv); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if err := ss.receive(ctx); err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	if err := ss.c.writeFrame([]byte{frameEnd}); err != nil {
		return fmt.Errorf("final: %w", err)
	}
	ss.finish(start, false)
	return nil
}

var errFrameFull = errors.New("frame full")

// send streams the ops mine holds and theirs lacks, federation first, in
// frames of at most SyncBatch ops and MaxMessageSize bytes read from the
// replica one frame at a time, then an end frame. Writes block while the
// peer has not consumed earlier frames (stream flow control).
func (ss *session) send(ctx context.Context, mine, theirs crdt.VersionVector) error {
	n := ss.n
	limit := n.cfg.MaxMessageSize - 1 - 10
	ops := make([]crdt.Op, 0, n.cfg.SyncBatch)
	frame := make([]byte, 0, 64<<10)
	for _, r := range missingRanges(n.fed, mine, theirs) {
		for from := r.From; from <= r.To; {
			if err := ctx.Err(); err != nil {
				return err
			}
			to := min(r.To, from+uint64(n.cfg.SyncBatch)-1)
			ops, size := ops[:0], 0
			err := n.rep.ReadRange(r.Author, from, to, func(op crdt.Op) error {
				if len(ops) > 0 && size+op.Size()+3 > limit {
					return errFrameFull
				}
				ops = append(ops, op)
				size += op.Size() + 3
				return nil
			})
			if err != nil && !errors.Is(err, errFrameFull) {
				return fmt.Errorf("read %s#%d-%d: %w", r.Author.Short(), from, to, err)
			}
			if len(ops) == 0 || ops[0].Seq != from {
				return fmt.Errorf("read %s#%d-%d: the replica does not hold ops its version vector counts", r.Author.Short(), from, to)
			}
			frame = appendOps(append(frame[:0], frameOps), ops)
			if err := ss.c.writeFrame(frame); err != nil {
				return err
			}
			ss.out += len(ops)
			from += uint64(len(ops))
		}
	}
	return ss.c.writeFrame([]byte{frameEnd})
}

// receive reads ops frames until the end frame, committing each run before
// reading the next. A run the replica refuses because of the author's
// state (equivocation, revocation, unknown author, gap) skips the rest of
// that author's ops in this session; anything else invalid ends the
// session.
func (ss *session) receive(ctx context.Context) error {
	n := ss.n
	skip := map[crdt.PublicKey]bool{}
	for {
		t, p, err := ss.c.readFrame()
		if err != nil {
			return err
		}
		switch t {
		case frameEnd:
			return nil
		case frameOps:
		default:
			return malformed("frame %d where ops were expected", t)
		}
		ops, err := decodeRun(p)
		if err != nil {
			return err
		}
		author := ops[0].Author
		if skip[author] {
			continue
		}
		n.noteFromNet(ops)
		err = n.rep.IngestRange(ctx, ops)
		switch {
		case err == nil:
			ss.in += len(ops)
		case errors.Is(err, crdt.ErrEquivocation), errors.Is(err, crdt.ErrRevoked),
			errors.Is(err, crdt.ErrUnknownAuthor), errors.Is(err, crdt.ErrGap):
			skip[author] = true
			n.log.Warn("sync: skipping an author's ops", "peer", ss.p, "author", author.Short(), "err", err)
		default:
			return fmt.Errorf("ingest %s#%d-%d: %w", author.Short(), ops[0].Seq, ops[len(ops)-1].Seq, err)
		}
	}
}
