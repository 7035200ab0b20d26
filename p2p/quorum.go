package p2p

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
)

// The quorum check. Heartbeats arrive every few seconds, so a venue cut
// off a moment ago still holds fresh ones; before a payment taken "in
// sync", a node proves that it reaches a quorum of venues now. Proof comes
// from two sources:
//
//   - Direct: a connected member that answered a ping, or from which a
//     message arrived (a heartbeat it relayed, a reservation exchange),
//     within QuorumQuery.Fresh (default 250 ms). Only connected peers count,
//     and only for Fresh: a side of a split counts the other side for at
//     most Fresh after the split, so at most one side reaches a majority
//     once Fresh has passed. Concurrent checks share one round of pings
//     (one round in flight, callers join it), and a check that finds the
//     proof ageing starts the next round in the background, so under load
//     payments rarely wait for a round trip.
//   - Relayed: when the quorum needs more venues than the node keeps
//     connections to (TargetPeers, 16: federations of 34 venues or more),
//     a member without direct proof counts when its own signed heartbeat,
//     relayed through the GossipSub mesh, is fresh: sent
//     within RelayedFresh (default 1.5 heartbeat intervals) by its clock
//     and received within RelayedFresh by ours. It counts only when the
//     node also reaches directly at least one member, and at least half of
//     those it is connected to (at most TargetPeers/2, at most the quorum
//     needed): a node cut off from the network fails at once, while a
//     split elsewhere in the mesh is noticed within RelayedFresh instead
//     of the isolation delay.

// Defaults of QuorumQuery.
const (
	// DefaultQuorumFresh is how long direct proof of a peer lasts.
	DefaultQuorumFresh = 250 * time.Millisecond
	// DefaultQuorumBudget is how long a check waits at most.
	DefaultQuorumBudget = 300 * time.Millisecond
)

// QuorumQuery is a quorum check: how many other venues must be reachable
// and how fresh the proof must be.
type QuorumQuery struct {
	// Need is the number of other member venues that must be reachable.
	Need int
	// Fresh bounds the age of direct proof (a ping answer, a message from
	// a connected peer). Default DefaultQuorumFresh.
	Fresh time.Duration
	// RelayedFresh bounds the age of a relayed heartbeat of a member the
	// node is not connected to; negative: relayed heartbeats do not count.
	// Default 1.5 × Config.HeartbeatInterval.
	RelayedFresh time.Duration
	// Budget bounds how long the check waits for pings, whatever the
	// caller's context allows. Default DefaultQuorumBudget.
	Budget time.Duration
}

// QuorumResult is the outcome of a quorum check.
type QuorumResult struct {
	// OK is true when Reached ≥ Need.
	OK bool
	// Direct counts members reached directly, Relayed those proven by a
	// relayed heartbeat; Reached is what counted towards Need.
	Direct, Relayed, Reached int
	// Connected counts the members the node is connected to.
	Connected int
	// Waited is how long the check waited for pings.
	Waited time.Duration
}

// quorumState is the shared state of quorum checks.
type quorumState struct {
	mu       sync.Mutex
	evidence map[peer.ID]time.Time // last direct proof of each peer
	round    *quorumRound          // the round of pings in flight, if any
	rounds   uint64                // rounds started, for tests
}

// quorumRound is one round of pings to every connected member. changed is
// closed (and replaced) each time a peer answers; done when all answered
// or timed out.
type quorumRound struct {
	start   time.Time
	changed chan struct{}
	done    chan struct{}
}

// noteTraffic records that a message just arrived from p (directly, over a
// connection): proof that p reached us now.
func (n *Network) noteTraffic(p peer.ID) {
	now := time.Now()
	q := &n.quorum
	q.mu.Lock()
	if q.evidence == nil {
		q.evidence = map[peer.ID]time.Time{}
	}
	q.evidence[p] = now
	if r := q.round; r != nil {
		close(r.changed)
		r.changed = make(chan struct{})
	}
	q.mu.Unlock()
}

// QuorumRounds returns how many rounds of pings the quorum checks started.
func (n *Network) QuorumRounds() uint64 {
	n.quorum.mu.Lock()
	defer n.quorum.mu.Unlock()
	return n.quorum.rounds
}

// connectedMembers returns the member venues (other than this node) with
// an open connection, and the set of members.
func (n *Network) connectedMembers() ([]peer.ID, map[peer.ID]bool) {
	members := map[peer.ID]bool{}
	for _, k := range n.rep.Members() {
		if k == n.key {
			continue
		}
		if id, err := PeerID(k); err == nil && !n.gater.isBlocked(id) {
			members[id] = true
		}
	}
	var peers []peer.ID
	for _, p := range n.host.Network().Peers() {
		if members[p] && n.host.Network().Connectedness(p) == network.Connected {
			peers = append(peers, p)
		}
	}
	return peers, members
}

// countQuorum counts the proof held now, direct proof within fresh. stale
// reports whether some direct proof that counted is older than half of
// q.Fresh (time to refresh).
func (n *Network) countQuorum(q QuorumQuery, fresh time.Duration) (res QuorumResult, stale bool) {
	now := time.Now()
	peers, members := n.connectedMembers()
	res.Connected = len(peers)
	direct := make(map[peer.ID]bool, len(peers))
	n.quorum.mu.Lock()
	for _, p := range peers {
		if at, ok := n.quorum.evidence[p]; ok && now.Sub(at) <= fresh {
			direct[p] = true
			res.Direct++
			if now.Sub(at) > q.Fresh/2 {
				stale = true
			}
		}
	}
	n.quorum.mu.Unlock()
	res.Reached = res.Direct
	if res.Direct == 0 && len(peers) > 0 {
		stale = true
	}
	if res.Reached < q.Need && n.relayedCounts(q) && res.Direct >= max(1, min(q.Need, (len(peers)+1)/2, n.cfg.TargetPeers/2)) {
		wall := n.cfg.Now()
		n.peersMu.Lock()
		for p, pi := range n.peers {
			if !members[p] || direct[p] || pi.hb == nil {
				continue
			}
			if now.Sub(pi.hbAt) <= q.RelayedFresh && wall.Sub(pi.hb.Time) <= q.RelayedFresh+maxHeartbeatSkew {
				res.Relayed++
			}
		}
		n.peersMu.Unlock()
		res.Reached += res.Relayed
	}
	res.OK = res.Reached >= q.Need
	return res, stale
}

