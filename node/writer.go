package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/node/store"
)

// Writes go through one writer goroutine. It takes every request waiting,
// applies them to the op set in order, commits all their ops in one durable
// transaction (one fsync for the group) and only then answers them. A
// request is never answered before its op is on disk.

// result is a write's answer: an HTTP status and a JSON body, or an error.
type result struct {
	status int
	body   []byte
	err    error
}

type writeReq struct {
	ctx   context.Context
	idem  *idemKey
	apply func(tx *writeTx) result
	done  chan result
}

type idemKey struct {
	key  string
	hash [32]byte
}

// writeTx collects what one group commit writes.
type writeTx struct {
	n        *Node
	ops      []crdt.Op
	evidence []crdt.Op
	idem     []store.IdemRecord
	idemSeen map[string]store.IdemRecord
}

// make signs the node's next op and adds it to the set.
func (tx *writeTx) make(b crdt.Body) (crdt.Op, error) {
	n := tx.n
	seq, head := n.set.Head(n.cfg.Key.Public())
	op := n.author.Make(b)
	if _, err := n.set.Add(op); err != nil {
		n.author.Undo(seq, head)
		return op, fmt.Errorf("node: own op refused: %w", err)
	}
	tx.ops = append(tx.ops, op)
	return op, nil
}

