package simulations

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"

	"github.com/cagnotte/cagnotte/crdt"
)

// HarnessConfig configures a Harness.
type HarnessConfig struct {
	// Venues is the number of venues (at least 2).
	Venues int
	// Seed derives the federation and venue keys: the same seed gives the
	// same keys, hence the same op ids and digests.
	Seed uint64
	// Settings go into the genesis.
	Settings crdt.Settings
	// Start is the virtual clock's first value, Unix ms.
	Start int64
	// DetectionLag makes isolation follow heartbeats as node/offline.go
	// does: a venue keeps counting a peer it stopped hearing as heard for
	// Settings.IsolationAfter ms. Without it, a venue hears exactly the
	// venues of its group, at once (the idealised model).
	DetectionLag bool
	// NoQuorumCheck turns off what node/offline.go's quorumLost does: a
	// venue that believes itself in sync pings the others before a payment
	// and, if it cannot reach a quorum now, takes the payment under the
	// offline caps. Only matters with DetectionLag.
	NoQuorumCheck bool
	// NoReservations turns off the reservation of a card above the floor
	// limit (crdt.NeedsReservation) with its coordinators before a payment
	// or refund taken in sync: today's behaviour before reservations, to
	// measure the in-sync exposure they close.
	NoReservations bool
	// RefundWithoutQuorum is for tests only, a broken rule: refunds are
	// decided (crdt.State.DecideRefund) as if the venue were in sync with
	// a quorum, whatever its isolation state and its quorum check say.
	RefundWithoutQuorum bool
}

// Venue is one simulated node: a replica, the author of its ops and the
// venue-local sync state a node keeps (isolation, offline ledger).
type Venue struct {
	Index   int
	Signer  *crdt.Signer
	Author  *crdt.Author
	Replica *crdt.Replica
	// Isolated is the venue's sync state at the last evaluation.
	Isolated bool
	// Ledger is what the venue took since it lost sync, as a node keeps it.
	Ledger crdt.OfflineLedger
	// Periods counts the isolation periods the venue entered; while
	// Isolated, Periods numbers the current one.
	Periods int
	// Reserve is the venue's table as a reservation coordinator.
	Reserve *crdt.ReservationTable
	// Twin is the index of the venue this one is a copy of (its data dir
	// copied to a second till, same key), or -1.
	Twin int
	// Retired venues take no traffic and sign nothing (a second till
	// switched off); the heal after its retirement still reads its
	// replica (drained), then it takes no further part.
	Retired bool
	drained bool
}

// Key returns the venue's public key.
func (v *Venue) Key() crdt.PublicKey { return v.Signer.Public() }

// Harness runs N venues of one federation in one process, on a virtual
// clock, over a partitionable network. It is deterministic and not safe for
// concurrent use.
type Harness struct {
	cfg    HarnessConfig
	now    int64
	fedKey crdt.PublicKey
	venues []*Venue
	// byKey lists the venues signing with a key: one, or a venue and its
	// twins.
	byKey map[crdt.PublicKey][]int
	// group[v] is v's partition group; all 0 when healed.
	group []int
	// heardAt[v][u] is when v last heard u (DetectionLag).
	heardAt [][]int64
	// hold queues ops instead of delivering them to the group at once
	// (see HoldGossip); held lists them in the order they were made.
	hold bool
	held []heldOp
	// Blocks counts the automatic block ops made for an overdraft
	// (crdt.Card.NeedsAutoBlock); RefusalBlocks those made after a refusal
	// (crdt.BlockAfterRefusal).
	Blocks        int
	RefusalBlocks int
	// gen counts the changes of the network's layout (partitions, heals,
	// tills added or retired); evaluate skips the venues' quorum when
	// neither it, the clock nor the admitted venues changed since.
	gen       uint64
	evalKey   evalKey
	evalValid bool
	// carrier, if set, carries ops between venues instead of the direct
	// delivery to the group (see SetCarrier).
	carrier Carrier
}

// Carrier carries the ops venues make to the other venues, in place of
// the harness's direct delivery: a real network (see netCarrier).
type Carrier interface {
	// Emitted is told of each op venue v made, already in v's replica.
	// It must not deliver it to the other venues before the harness lets
	// the network run (the caller's business).
	Emitted(v int, op crdt.Op)
}

// SetCarrier hands the carriage of ops to c: from then on, an op a venue
// makes is added to its own replica and given to c, never delivered by
// the harness to the other venues; Heal and Partition only change the
// layout the decisions read (the caller runs the network's anti-entropy
// and waits for it). Held gossip is flushed first.
func (h *Harness) SetCarrier(c Carrier) error {
	if err := h.Flush(); err != nil {
		return err
	}
	h.carrier = c
	return nil
}

// evalKey is what the venues' sync state depends on.
type evalKey struct {
	now, gen uint64
	venues   int
}

// heldOp is an op made while gossip is held, with the group it goes to.
type heldOp struct {
	from  int
	group int
	op    crdt.Op
}

// deriveSigner makes the signer of a role ("federation", "venue/3") under
// the seed, so keys do not depend on the order random numbers are drawn in.
func deriveSigner(seed uint64, role string) (*crdt.Signer, error) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seed)
	h := sha256.Sum256(append(append([]byte("cagnotte/simulations/key/"), b[:]...), role...))
	return crdt.SignerFromSeed(h[:])
}

