package node

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/node/store"
	"github.com/cagnotte/cagnotte/p2p"
)

// The history older than a checkpoint (docs/checkpoints.md). A venue that
// started from a checkpoint holds each author's chain state at the
// checkpoint (seq and head id, attested by a quorum) but not the ops the
// checkpoint summarizes. Unless CheckpointConfig.NoHistory is set, it
// fetches them in the background once it sells: one bounded range per
// request (p2p.HistoryProtocol), from the connected venues in turn, with a
// pause between requests, newest first so that each range is verified at
// once against what is already trusted: the newest op of a range must be
// the one the next range (or the attested head) links to, each op must
// link to the one before it, and every signature is checked. Verified
// ranges are written to the op log only (store.Batch without State): the
// live state, which already holds their effect, is not folded again.
// When every author's chain is complete down to seq 1, the history is
// folded aside, in memory, and the result must encode to the checkpoint
// the quorum attested; a mismatch is logged as an error and shown in the
// status. A restart resumes where the log stops.

// historyTarget is one author's history still to fetch: ops 1..top,
// op top having the id next.
type historyTarget struct {
	author crdt.PublicKey
	top    uint64
	next   crdt.OpID
}

// HistoryStatus is the progress of the background fetch of the history
// older than the checkpoint a venue started from.
type HistoryStatus struct {
	// Active: the node is fetching it; Done: every op the checkpoint
	// summarizes is held.
	Active, Done bool
	// Held of Total ops the checkpoint summarizes are held.
	Held, Total uint64
	// Verified: the complete history was folded and encodes to the
	// attested checkpoint. Err says why not, or why the fetch stopped.
	Verified bool
	Err      string
}

// String is the progress as the log and the status show it:
// "history: 42 % (n of m ops)".
func (h HistoryStatus) String() string {
	if h.Total == 0 {
		return "history: none to fetch"
	}
	s := fmt.Sprintf("history: %d %% (%d of %d ops)", h.Held*100/h.Total, h.Held, h.Total)
	switch {
	case h.Err != "":
		s += ": " + h.Err
	case h.Verified:
		s += ", folded and matching the checkpoint"
	}
	return s
}

// historyState is the fetch's progress, read by CheckpointStatus.
type historyState struct {
	mu sync.Mutex
	st HistoryStatus
}

func (h *historyState) get() HistoryStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.st
}

func (h *historyState) update(fn func(*HistoryStatus)) {
	h.mu.Lock()
	fn(&h.st)
	h.mu.Unlock()
}

// errHistoryMismatch: the folded history does not encode to the attested
// checkpoint.
var errHistoryMismatch = errors.New("node: the history folded does not match the attested checkpoint")

// historyIncomplete reports whether some author's chain lacks its first
// op: the node started from a checkpoint and lacks the older history (a
// venue that folded every op holds op 1 of every author).
func (n *Node) historyIncomplete() bool {
	for k, c := range n.Chains() {
		if c.Seq == 0 {
			continue
		}
		found := false
		_ = n.store.ReadRange(k, 1, 1, func(crdt.Op) error { found = true; return nil })
		if !found {
			return true
		}
	}
	return false
}

