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
	ctx    context.Context
	idem   *idemKey
	apply  func(tx *writeTx) result
	done   chan result
	queued time.Time // when submit queued it
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
	// trusted ops come from the operator (the federation bundle at start),
	// not the network: no clock bound applies.
	trusted bool
}

// make signs the node's next op and adds it to the set. It refuses while
// the node's own chain may be ahead of its disk (see signGate).
func (tx *writeTx) make(b crdt.Body) (crdt.Op, error) {
	n := tx.n
	seq, head := n.set.Head(n.cfg.Key.Public())
	if err := n.gate.check(seq); err != nil {
		return crdt.Op{}, err
	}
	if n.author.Seq() != seq {
		// Peers brought ops of this node's own key (it caught up after a
		// restore): sign on from the chain's head, never beside it.
		n.author.Undo(seq, head)
	}
	op := n.author.Make(b)
	if out, err := n.set.Add(op); err != nil || out != crdt.Added {
		n.author.Undo(seq, head)
		if err == nil {
			err = crdt.ErrEquivocation
		}
		return op, fmt.Errorf("node: own op refused: %w", err)
	}
	tx.ops = append(tx.ops, op)
	return op, nil
}

// maxFuture bounds the ops held because their clock is ahead.
const maxFuture = 10000

// holdFuture keeps an op stamped too far ahead, and reports whether it did.
func (tx *writeTx) holdFuture(op crdt.Op, now int64) bool {
	n := tx.n
	if tx.trusted || !n.set.State.Settings.TooFarAhead(&op, now) {
		return false
	}
	if len(n.future) < maxFuture {
		n.future = append(n.future, op)
		n.metrics.future.Inc()
	}
	return true
}

// noteOwn records an op of this node's own key received from a peer: one
// beyond the chain on disk means the data dir is older than what the
// federation holds, and the node must not sign until it has caught up.
func (tx *writeTx) noteOwn(op *crdt.Op) {
	n := tx.n
	if op.Author != n.cfg.Key.Public() {
		return
	}
	if seq, _ := n.set.Head(op.Author); op.Seq > seq {
		n.gate.ahead(op.Seq, n.log)
	}
}