// relayedCounts reports whether relayed heartbeats may prove part of the
// quorum: only when the quorum is larger than the connections the node
// keeps (TargetPeers). A smaller federation proves it by direct round trips
// alone, so at most one side of a split reaches a majority once Fresh has
// passed.
func (n *Network) relayedCounts(q QuorumQuery) bool {
	return q.RelayedFresh > 0 && q.Need > n.cfg.TargetPeers
}

// maxHeartbeatSkew is how far a sender's clock may be behind ours for its
// relayed heartbeat to count as fresh.
const maxHeartbeatSkew = time.Second

// CheckQuorum proves that the node reaches q.Need other member venues now
// (see the comment at the top of quorum.go): from the proof it holds if
// enough is fresh, else by joining the round of pings in flight or starting
// one, waiting at most q.Budget (and until ctx ends).
func (n *Network) CheckQuorum(ctx context.Context, q QuorumQuery) QuorumResult {
	if q.Fresh <= 0 {
		q.Fresh = DefaultQuorumFresh
	}
	if q.Budget <= 0 {
		q.Budget = DefaultQuorumBudget
	}
	if q.RelayedFresh == 0 {
		q.RelayedFresh = n.cfg.HeartbeatInterval * 3 / 2
	}
	if q.Need <= 0 {
		return QuorumResult{OK: true}
	}
	start := time.Now()
	timer := time.NewTimer(q.Budget)
	defer timer.Stop()
	fresh := q.Fresh
	for started := 0; ; {
		res, stale := n.countQuorum(q, fresh)
		if res.OK {
			if stale {
				n.joinRound(q.Budget) // refresh in the background
			}
			res.Waited = time.Since(start)
			return res
		}
		if res.Connected == 0 || (!n.relayedCounts(q) && res.Connected < q.Need) {
			res.Waited = time.Since(start)
			return res // no round can succeed: too few peers connected
		}
		r, newRound := n.joinRound(q.Budget)
		if newRound {
			started++
		}
		n.quorum.mu.Lock()
		changed := r.changed
		n.quorum.mu.Unlock()
		// Proof gathered since the round this check waits for began
		// counts, however long the round takes (at most the budget): under
		// load, the first answers may be older than Fresh when the last
		// ones arrive.
		fresh = max(q.Fresh, time.Since(r.start))
		select {
		case <-changed:
			continue
		case <-r.done:
			if started > 0 {
				// A round this check saw start has ended: its answer is final.
				res, _ = n.countQuorum(q, max(q.Fresh, time.Since(r.start)))
				res.Waited = time.Since(start)
				return res
			}
			continue // a round older than this check: run one more
		case <-timer.C:
		case <-ctx.Done():
		case <-n.ctx.Done():
		}
		res, _ = n.countQuorum(q, max(q.Fresh, time.Since(r.start)))
		res.Waited = time.Since(start)
		return res
	}
}

// joinRound returns the round of pings in flight, starting one if none
// (started is then true). A round pings every connected member at once, each
// for at most timeout, on the network's context: a caller that stops
// waiting does not cut it short for the others.
func (n *Network) joinRound(timeout time.Duration) (r *quorumRound, started bool) {
	q := &n.quorum
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.round != nil {
		return q.round, false
	}
	r = &quorumRound{start: time.Now(), changed: make(chan struct{}), done: make(chan struct{})}
	peers, _ := n.connectedMembers()
	q.round = r
	q.rounds++
	finish := func() {
		q.mu.Lock()
		if q.round == r {
			q.round = nil
		}
		q.mu.Unlock()
		close(r.done)
	}
	if !n.goSafe(func() { n.runRound(r, peers, timeout, finish) }) {
		q.round = nil
		close(r.done)
	}
	return r, true
}

// runRound pings peers at once and records each answer as direct proof.
func (n *Network) runRound(r *quorumRound, peers []peer.ID, timeout time.Duration, finish func()) {
	defer finish()
	ctx, cancel := context.WithTimeout(n.ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, pcancel := context.WithCancel(ctx)
			defer pcancel() // stops the pinger after its first answer
			select {
			case res, ok := <-ping.Ping(pctx, n.host, p):
				if ok && res.Error == nil {
					n.noteTraffic(p)
				}
			case <-ctx.Done():
			}
		}()
	}
	wg.Wait()
}

// Reachable pings the connected member venues (sharing a round with
// concurrent callers, and counting answers and messages received within
// DefaultQuorumFresh) and returns how many are reachable now, waiting at
// most timeout and stopping early once need have. It counts direct proof
// only; CheckQuorum also counts relayed heartbeats.
func (n *Network) Reachable(ctx context.Context, need int, timeout time.Duration) int {
	if need <= 0 {
		return 0
	}
	return n.CheckQuorum(ctx, QuorumQuery{Need: need, Budget: timeout, RelayedFresh: -1}).Direct
}