// fetchHistory runs the background fetch until the history is complete
// and verified, or ctx ends.
func (c *checkpointer) fetchHistory(ctx context.Context) {
	n := c.n
	// Never before the catch-up runs: a new venue first sells.
	for c.net.CatchUpHeld() {
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return
		}
	}
	if !n.historyIncomplete() {
		return
	}
	// Its head only (the authors, the chains to fetch): the whole
	// checkpoint (80 MB at 10 M ops) is read only to be folded against at
	// the end, for a history under MaxFoldOps.
	var d crdt.DecodedCheckpoint
	err := n.store.LatestCheckpointHead(func(prefix []byte) error {
		var err error
		d, err = crdt.DecodeCheckpointAuthors(prefix)
		return err
	})
	if errors.Is(err, store.ErrNoCheckpoint) {
		c.hist.update(func(s *HistoryStatus) { s.Err = "no checkpoint to fetch it against: " + err.Error() })
		n.log.Warn("history: no checkpoint to fetch it against", "err", err)
		return
	}
	if err != nil {
		c.hist.update(func(s *HistoryStatus) { s.Err = err.Error() })
		n.log.Error("history: the stored checkpoint does not decode", "err", err)
		return
	}
	var raw []byte
	if checkpointOps(d) <= uint64(c.cfg.MaxFoldOps) {
		if raw, _, err = n.store.LatestCheckpoint(); err == nil {
			d, err = crdt.DecodeCheckpointAuthors(raw)
		}
		if err != nil {
			c.hist.update(func(s *HistoryStatus) { s.Err = err.Error() })
			n.log.Error("history: the stored checkpoint does not read", "err", err)
			return
		}
	}
	targets, held, total, err := c.historyTargets(d)
	if err != nil {
		c.hist.update(func(s *HistoryStatus) { s.Err = err.Error() })
		n.log.Error("history: reading the log", "err", err)
		return
	}
	c.hist.update(func(s *HistoryStatus) { s.Active, s.Held, s.Total = true, held, total })
	defer c.hist.update(func(s *HistoryStatus) { s.Active = false })
	n.log.Info("history: fetching the ops older than the checkpoint in the background", "progress", c.hist.get().String(), "authors", len(targets))
	start := time.Now()
	lastPct := held * 100 / max(total, 1)
	turn := 0
	// failures per peer and author: a peer that lacks an author's history
	// (it started from a checkpoint too) is not asked for it again soon.
	lacks := map[peer.ID]map[crdt.PublicKey]time.Time{}
	for len(targets) > 0 {
		if ctx.Err() != nil {
			return
		}
		t := &targets[0]
		peers := c.historyPeers()
		var got []crdt.Op
		var from peer.ID
		for i := range peers {
			p := peers[(turn+i)%len(peers)]
			if until, ok := lacks[p][t.author]; ok && time.Now().Before(until) {
				continue
			}
			ops, err := c.historyRange(ctx, p, t)
			if err != nil || len(ops) == 0 {
				if lacks[p] == nil {
					lacks[p] = map[crdt.PublicKey]time.Time{}
				}
				lacks[p][t.author] = time.Now().Add(10 * c.cfg.HistoryPause)
				if err != nil && ctx.Err() == nil {
					n.log.Debug("history: a peer could not serve a range", "peer", p, "author", t.author.Short(), "to", t.top, "err", err)
				}
				continue
			}
			got, from = ops, p
			turn += i + 1
			break
		}
		if len(got) == 0 {
			// No peer could serve it now: wait and ask again.
			if !sleepCtx(ctx, 10*c.cfg.HistoryPause) {
				return
			}
			continue
		}
		if err := n.store.Commit(store.Batch{Ops: got}); err != nil {
			c.hist.update(func(s *HistoryStatus) { s.Err = err.Error() })
			n.log.Error("history: writing a range", "err", err)
			return
		}
		t.top, t.next = got[0].Seq-1, got[0].Prev
		if t.top == 0 {
			targets = targets[1:]
		}
		c.hist.update(func(s *HistoryStatus) { s.Held += uint64(len(got)) })
		st := c.hist.get()
		if pct := st.Held * 100 / max(st.Total, 1); pct/10 != lastPct/10 || len(targets) == 0 {
			lastPct = pct
			n.log.Info(st.String(), "from", from)
		}
		if len(targets) > 0 && !sleepCtx(ctx, c.cfg.HistoryPause) {
			return
		}
	}
	c.hist.update(func(s *HistoryStatus) { s.Done = true })
	n.log.Info("history: every op the checkpoint summarizes is held", "took", time.Since(start).Round(time.Millisecond))
	if err := c.verifyHistory(raw, total); err != nil {
		c.hist.update(func(s *HistoryStatus) { s.Err = err.Error() })
		n.log.Error("history: NOT VERIFIED against the checkpoint", "err", err)
		return
	}
}

// checkpointOps is the number of ops d summarizes: its authors' seqs.
func checkpointOps(d crdt.DecodedCheckpoint) uint64 {
	var n uint64
	for _, a := range d.Stored.Authors {
		n += a.Seq
	}
	return n
}

// historyTargets lists, for every author of the checkpoint, the ops still
// missing below what the log holds, and counts the ops held and summarized.
func (c *checkpointer) historyTargets(d crdt.DecodedCheckpoint) ([]historyTarget, uint64, uint64, error) {
	n := c.n
	var out []historyTarget
	var held, total uint64
	for _, a := range d.Stored.Authors {
		if a.Seq == 0 {
			continue
		}
		total += a.Seq
		// The log holds a contiguous run low..a.Seq (fetched newest
		// first), or nothing of it: find low by bisection.
		has := func(seq uint64) (crdt.Op, bool, error) {
			var op crdt.Op
			found := false
			err := n.store.ReadRange(a.Key, seq, seq, func(o crdt.Op) error { op, found = o, true; return nil })
			return op, found, err
		}
		top, ok, err := has(a.Seq)
		if err != nil {
			return nil, 0, 0, err
		}
		if ok && top.ID() != a.Head {
			return nil, 0, 0, fmt.Errorf("node: the log's op %s#%d is not the checkpoint's head", a.Key.Short(), a.Seq)
		}
		if !ok {
			out = append(out, historyTarget{author: a.Key, top: a.Seq, next: a.Head})
			continue
		}
		lo, hi := uint64(1), a.Seq // the lowest held is in [lo, hi]
		for lo < hi {
			mid := lo + (hi-lo)/2
			_, ok, err := has(mid)
			if err != nil {
				return nil, 0, 0, err
			}
			if ok {
				hi = mid
			} else {
				lo = mid + 1
			}
		}
		held += a.Seq - lo + 1
		if lo > 1 {
			low, _, err := has(lo)
			if err != nil {
				return nil, 0, 0, err
			}
			out = append(out, historyTarget{author: a.Key, top: lo - 1, next: low.Prev})
		}
	}
	// The federation first (admissions before the ops they admit), then
	// the authors in key order, as everywhere.
	slices.SortFunc(out, func(x, y historyTarget) int {
		if (x.author == n.fed) != (y.author == n.fed) {
			if x.author == n.fed {
				return -1
			}
			return 1
		}
		return slices.Compare(x.author[:], y.author[:])
	})
	return out, held, total, nil
}

