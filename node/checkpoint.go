package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/node/store"
	"github.com/cagnotte/cagnotte/p2p"
)

// Checkpoints (docs/checkpoints.md). A networked node attests its state
// when it has been quiet for a while and a quorum of venues announce the
// same state in their heartbeats; it keeps the checkpoint a quorum
// attested and serves it (p2p.CheckpointProtocol). A new venue, whose
// store holds only the federation's ops, starts from such a checkpoint
// instead of folding the whole history, and falls back to the ordinary
// full catch-up when none can be had.

// CheckpointConfig configures checkpoints. Zero fields take the defaults.
type CheckpointConfig struct {
	// Every bounds how often the node saves a new checkpoint: after one is
	// saved, the node attests no other state for Every. Default 1 min.
	Every time.Duration
	// QuietFor is how long the node's version vector must not have
	// changed before it attests. Default 10 s.
	QuietFor time.Duration
	// JoinDeadline bounds how long a new venue tries to get an attested
	// checkpoint before it falls back to the full catch-up. Default 20 s.
	JoinDeadline time.Duration
	// MaxBytes bounds the checkpoint a new venue accepts. Default 1 GiB.
	MaxBytes int
	// Disabled turns checkpoints off: the node neither attests nor starts
	// from one. Default false.
	Disabled bool
	// NoHistory: a venue that started from a checkpoint does not fetch
	// the history the checkpoint summarizes. By default (false) it
	// fetches it in the background once it sells, verifies it and keeps
	// it for audit (docs/checkpoints.md); the command's --full-history
	// flag, on by default, is its opposite.
	NoHistory bool
	// HistoryBatch is the ops asked per history request (the serving
	// venue sends at most its p2p Config.HistoryBatch). Default 512.
	HistoryBatch int
	// HistoryPause is the pause between two history requests, so that the
	// background fetch stays a small load on this node and its peers.
	// Default 20 ms.
	HistoryPause time.Duration
	// MaxFoldOps bounds the history folded aside, in memory, to check it
	// against the checkpoint once complete (above it, only the chains and
	// signatures are verified). Default 2,000,000.
	MaxFoldOps int

	// Test hooks: the bytes of references written per transaction when
	// a checkpoint is installed (0: the store's default, 4 MiB), and a
	// function called after each such transaction whose error stops the
	// install midway, as a crash would.
	refChunkBytes int
	afterRefChunk func(chunk int) error
}

func (c *CheckpointConfig) setDefaults() {
	if c.Every <= 0 {
		c.Every = time.Minute
	}
	if c.QuietFor <= 0 {
		c.QuietFor = 10 * time.Second
	}
	if c.JoinDeadline <= 0 {
		c.JoinDeadline = 20 * time.Second
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = 1 << 30
	}
	if c.HistoryBatch <= 0 {
		c.HistoryBatch = 512
	}
	if c.HistoryPause <= 0 {
		c.HistoryPause = 20 * time.Millisecond
	}
	if c.MaxFoldOps <= 0 {
		c.MaxFoldOps = 2000000
	}
}

// errNotFresh refuses a checkpoint once the node holds ops of its own.
var errNotFresh = errors.New("node: this node signed ops already: it cannot start from a checkpoint")

// ownCheckpoint is the checkpoint of the node's own current state, as it
// attested it.
type ownCheckpoint struct {
	att   crdt.Attestation
	cp    []byte
	saved int // attestations saved with it (0: not saved yet)
	pub   time.Time
}

// checkpointer runs the node's side of checkpoints.
type checkpointer struct {
	n    *Node
	cfg  CheckpointConfig
	net  *p2p.Network
	wake chan struct{}

	mu     sync.Mutex
	latest map[crdt.PublicKey]crdt.Attestation // the last attestation of each venue
	own    *ownCheckpoint
	// savedAt is when the node last saved a new checkpoint.
	savedAt time.Time

	// Join outcome, for tests and operators.
	joinMu    sync.Mutex
	installed bool
	joinedOps uint64 // ops the installed checkpoint stands for

	// hist is the background fetch of the history older than the
	// checkpoint (checkpoint_history.go); histPending is set from the
	// node's start until the fetch returns (it first looks whether there
	// is history to fetch).
	hist        historyState
	histPending atomic.Bool
}