// ingest adds remote ops: early ones wait in the pending buffer.
func (tx *writeTx) ingest(ops []crdt.Op) error {
	n := tx.n
	skew := n.cfg.Now().Add(n.cfg.MaxClockSkew).UnixMilli()
	var firstErr error
	progressed := false
	for _, op := range ops {
		out, err := n.set.Add(op)
		switch {
		case err == nil && out == crdt.Added:
			tx.ops = append(tx.ops, op)
			progressed = true
			if op.HLC.Millis() <= skew {
				n.clock.Observe(op.HLC)
			}
		case err == nil:
			tx.evidence = append(tx.evidence, op)
			n.metrics.evidence.Inc()
		case errors.Is(err, crdt.ErrDuplicate):
		case errors.Is(err, crdt.ErrGap), errors.Is(err, crdt.ErrUnknownAuthor):
			n.pending.Hold(op)
		default:
			n.metrics.refused.Inc()
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	if progressed {
		for _, op := range n.pending.Drain(n.set) {
			tx.ops = append(tx.ops, op)
		}
	}
	return firstErr
}

// ingestRange adds a contiguous run of one author's ops from catch-up.
func (tx *writeTx) ingestRange(ops []crdt.Op) error {
	n := tx.n
	if len(ops) == 0 {
		return nil
	}
	before, _ := n.set.Head(ops[0].Author)
	added, err := n.set.AddRange(ops)
	after, _ := n.set.Head(ops[0].Author)
	for _, op := range ops {
		if op.Seq > before && op.Seq <= after {
			tx.ops = append(tx.ops, op)
		}
	}
	if after > before {
		skew := n.cfg.Now().Add(n.cfg.MaxClockSkew).UnixMilli()
		if h := tx.ops[len(tx.ops)-1].HLC; h.Millis() <= skew {
			n.clock.Observe(h)
		}
		for _, op := range n.pending.Drain(n.set) {
			tx.ops = append(tx.ops, op)
		}
	}
	if err != nil && errors.Is(err, crdt.ErrEquivocation) && added < len(ops) {
		tx.evidence = append(tx.evidence, ops[added])
		n.metrics.evidence.Inc()
	} else if err != nil {
		n.metrics.refused.Inc()
	}
	return err
}

// submit queues a write and waits for its answer.
func (n *Node) submit(ctx context.Context, idem *idemKey, apply func(tx *writeTx) result) result {
	req := &writeReq{ctx: ctx, idem: idem, apply: apply, done: make(chan result, 1)}
	select {
	case n.writes <- req:
	case <-ctx.Done():
		return result{err: ctx.Err()}
	case <-n.stopped:
		return result{err: errStopping}
	}
	// Once queued the write is answered even if the client leaves, so that
	// what is committed is always reported to someone who waits. A write
	// queued as the writer exits is answered by the writer's last drain or
	// refused here.
	select {
	case r := <-req.done:
		return r
	case <-n.stopped:
		select {
		case r := <-req.done:
			return r
		default:
			return result{err: errStopping}
		}
	}
}

// Ingest adds ops received from peers and commits them durably. Ops that
// cannot be added yet are held until their predecessors arrive. It returns
// the first refusal, if any, after committing what was valid.
func (n *Node) Ingest(ctx context.Context, ops []crdt.Op) error {
	r := n.submit(ctx, nil, func(tx *writeTx) result {
		return result{err: tx.ingest(ops)}
	})
	return r.err
}

func (n *Node) writer(ctx context.Context) {
	batch := make([]*writeReq, 0, n.cfg.MaxBatch)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			n.drainWrites()
			close(n.stopped)
			n.drainWrites()
			return
		case r := <-n.writes:
			batch = append(batch, r)
		}
	fill:
		for len(batch) < n.cfg.MaxBatch {
			select {
			case r := <-n.writes:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		n.process(batch)
	}
}

// drainWrites answers writes queued when the node stops.
func (n *Node) drainWrites() {
	for {
		select {
		case r := <-n.writes:
			r.done <- result{err: errStopping}
		default:
			return
		}
	}
}

var (
	errStopping      = errors.New("node is stopping")
	errStorageFailed = errors.New("node storage failed: restart the node")
)

func (n *Node) process(batch []*writeReq) {
	start := time.Now()
	tx := &writeTx{n: n, idemSeen: map[string]store.IdemRecord{}}
	results := make([]result, len(batch))
	n.mu.Lock()
	for i, r := range batch {
		if n.failed.Load() {
			results[i] = result{err: errStorageFailed}
			continue
		}
		if err := r.ctx.Err(); err != nil {
			results[i] = result{err: err}
			continue
		}
		if r.idem != nil {
			if rec, ok := tx.lookupIdem(r.idem.key); ok {
				results[i] = idemAnswer(rec, r.idem.hash)
				continue
			}
		}
		before := len(tx.ops)
		res := r.apply(tx)
		if r.idem != nil && res.err == nil && res.status < 300 && len(tx.ops) > before {
			rec := store.IdemRecord{Key: r.idem.key, RequestHash: r.idem.hash, Status: res.status, Body: res.body}
			tx.idem = append(tx.idem, rec)
			tx.idemSeen[rec.Key] = rec
		}
		results[i] = res
	}
	n.mu.Unlock()
	if err := n.commit(tx); err != nil {
		n.log.Error("commit failed: reloading from disk", "err", err)
		if errors.Is(err, store.ErrFailed) || errors.Is(err, store.ErrClosed) {
			// The disk failed under Badger: nothing more can be made
			// durable until the node restarts. Refuse writes, keep reads.
			n.failed.Store(true)
		}
		n.reload()
		for i := range results {
			results[i] = result{err: fmt.Errorf("node: write not durable: %w", err)}
		}
	}
	n.metrics.commitSeconds.Observe(time.Since(start).Seconds())
	n.metrics.batchSize.Observe(float64(len(batch)))
	for i, r := range batch {
		r.done <- results[i]
	}
}

// commit makes a transaction's ops durable, then tells the hooks.
func (n *Node) commit(tx *writeTx) error {
	if len(tx.ops) == 0 && len(tx.evidence) == 0 && len(tx.idem) == 0 {
		return nil
	}
	n.mu.RLock()
	err := n.store.Commit(store.Batch{Ops: tx.ops, Evidence: tx.evidence, Idem: tx.idem, Snapshot: n.set})
	n.mu.RUnlock()
	if err != nil {
		return err
	}
	n.mu.Lock()
	if n.set.Stale {
		if err := n.set.Refold(n.store); err != nil {
			n.log.Error("refold failed", "err", err)
		}
	}
	fresh := n.metrics.observeState(n.set)
	block := n.autoBlock(fresh)
	n.mu.Unlock()
	if len(tx.ops) > 0 {
		n.hooksMu.Lock()
		hooks := n.hooks
		n.hooksMu.Unlock()
		for _, h := range hooks {
			h(tx.ops)
		}
	}
	if block != nil {
		return n.commit(block)
	}
	return nil
}

// autoBlock makes the block ops for cards caught in new double-spend or
// stale-stamp conflicts, when the federation settings ask for it. Caller
// holds mu. The block ops are committed right after the ops that revealed
// the conflict.
func (n *Node) autoBlock(fresh []*crdt.Conflict) *writeTx {
	if len(fresh) == 0 || !n.set.State.Settings.AutoBlock || !n.set.IsMember(n.cfg.Key.Public()) {
		return nil
	}
	tx := &writeTx{n: n}
	for _, c := range fresh {
		if c.Kind != crdt.ConflictDoubleSpend && c.Kind != crdt.ConflictStaleStamp {
			continue
		}
		n.log.Warn("double spend detected", "kind", c.Kind, "card", c.Card, "counter", c.Counter, "ops", len(c.Ops))
		if card := n.set.State.Card(c.Card); card == nil || card.Blocked {
			continue
		}
		if _, err := tx.make(&crdt.CardBlock{Card: c.Card, Reason: fmt.Sprintf("automatic: %s detected", c.Kind)}); err != nil {
			n.log.Error("auto block", "card", c.Card, "err", err)
			continue
		}
		n.metrics.autoBlocks.Inc()
	}
	if len(tx.ops) == 0 {
		return nil
	}
	return tx
}

// reload rebuilds the in-memory state from disk after a failed commit, so
// that nothing that is not durable stays visible.
func (n *Node) reload() {
	n.mu.Lock()
	defer n.mu.Unlock()
	set, err := n.store.Load(n.fed)
	if err != nil {
		n.log.Error("reload failed", "err", err)
		return
	}
	n.set = set
	n.pending = crdt.Pending{}
	n.resetAuthor()
}

func (tx *writeTx) lookupIdem(key string) (store.IdemRecord, bool) {
	if rec, ok := tx.idemSeen[key]; ok {
		return rec, true
	}
	rec, ok, err := tx.n.store.Idempotency(key)
	if err != nil {
		tx.n.log.Warn("idempotency lookup", "err", err)
		return rec, false
	}
	return rec, ok
}

func idemAnswer(rec store.IdemRecord, hash [32]byte) result {
	if rec.RequestHash != hash {
		return result{status: 409, body: errorBody("conflict", "this idempotency key was already used for another request")}
	}
	return result{status: rec.Status, body: rec.Body}
}

func splitLines(s string) []string {
	lines := strings.Split(s, "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return lines
}