// historyPeers lists the connected venues, in peer id order.
func (c *checkpointer) historyPeers() []peer.ID {
	var out []peer.ID
	for _, p := range c.net.Connected() {
		if k, err := p2p.KeyOf(p); err == nil && k != c.n.fed && c.n.IsMember(k) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// historyRange fetches the range of t below its top from p and verifies
// it: the ops t.top-k+1..t.top of t.author, the newest with the id
// t.next, each linking to the one before, the first op of the chain
// linking to nothing, every signature valid. It returns the verified
// suffix (empty when p holds none of it).
func (c *checkpointer) historyRange(ctx context.Context, p peer.ID, t *historyTarget) ([]crdt.Op, error) {
	from := uint64(1)
	if t.top > uint64(c.cfg.HistoryBatch) {
		from = t.top - uint64(c.cfg.HistoryBatch) + 1
	}
	ops, err := c.net.FetchHistory(ctx, p, t.author, from, t.top)
	if err != nil {
		return nil, err
	}
	if len(ops) == 0 {
		return nil, nil
	}
	if uint64(len(ops)) != t.top-from+1 {
		// The peer stopped at a gap (it started from a checkpoint too):
		// without the newest op, nothing of it links to what we trust.
		return nil, nil
	}
	next := t.next
	for i := len(ops) - 1; i >= 0; i-- {
		op := &ops[i]
		if op.ID() != next {
			return nil, fmt.Errorf("%w: %s#%d is not the op the chain links to", crdt.ErrCheckpoint, t.author.Short(), op.Seq)
		}
		if err := op.Verify(); err != nil {
			return nil, fmt.Errorf("%s#%d: %w", t.author.Short(), op.Seq, err)
		}
		next = op.Prev
	}
	if ops[0].Seq == 1 && !next.IsZero() {
		return nil, fmt.Errorf("%w: %s#1 links to an earlier op", crdt.ErrCheckpoint, t.author.Short())
	}
	return ops, nil
}

// verifyHistory folds the complete history aside (in memory, with the
// checkpoint's author states as bounds) and checks that it encodes to
// the attested checkpoint. Above CheckpointConfig.MaxFoldOps the fold is
// skipped (its memory grows with the history): the chains and the
// signatures were verified, the state is not.
func (c *checkpointer) verifyHistory(raw []byte, total uint64) error {
	n := c.n
	if total > uint64(c.cfg.MaxFoldOps) {
		n.log.Warn("history: not folded to check the checkpoint's state: over MaxFoldOps (chains and signatures were verified)",
			"ops", total, "max_fold_ops", c.cfg.MaxFoldOps)
		return nil
	}
	start := time.Now()
	d, err := crdt.DecodeCheckpoint(raw)
	if err != nil {
		return fmt.Errorf("%w: %w", errHistoryMismatch, err)
	}
	set := crdt.CheckpointSet(crdt.Config{Federation: n.fed}, d)
	if err := set.Refold(n.store); err != nil {
		return fmt.Errorf("%w: %w", errHistoryMismatch, err)
	}
	enc, err := set.EncodeCheckpoint()
	if err != nil {
		return fmt.Errorf("%w: %w", errHistoryMismatch, err)
	}
	if sha256.Sum256(enc) != sha256.Sum256(raw) {
		return fmt.Errorf("%w: the fold's state digest is %x", errHistoryMismatch, set.Digest())
	}
	c.hist.update(func(s *HistoryStatus) { s.Verified = true })
	n.log.Info("history: folded and matching the attested checkpoint", "ops", total, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// sleepCtx waits d or until ctx ends; it reports whether ctx is still on.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