// CheckpointStatus is what the node did with checkpoints.
type CheckpointStatus struct {
	// Joining: the node is a new venue still looking for a checkpoint to
	// start from (its catch-up held until it has one or gives up).
	Joining bool
	// Installed: the node started from an attested checkpoint that stood
	// for Ops ops.
	Installed bool
	Ops       uint64
	// Saved: the node keeps a checkpoint a quorum attested, with that many
	// attestations.
	Saved        bool
	Attestations int
	// History is the background fetch of the history the installed
	// checkpoint summarizes (zero when there is none to fetch).
	History HistoryStatus
}

// CheckpointStatus reports the node's checkpoints.
func (n *Node) CheckpointStatus() CheckpointStatus {
	var st CheckpointStatus
	if c := n.cps; c != nil {
		c.joinMu.Lock()
		st.Installed, st.Ops = c.installed, c.joinedOps
		c.joinMu.Unlock()
		st.History = c.hist.get()
		st.Joining = c.net.CatchUpHeld()
	}
	if info, err := n.store.CheckpointInfo(); err == nil {
		st.Saved, st.Attestations = true, len(info.Attestations)
	}
	return st
}

// JoiningOrFetchingHistory reports whether the node is a new venue still
// looking for a checkpoint, or fetches the history older than the one it
// started from (CheckpointStatus's Joining and History.Active, and the
// moments between them, while the fetch reads what it has to fetch): the
// time it compacts all the time. Unlike CheckpointStatus it reads nothing from
// the store, so it can be polled (the binary's collector target follows
// it).
func (n *Node) JoiningOrFetchingHistory() bool {
	c := n.cps
	return c != nil && (c.net.CatchUpHeld() || c.histPending.Load())
}

// joinCandidate reports whether the node should start from a checkpoint:
// checkpoints are on, its store holds nothing but federation ops, and
// the federation has another venue to ask.
func (n *Node) joinCandidate() bool {
	if n.cfg.Checkpoints.Disabled {
		return false
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	fedSeq, _ := n.set.Head(n.fed)
	others := 0
	for k, v := range n.set.State.Venues {
		if !v.Revoked && k != n.cfg.Key.Public() {
			others++
		}
	}
	return others > 0 && n.set.Len() == fedSeq && len(n.set.EvidenceOps) == 0
}

// startCheckpoints serves the node's checkpoint, joins the attestation
// topic, starts the attesting loop and, if the network holds its
// catch-up (a new venue), the join from a checkpoint.
func (n *Node) startCheckpoints(ctx context.Context, nw *p2p.Network) error {
	if n.cfg.Checkpoints.Disabled {
		nw.ResumeCatchUp()
		return nil
	}
	c := &checkpointer{n: n, cfg: n.cfg.Checkpoints, net: nw, wake: make(chan struct{}, 1), latest: map[crdt.PublicKey]crdt.Attestation{}}
	c.cfg.setDefaults()
	n.cps = c
	nw.ServeCheckpoints(checkpointSource{n.store})
	if err := nw.StartAttestations(c.received); err != nil {
		nw.ResumeCatchUp()
		return fmt.Errorf("node: checkpoints: %w", err)
	}
	// Set before the join ends, so that JoiningOrFetchingHistory has no
	// gap between the join and the fetch (the collector's target would
	// swing up and back while the catch-up and the fetch begin).
	c.histPending.Store(!c.cfg.NoHistory)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if nw.CatchUpHeld() {
			c.join(ctx)
		}
		if !c.cfg.NoHistory {
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				defer c.histPending.Store(false)
				c.fetchHistory(ctx)
			}()
		}
		c.attestLoop(ctx)
	}()
	return nil
}