// ingest adds remote ops: early ones wait in the pending buffer, ops
// stamped too far in the future in the future buffer.
func (tx *writeTx) ingest(ops []crdt.Op) error {
	n := tx.n
	now := n.cfg.Now().UnixMilli()
	var firstErr error
	progressed := false
	for _, op := range ops {
		tx.noteOwn(&op)
		if tx.holdFuture(op, now) {
			continue
		}
		out, err := n.set.Add(op)
		switch {
		case err == nil && out == crdt.Added:
			tx.ops = append(tx.ops, op)
			progressed = true
			n.clock.Observe(op.HLC)
		case err == nil:
			tx.addEvidence(op)
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
		tx.drain()
	}
	return firstErr
}

// addEvidence keeps an op the set took as evidence, to commit it.
func (tx *writeTx) addEvidence(op crdt.Op) {
	n := tx.n
	tx.evidence = append(tx.evidence, op)
	n.metrics.evidence.Inc()
	if op.Author == n.cfg.Key.Public() {
		n.log.Error("this node's key signed another op at one of its seqs: its data dir runs on two machines, or was restored from a copy; both branches count, tell the maintainers",
			"seq", op.Seq)
	}
}

// drain adds the pending ops that now fit.
func (tx *writeTx) drain() {
	added, evidence := tx.n.pending.DrainAll(tx.n.set)
	tx.ops = append(tx.ops, added...)
	for _, op := range evidence {
		tx.addEvidence(op)
	}
}

// ingestRange adds a contiguous run of one author's ops from catch-up.
func (tx *writeTx) ingestRange(ops []crdt.Op) error {
	n := tx.n
	if len(ops) == 0 {
		return nil
	}
	tx.noteOwn(&ops[len(ops)-1])
	// Ops stamped too far ahead wait: the run is cut before the first.
	now := n.cfg.Now().UnixMilli()
	for i := range ops {
		if !tx.trusted && n.set.State.Settings.TooFarAhead(&ops[i], now) {
			for _, op := range ops[i:] {
				tx.holdFuture(op, now)
			}
			ops = ops[:i]
			break
		}
	}
	if len(ops) == 0 {
		return nil
	}
	before, _ := n.set.Head(ops[0].Author)
	_, evidence, err := n.set.AddRangeEvidence(ops)
	after, _ := n.set.Head(ops[0].Author)
	for _, op := range ops {
		if op.Seq > before && op.Seq <= after {
			tx.ops = append(tx.ops, op)
		}
	}
	for _, op := range evidence {
		tx.addEvidence(op)
	}
	if after > before {
		n.clock.Observe(tx.ops[len(tx.ops)-1].HLC)
	}
	if after > before || len(evidence) > 0 {
		tx.drain()
	}
	if err != nil && !errors.Is(err, crdt.ErrEquivocation) {
		n.metrics.refused.Inc()
	}
	return err
}

// retryFuture ingests the held ops whose timestamp is no longer too far
// ahead.
func (n *Node) retryFuture(ctx context.Context) {
	n.mu.Lock()
	now := n.cfg.Now().UnixMilli()
	var due []crdt.Op
	kept := n.future[:0]
	for _, op := range n.future {
		if n.set.State.Settings.TooFarAhead(&op, now) {
			kept = append(kept, op)
		} else {
			due = append(due, op)
		}
	}
	n.future = kept
	n.mu.Unlock()
	if len(due) > 0 {
		if err := n.Ingest(ctx, due); err != nil {
			n.log.Debug("ops held for their clock", "err", err)
		}
	}
}

// submit queues a write and waits for its answer.
func (n *Node) submit(ctx context.Context, idem *idemKey, apply func(tx *writeTx) result) result {
	req := &writeReq{ctx: ctx, idem: idem, apply: apply, done: make(chan result, 1), queued: time.Now()}
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

// After a slow group (a commit that waited on the disk, see slowGroup),
// the writes that arrived meanwhile are not all in the queue yet: their
// handlers read the set (isolation, revocation, sign gate) before they
// submit, and were blocked behind the writer's lock for the whole commit.
// Taking the next group at once would lock them out again, and they would
// trickle in over several commits (each a fsync: a slow disk makes every
// one of them slow). So after a slow group the writer gathers: it keeps
// taking writes while they arrive less than gatherIdle apart, for at most
// gatherMax, and commits them as one group.
const (
	slowGroup  = 5 * time.Millisecond
	gatherIdle = 300 * time.Microsecond
	gatherMax  = 2 * time.Millisecond
)

func (n *Node) writer(ctx context.Context) {
	batch := make([]*writeReq, 0, n.cfg.MaxBatch)
	slow := false
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
		if slow {
			batch = n.gather(ctx, batch)
		}
		start := time.Now()
		n.process(batch)
		slow = time.Since(start) > slowGroup
	}
}

// gather adds to batch the writes that arrive less than gatherIdle apart,
// for at most gatherMax (or until the batch is full or ctx ends).
func (n *Node) gather(ctx context.Context, batch []*writeReq) []*writeReq {
	limit := time.NewTimer(gatherMax)
	defer limit.Stop()
	idle := time.NewTimer(gatherIdle)
	defer idle.Stop()
	for len(batch) < n.cfg.MaxBatch {
		select {
		case r := <-n.writes:
			batch = append(batch, r)
			idle.Reset(gatherIdle)
		case <-idle.C:
			return batch
		case <-limit.C:
			return batch
		case <-ctx.Done():
			return batch
		}
	}
	return batch
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
	// A full disk refuses the whole batch before anything touches the set
	// (diskfull.go).
	var full error
	if space := n.checkDisk(); space != nil {
		full = n.diskFull(space, len(batch))
	}
	// The set stays locked until the batch is durable: nothing a reader
	// sees (sync, heartbeats, the API's digest) is lost by a crash.
	n.mu.Lock()
	for i, r := range batch {
		if n.failed.Load() {
			results[i] = result{err: errStorageFailed}
			continue
		}
		if full != nil {
			results[i] = result{err: full}
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
	applied := time.Now()
	var tm store.CommitTiming
	committed, err := n.commitLocked(tx, &tm)
	n.mu.Unlock()
	n.observeWrite(batch, start, applied, tm)
	if err != nil {
		// Nothing of the batch is acknowledged, and the set goes back to
		// what the disk holds.
		var answer error
		switch {
		case store.IsDiskFull(err):
			answer = n.diskFull(err, len(batch))
		case errors.Is(err, store.ErrFailed) || errors.Is(err, store.ErrClosed):
			n.log.Error("commit failed: reloading from disk", "err", err)
			// The disk failed under Badger: nothing more can be made
			// durable until the node restarts. Refuse writes, keep reads.
			n.failed.Store(true)
		default:
			n.log.Error("commit failed: reloading from disk", "err", err)
		}
		n.reload()
		for i := range results {
			if answer != nil {
				results[i] = result{err: answer}
			} else {
				results[i] = result{err: fmt.Errorf("node: write not durable: %w", err)}
			}
		}
	}
	n.notify(committed)
	n.metrics.commitSeconds.Observe(time.Since(start).Seconds())
	n.metrics.batchSize.Observe(float64(len(batch)))
	for i, r := range batch {
		r.done <- results[i]
	}
}

// commit makes a transaction's ops durable, then tells the hooks.
func (n *Node) commit(tx *writeTx) error {
	n.mu.Lock()
	ops, err := n.commitLocked(tx, nil)
	n.mu.Unlock()
	n.notify(ops)
	return err
}

// commitLocked makes a transaction's ops durable, with the auto-block ops
// they call for, and returns every op committed. When tm is non-nil it
// adds the store's phases to it. Caller holds mu.
func (n *Node) commitLocked(tx *writeTx, tm *store.CommitTiming) ([]crdt.Op, error) {
	var committed []crdt.Op
	for tx != nil {
		if len(tx.ops) == 0 && len(tx.evidence) == 0 && len(tx.idem) == 0 {
			break
		}
		var t store.CommitTiming
		err := n.store.Commit(store.Batch{Ops: tx.ops, Evidence: tx.evidence, Idem: tx.idem, State: n.set, Timing: &t})
		if tm != nil {
			tm.Wait += t.Wait
			tm.Fill += t.Fill
			tm.Durable += t.Durable
		}
		if err != nil {
			return committed, err
		}
		committed = append(committed, tx.ops...)
		if n.set.Stale {
			if err := n.set.Refold(n.store); err != nil {
				n.log.Error("refold failed", "err", err)
			}
		}
		fresh := n.metrics.observeState(n.set)
		for _, c := range fresh {
			if c.Kind == crdt.ConflictDoubleSpend || c.Kind == crdt.ConflictStaleStamp {
				n.log.Warn("double spend detected", "kind", c.Kind, "card", c.Card, "counter", c.Counter, "ops", len(c.Ops))
			}
		}
		cards := cardsOf(tx.ops, tx.evidence)
		if !n.caughtUp.Load() {
			// Not judged on a ledger still arriving: see settle.go.
			n.suspect(cards)
			break
		}
		tx = n.autoBlock(cards)
	}
	return committed, nil
}

// slowWrite is the time from a group's oldest write being queued to its
// commit above which the writer logs the group's phases (at debug level).
const slowWrite = 10 * time.Millisecond

// observeWrite records the phases of a group of writes in the
// cagnotte_write_phase_seconds histogram, and logs them at debug level
// when the group's oldest write waited more than slowWrite for its
// answer: where a payment's tail latency comes from.
func (n *Node) observeWrite(batch []*writeReq, start, applied time.Time, tm store.CommitTiming) {
	end := time.Now()
	oldest := start
	for _, r := range batch {
		if r.queued.Before(oldest) {
			oldest = r.queued
		}
	}
	queue, apply := start.Sub(oldest), applied.Sub(start)
	storeTotal := tm.Wait + tm.Fill + tm.Durable
	after := max(end.Sub(applied)-storeTotal, 0)
	ph := n.metrics.writePhase
	ph.WithLabelValues("queue").Observe(queue.Seconds())
	ph.WithLabelValues("apply").Observe(apply.Seconds())
	ph.WithLabelValues("store_wait").Observe(tm.Wait.Seconds())
	ph.WithLabelValues("fill").Observe(tm.Fill.Seconds())
	ph.WithLabelValues("durable").Observe(tm.Durable.Seconds())
	ph.WithLabelValues("after").Observe(after.Seconds())
	if total := end.Sub(oldest); total > slowWrite {
		n.log.Debug("slow write group", "writes", len(batch), "total", total,
			"queue", queue, "apply", apply, "store_wait", tm.Wait, "fill", tm.Fill, "durable", tm.Durable, "after", after)
	}
}

// notify gives committed ops to the hooks (gossip), after they are durable.
func (n *Node) notify(ops []crdt.Op) {
	if len(ops) == 0 {
		return
	}
	n.hooksMu.Lock()
	hooks := n.hooks
	n.hooksMu.Unlock()
	for _, h := range hooks {
		h(ops)
	}
}

// cardsOf lists the cards the ops' money and block ops touch.
func cardsOf(lists ...[]crdt.Op) []crdt.CardID {
	seen := map[crdt.CardID]bool{}
	var out []crdt.CardID
	for _, ops := range lists {
		for i := range ops {
			switch ops[i].Kind {
			case crdt.KindPayment, crdt.KindRefund, crdt.KindCorrection, crdt.KindTopUp, crdt.KindCardUnblock:
			default:
				continue
			}
			b, err := ops[i].Decode()
			if err != nil {
				continue
			}
			var c crdt.CardID
			switch b := b.(type) {
			case *crdt.Payment:
				c = b.Card
			case *crdt.Refund:
				c = b.Card
			case *crdt.Correction:
				c = b.Card
			case *crdt.TopUp:
				c = b.Card
			case *crdt.CardUnblock:
				c = b.Card
			}
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
		}
	}
	return out
}

// autoBlock makes the block ops for the cards that crdt.Card.NeedsAutoBlock
// says must be blocked (money actually missing after a merge), when the
// federation settings ask for it. A double spend the balance covers blocks
// nothing. Caller holds mu.
func (n *Node) autoBlock(cards []crdt.CardID) *writeTx {
	if len(cards) == 0 || !n.set.State.Settings.AutoBlock || !n.set.IsMember(n.cfg.Key.Public()) {
		return nil
	}
	tx := &writeTx{n: n}
	for _, id := range cards {
		c := n.set.State.Card(id)
		if !c.NeedsAutoBlock() {
			continue
		}
		reason := fmt.Sprintf("automatic: overdrawn by %s after a merge", cents(-c.Balance))
		if _, err := tx.make(&crdt.CardBlock{Card: id, Reason: reason}); err != nil {
			n.log.Error("auto block", "card", id, "err", err)
			continue
		}
		n.log.Warn("card blocked: money is missing", "card", id, "balance_cents", c.Balance)
		n.metrics.autoBlocks.Inc()
	}
	if len(tx.ops) == 0 {
		return nil
	}
	return tx
}

// autoBlockAll blocks, at start, the cards a crash left unblocked between
// the commit that overdrew them and their block. A networked node keeps
// them as suspects until it has caught up (settle.go).
func (n *Node) autoBlockAll() error {
	n.mu.RLock()
	var cards []crdt.CardID
	for id, c := range n.set.State.Cards {
		if c.NeedsAutoBlock() {
			cards = append(cards, id)
		}
	}
	n.mu.RUnlock()
	if len(cards) == 0 {
		return nil
	}
	n.mu.Lock()
	if n.cfg.P2P != nil {
		n.suspect(cards)
		n.mu.Unlock()
		return nil
	}
	tx := n.autoBlock(cards)
	n.mu.Unlock()
	if tx == nil {
		return nil
	}
	return n.commit(tx)
}

// reload rebuilds the in-memory state from disk after a failed commit, so
// that nothing that is not durable stays visible.
func (n *Node) reload() {
	n.mu.Lock()
	defer n.mu.Unlock()
	set, err := n.store.Load(n.fed)
	if err != nil {
		// The set may hold what the disk does not: refuse writes until
		// a restart reloads it.
		n.log.Error("reload after a failed commit failed: writes are refused until the node restarts", "err", err)
		n.failed.Store(true)
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