// NewHarness creates the federation (genesis with cfg.Settings, one
// admission per venue), delivers its chain to every replica and starts with
// every venue hearing every other one.
func NewHarness(cfg HarnessConfig) (*Harness, error) {
	if cfg.Venues < 2 {
		return nil, fmt.Errorf("simulations: need at least 2 venues, got %d", cfg.Venues)
	}
	h := &Harness{cfg: cfg, now: cfg.Start, byKey: map[crdt.PublicKey][]int{}, group: make([]int, cfg.Venues)}
	fedSigner, err := deriveSigner(cfg.Seed, "federation")
	if err != nil {
		return nil, err
	}
	h.fedKey = fedSigner.Public()
	fed := crdt.NewAuthor(fedSigner, crdt.NewClock(h.Now), 0, crdt.OpID{})
	chain := []crdt.Op{fed.Make(&crdt.Genesis{Name: "Simulated federation", Currency: "EUR", Settings: cfg.Settings})}
	for i := range cfg.Venues {
		s, err := deriveSigner(cfg.Seed, fmt.Sprintf("venue/%d", i))
		if err != nil {
			return nil, err
		}
		v := &Venue{
			Index:   i,
			Signer:  s,
			Author:  crdt.NewAuthor(s, crdt.NewClock(h.Now), 0, crdt.OpID{}),
			Replica: crdt.NewReplica(h.fedKey),
			Reserve: crdt.NewReservationTable(0),
			Twin:    -1,
		}
		v.Ledger.Reset(0)
		h.venues = append(h.venues, v)
		h.byKey[s.Public()] = []int{i}
		chain = append(chain, fed.Make(&crdt.Admit{Venue: s.Public(), Name: fmt.Sprintf("Venue %d", i)}))
	}
	for _, v := range h.venues {
		for _, op := range chain {
			if err := v.Replica.Deliver(op); err != nil {
				return nil, fmt.Errorf("simulations: federation chain: %w", err)
			}
		}
	}
	h.heardAt = make([][]int64, cfg.Venues)
	for i := range h.heardAt {
		h.heardAt[i] = make([]int64, cfg.Venues)
	}
	h.evaluate()
	return h, nil
}

// Now returns the virtual clock, Unix ms.
func (h *Harness) Now() int64 { return h.now }

// AdvanceTo moves the virtual clock forward to t (never back) and
// re-evaluates every venue's sync state.
func (h *Harness) AdvanceTo(t int64) {
	if t > h.now {
		h.now = t
	}
	h.evaluate()
}

// Venue returns venue i.
func (h *Harness) Venue(i int) *Venue { return h.venues[i] }

// Len returns the number of venues.
func (h *Harness) Len() int { return len(h.venues) }

// Settings returns the settings in force (as venue 0 folds them).
func (h *Harness) Settings() crdt.Settings { return h.venues[0].Replica.Set.State.Settings }

// Group returns venue v's partition group.
func (h *Harness) Group(v int) int { return h.group[v] }

// Groups returns the active venues of each group, in group order.
func (h *Harness) Groups() [][]int {
	n := slices.Max(h.group) + 1
	out := make([][]int, n)
	for v, g := range h.group {
		if !h.venues[v].Retired {
			out[g] = append(out[g], v)
		}
	}
	return out
}

// refreshHeard records that venues of one group hear each other now.
func (h *Harness) refreshHeard() {
	for v := range h.venues {
		for u := range h.venues {
			if h.group[v] == h.group[u] {
				h.heardAt[v][u] = h.now
			}
		}
	}
}

// Partition splits the network: groups must cover every active venue
// exactly once (a retired till may be left out: it follows the venue it
// copied). Ops travel within a group at once (unless gossip is held) and
// never across groups until Heal.
func (h *Harness) Partition(groups [][]int) error {
	if err := h.Flush(); err != nil {
		return err
	}
	seen := make([]bool, len(h.venues))
	next := make([]int, len(h.venues))
	for g, members := range groups {
		if len(members) == 0 {
			return fmt.Errorf("simulations: group %d is empty", g)
		}
		for _, v := range members {
			if v < 0 || v >= len(h.venues) || seen[v] {
				return fmt.Errorf("simulations: venue %d missing or twice in the partition", v)
			}
			seen[v] = true
			next[v] = g
		}
	}
	for v, ok := range seen {
		switch {
		case ok:
		case h.venues[v].Retired && h.venues[v].Twin >= 0 && seen[h.venues[v].Twin]:
			next[v] = next[h.venues[v].Twin]
		default:
			return fmt.Errorf("simulations: the partition leaves venue %d out", v)
		}
	}
	h.refreshHeard() // they heard each other up to now
	h.group = next
	h.gen++
	h.evaluate()
	return nil
}

// Heal reconnects every venue: held gossip is delivered, then a full
// anti-entropy exchange (each replica pulls from every other the ranges
// its version vector lacks through the catch-up path, and the branches of
// a forked venue it lacks), then the automatic blocks the merged ledger
// calls for.
func (h *Harness) Heal() error {
	if err := h.Flush(); err != nil {
		return err
	}
	clear(h.group)
	h.gen++
	h.refreshHeard()
	if h.carrier != nil {
		// The network's anti-entropy merges the replicas; the caller
		// waits for it, then runs AfterHeal.
		h.evaluate()
		return nil
	}
	for _, dst := range h.venues {
		if dst.Retired {
			continue
		}
		for _, src := range h.venues {
			if src != dst && !src.drained {
				if err := pull(dst.Replica, src.Replica); err != nil {
					return fmt.Errorf("simulations: heal %d <- %d: %w", dst.Index, src.Index, err)
				}
			}
		}
	}
	// Reservations of payments now seen everywhere are released.
	for _, ven := range h.venues {
		ven.Reserve.Expire(h.now)
		ven.drained = ven.Retired
	}
	ds := h.Digests()
	for i := range ds {
		if ds[i] != ds[0] {
			return fmt.Errorf("simulations: after the heal replica %d has digest %x, replica 0 %x", i, ds[i][:4], ds[0][:4])
		}
	}
	h.evaluate()
	return h.settle(nil)
}