// checkpointSource serves the store's latest checkpoint.
type checkpointSource struct{ s *store.Store }

var _ p2p.CheckpointSource = checkpointSource{}

func (c checkpointSource) WriteCheckpoint(header func(int, []crdt.Attestation) error, chunk func([]byte) error) (bool, error) {
	err := c.s.StreamLatestCheckpoint(func(size uint64, atts []crdt.Attestation) error {
		return header(int(size), atts)
	}, chunk)
	if errors.Is(err, store.ErrNoCheckpoint) {
		return false, nil
	}
	return true, err
}

// received records another venue's attestation (from the network's
// goroutine: it must not block).
func (c *checkpointer) received(a crdt.Attestation) {
	c.mu.Lock()
	if c.n.IsMember(a.Venue) {
		c.latest[a.Venue] = a
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// attestLoop attests the node's state when it is quiet and shared by a
// quorum, and saves the checkpoint once a quorum attested it.
func (c *checkpointer) attestLoop(ctx context.Context) {
	tick := time.NewTicker(max(20*time.Millisecond, min(c.cfg.QuietFor, c.cfg.Every)/4))
	defer tick.Stop()
	var lastVV [32]byte
	var changed time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-c.wake:
		}
		now := time.Now()
		vv := p2p.VVDigest(c.n.VersionVector())
		if vv != lastVV || changed.IsZero() {
			lastVV, changed = vv, now
		}
		// Every counts from the last checkpoint saved: an attestation
		// that found no quorum (the state moved on) does not hold back
		// the next one.
		c.mu.Lock()
		saved := c.savedAt
		c.mu.Unlock()
		if now.Sub(changed) >= c.cfg.QuietFor && (saved.IsZero() || now.Sub(saved) >= c.cfg.Every) {
			if _, err := c.attest(ctx, vv); err != nil {
				c.n.log.Warn("checkpoint: attest", "err", err)
			}
		}
		c.mu.Lock()
		own := c.own
		c.mu.Unlock()
		if own != nil && own.att.VV == crdt.VVDigest(c.n.VersionVector()) {
			c.republish(ctx, own)
		}
		if err := c.complete(); err != nil {
			c.n.log.Warn("checkpoint: save", "err", err)
		}
	}
}

// attest attests the node's state if a quorum of venues announce the same
// one in their heartbeats, and publishes the attestation.
func (c *checkpointer) attest(ctx context.Context, vv [32]byte) (bool, error) {
	n := c.n
	c.mu.Lock()
	own := c.own
	c.mu.Unlock()
	if own != nil && own.att.VV == crdt.VVDigest(n.VersionVector()) {
		return false, nil // attested already
	}
	digest, _ := n.Digest()
	members := n.Members()
	n.mu.RLock()
	need := n.set.State.Settings.CheckpointQuorum(len(members))
	beat := time.Duration(n.set.State.Settings.HeartbeatInterval) * time.Millisecond
	n.mu.RUnlock()
	fresh := max(3*beat, 3*time.Second)
	same := 1 // this node
	for _, p := range c.net.Peers() {
		hb := p.Heartbeat
		if p.Member && hb != nil && time.Since(p.HeartbeatAt) < fresh && hb.Digest == digest && hb.VVDigest == vv {
			same++
		}
	}
	if same < need {
		return false, nil
	}
	n.mu.RLock()
	if p2p.VVDigest(n.set.VersionVector()) != vv {
		n.mu.RUnlock()
		return false, nil // changed meanwhile
	}
	cp, err := n.set.EncodeCheckpoint()
	var att crdt.Attestation
	if err == nil {
		att = n.set.Attest(n.cfg.Key, cp)
	}
	n.mu.RUnlock()
	if errors.Is(err, crdt.ErrCheckpointFork) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	c.own = &ownCheckpoint{att: att, cp: cp, pub: time.Now()}
	c.mu.Unlock()
	if err := c.net.PublishAttestation(ctx, att); err != nil {
		return false, err
	}
	n.log.Debug("checkpoint attested", "ops", att.Ops, "bytes", len(cp), "venues_alike", same)
	return true, nil
}

