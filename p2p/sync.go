package p2p

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Anti-entropy. A node runs one session at a time as initiator, and as
// responder takes the same exclusive slot for the sessions in which it
// will receive ops: a responder busy with another such session answers
// "busy" and the initiator retries a little later. This keeps a node that
// was cut off from receiving the same missing ops from several peers at
// once when it reconnects. Sessions in which the responder only sends
// (the peer lacks ops, we lack none of its) do not take the slot: they
// are bounded by MaxInboundSyncs, one per peer, a byte budget per peer
// and a minimum rate, so that a peer asking for everything, or reading
// slowly, holds no capacity others need. See doc.go for the protocol.

// errBusy is returned when the responder is in another session.
var errBusy = errors.New("p2p: peer busy with another sync session")

// frameMore ends a list of ops frames, as frameEnd does, when the sender
// stopped at its session budget (Config.SyncSessionBytes,
// SyncSessionTime, or the peer's byte credit) with more to send: the
// session then ends after the ops, and the receiver, having committed
// every frame it read, starts another session from its advanced version
// vector.
const frameMore byte = 8

// want is a pending request for a session with one peer. Its reasons are
// checked again when it runs, so that a request made moot by gossip or by
// another session costs nothing.
type want struct {
	due   time.Time
	force bool // periodic, explicit, a long catch-up resumed: always run
	// connect: the peer connected at connAt; the session runs unless a
	// session with it completed since (either side may start one), or a
	// heartbeat of the peer heard since shows our digest.
	connect bool
	connAt  time.Time // Config.Now, to compare with heartbeats heard
	// connMono is connAt on the monotonic clock, to compare with the
	// last session's end.
	connMono time.Time
	// push: we received ops the peer seems to lack at pushAt; the session
	// runs unless a heartbeat of the peer heard since shows our digest.
	push     bool
	pushAt   time.Time
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
	if o.connect {
		w.connect = true
		if o.connMono.After(w.connMono) {
			w.connAt, w.connMono = o.connAt, o.connMono
		}
	}
	if o.push {
		w.push = true
		if o.pushAt.After(w.pushAt) {
			w.pushAt = o.pushAt
		}
	}
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
		if n.gater.member(p) && !n.SyncPenalized(p) {
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
	if w.connect {
		// One session per new connection, whichever side starts it (the
		// side with the lower peer id first, see onConnected), and none
		// if the peer announced our digest since it connected.
		hb, at, synced := n.lastHeard(p)
		d, _ := n.rep.Digest()
		if synced.Before(w.connMono) && (hb == nil || at.Before(w.connAt) || hb.Digest != d) {
			return true
		}
	}
	if w.push {
		hb, at, _ := n.lastHeard(p)
		if d, _ := n.rep.Digest(); hb == nil || at.Before(w.pushAt) || hb.Digest != d {
			return true
		}
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
		if hb, _, _ := n.lastHeard(p); hb != nil && n.behind(hb) {
			return true
		}
	}
	return false
}

// lastHeard returns p's latest heartbeat (or nil), when it was heard
// (Config.Now), and when the last session with p completed (monotonic
// clock).
func (n *Network) lastHeard(p peer.ID) (*Heartbeat, time.Time, time.Time) {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	if pi := n.peers[p]; pi != nil {
		return pi.hb, pi.hbAt, pi.synced
	}
	return nil, time.Time{}, time.Time{}
}

// bestSource returns the connected member to pull from instead of p for a
// request made because p's heartbeat is ahead: among the members whose
// heartbeat, heard in the last three intervals, is ahead of us, one with
// the most ops, chosen at random among those (p when there is none). After a
// heal many venues hear the same few heartbeats ahead at once; the
// random choice spreads their pulls over every venue that already holds
// the ops instead of sending them all to the one that announced first.
func (n *Network) bestSource(p peer.ID) peer.ID {
	digest, ops := n.rep.Digest()
	now := n.cfg.Now()
	fresh := 3 * n.cfg.HeartbeatInterval
	type cand struct {
		id  peer.ID
		ops uint64
	}
	var cs []cand
	n.peersMu.Lock()
	for id, pi := range n.peers {
		hb := pi.hb
		if hb == nil || now.Sub(pi.hbAt) > fresh || hb.Digest == digest || hb.Ops < ops {
			continue
		}
		cs = append(cs, cand{id, hb.Ops})
	}
	n.peersMu.Unlock()
	best, ties := uint64(0), 0
	var pick peer.ID
	for _, c := range cs {
		if n.host.Network().Connectedness(c.id) != network.Connected || !n.gater.member(c.id) ||
			n.gater.isBlocked(c.id) || n.SyncPenalized(c.id) {
			continue
		}
		switch {
		case c.ops > best || ties == 0:
			best, ties, pick = c.ops, 1, c.id
		case c.ops == best:
			ties++
			if rand.IntN(ties) == 0 {
				pick = c.id
			}
		}
	}
	if ties == 0 {
		return p
	}
	return pick
}

// pushFanout is how many peers a node passes ops it received by
// anti-entropy on to (pushNews).
const pushFanout = 2

// pushNews asks for a session soon with pushFanout connected members
// other than from, chosen at random among those whose latest heartbeat
// shows fewer ops than we hold now (or who were not heard): the ops this node just received by
// anti-entropy then spread from venue to venue like gossip (each venue
// that gets them passes them on), in a few rounds of sessions, instead of
// waiting for each venue to hear a heartbeat ahead and all of them
// pulling from the few venues that announced first. A push is a normal
// session (the peer checks every op and may answer busy: the push is
// then dropped, the peer being fed by another).
func (n *Network) pushNews(from peer.ID) {
	digest, ops := n.rep.Digest()
	var ps []peer.ID
	for _, p := range n.Connected() {
		if p == from || !n.gater.member(p) || n.gater.isBlocked(p) || n.SyncPenalized(p) {
			continue
		}
		if hb, _, _ := n.lastHeard(p); hb != nil && (hb.Digest == digest || hb.Ops >= ops) {
			// It holds our state, or at least as many ops: a venue
			// catching up on a long history pushes nothing.
			continue
		}
		ps = append(ps, p)
	}
	rand.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
	now := n.cfg.Now()
	for _, p := range ps[:min(pushFanout, len(ps))] {
		n.sx().pushes.Add(1)
		n.wantSync(p, jitter(farPullDelay, 1), func(w *want) { w.push, w.pushAt = true, now })
	}
}

// farAhead is how far (in ops) a heartbeat must be ahead of us for the
// pull it triggers to start at once rather than after GapSyncDelay: ops
// in flight on gossip do not come in such numbers.
func (n *Network) farAhead(hb *Heartbeat) bool {
	_, ops := n.rep.Digest()
	return hb.Ops >= ops+uint64(n.cfg.GossipBatch)
}

// pullDelay is how long after hearing hb (ahead of us) the pull it asks
// for waits: GapSyncDelay, since a heartbeat is often ahead only by ops
// still on their way by gossip, or a random 0-100 ms when it is too far
// ahead for that (a heal, a restart).
func (n *Network) pullDelay(hb *Heartbeat) time.Duration {
	if n.farAhead(hb) {
		return jitter(farPullDelay, 1)
	}
	return n.cfg.GapSyncDelay
}

// farPullDelay is the mean delay of a pull from a peer far ahead.
const farPullDelay = 50 * time.Millisecond

func (n *Network) runWant(p peer.ID, w *want) {
	if n.host.Network().Connectedness(p) != network.Connected || n.SyncPenalized(p) || !n.needed(p, w) {
		return
	}
	if len(w.gaps) > 0 && !w.force {
		n.stats.gapSyncs.Add(1)
	}
	src := p
	if !w.force && !w.push && !w.connect && len(w.gaps) == 0 {
		// Asked because of heartbeats: any venue as far ahead will do.
		src = n.bestSource(p)
	}
	err := n.syncOnce(n.ctx, src)
	switch {
	case err == nil || n.ctx.Err() != nil:
	case errors.Is(err, errBusy):
		if w.push && !w.force && !w.connect && !w.hb && len(w.gaps) == 0 {
			// A push only: the peer is busy receiving from another
			// venue, likely the same news.
			return
		}
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
	n     *Network
	p     peer.ID
	c     *frameConn
	in    int
	out   int
	evIn  int
	evOut int
	role  string
	// penalized is set once the peer was put on penalty in this session.
	penalized bool
	// budget bounds the bytes of ops frames this side sends in the
	// session; sendFor how long it keeps sending them.
	budget  uint64
	sendFor time.Duration
	// cut: this side stopped sending at its budget; peerCut: the peer did.
	cut, peerCut bool
	// sent is the bytes of ops frames sent.
	sent uint64
}

func (n *Network) newSession(s network.Stream, role string) *session {
	return &session{n: n, p: s.Conn().RemotePeer(), role: role,
		budget: uint64(n.cfg.SyncSessionBytes), sendFor: n.cfg.SyncSessionTime, c: &frameConn{
			rw: s, r: bufio.NewReaderSize(s, 32<<10), max: n.cfg.MaxMessageSize, timeout: n.cfg.StreamTimeout,
			minRate: float64(n.cfg.SyncMinRate), grace: n.cfg.SyncGrace,
		}}
}

func (ss *session) hello() hello {
	d, ops := ss.n.rep.Digest()
	h := hello{version: syncVersion, digest: d, ops: ops, vv: ss.n.rep.VersionVector()}
	if ev := ss.n.rep.Evidence(); len(ev) > 0 {
		h.fork, h.forkIDs = ss.n.forkDigest(ss.n.rep.Chains(), ev)
	}
	return h
}

// forkDigest is forkState's digest and id count, computed again only when
// a forked author's chain or the evidence changed since the last call
// (the evidence only grows: its size tells whether it changed), so that
// a hello does not read the forked branches each time.
func (n *Network) forkDigest(chains map[crdt.PublicKey]Chain, ev []crdt.Op) ([32]byte, uint64) {
	keys := make([]crdt.PublicKey, 0, 4)
	for k, c := range chains {
		if c.Fork != 0 {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, cmpKey)
	h := sha256.New()
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], uint64(len(ev)))
	h.Write(buf[:])
	for _, k := range keys {
		c := chains[k]
		h.Write(k[:])
		binary.BigEndian.PutUint64(buf[:], c.Seq)
		h.Write(buf[:])
		h.Write(c.Head[:])
		binary.BigEndian.PutUint64(buf[:], c.Fork)
		h.Write(buf[:])
	}
	var key [32]byte
	h.Sum(key[:0])
	sx := n.sx()
	sx.mu.Lock()
	if sx.forks.valid && sx.forks.key == key {
		d, ids := sx.forks.digest, sx.forks.ids
		sx.mu.Unlock()
		return d, ids
	}
	sx.mu.Unlock()
	fs := n.forkState(chains, ev)
	sx.mu.Lock()
	sx.forks = forkCache{valid: true, key: key, digest: fs.digest, ids: fs.ids}
	sx.mu.Unlock()
	return fs.digest, fs.ids
}

// forkCache remembers the last fork digest computed.
type forkCache struct {
	valid  bool
	key    [32]byte
	digest [32]byte
	ids    uint64
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

// inSync reports whether a session ends at the hellos: same digest and,
// when both speak version 2, same forks. Both sides decide alike.
func inSync(mine, theirs hello) bool {
	return mine.digest == theirs.digest && (theirs.version < 2 || mine.fork == theirs.fork)
}

func (ss *session) finish(start time.Time, inSync bool) {
	n := ss.n
	n.stats.syncSessions.Add(1)
	if inSync {
		n.stats.syncInSync.Add(1)
	}
	n.stats.syncOpsIn.Add(uint64(ss.in))
	n.stats.syncOpsOut.Add(uint64(ss.out))
	n.sx().noteSession(ss.sent, time.Since(start), ss.cut)
	n.peersMu.Lock()
	pi := n.peer(ss.p)
	pi.lastSync, pi.synced = n.cfg.Now(), time.Now()
	n.peersMu.Unlock()
	if ss.in > 0 {
		// Announce the new state soon (one heartbeat within
		// connectHeartbeatDelay), so that the peers that lack these ops
		// pull them now rather than at our next periodic heartbeat.
		wake(n.hbWake)
	}
	if ss.in >= n.cfg.GossipBatch {
		// Many ops at once (a heal, a restart): other peers likely lack
		// them too, and gossip does not carry old ops. Pass them on.
		n.pushNews(ss.p)
	}
	if ss.in+ss.out+ss.evIn+ss.evOut > 0 {
		n.log.Info("synced", "peer", ss.p, "role", ss.role, "ops_in", ss.in, "ops_out", ss.out,
			"evidence_in", ss.evIn, "evidence_out", ss.evOut,
			"bytes_in", ss.c.read, "bytes_out", ss.c.written, "took", time.Since(start).Round(time.Millisecond),
			"stopped_at_budget", ss.cut, "peer_stopped_at_budget", ss.peerCut)
	}
	if ss.peerCut {
		// The peer has more for us: what we received is committed, so
		// the next session starts from our advanced version vector.
		// Ask the next connected member in turn, so that no peer serves
		// a long catch-up alone.
		n.resumeCatchUp(ss.p)
	}
}

// resumeCatchUp asks for a session soon with the member after last in
// peer id order (last itself when it is the only one).
func (n *Network) resumeCatchUp(last peer.ID) {
	var ps []peer.ID
	for _, p := range n.Connected() {
		if n.gater.member(p) && !n.SyncPenalized(p) {
			ps = append(ps, p)
		}
	}
	next := last
	if len(ps) > 0 {
		slices.Sort(ps)
		i, _ := slices.BinarySearch(ps, last)
		if i < len(ps) && ps[i] == last {
			i++
		}
		next = ps[i%len(ps)]
	}
	n.sx().resumed.Add(1)
	n.wantSync(next, 10*time.Millisecond, func(w *want) { w.force = true })
}

// stoppedEarly reports whether either side stopped its ops at its
// session budget: the session then ends after the ops (the fork
// comparison would only find the chains unequal), the responder's end
// frame confirming it committed.
func (ss *session) stoppedEarly() bool { return ss.cut || ss.peerCut }

// initiate runs a session as initiator:
//
//	I→R hello(I); R→I hello(R) or busy; if the digests match, done.
//	R→I ops I lacks, end; I→R ops R lacks, end;
//	I→R sum(I); R→I sum(R) (R committed); if the sums match, done.
//	Else the fork comparison (see forkCheck), then R→I end.
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
			ss.blame(err)
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
	if inSync(mine, theirs) {
		ss.finish(start, true)
		return nil
	}
	if err := ss.receive(ctx); err != nil {
		return fmt.Errorf("p2p: sync with %s: receive: %w", p, err)
	}
	if err := ss.send(ctx, n.rep.VersionVector(), theirs.vv); err != nil {
		return fmt.Errorf("p2p: sync with %s: send: %w", p, err)
	}
	if theirs.version < 2 || ss.stoppedEarly() {
		if err := ss.readEnd(); err != nil {
			return fmt.Errorf("p2p: sync with %s: final: %w", p, err)
		}
		ss.finish(start, false)
		return nil
	}
	if err := ss.forkCheck(ctx, true); err != nil {
		return fmt.Errorf("p2p: sync with %s: forks: %w", p, err)
	}
	ss.finish(start, false)
	return nil
}

// handleSync serves a session as responder.
func (n *Network) handleSync(s network.Stream) {
	p, ok := n.acceptMember(s)
	if !ok {
		return
	}
	defer n.wg.Done()

	sx := n.sx()
	if why := sx.admit(p, &n.cfg, time.Now()); why != "" {
		// Refused before reading anything: a busy frame, then close.
		n.stats.syncBusy.Add(1)
		n.log.Debug("sync: session refused", "peer", p, "why", why)
		_ = s.SetWriteDeadline(time.Now().Add(min(n.cfg.StreamTimeout, time.Second)))
		_, _ = s.Write([]byte{1, frameBusy})
		_ = s.Close()
		return
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.SyncTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	ss := n.newSession(s, "responder")
	if c := sx.credit(p, &n.cfg, start); c < ss.budget {
		ss.budget = c // never overdraw the peer's byte budget
	}
	err := ss.respond(ctx, start)
	sx.release(p, ss.c.written)
	n.stats.syncBytesIn.Add(ss.c.read)
	n.stats.syncBytesOut.Add(ss.c.written)
	if err != nil {
		_ = s.Reset()
		n.stats.syncFailures.Add(1)
		ss.blame(err)
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
	// Only a session in which we receive chain ops takes the exclusive
	// slot; one in which we only send does not hold it.
	if ahead(theirs.vv, n.rep.VersionVector()) {
		select {
		case n.slot <- struct{}{}:
			defer func() { <-n.slot }()
		default:
			n.stats.syncBusy.Add(1)
			return ss.c.writeFrame([]byte{frameBusy})
		}
	}
	mine := ss.hello()
	answer := mine
	answer.version = min(theirs.version, syncVersion)
	if err := ss.c.writeFrame(appendHello(nil, answer)); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	if inSync(mine, theirs) {
		ss.finish(start, true)
		return nil
	}
	if err := ss.send(ctx, mine.vv, theirs.vv); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if err := ss.receive(ctx); err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	if theirs.version < 2 || ss.stoppedEarly() {
		if err := ss.c.writeFrame([]byte{frameEnd}); err != nil {
			return fmt.Errorf("final: %w", err)
		}
	} else if err := ss.forkCheck(ctx, false); err != nil {
		return fmt.Errorf("forks: %w", err)
	}
	ss.finish(start, false)
	return nil
}

// ahead reports whether theirs holds ops of some author past mine.
func ahead(theirs, mine crdt.VersionVector) bool {
	for k, s := range theirs {
		if s > mine[k] {
			return true
		}
	}
	return false
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
	until := time.Now().Add(ss.sendFor)
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
			if len(ops) == 0 && from > 1 {
				// The version vector counts ops held as evidence past
				// the chain (a forked author's other branch): the fork
				// comparison carries those.
				break
			}
			if len(ops) == 0 || ops[0].Seq != from {
				return fmt.Errorf("read %s#%d-%d: the replica does not hold ops its version vector counts", r.Author.Short(), from, to)
			}
			frame = appendOps(append(frame[:0], frameOps), ops)
			// The session budget: at least one frame, then none that
			// would pass the bytes or the time. Every frame sent is
			// committed by the peer before it reads the next, so the
			// next session goes on from there.
			if ss.out > 0 && (ss.sent+uint64(len(frame)+uvarintLen(uint64(len(frame)))) > ss.budget || !time.Now().Before(until)) {
				ss.cut = true
				return ss.c.writeFrame([]byte{frameMore})
			}
			if err := ss.c.writeFrame(frame); err != nil {
				return err
			}
			ss.sent += uint64(len(frame) + uvarintLen(uint64(len(frame))))
			ss.out += len(ops)
			from += uint64(len(ops))
		}
	}
	return ss.c.writeFrame([]byte{frameEnd})
}

// receive reads ops frames until the end frame, committing each run before
// reading the next. A run the replica refuses skips the rest of that
// author's ops in this session, and only those: because of the author's
// state (equivocation, revocation, unknown author, gap, an op stamped
// too far in the future, held until due), or because the run is invalid.
// A broken link (which is how a bad signature mid-run shows, an op id
// covering its signature) or an invalid op also puts the peer that sent
// it on penalty: no replica holds such a chain. A bad signature on the
// run's newest op does not: its author may have signed the next op over
// it. A frame that does not decode, or a failure of the replica itself,
// ends the session.
func (ss *session) receive(ctx context.Context) error {
	n := ss.n
	skip := map[crdt.PublicKey]bool{}
	for {
		t, p, err := ss.c.readFrame()
		switch {
		case err != nil:
			return err
		case t == frameEnd:
			return nil
		case t == frameMore:
			ss.peerCut = true
			return nil
		case t != frameOps:
			return malformed("frame %d where a run of ops was expected", t)
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
		var oe *crdt.OpError
		switch {
		case err == nil:
			ss.in += len(ops)
		case errors.Is(err, crdt.ErrEquivocation), errors.Is(err, crdt.ErrRevoked),
			errors.Is(err, crdt.ErrUnknownAuthor), errors.Is(err, crdt.ErrGap),
			errors.Is(err, crdt.ErrFuture):
			skip[author] = true
			n.log.Warn("sync: skipping an author's ops", "peer", ss.p, "author", author.Short(), "err", err)
		case errors.As(err, &oe):
			skip[author] = true
			n.sx().rangesRefused.Add(1)
			if errors.Is(err, crdt.ErrBadSignature) && oe.Seq == ops[len(ops)-1].Seq {
				// Only the newest op's signature is checked: a bad one
				// there may be its author's doing (the next op, which
				// the sender holds, may commit to it), not the sender's.
				n.log.Warn("sync: skipping an author's ops", "peer", ss.p, "author", author.Short(), "err", err)
				continue
			}
			// A broken link, or an op no replica could have accepted:
			// the sender served what it cannot hold.
			ss.penalize("invalid range", err)
		default:
			return fmt.Errorf("ingest %s#%d-%d: %w", author.Short(), ops[0].Seq, ops[len(ops)-1].Seq, err)
		}
	}
}

// penalize puts the peer on penalty (once per session).
func (ss *session) penalize(why string, err error) {
	if ss.penalized {
		return
	}
	ss.penalized = true
	ss.n.penalize(ss.p, why, err)
}

// blame puts the peer on penalty for a session that failed by its fault:
// too slow, or a frame that does not decode.
func (ss *session) blame(err error) {
	switch {
	case errors.Is(err, errTooSlow):
		ss.n.sx().slowCuts.Add(1)
		ss.penalize(whySlow, err)
	case errors.Is(err, ErrMalformed):
		ss.penalize("malformed frame", err)
	}
}

// Per-peer limits and penalties. The state lives beside the Network (one
// per network, dropped when it closes).

// syncState is a network's anti-entropy limits and counters.
type syncState struct {
	mu      sync.Mutex
	inbound int
	peers   map[peer.ID]*syncPeer
	forks   forkCache

	rangesRefused, evidenceRefused, penalties, limited, slowCuts atomic.Uint64
	forkChecks, evidenceIn, evidenceOut                          atomic.Uint64
	// cuts: sessions in which this side stopped its ops at its budget;
	// resumed: sessions asked for because the peer stopped at its own.
	cuts, resumed atomic.Uint64
	// pushes: sessions asked for to pass on ops received (pushNews).
	pushes atomic.Uint64
	// maxSent and maxTook are the most bytes of ops frames sent, and the
	// longest time, of one session. Under mu.
	maxSent uint64
	maxTook time.Duration
	// peakInbound is the most inbound sessions served at once. Under mu.
	peakInbound int
}

// noteSession records a finished session's size and length.
func (sx *syncState) noteSession(sent uint64, took time.Duration, cut bool) {
	if cut {
		sx.cuts.Add(1)
	}
	sx.mu.Lock()
	sx.maxSent = max(sx.maxSent, sent)
	sx.maxTook = max(sx.maxTook, took)
	sx.mu.Unlock()
}

// charge takes bytes sent to p outside a session (history) from its
// credit.
func (sx *syncState) charge(p peer.ID, sent uint64) {
	sx.mu.Lock()
	defer sx.mu.Unlock()
	if sp := sx.peers[p]; sp != nil {
		sp.credit -= float64(sent)
	}
}

// credit returns the bytes p may still be sent (0 when in debt).
func (sx *syncState) credit(p peer.ID, cfg *Config, now time.Time) uint64 {
	sx.mu.Lock()
	defer sx.mu.Unlock()
	return uint64(max(0, sx.peer(p, cfg, now).credit))
}

// syncPeer is what the limits remember of one peer.
type syncPeer struct {
	inbound bool      // serving a session for it now
	credit  float64   // bytes it may still be sent (may be negative)
	at      time.Time // when credit was last refilled
	until   time.Time // refused until then (penalty)
	// slow marks a penalty given only because a session was too slow: on
	// a link that went dead mid-session that is the network's fault, not
	// the peer's, so signs that the link is back lift it (liftSlowPenalty).
	slow bool
}

// sx returns the network's anti-entropy limits and counters, made on
// first use (a Network built by hand in a test has them too).
func (n *Network) sx() *syncState {
	n.syncStateOnce.Do(func() { n.syncState = &syncState{peers: map[peer.ID]*syncPeer{}} })
	return n.syncState
}

// peer returns p's state with its credit refilled. Caller holds mu.
func (sx *syncState) peer(p peer.ID, cfg *Config, now time.Time) *syncPeer {
	budget := float64(cfg.SyncPeerBudget)
	sp := sx.peers[p]
	if sp == nil {
		sp = &syncPeer{credit: budget, at: now}
		sx.peers[p] = sp
	}
	if el := now.Sub(sp.at); el > 0 {
		sp.credit = min(budget, sp.credit+el.Minutes()*budget)
		sp.at = now
	}
	return sp
}

// admit takes an inbound session slot for p, or says why not.
func (sx *syncState) admit(p peer.ID, cfg *Config, now time.Time) string {
	sx.mu.Lock()
	defer sx.mu.Unlock()
	sp := sx.peer(p, cfg, now)
	why := ""
	switch {
	case now.Before(sp.until):
		why = "on penalty"
	case sp.inbound:
		why = "already in a session"
	case sp.credit < float64(cfg.SyncPeerBudget)/64:
		// Spent (a session sends at most the credit, and at least one
		// frame): refused until about a second's refill is back.
		why = "over its byte budget"
	case sx.inbound >= cfg.MaxInboundSyncs:
		why = "too many sessions"
	default:
		sp.inbound = true
		sx.inbound++
		sx.peakInbound = max(sx.peakInbound, sx.inbound)
		return ""
	}
	sx.limited.Add(1)
	return why
}

// release ends p's inbound session, charging what it was sent.
func (sx *syncState) release(p peer.ID, sent uint64) {
	sx.mu.Lock()
	defer sx.mu.Unlock()
	if sp := sx.peers[p]; sp != nil && sp.inbound {
		sp.inbound = false
		sp.credit -= float64(sent)
		sx.inbound--
	}
}

func (n *Network) penalize(p peer.ID, why string, err error) {
	sx := n.sx()
	sx.mu.Lock()
	sp := sx.peer(p, &n.cfg, time.Now())
	running := time.Now().Before(sp.until)
	sp.until = time.Now().Add(n.cfg.SyncPenalty)
	// A penalty for any other fault sticks, even if slowness came first.
	sp.slow = why == whySlow && (sp.slow || !running)
	sx.mu.Unlock()
	sx.penalties.Add(1)
	n.log.Warn("sync: peer on penalty", "peer", p, "why", why, "for", n.cfg.SyncPenalty, "err", err)
	if why != whySlow {
		n.gater.offence(p, penaltyOffence, "anti-entropy: "+why) // a ban past PeerRefusalBurst (gater.go)
	}
}

// whySlow is the reason of a penalty for a session that was too slow.
const whySlow = "too slow"

// liftSlowPenalty ends p's penalty if it was given only for slowness: a
// partition that cut a session midway leaves the peer "too slow" for
// SyncPenalty (1 min), which would hold the catch-up of a heal that long.
// It is called when the link shows it is back (a new connection, or a
// heartbeat after a silence); it reports whether a penalty was lifted.
func (n *Network) liftSlowPenalty(p peer.ID) bool {
	sx := n.sx()
	sx.mu.Lock()
	defer sx.mu.Unlock()
	sp := sx.peers[p]
	if sp == nil || !sp.slow || !time.Now().Before(sp.until) {
		return false
	}
	sp.until, sp.slow = time.Time{}, false
	return true
}

// SyncPenalized reports whether p is on sync penalty: its sessions are
// refused and none is started with it until the penalty ends.
func (n *Network) SyncPenalized(p peer.ID) bool {
	sx := n.sx()
	sx.mu.Lock()
	defer sx.mu.Unlock()
	sp := sx.peers[p]
	return sp != nil && time.Now().Before(sp.until)
}

// SyncStats are the counters of anti-entropy's protections and of the
// fork comparison since the network started.
type SyncStats struct {
	// RangesRefused counts runs refused as invalid (bad signature, broken
	// link, invalid op): that author was skipped, the session went on.
	RangesRefused uint64
	// EvidenceRefused counts evidence frames holding an invalid op.
	EvidenceRefused uint64
	// Penalties counts the times a peer was put on penalty.
	Penalties uint64
	// Limited counts inbound sessions refused at once by the limits
	// (penalty, one session per peer, byte budget, MaxInboundSyncs).
	Limited uint64
	// SlowCuts counts sessions cut because the peer read or wrote slower
	// than SyncMinRate.
	SlowCuts uint64
	// ForkChecks counts sessions whose sums differed after the ops, and
	// which compared fork lists.
	ForkChecks uint64
	// EvidenceIn and EvidenceOut count ops received and sent in the fork
	// comparison.
	EvidenceIn, EvidenceOut uint64
	// StoppedAtBudget counts sessions in which this node stopped sending
	// ops at its session budget (SyncSessionBytes, SyncSessionTime, the
	// peer's byte credit); Resumed, sessions it asked for because a peer
	// stopped at its own with more to send.
	StoppedAtBudget, Resumed uint64
	// Pushes counts sessions asked for to pass on to other peers the ops
	// received in a session that brought at least GossipBatch of them.
	Pushes uint64
	// MaxSessionSent is the most bytes of ops frames this node sent in one
	// session (either role); MaxSessionTime the longest session that
	// completed.
	MaxSessionSent uint64
	MaxSessionTime time.Duration
	// PeakInbound is the most anti-entropy sessions this node served at
	// once as responder (at most Config.MaxInboundSyncs).
	PeakInbound int
}

// SyncStats returns the anti-entropy protection counters.
func (n *Network) SyncStats() SyncStats {
	sx := n.sx()
	sx.mu.Lock()
	maxSent, maxTook, peak := sx.maxSent, sx.maxTook, sx.peakInbound
	sx.mu.Unlock()
	return SyncStats{
		RangesRefused:   sx.rangesRefused.Load(),
		EvidenceRefused: sx.evidenceRefused.Load(),
		Penalties:       sx.penalties.Load(),
		Limited:         sx.limited.Load(),
		SlowCuts:        sx.slowCuts.Load(),
		ForkChecks:      sx.forkChecks.Load(),
		EvidenceIn:      sx.evidenceIn.Load(),
		EvidenceOut:     sx.evidenceOut.Load(),
		StoppedAtBudget: sx.cuts.Load(),
		Resumed:         sx.resumed.Load(),
		Pushes:          sx.pushes.Load(),
		MaxSessionSent:  maxSent,
		MaxSessionTime:  maxTook,
		PeakInbound:     peak,
	}
}

// The fork comparison. Version vectors cannot show two chains of one
// author that hold different ops at the same seqs (a key that signed on
// two machines), nor the evidence ops a peer lacks. Once the ops are
// exchanged, each side sends a sum: the digest of its chain heads (of the
// authors not known to fork) and the digest of its fork members (every
// op id of a forked author at or past its fork seq, chain and evidence
// alike). If the sums differ:
//
//	I→R heads list, end; R→I heads list, end   (recHead, recFork)
//	I→R detail, end; R→I detail, end           (recProbe, recMember) for the authors each side finds different
//	R→I evidence ops, end; I→R evidence ops, end; R→I end (R committed)
//
// Each side then sends, for an author the other detailed, the ops of its
// chain past the highest seq where the two chains agree (when they
// diverge) and its evidence ops, except those the other listed; the
// receiver adds them with IngestEvidence (each signature verified).

// forkState is one side's view for the fork comparison.
type forkState struct {
	chains map[crdt.PublicKey]Chain
	// members are the ids held at or past each forked author's fork seq,
	// sorted by (seq, id); memberDigest digests each author's list.
	members      map[crdt.PublicKey][]member
	memberDigest map[crdt.PublicKey]crdt.OpID
	evidence     map[crdt.PublicKey][]crdt.Op
	digest       [32]byte
	ids          uint64
}

type member struct {
	seq uint64
	id  crdt.OpID
}

func cmpMember(a, b member) int {
	if a.seq != b.seq {
		return cmp.Compare(a.seq, b.seq)
	}
	return cmp.Compare(string(a.id[:]), string(b.id[:]))
}

// forkState computes the fork view from the replica's chains and
// evidence: at most MaxForkIDs members in all.
func (n *Network) forkState(chains map[crdt.PublicKey]Chain, ev []crdt.Op) *forkState {
	fs := &forkState{chains: chains, members: map[crdt.PublicKey][]member{},
		memberDigest: map[crdt.PublicKey]crdt.OpID{}, evidence: map[crdt.PublicKey][]crdt.Op{}}
	for _, op := range ev {
		fs.evidence[op.Author] = append(fs.evidence[op.Author], op)
	}
	budget := n.cfg.MaxForkIDs
	keys := make([]crdt.PublicKey, 0, len(chains))
	for k, c := range chains {
		if c.Fork != 0 {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, cmpKey)
	h := sha256.New()
	h.Write([]byte("cagnotte/forks/v1"))
	var buf [8]byte
	for _, k := range keys {
		c := chains[k]
		var ms []member
		for _, op := range fs.evidence[k] {
			ms = append(ms, member{op.Seq, op.ID()})
		}
		if c.Seq >= c.Fork {
			_ = n.rep.ReadRange(k, c.Fork, c.Seq, func(op crdt.Op) error {
				if len(ms) >= budget {
					return errFrameFull
				}
				ms = append(ms, member{op.Seq, op.ID()})
				return nil
			})
		}
		if len(ms) > budget {
			ms = ms[:budget]
		}
		budget -= len(ms)
		slices.SortFunc(ms, cmpMember)
		ms = slices.CompactFunc(ms, func(a, b member) bool { return a == b })
		fs.members[k] = ms
		fs.memberDigest[k] = digestMembers(c.Fork, ms)
		h.Write(k[:])
		d := fs.memberDigest[k]
		h.Write(d[:])
		fs.ids += uint64(len(ms))
	}
	if len(keys) > 0 {
		binary.BigEndian.PutUint64(buf[:], fs.ids)
		h.Write(buf[:])
		h.Sum(fs.digest[:0])
	}
	return fs
}

func cmpKey(a, b crdt.PublicKey) int { return cmp.Compare(string(a[:]), string(b[:])) }

// digestMembers digests one forked author's fork seq and member ids.
func digestMembers(fork uint64, ms []member) crdt.OpID {
	h := sha256.New()
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], fork)
	h.Write(buf[:])
	for _, m := range ms {
		binary.BigEndian.PutUint64(buf[:], m.seq)
		h.Write(buf[:])
		h.Write(m.id[:])
	}
	var d crdt.OpID
	h.Sum(d[:0])
	return d
}

// headsDigest digests the chain heads of the authors not known to fork.
func headsDigest(chains map[crdt.PublicKey]Chain) [32]byte {
	keys := make([]crdt.PublicKey, 0, len(chains))
	for k, c := range chains {
		if c.Fork == 0 {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, cmpKey)
	h := sha256.New()
	h.Write([]byte("cagnotte/heads/v1"))
	var buf [8]byte
	for _, k := range keys {
		c := chains[k]
		h.Write(k[:])
		binary.BigEndian.PutUint64(buf[:], c.Seq)
		h.Write(buf[:])
		h.Write(c.Head[:])
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// peerChain is what the peer listed of one author.
type peerChain struct {
	seq          uint64
	head         crdt.OpID
	fork         uint64
	memberDigest crdt.OpID
	detailed     bool
	probes       map[uint64]crdt.OpID
	members      map[crdt.OpID]bool
}

// chainID returns the id of our chain's op of author at seq.
func (n *Network) chainID(author crdt.PublicKey, seq uint64) (crdt.OpID, bool) {
	var id crdt.OpID
	found := false
	_ = n.rep.ReadRange(author, seq, seq, func(op crdt.Op) error {
		id, found = op.ID(), op.Seq == seq
		return nil
	})
	return id, found
}

// differs reports whether our view of author k differs from the peer's
// in a way we cannot settle alone: the chains diverge (or the peer's is
// longer, so only it can tell), or the forks known differ.
func (n *Network) differs(fs *forkState, k crdt.PublicKey, pc *peerChain) bool {
	c, ok := fs.chains[k]
	if !ok {
		return false
	}
	if c.Fork != pc.fork || (c.Fork != 0 && fs.memberDigest[k] != pc.memberDigest) {
		return true
	}
	if c.Fork != 0 {
		return false // same fork, same members: the branches are both held
	}
	if c.Seq == pc.seq {
		return c.Head != pc.head
	}
	if pc.seq < c.Seq {
		id, ok := n.chainID(k, pc.seq)
		return !ok || id != pc.head
	}
	return true
}

// probeSeqs are the seqs of a chain of length seq that a side details:
// seq-1, seq-2, seq-4, … and 1, and the seqs around a known fork.
func probeSeqs(seq, fork uint64) []uint64 {
	var out []uint64
	for d := uint64(1); d < seq && len(out) < 62; d *= 2 {
		out = append(out, seq-d)
	}
	if seq > 1 {
		out = append(out, 1)
	}
	if fork > 1 && fork-1 < seq {
		out = append(out, fork-1)
	}
	if fork > 0 && fork < seq {
		out = append(out, fork)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// forkCheck runs the comparison after the ops: sums, then, if they
// differ, lists and evidence. The initiator writes first at each step.
func (ss *session) forkCheck(ctx context.Context, initiator bool) error {
	n := ss.n
	chains, ev := n.rep.Chains(), n.rep.Evidence()
	mine := sum{heads: headsDigest(chains)}
	if len(ev) > 0 {
		mine.fork, mine.forkIDs = n.forkDigest(chains, ev)
	}
	var theirs sum
	exchange := func(write func() error, read func() error) error {
		if initiator {
			if err := write(); err != nil {
				return err
			}
			return read()
		}
		if err := read(); err != nil {
			return err
		}
		return write()
	}
	err := exchange(func() error { return ss.c.writeFrame(appendSum(nil, mine)) }, func() error {
		t, p, err := ss.c.readFrame()
		if err != nil {
			return err
		}
		if t != frameSum {
			return malformed("frame %d where a sum was expected", t)
		}
		theirs, err = decodeSum(p)
		return err
	})
	if err != nil {
		return fmt.Errorf("sum: %w", err)
	}
	if theirs == mine {
		return nil
	}
	n.sx().forkChecks.Add(1)
	fs := n.forkState(chains, ev)
	peerChains := map[crdt.PublicKey]*peerChain{}
	budget := n.cfg.MaxForkIDs + 64*n.cfg.MaxVVEntries
	// Heads.
	err = exchange(func() error { return ss.writeRecs(fs.headRecs()) }, func() error {
		return ss.readRecs(&budget, func(r forkRec) error {
			pc := peerChains[r.key]
			if pc == nil {
				if len(peerChains) >= n.cfg.MaxVVEntries {
					return malformed("more than %d authors in a fork list", n.cfg.MaxVVEntries)
				}
				pc = &peerChain{}
				peerChains[r.key] = pc
			}
			switch r.kind {
			case recHead:
				pc.seq, pc.head = r.seq, r.id
			case recFork:
				pc.fork, pc.memberDigest = r.seq, r.id
			default:
				return malformed("fork record %d in a heads list", r.kind)
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("heads: %w", err)
	}
	// Details of the authors we find different.
	var mineDiff []crdt.PublicKey
	for k, pc := range peerChains {
		if n.differs(fs, k, pc) {
			mineDiff = append(mineDiff, k)
		}
	}
	slices.SortFunc(mineDiff, cmpKey)
	err = exchange(func() error { return ss.writeRecs(fs.detailRecs(n, mineDiff)) }, func() error {
		return ss.readRecs(&budget, func(r forkRec) error {
			pc := peerChains[r.key]
			if pc == nil {
				return nil // an author it did not list: ignore
			}
			pc.detailed = true
			switch r.kind {
			case recProbe:
				if pc.probes == nil {
					pc.probes = map[uint64]crdt.OpID{}
				}
				if len(pc.probes) >= 128 {
					return malformed("too many probes")
				}
				pc.probes[r.seq] = r.id
			case recMember:
				if pc.members == nil {
					pc.members = map[crdt.OpID]bool{}
				}
				pc.members[r.id] = true
			default:
				return malformed("fork record %d in a detail list", r.kind)
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("details: %w", err)
	}
	// Evidence: the responder sends first.
	push := func() error { return ss.sendEvidence(ctx, fs.pushes(n, peerChains)) }
	recv := func() error { return ss.receiveEvidence(ctx) }
	if initiator {
		if err := recv(); err != nil {
			return fmt.Errorf("evidence in: %w", err)
		}
		if err := push(); err != nil {
			return fmt.Errorf("evidence out: %w", err)
		}
		return ss.readEnd()
	}
	if err := push(); err != nil {
		return fmt.Errorf("evidence out: %w", err)
	}
	if err := recv(); err != nil {
		return fmt.Errorf("evidence in: %w", err)
	}
	return ss.c.writeFrame([]byte{frameEnd})
}

// headRecs lists every chain head, and every fork with its members' digest.
func (fs *forkState) headRecs() []forkRec {
	keys := make([]crdt.PublicKey, 0, len(fs.chains))
	for k := range fs.chains {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, cmpKey)
	out := make([]forkRec, 0, len(keys))
	for _, k := range keys {
		c := fs.chains[k]
		out = append(out, forkRec{key: k, kind: recHead, seq: c.Seq, id: c.Head})
		if c.Fork != 0 {
			out = append(out, forkRec{key: k, kind: recFork, seq: c.Fork, id: fs.memberDigest[k]})
		}
	}
	return out
}

// detailRecs lists, for each author of keys, the probes of our chain and
// the members of its fork.
func (fs *forkState) detailRecs(n *Network, keys []crdt.PublicKey) []forkRec {
	var out []forkRec
	for _, k := range keys {
		c := fs.chains[k]
		// The head first: a record per author tells the peer we found
		// that author different, even with nothing else to detail.
		out = append(out, forkRec{key: k, kind: recProbe, seq: c.Seq, id: c.Head})
		for _, s := range probeSeqs(c.Seq, c.Fork) {
			if id, ok := n.chainID(k, s); ok {
				out = append(out, forkRec{key: k, kind: recProbe, seq: s, id: id})
			}
		}
		for _, m := range fs.members[k] {
			out = append(out, forkRec{key: k, kind: recMember, seq: m.seq, id: m.id})
		}
	}
	return out
}

// pushes lists the ops to send the peer: for each author it detailed, our
// chain past the highest seq where both chains agree (if they diverge)
// and our evidence ops, less what it listed; at most MaxForkIDs ops, in
// (author, seq) order.
func (fs *forkState) pushes(n *Network, peers map[crdt.PublicKey]*peerChain) []crdt.Op {
	keys := make([]crdt.PublicKey, 0, len(peers))
	for k, pc := range peers {
		if _, ok := fs.chains[k]; ok && pc.detailed {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, cmpKey)
	var out []crdt.Op
	budget := n.cfg.MaxForkIDs
	for _, k := range keys {
		c, pc := fs.chains[k], peers[k]
		known := func(op *crdt.Op) bool {
			id := op.ID()
			if pc.members[id] || (op.Seq == pc.seq && id == pc.head) {
				return true
			}
			p, ok := pc.probes[op.Seq]
			return ok && p == id
		}
		// The highest seq where the chains agree: ids commit to the
		// whole chain below them.
		agree := uint64(0)
		probes := map[uint64]crdt.OpID{pc.seq: pc.head}
		for s, id := range pc.probes {
			probes[s] = id
		}
		for s, id := range probes {
			if s <= c.Seq && s > agree {
				if mine, ok := n.chainID(k, s); ok && mine == id {
					agree = s
				}
			}
		}
		var ops []crdt.Op
		if agree < min(c.Seq, pc.seq) {
			_ = n.rep.ReadRange(k, agree+1, c.Seq, func(op crdt.Op) error {
				if len(ops) >= budget {
					return errFrameFull
				}
				ops = append(ops, op)
				return nil
			})
		}
		for _, op := range fs.evidence[k] {
			if op.Seq > agree || c.Fork != 0 {
				ops = append(ops, op)
			}
		}
		slices.SortFunc(ops, func(a, b crdt.Op) int { return cmp.Compare(a.Seq, b.Seq) })
		for i := range ops {
			if budget == 0 {
				break
			}
			if !known(&ops[i]) {
				out = append(out, ops[i])
				budget--
			}
		}
	}
	return out
}

// writeRecs sends records in frames, then an end frame.
func (ss *session) writeRecs(recs []forkRec) error {
	per := max(1, (ss.c.max-16)/(forkRecSize+9))
	for len(recs) > 0 {
		k := min(per, len(recs))
		if err := ss.c.writeFrame(appendForkRecs(nil, recs[:k])); err != nil {
			return err
		}
		recs = recs[k:]
	}
	return ss.c.writeFrame([]byte{frameEnd})
}

// readRecs reads record frames until an end frame, at most *budget
// records in all.
func (ss *session) readRecs(budget *int, fn func(forkRec) error) error {
	for {
		p, end, err := ss.c.readUntilEnd(frameForks, "a fork list")
		if err != nil || end {
			return err
		}
		recs, err := decodeForkRecs(p, max(*budget, 0))
		if err != nil {
			return err
		}
		*budget -= len(recs)
		for _, r := range recs {
			if err := fn(r); err != nil {
				return err
			}
		}
	}
}

// sendEvidence sends ops in evidence frames, then an end frame.
func (ss *session) sendEvidence(ctx context.Context, ops []crdt.Op) error {
	limit := ss.c.max - 1 - 10
	for len(ops) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		k, size := 0, 0
		for k < len(ops) && k < ss.n.cfg.SyncBatch && (k == 0 || size+ops[k].Size()+3 <= limit) {
			size += ops[k].Size() + 3
			k++
		}
		if err := ss.c.writeFrame(appendOps([]byte{frameEvidence}, ops[:k])); err != nil {
			return err
		}
		ss.evOut += k
		ss.n.sx().evidenceOut.Add(uint64(k))
		ops = ops[k:]
	}
	return ss.c.writeFrame([]byte{frameEnd})
}

// receiveEvidence reads evidence frames until the end frame, committing
// each (IngestEvidence: every signature verified). A frame holding an
// invalid op puts the peer on penalty; the valid ops are kept.
func (ss *session) receiveEvidence(ctx context.Context) error {
	n := ss.n
	total := 0
	for {
		p, end, err := ss.c.readUntilEnd(frameEvidence, "evidence")
		if err != nil || end {
			return err
		}
		ops, err := decodeEvidence(p)
		if err != nil {
			return err
		}
		if total += len(ops); total > n.cfg.MaxForkIDs {
			return malformed("more than %d evidence ops", n.cfg.MaxForkIDs)
		}
		n.noteFromNet(ops)
		err = n.rep.IngestEvidence(ctx, ops)
		var oe *crdt.OpError
		switch {
		case err == nil:
		case errors.As(err, &oe):
			n.sx().evidenceRefused.Add(1)
			ss.penalize("invalid evidence", err)
		default:
			return fmt.Errorf("ingest evidence: %w", err)
		}
		ss.evIn += len(ops)
		n.sx().evidenceIn.Add(uint64(len(ops)))
	}
}

// inboundOf reports whether an inbound session of p is being served.
func (sx *syncState) inboundOf(p peer.ID) bool {
	sx.mu.Lock()
	defer sx.mu.Unlock()
	sp := sx.peers[p]
	return sp != nil && sp.inbound
}