// AfterHeal is what Heal does once the replicas hold the same ops, for a
// carrier's heal: reservations of payments now seen everywhere are
// released, the sync state evaluated, and the automatic blocks the merged
// ledger calls for made.
func (h *Harness) AfterHeal() error {
	for _, ven := range h.venues {
		ven.Reserve.Expire(h.now)
		ven.drained = ven.Retired
	}
	h.evaluate()
	return h.settle(nil)
}

// Delivered tells venue v's node of ops a carrier delivered to it: the
// reservation it held for a payment it now sees is released, as
// Harness.deliver does, and it returns the cards the ops are about.
func (h *Harness) Delivered(v int, ops []crdt.Op) []crdt.CardID {
	var cards []crdt.CardID
	ven := h.venues[v]
	for i := range ops {
		ven.Reserve.ReleasePayment(&ops[i])
		if c, ok := opCard(ops[i]); ok {
			cards = append(cards, c)
		}
	}
	return cards
}

// Settle runs the automatic blocks on cards (all cards with a negative
// balance if nil) at every venue, as after a delivery.
func (h *Harness) Settle(cards []crdt.CardID) error {
	if cards != nil {
		slices.Sort(cards)
		cards = slices.Compact(cards)
	}
	return h.settle(cards)
}

// pull gives dst every range src holds and dst lacks, as catch-up does,
// then the ops of forked venues that version vectors cannot show (the
// branch dst lacks), as anti-entropy must.
func pull(dst, src *crdt.Replica) error {
	for _, r := range src.Set.Missing(dst.Set.VersionVector()) {
		ops := make([]crdt.Op, 0, r.Len())
		if err := src.Log.ReadRange(r.Author, r.From, r.To, func(op crdt.Op) error {
			ops = append(ops, op)
			return nil
		}); err != nil {
			return err
		}
		if err := ingestRange(dst, ops); err != nil {
			return err
		}
	}
	for k, a := range src.Set.Authors {
		b := dst.Set.Authors[k]
		switch {
		case b != nil && a.NCounted == b.NCounted && a.Acc == b.Acc && a.Fork == b.Fork:
			continue // the same ops
		case a.Fork == 0 && a.EvidenceMax == 0:
			// src holds one chain: dst has it all if its chain holds the
			// head (two chains of one length that neither knows forked
			// look alike to version vectors).
			if a.Seq == 0 || b != nil && holds(dst, k, a.Seq, a.Head) {
				continue
			}
		}
		if err := pullBranches(dst, src, k); err != nil {
			return err
		}
	}
	return nil
}

// holds reports whether a replica holds author's op id at seq in its
// chain, hence every op before it (a chain is contiguous and linked; an
// op held as evidence says nothing of its ancestors).
func holds(r *crdt.Replica, author crdt.PublicKey, seq uint64, id crdt.OpID) bool {
	found := false
	if head, _ := r.Set.Head(author); head >= seq {
		_ = r.Log.ReadRange(author, seq, seq, func(op crdt.Op) error {
			found = op.ID() == id
			return nil
		})
	}
	return found
}

// authorOps returns every op of author a replica holds, chain and
// evidence, by seq (chain op first at one seq).
func authorOps(r *crdt.Replica, a crdt.PublicKey) ([]crdt.Op, error) {
	var out []crdt.Op
	seq, _ := r.Set.Head(a)
	if err := r.Log.ReadRange(a, 1, seq, func(op crdt.Op) error {
		out = append(out, op)
		return nil
	}); err != nil {
		return nil, err
	}
	var ev []crdt.Op
	for _, op := range r.Set.EvidenceOps {
		if op.Author == a {
			ev = append(ev, op)
		}
	}
	slices.SortFunc(ev, func(x, y crdt.Op) int {
		if c := cmp.Compare(x.Seq, y.Seq); c != 0 {
			return c
		}
		xi, yi := x.ID(), y.ID()
		return bytes.Compare(xi[:], yi[:])
	})
	out = append(out, ev...)
	slices.SortStableFunc(out, func(x, y crdt.Op) int { return cmp.Compare(x.Seq, y.Seq) })
	return out, nil
}

// pullBranches offers dst, in seq order, every op of author a that src
// holds and dst does not: the other branch of a forked venue, which the
// op set keeps as evidence and counts.
func pullBranches(dst, src *crdt.Replica, a crdt.PublicKey) error {
	have, err := authorOps(dst, a)
	if err != nil {
		return err
	}
	ids := make(map[crdt.OpID]bool, len(have))
	for _, op := range have {
		ids[op.ID()] = true
	}
	ops, err := authorOps(src, a)
	if err != nil {
		return err
	}
	for _, op := range ops {
		if ids[op.ID()] {
			continue
		}
		if err := deliverTo(dst, op); err != nil {
			return fmt.Errorf("branch op %s#%d: %w", op.Author.Short(), op.Seq, err)
		}
	}
	return nil
}