// republish publishes the node's attestation again, once per QuietFor,
// while its state is unchanged: a venue that joined the topic after the
// first publication (a restart, a late connection) lacks it otherwise.
// One 184-byte message per venue per QuietFor, only while quiet.
func (c *checkpointer) republish(ctx context.Context, own *ownCheckpoint) {
	c.mu.Lock()
	due := time.Since(own.pub) >= c.cfg.QuietFor
	if due {
		own.pub = time.Now()
	}
	c.mu.Unlock()
	if !due {
		return
	}
	if err := c.net.PublishAttestation(ctx, own.att); err != nil {
		c.n.log.Debug("checkpoint: publish again", "err", err)
	}
}

// complete saves the node's attested checkpoint once a quorum of current
// venues attested the same one, and saves the attestations that arrive
// after.
func (c *checkpointer) complete() error {
	n := c.n
	c.mu.Lock()
	own := c.own
	if own == nil {
		c.mu.Unlock()
		return nil
	}
	atts := []crdt.Attestation{own.att}
	for k, a := range c.latest {
		if k != own.att.Venue && a.VV == own.att.VV && a.Digest == own.att.Digest && a.Hash == own.att.Hash && n.IsMember(k) {
			atts = append(atts, a)
		}
	}
	saved := own.saved
	c.mu.Unlock()
	if len(atts) <= saved {
		return nil
	}
	slices.SortFunc(atts, func(a, b crdt.Attestation) int { return slices.Compare(a.Venue[:], b.Venue[:]) })
	n.mu.RLock()
	need := n.set.State.Settings.CheckpointQuorum(len(n.membersLocked()))
	n.mu.RUnlock()
	if len(atts) < need {
		return nil
	}
	if saved == 0 {
		if err := n.store.SaveCheckpoint(own.cp, atts); err != nil {
			return err
		}
		n.log.Info("checkpoint saved: attested by a quorum", "ops", own.att.Ops, "bytes", len(own.cp), "attestations", len(atts), "need", need)
	} else if _, err := n.store.UpdateCheckpointAttestations(own.att.Hash, atts); err != nil {
		return err
	}
	c.mu.Lock()
	if c.own == own {
		if own.saved == 0 {
			c.savedAt = time.Now()
		}
		own.saved = len(atts)
	}
	c.mu.Unlock()
	return nil
}

// membersLocked lists the current venues. Caller holds mu.
func (n *Node) membersLocked() map[crdt.PublicKey]bool {
	m := map[crdt.PublicKey]bool{}
	for k, v := range n.set.State.Venues {
		if !v.Revoked {
			m[k] = true
		}
	}
	return m
}