// deliverTo offers op to a replica; an op it already holds is not an
// error.
func deliverTo(r *crdt.Replica, op crdt.Op) error {
	if err := r.Deliver(op); err != nil && !errors.Is(err, crdt.ErrDuplicate) {
		return err
	}
	return nil
}

// ingestRange adds one author's contiguous run to a replica (links hashed,
// newest signature verified) and logs what was added. A run that leaves
// the replica's chain (a forked venue) is kept as evidence by the op set:
// that is not a failure.
func ingestRange(r *crdt.Replica, ops []crdt.Op) error {
	if len(ops) == 0 {
		return nil
	}
	before, _ := r.Set.Head(ops[0].Author)
	_, err := r.Set.AddRange(ops)
	after, _ := r.Set.Head(ops[0].Author)
	for _, op := range ops {
		if op.Seq > before && op.Seq <= after {
			if lerr := r.Log.Append(op); lerr != nil {
				return lerr
			}
		}
	}
	// A version vector counts a forked venue's branches, so a range may
	// start past what this replica holds of the branch it extends (a gap):
	// the branch exchange that follows (pullBranches) brings those ops.
	if err != nil && !errors.Is(err, crdt.ErrEquivocation) && !errors.Is(err, crdt.ErrGap) {
		return err
	}
	for _, op := range r.Pending.Drain(r.Set) {
		if err := r.Log.Append(op); err != nil {
			return err
		}
	}
	if r.Set.Stale {
		return r.Set.Refold(r.Log)
	}
	return nil
}

// lastHeard returns when venue v last heard venue u (Unix ms, 0 never):
// now for a venue of its own group, the last heartbeat before the split
// with DetectionLag, never otherwise. A retired till is never heard.
func (h *Harness) lastHeard(v, u int) int64 {
	if h.venues[u].Retired {
		return 0
	}
	if h.group[v] == h.group[u] {
		return h.now
	}
	if !h.cfg.DetectionLag {
		return 0
	}
	return h.heardAt[v][u]
}

// quorum applies the isolation rule nodes use (crdt.Settings.Quorum) to
// the other admitted, unrevoked venues venue v knows. A key signing on two
// tills is heard when either is.
func (h *Harness) quorum(v int) (inSync bool, quorumAt int64) {
	st := h.venues[v].Replica.Set.State
	self := h.venues[v].Key()
	var heard []int64
	for k, ven := range st.Venues {
		if ven.Revoked || k == self {
			continue
		}
		var t int64
		for _, u := range h.byKey[k] {
			t = max(t, h.lastHeard(v, u))
		}
		heard = append(heard, t)
	}
	inSync, quorumAt, _ = st.Settings.Quorum(heard, h.now)
	return inSync, quorumAt
}

// reachable reports whether venue v reaches a venue signing with key k
// right now: one of its tills is in v's group.
func (h *Harness) reachable(v int, k crdt.PublicKey) (int, bool) {
	for _, u := range h.byKey[k] {
		if !h.venues[u].Retired && h.group[u] == h.group[v] {
			return u, true
		}
	}
	return -1, false
}

// evaluate updates every venue's sync state as a node does: on losing sync
// the offline ledger is rebuilt from the venue's own payments since the
// quorum was last heard; on regaining it, it is emptied.
func (h *Harness) evaluate() {
	k := evalKey{now: uint64(h.now), gen: h.gen}
	for _, v := range h.venues {
		k.venues += len(v.Replica.Set.State.Venues)
	}
	if h.evalValid && k == h.evalKey {
		return // nothing the quorum reads changed
	}
	h.evalKey, h.evalValid = k, true
	if h.cfg.DetectionLag {
		h.refreshHeard()
	}
	for i, v := range h.venues {
		inSync, quorumAt := h.quorum(i)
		iso := !inSync
		if iso == v.Isolated {
			continue
		}
		v.Isolated = iso
		if iso {
			since := h.now
			if quorumAt > 0 && quorumAt < since {
				since = quorumAt
			}
			v.Ledger = crdt.RebuildOfflineLedger(v.Replica.Set.State, v.Key(), since)
			v.Periods++
		} else {
			v.Ledger.Reset(0)
		}
	}
}

// WouldSync reports whether a group of n venues (n distinct keys) stays in
// sync under the isolation rule (crdt.Settings.Quorum) once heartbeats
// from outside it have expired.
func (h *Harness) WouldSync(n int) bool {
	others := len(h.venues[0].Replica.Set.State.ReservationVenues()) - 1
	heard := make([]int64, max(others, 0))
	for i := 0; i < n-1 && i < len(heard); i++ {
		heard[i] = h.now
	}
	inSync, _, _ := h.Settings().Quorum(heard, h.now)
	return inSync
}

// HoldGossip makes ops wait for Flush before they reach the other venues
// of their group: the gossip delay (milliseconds) inside which venues in
// sync decide on views that miss each other's newest payments.
func (h *Harness) HoldGossip() { h.hold = true }

// Flush delivers the held ops to the groups they were made in, in the
// order they were made, stops holding, and runs the automatic blocks.
func (h *Harness) Flush() error {
	h.hold = false
	held := h.held
	h.held = nil
	var cards []crdt.CardID
	for _, m := range held {
		for u, ven := range h.venues {
			if u == m.from || h.group[u] != m.group {
				continue
			}
			if err := h.deliver(ven, m.op); err != nil {
				return fmt.Errorf("simulations: venue %d refused held %s from %d: %w", u, m.op.Kind, m.from, err)
			}
		}
		if c, ok := opCard(m.op); ok {
			cards = append(cards, c)
		}
	}
	if len(held) == 0 {
		return nil
	}
	return h.settle(cards)
}

// deliver gives op to a venue's replica and lets it act as a reservation
// coordinator does on seeing a payment: release the reservation it held
// for the op's author.
func (h *Harness) deliver(ven *Venue, op crdt.Op) error {
	if err := deliverTo(ven.Replica, op); err != nil {
		return err
	}
	ven.Reserve.ReleasePayment(&op)
	return nil
}

// opCard returns the card a money or card op is about.
func opCard(op crdt.Op) (crdt.CardID, bool) {
	b, err := op.Decode()
	if err != nil {
		return "", false
	}
	switch b := b.(type) {
	case *crdt.Payment:
		return b.Card, true
	case *crdt.Refund:
		return b.Card, true
	case *crdt.TopUp:
		return b.Card, true
	case *crdt.Correction:
		return b.Card, true
	}
	return "", false
}

// emit makes venue v's next op, adds it to v's replica and delivers it to
// the other venues of v's group (at once, as gossip does, or at Flush
// while gossip is held); then the venues act on the ledger it changed
// (settle).
func (h *Harness) emit(v int, body crdt.Body) (crdt.Op, error) {
	op, err := h.broadcast(v, body)
	if err != nil {
		return op, err
	}
	if c, ok := opCard(op); ok {
		return op, h.settle([]crdt.CardID{c})
	}
	return op, nil
}

// broadcast makes venue v's next op and delivers it to v's group.
func (h *Harness) broadcast(v int, body crdt.Body) (crdt.Op, error) {
	ven := h.venues[v]
	if ven.Retired {
		return crdt.Op{}, fmt.Errorf("simulations: venue %d is retired", v)
	}
	op := ven.Author.Make(body)
	if err := h.deliver(ven, op); err != nil {
		return op, fmt.Errorf("simulations: venue %d refused its own %s: %w", v, op.Kind, err)
	}
	if h.carrier != nil {
		h.carrier.Emitted(v, op)
		return op, nil
	}
	if h.hold {
		h.held = append(h.held, heldOp{from: v, group: h.group[v], op: op})
		return op, nil
	}
	targets := make([]int, 0, len(h.venues))
	for u := range h.venues {
		if u != v && h.group[u] == h.group[v] {
			targets = append(targets, u)
		}
	}
	errs := h.deliverAll(targets, op)
	for i, err := range errs {
		if err != nil {
			return op, fmt.Errorf("simulations: venue %d refused %s from %d: %w", targets[i], op.Kind, v, err)
		}
	}
	return op, nil
}

// parallelMin is the number of receivers from which deliverAll splits
// the work between the cores.
const parallelMin = 8

// deliverAll delivers op to each target venue and returns each one's
// error. Every replica checks the op's signature on its own, as a node
// does: with many receivers the replicas are split between goroutines
// (one per core, each owning its replicas), which all end before it
// returns. Replicas share nothing, so the outcome does not depend on the
// split.
func (h *Harness) deliverAll(targets []int, op crdt.Op) []error {
	return h.parallel(len(targets), func(i int) error { return h.deliver(h.venues[targets[i]], op) })
}

// parallel runs fn(0..n-1), each i touching only its own venue's state,
// split between goroutines (one per core, at most 4) when n ≥
// parallelMin; they all end before it returns. It returns each i's error.
func (h *Harness) parallel(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	workers := min(runtime.GOMAXPROCS(0), 4, n/(parallelMin/2))
	if n < parallelMin || workers < 2 {
		for i := range n {
			errs[i] = fn(i)
		}
		return errs
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				errs[i] = fn(i)
			}
		}()
	}
	wg.Wait()
	return errs
}