// join asks the connected venues for their checkpoint until one verifies
// and is installed, or JoinDeadline passes; then it lets the ordinary
// catch-up run (which fetches only the ops after the checkpoint, or the
// whole history without one).
func (c *checkpointer) join(ctx context.Context) {
	n, nw := c.n, c.net
	defer nw.ResumeCatchUp()
	start := time.Now()
	deadline := time.NewTimer(c.cfg.JoinDeadline)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	done := map[peer.ID]bool{} // answered: none, refused
	retry := map[peer.ID]int{} // failed exchanges
	after := map[peer.ID]time.Time{}
	none, refused := 0, 0
	for {
		allAsked := true
		for _, p := range nw.Connected() {
			k, err := p2p.KeyOf(p)
			if err != nil || !n.IsMember(k) || done[p] {
				continue
			}
			if time.Now().Before(after[p]) {
				allAsked = false
				continue
			}
			cp, err := nw.FetchCheckpoint(ctx, p, c.cfg.MaxBytes)
			switch {
			case errors.Is(err, p2p.ErrNoCheckpoint):
				done[p] = true
				none++
				n.log.Info("checkpoint: the peer holds none", "peer", p)
				continue
			case err != nil:
				// The peer may not know this venue yet (its admission is
				// being proved) or be busy: ask again a little later,
				// until the deadline.
				retry[p]++
				allAsked = false
				after[p] = time.Now().Add(min(3*time.Second, 300*time.Millisecond<<min(retry[p]-1, 4)))
				n.log.Info("checkpoint: could not fetch", "peer", p, "err", err, "attempt", retry[p])
				continue
			}
			size, natt := len(cp.Bytes), len(cp.Attestations)
			ops, err := c.install(ctx, &cp)
			if errors.Is(err, errNotFresh) {
				n.log.Warn("checkpoint: not installed, full catch-up", "err", err)
				return
			}
			if err != nil {
				done[p] = true
				refused++
				n.log.Warn("checkpoint refused", "peer", p, "err", err)
				continue
			}
			n.log.Info("started from an attested checkpoint: fetching only the newer ops", "peer", p,
				"ops", ops, "bytes", size, "attestations", natt, "took", time.Since(start))
			return
		}
		if len(done) > 0 && allAsked && none == len(done) {
			n.log.Info("checkpoint: no peer holds one: full catch-up", "peers", len(done))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			n.log.Warn("checkpoint: no attested checkpoint within the deadline: full catch-up",
				"deadline", c.cfg.JoinDeadline, "peers_without", none, "refused", refused)
			return
		case <-tick.C:
		}
	}
}

// install verifies a checkpoint against the members of the node's own
// federation chain and, if a quorum of them attested it, replaces the
// node's state with it. It returns the number of ops it stands for.
//
// Its memory stays bounded by the checkpoint's bytes and its records
// (cards, events), not by its external references (most of a season's
// checkpoint): the bytes are written to the store aside first, the
// references are read one at a time from them and written to the store in
// bounded chunks, then cp.Bytes is released (set to nil) before the
// records are committed. A failure or a crash midway leaves the store
// without the checkpoint: the references sit under an index generation
// nothing names until the commit that switches to it, the bytes are
// not the store's latest checkpoint until the state is installed.
func (c *checkpointer) install(ctx context.Context, cp *p2p.Checkpoint) (uint64, error) {
	n := c.n
	n.mu.RLock()
	members := n.membersLocked()
	need := n.set.State.Settings.CheckpointQuorum(len(members))
	n.mu.RUnlock()
	d, err := crdt.VerifyCheckpoint(cp.Bytes, cp.Attestations, members, need)
	if err != nil {
		return 0, err
	}
	if d.Stored.Meta.Federation != n.fed {
		return 0, fmt.Errorf("%w: of another federation", crdt.ErrCheckpoint)
	}
	var cpFed *crdt.AuthorState
	for _, a := range d.Stored.Authors {
		if a.Key == n.fed {
			cpFed = a
		}
	}
	if cpFed == nil {
		return 0, fmt.Errorf("%w: no federation chain", crdt.ErrCheckpoint)
	}
	// Kept: the history fetch verifies against it (after a restart too),
	// and the node serves it to the next venue that joins. Written aside
	// now, the latest checkpoint once the state is installed.
	staged, err := n.store.StageCheckpoint(cp.Bytes)
	if err != nil {
		return 0, fmt.Errorf("node: keep the checkpoint: %w", err)
	}
	var ops uint64
	r := n.submit(ctx, nil, func(tx *writeTx) result {
		ops, err = c.installLocked(ctx, &d, cpFed, cp)
		return result{err: err}
	})
	if r.err != nil && !errors.Is(r.err, errNotFresh) && !errors.Is(r.err, crdt.ErrCheckpoint) {
		// The store may hold part of it: read back what is there.
		n.reload()
	}
	if r.err == nil {
		c.joinMu.Lock()
		c.installed, c.joinedOps = true, ops
		c.joinMu.Unlock()
		if err := n.store.CommitCheckpoint(staged, cp.Attestations); err != nil {
			n.log.Warn("checkpoint: keep the installed checkpoint", "err", err)
		}
	}
	return ops, r.err
}

// installLocked writes the checkpoint's state and makes it the node's,
// then adds back the federation ops this node holds past the
// checkpoint's. It releases the checkpoint's bytes (cp.Bytes and d's
// references) once the references are in the store. Called by the
// writer, with mu held.
func (c *checkpointer) installLocked(ctx context.Context, d *crdt.DecodedCheckpoint, cpFed *crdt.AuthorState, cp *p2p.Checkpoint) (uint64, error) {
	n := c.n
	if seq, _ := n.set.Head(n.cfg.Key.Public()); seq > 0 {
		return 0, errNotFresh
	}
	fedSeq, _ := n.set.Head(n.fed)
	if cpFed.Seq > fedSeq {
		return 0, fmt.Errorf("%w: its federation chain (#%d) is ahead of ours (#%d)", crdt.ErrCheckpoint, cpFed.Seq, fedSeq)
	}
	var at crdt.OpID
	if err := n.store.ReadRange(n.fed, cpFed.Seq, cpFed.Seq, func(op crdt.Op) error { at = op.ID(); return nil }); err != nil {
		return 0, err
	}
	if at != cpFed.Head {
		return 0, fmt.Errorf("%w: its federation chain differs from ours at #%d", crdt.ErrCheckpoint, cpFed.Seq)
	}
	var later []crdt.Op
	if err := n.store.ReadRange(n.fed, cpFed.Seq+1, fedSeq, func(op crdt.Op) error {
		later = append(later, op)
		return nil
	}); err != nil {
		return 0, err
	}
	// Without change tracking the first commit writes every record (a
	// reset), and the index's pending writes start a new generation, to
	// which the references are written first, in chunks.
	idx := n.store.Index()
	idx.Reset()
	chunks, err := idx.WriteRefsAside(ctx, d.EachRef, store.RefsAsideConfig{ChunkBytes: c.cfg.refChunkBytes, AfterChunk: c.cfg.afterRefChunk})
	if err != nil {
		return 0, fmt.Errorf("node: write the checkpoint's references: %w", err)
	}
	n.log.Debug("checkpoint: references written", "refs", d.NumRefs(), "bytes", d.RefBytes(), "chunks", chunks)
	d.DropRefs()
	cp.Bytes = nil
	set := crdt.CheckpointSet(crdt.Config{Federation: n.fed, Log: n.store, Index: idx}, *d)
	if err := n.store.Commit(store.Batch{Evidence: d.Stored.Evidence, State: set}); err != nil {
		return 0, fmt.Errorf("node: write the checkpoint: %w", err)
	}
	ops := set.Len()
	*d = crdt.DecodedCheckpoint{}
	loaded, err := n.store.Load(n.fed)
	if err != nil {
		return 0, fmt.Errorf("node: read the checkpoint back: %w", err)
	}
	for _, op := range later {
		if _, err := loaded.AddTrusted(op); err != nil && !errors.Is(err, crdt.ErrDuplicate) {
			return 0, fmt.Errorf("node: federation op #%d after the checkpoint: %w", op.Seq, err)
		}
	}
	if len(later) > 0 {
		if err := n.store.Commit(store.Batch{State: loaded}); err != nil {
			return 0, fmt.Errorf("node: federation ops after the checkpoint: %w", err)
		}
	}
	n.set = loaded
	n.pending = crdt.Pending{}
	n.future = nil
	n.resetAuthor()
	n.metrics.observeState(n.set)
	return ops, nil
}