// FlushBatched is Flush for a backlog (cards issued before the run): each
// venue receives the held ops of one author as one run, added as catch-up
// adds a range (crdt.OpSet.AddRange: links hashed, the newest signature
// verified), instead of one op at a time; the venues are served in
// parallel. Then the venues act on the ledger (settle).
func (h *Harness) FlushBatched() error {
	h.hold = false
	held := h.held
	h.held = nil
	if len(held) == 0 {
		return nil
	}
	type run struct {
		from, group int
		ops         []crdt.Op
	}
	var runs []*run
	byAuthor := map[crdt.PublicKey]*run{}
	var cards []crdt.CardID
	for _, m := range held {
		r := byAuthor[m.op.Author]
		if r == nil || r.from != m.from || r.group != m.group {
			r = &run{from: m.from, group: m.group}
			byAuthor[m.op.Author] = r
			runs = append(runs, r)
		}
		r.ops = append(r.ops, m.op)
		if c, ok := opCard(m.op); ok {
			cards = append(cards, c)
		}
	}
	errs := h.parallel(len(h.venues), func(u int) error {
		ven := h.venues[u]
		for _, r := range runs {
			if u == r.from || h.group[u] != r.group || ven.Retired {
				continue
			}
			if err := ingestRange(ven.Replica, r.ops); err != nil {
				return fmt.Errorf("simulations: venue %d refused held ops from %d: %w", u, r.from, err)
			}
			for i := range r.ops {
				ven.Reserve.ReleasePayment(&r.ops[i])
			}
		}
		return nil
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	slices.Sort(cards)
	return h.settle(slices.Compact(cards))
}

// settle is the node's automatic block after its ledger changed: each
// venue, in venue order, blocks a card the rule says to block
// (crdt.Card.NeedsAutoBlock: money actually missing after merge, newer
// than the card's last block-state change), when the federation settings
// ask for AutoBlock. cards nil looks at every card. Each block op reaches
// the venue's group before the next venue looks, so one group blocks a
// card once.
func (h *Harness) settle(cards []crdt.CardID) error {
	// With a carrier, a block op reaches the group only when the network
	// runs: the group's first venue to see the need blocks for it.
	type groupCard struct {
		group int
		card  crdt.CardID
	}
	var blocked map[groupCard]bool
	if h.carrier != nil {
		blocked = map[groupCard]bool{}
	}
	for v, ven := range h.venues {
		if ven.Retired {
			continue
		}
		st := ven.Replica.Set.State
		if !st.Settings.AutoBlock || !ven.Replica.Set.IsMember(ven.Key()) {
			continue
		}
		ids := cards
		if ids == nil {
			for id, c := range st.Cards {
				if c.Balance < 0 {
					ids = append(ids, id)
				}
			}
			slices.Sort(ids)
		}
		for _, id := range ids {
			if !st.Card(id).NeedsAutoBlock() {
				continue
			}
			if blocked != nil {
				k := groupCard{h.group[v], id}
				if blocked[k] {
					continue
				}
				blocked[k] = true
			}
			if _, err := h.broadcast(v, &crdt.CardBlock{Card: id, Reason: "automatic: balance negative after merge"}); err != nil {
				return err
			}
			h.Blocks++
		}
	}
	return nil
}

// blockAfterRefusal is the node's block after a refused payment, when
// crdt.BlockAfterRefusal says so (a stale stamp presented while isolated)
// and the settings ask for AutoBlock.
func (h *Harness) blockAfterRefusal(v int, card crdt.CardID, err error, isolated bool) error {
	if !crdt.BlockAfterRefusal(err, isolated) {
		return nil
	}
	st := h.venues[v].Replica.Set.State
	if c := st.Card(card); !st.Settings.AutoBlock || c == nil || c.Blocked {
		return nil
	}
	if _, berr := h.broadcast(v, &crdt.CardBlock{Card: card, Reason: "automatic: stale stamp presented while isolated"}); berr != nil {
		return berr
	}
	h.RefusalBlocks++
	return nil
}

// TopUp credits a card at venue v (cash desk) under crdt.State.DecideTopUp
// (not a blocked card, not beyond the balance ceiling). Like a node, it
// accepts a top-up while isolated.
func (h *Harness) TopUp(v int, card crdt.CardID, amount uint64) (crdt.Op, error) {
	h.evaluate()
	if _, err := h.venues[v].Replica.Set.State.DecideTopUp(card, amount); err != nil {
		return crdt.Op{}, err
	}
	return h.emit(v, &crdt.TopUp{Card: card, Amount: amount, Method: crdt.MethodCash})
}

// gate is node/quorum.go's paymentQuorum on venue v for a payment or
// refund of amount: lost says the venue, though it believes itself in
// sync, cannot reach a quorum now (or the card's reservation
// coordinators), so the caps apply; err is ErrCardBusy when another venue
// holds the card. With grant, a reservation is taken with the reachable
// coordinators (crdt.ReservationTable.Grant); without, their answers are
// only looked up (a probe that changes nothing).
func (h *Harness) gate(v int, card crdt.CardID, amount uint64, grant bool) (lost bool, err error) {
	ven := h.venues[v]
	if ven.Isolated {
		return false, nil
	}
	if !h.cfg.NoQuorumCheck && !h.reachesQuorum(v) {
		return true, nil
	}
	st := ven.Replica.Set.State
	if h.cfg.NoReservations || !crdt.NeedsReservation(st.Settings, amount) {
		return false, nil
	}
	coords := crdt.Coordinators(card, st.ReservationVenues(), crdt.ReservationCoordinators)
	var granted, busy, failed int
	var got []int
	for _, k := range coords {
		u, ok := h.reachable(v, k)
		if !ok {
			failed++
			continue
		}
		table := h.venues[u].Reserve
		if grant {
			if _, gerr := table.Grant(card, ven.Key(), amount, h.now); gerr != nil {
				busy++
				continue
			}
			got = append(got, u)
			granted++
			continue
		}
		if r, held := table.Holder(card, h.now); held && r.Venue != ven.Key() {
			busy++
		} else {
			granted++
		}
	}
	_, rerr := crdt.ReservationOutcome(len(coords), granted, busy, failed)
	if rerr != nil {
		for _, u := range got {
			h.venues[u].Reserve.Release(card, ven.Key())
		}
	}
	switch {
	case errors.Is(rerr, crdt.ErrCardBusy):
		return false, fmt.Errorf("simulations: venue %d: %w", v, rerr)
	case rerr != nil:
		return true, nil
	}
	return false, nil
}

// release gives back venue v's reservation of card at every coordinator
// (the payment it reserved for was refused).
func (h *Harness) release(v int, card crdt.CardID) {
	for _, ven := range h.venues {
		ven.Reserve.Release(card, h.venues[v].Key())
	}
}

// Decide runs the payment rules at venue v now, with its sync state, the
// quorum check and the card's reservation looked up (not taken), and its
// ledger, without paying.
func (h *Harness) Decide(v int, card crdt.CardID, amount uint64, stamp *crdt.CardStamp) (crdt.PaymentDecision, error) {
	h.evaluate()
	lost, err := h.gate(v, card, amount, false)
	if err != nil {
		return crdt.PaymentDecision{}, err
	}
	return h.decide(v, card, amount, stamp, lost)
}

// decide is crdt.State.DecidePayment at venue v: isolated when the venue
// is, or when the gate found the quorum lost (the caps then count the
// card's payments here over the last IsolationAfter, crdt.CardLedger).
func (h *Harness) decide(v int, card crdt.CardID, amount uint64, stamp *crdt.CardStamp, lost bool) (crdt.PaymentDecision, error) {
	ven := h.venues[v]
	st := ven.Replica.Set.State
	in := crdt.PaymentInput{Card: card, Amount: amount, Stamp: stamp, Now: h.now, Isolated: ven.Isolated || lost}
	ledger := &ven.Ledger
	if lost {
		l := crdt.CardLedger(st, ven.Key(), card, h.now-int64(st.Settings.IsolationAfter))
		ledger = &l
	}
	return st.DecidePayment(ven.Key(), in, ledger)
}

// CapRefused names the offline cap that refuses a payment at venue v now
// ("floor", "validity", "card_amount", "card_count", "venue_budget"; ""
// if no cap refuses it). It asks crdt.State.DecidePayment itself, with the
// venue's ledger reduced to the part each cap reads (none: the floor
// limit alone; since: the validity period; the card's amount, then its
// count; the rest is the venue budget), so the labels follow the rule
// wherever it changes. When the floor limit and the validity period both
// refuse, it says floor.
func (h *Harness) CapRefused(v int, card crdt.CardID, amount uint64, stamp *crdt.CardStamp) string {
	lost, err := h.gate(v, card, amount, false)
	if err != nil {
		return ""
	}
	ven := h.venues[v]
	st := ven.Replica.Set.State
	in := crdt.PaymentInput{Card: card, Amount: amount, Stamp: stamp, Now: h.now, Isolated: ven.Isolated || lost}
	full := ven.Ledger
	if lost {
		full = crdt.CardLedger(st, ven.Key(), card, h.now-int64(st.Settings.IsolationAfter))
	}
	refused := func(l *crdt.OfflineLedger) bool {
		_, err := st.DecidePayment(ven.Key(), in, l)
		return errors.Is(err, crdt.ErrOfflineCap)
	}
	var part crdt.OfflineLedger
	part.Reset(full.Since)
	switch {
	case !refused(&full):
		return ""
	case refused(nil):
		return "floor"
	case refused(&part):
		return "validity"
	}
	part.Amount[card] = full.Amount[card]
	if refused(&part) {
		return "card_amount"
	}
	part.Count[card] = full.Count[card]
	if refused(&part) {
		return "card_count"
	}
	return "venue_budget"
}

// reachesQuorum reports whether venue v can reach a quorum of the other
// venues right now: the venues of its group.
func (h *Harness) reachesQuorum(v int) bool {
	st := h.venues[v].Replica.Set.State
	self := h.venues[v].Key()
	others, reach := 0, 0
	for k, ven := range st.Venues {
		if ven.Revoked || k == self {
			continue
		}
		others++
		if _, ok := h.reachable(v, k); ok {
			reach++
		}
	}
	_, _, need := st.Settings.Quorum(make([]int64, others), 0)
	return reach >= need
}

// Paid is an accepted payment.
type Paid struct {
	Op       crdt.Op
	ID       crdt.OpID
	Decision crdt.PaymentDecision
	// Offline is true when the venue took it under the caps (isolated, or
	// in sync without a quorum or the card's coordinators); Period is then
	// the venue's isolation period.
	Offline bool
	Period  int
	// Stamp is the new signed stamp to write back on the card.
	Stamp []byte
}

// Pay is node/money.go's pay on venue v: the quorum check and the card's
// reservation above the floor limit, the rules with the venue's sync state
// and offline ledger, a signed payment op with the decision's counters and
// the stamp's signer, the ledger recorded when offline, and a new signed
// stamp. A refusal that calls for a block (crdt.BlockAfterRefusal) blocks
// the card.
func (h *Harness) Pay(v int, card crdt.CardID, amount uint64, stamp *crdt.CardStamp, label string) (Paid, error) {
	h.evaluate()
	ven := h.venues[v]
	lost, err := h.gate(v, card, amount, true)
	if err != nil {
		return Paid{}, err
	}
	d, err := h.decide(v, card, amount, stamp, lost)
	if err != nil {
		h.release(v, card)
		if berr := h.blockAfterRefusal(v, card, err, ven.Isolated || lost); berr != nil {
			return Paid{}, berr
		}
		return Paid{}, err
	}
	offline, period := ven.Isolated || lost, 0
	if ven.Isolated {
		period = ven.Periods
	} else if lost {
		// Before isolation is noticed: a period of its own (capped by
		// the card's recent payments, then counted again by the ledger of
		// the isolation that follows, so a separate cap is an upper bound).
		period = -1 - ven.Periods
	}
	op, err := h.emit(v, &crdt.Payment{Card: card, Amount: amount, Counter: d.Counter, Label: label, StampCounter: d.StampCounter, StampVenue: d.StampVenue})
	if err != nil {
		return Paid{}, err
	}
	if offline {
		ven.Ledger.Record(card, amount)
	}
	ns := crdt.CardStamp{Card: card, Counter: d.Counter, Balance: d.Balance, Time: h.now / 1000}
	if err := ven.Signer.SignStamp(&ns); err != nil {
		return Paid{}, fmt.Errorf("simulations: stamp: %w", err)
	}
	return Paid{Op: op, ID: op.ID(), Decision: d, Offline: offline, Period: period, Stamp: ns.Encode()}, nil
}

// Refund is node/money.go's refund on venue v: the same quorum check and
// reservation as a payment, then crdt.State.DecideRefund (refused while
// isolated or in the detection window), then a signed refund op. It
// returns the op and the balance after it as the venue sees it.
func (h *Harness) Refund(v int, card crdt.CardID, amount uint64, reason string) (crdt.Op, int64, error) {
	h.evaluate()
	ven := h.venues[v]
	lost, err := h.gate(v, card, amount, true)
	if err != nil {
		return crdt.Op{}, 0, err
	}
	isolated := ven.Isolated || lost
	if h.cfg.RefundWithoutQuorum {
		isolated = false // the broken rule: the quorum input bypassed
	}
	bal, err := ven.Replica.Set.State.DecideRefund(crdt.RefundInput{Card: card, Amount: amount, Isolated: isolated})
	if err != nil {
		h.release(v, card)
		return crdt.Op{}, 0, err
	}
	op, err := h.emit(v, &crdt.Refund{Card: card, Amount: amount, Reason: reason})
	return op, bal, err
}

// CopyVenue copies venue v's data dir to a second till: a new venue index
// with a replica holding every op v holds and an author made with
// crdt.NewAuthor from the same key and the same (seq, head). Both tills
// then sign with one key; put them on two sides of a partition and they
// sign two ops at one seq. The copy starts in v's group.
func (h *Harness) CopyVenue(v int) (int, error) {
	if err := h.Flush(); err != nil {
		return 0, err
	}
	src := h.venues[v]
	r := crdt.NewReplica(h.fedKey)
	if err := pull(r, src.Replica); err != nil {
		return 0, fmt.Errorf("simulations: copy of venue %d: %w", v, err)
	}
	seq, head := src.Replica.Set.Head(src.Key())
	if seq != src.Author.Seq() {
		return 0, fmt.Errorf("simulations: venue %d signed %d ops, its replica holds %d", v, src.Author.Seq(), seq)
	}
	i := len(h.venues)
	t := &Venue{
		Index:   i,
		Signer:  src.Signer,
		Author:  crdt.NewAuthor(src.Signer, crdt.NewClock(func() int64 { return h.Now() + tillSkew }), seq, head),
		Replica: r,
		Reserve: crdt.NewReservationTable(0),
		Twin:    v,
	}
	t.Ledger.Reset(0)
	h.venues = append(h.venues, t)
	h.byKey[t.Key()] = append(h.byKey[t.Key()], i)
	h.group = append(h.group, h.group[v])
	for u := range h.heardAt {
		h.heardAt[u] = append(h.heardAt[u], h.heardAt[u][v])
	}
	h.heardAt = append(h.heardAt, slices.Clone(h.heardAt[v]))
	h.gen++
	h.evaluate()
	return i, nil
}

// ErrAckLost is returned by Restart when the replica a node restarts
// with lacks an op the venue had signed (and so acknowledged).
var ErrAckLost = errors.New("simulations: an acknowledged op is lost")

// Restart replaces venue v's node after a crash (kill -9): rep is its
// replica as read back from its store, the author continues its chain
// from rep's head, the reservation table (memory) starts empty, and the
// sync state and offline ledger are evaluated anew, as a node does when it
// starts. rep must hold every op v signed (ErrAckLost otherwise).
func (h *Harness) Restart(v int, rep *crdt.Replica) error {
	ven := h.venues[v]
	seq, head := rep.Set.Head(ven.Key())
	if seq != ven.Author.Seq() {
		return fmt.Errorf("%w: venue %d signed %d ops, restarts with %d", ErrAckLost, v, ven.Author.Seq(), seq)
	}
	ven.Replica = rep
	ven.Author = crdt.NewAuthor(ven.Signer, crdt.NewClock(h.Now), seq, head)
	ven.Reserve = crdt.NewReservationTable(0)
	ven.Isolated = false
	ven.Ledger.Reset(0)
	h.gen++
	h.evaluate()
	return nil
}

// tillSkew is how far a copied till's clock runs ahead of the virtual
// clock, in ms: two machines never share a clock, and without it two
// tills with one key could sign byte-identical ops (same seq, prev, HLC
// and body), which are one op.
const tillSkew = 7

// Retire switches a till off: it takes no traffic and signs nothing more.
func (h *Harness) Retire(v int) {
	h.venues[v].Retired = true
	h.gen++
}

// Active returns the indices of the venues not retired, in order.
func (h *Harness) Active() []int {
	out := make([]int, 0, len(h.venues))
	for i, v := range h.venues {
		if !v.Retired {
			out = append(out, i)
		}
	}
	return out
}

// Digests returns the digest of every active replica (see Active).
func (h *Harness) Digests() [][32]byte {
	var out [][32]byte
	for _, i := range h.Active() {
		out = append(out, h.venues[i].Replica.Set.Digest())
	}
	return out
}

// LargestAllowed returns the largest amount venue v's rules (Decide) let
// card pay now with stamp, by bisection; the caller knows 1 is allowed.
func (h *Harness) LargestAllowed(v int, card crdt.CardID, stamp *crdt.CardStamp) uint64 {
	lo, hi := uint64(1), uint64(crdt.MaxAmount)
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if _, err := h.Decide(v, card, mid, stamp); err == nil {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}
