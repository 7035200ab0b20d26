package simulations

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

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
	// seen holds the conflict keys the venue already acted on (auto-block).
	seen map[string]bool
}

// Harness runs N venues of one federation in one process, on a virtual
// clock, over a partitionable network. It is deterministic and not safe for
// concurrent use.
type Harness struct {
	cfg    HarnessConfig
	now    int64
	fedKey crdt.PublicKey
	venues []*Venue
	byKey  map[crdt.PublicKey]int
	// group[v] is v's partition group; all 0 when healed.
	group []int
	// heardAt[v][u] is when v last heard u (DetectionLag).
	heardAt [][]int64
	// Blocks counts the automatic block ops made.
	Blocks int
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
	h := &Harness{cfg: cfg, now: cfg.Start, byKey: map[crdt.PublicKey]int{}, group: make([]int, cfg.Venues)}
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
			seen:    map[string]bool{},
		}
		v.Ledger.Reset(0)
		h.venues = append(h.venues, v)
		h.byKey[s.Public()] = i
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

// Groups returns the venues of each group, in group order.
func (h *Harness) Groups() [][]int {
	n := slices.Max(h.group) + 1
	out := make([][]int, n)
	for v, g := range h.group {
		out[g] = append(out[g], v)
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

// Partition splits the network: groups must cover every venue exactly
// once. Ops travel within a group at once and never across groups until
// Heal.
func (h *Harness) Partition(groups [][]int) error {
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
	if slices.Contains(seen, false) {
		return errors.New("simulations: the partition leaves a venue out")
	}
	h.refreshHeard() // they heard each other up to now
	h.group = next
	h.evaluate()
	return nil
}

// Heal reconnects every venue: a full anti-entropy exchange (each replica
// pulls the ranges it misses from every other through the catch-up path),
// then the automatic blocks the merged conflicts call for.
func (h *Harness) Heal() error {
	clear(h.group)
	h.refreshHeard()
	for _, dst := range h.venues {
		for _, src := range h.venues {
			if src != dst {
				if err := pull(dst.Replica, src.Replica); err != nil {
					return fmt.Errorf("simulations: heal %d <- %d: %w", dst.Index, src.Index, err)
				}
			}
		}
	}
	h.evaluate()
	return h.settle()
}

// pull gives dst every range src holds and dst lacks, as catch-up does.
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
	return nil
}

// ingestRange adds one author's contiguous run to a replica (links hashed,
// newest signature verified) and logs what was added.
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
	if err != nil {
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
// with DetectionLag, never otherwise.
func (h *Harness) lastHeard(v, u int) int64 {
	if h.group[v] == h.group[u] {
		return h.now
	}
	if !h.cfg.DetectionLag {
		return 0
	}
	return h.heardAt[v][u]
}

// quorum applies the isolation rule nodes use (crdt.Settings.Quorum) to
// the other admitted, unrevoked venues venue v knows.
func (h *Harness) quorum(v int) (inSync bool, quorumAt int64) {
	st := h.venues[v].Replica.Set.State
	self := h.venues[v].Signer.Public()
	var heard []int64
	for k, ven := range st.Venues {
		if ven.Revoked || k == self {
			continue
		}
		var t int64
		if u, ok := h.byKey[k]; ok {
			t = h.lastHeard(v, u)
		}
		heard = append(heard, t)
	}
	inSync, quorumAt, _ = st.Settings.Quorum(heard, h.now)
	return inSync, quorumAt
}

// isolatedNow reports whether venue v is isolated now.
func (h *Harness) isolatedNow(v int) bool {
	inSync, _ := h.quorum(v)
	return !inSync
}

// evaluate updates every venue's sync state as a node does: on losing sync
// the offline ledger is rebuilt from the venue's own payments since the
// quorum was last heard; on regaining it, it is emptied.
func (h *Harness) evaluate() {
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
			v.Ledger = crdt.RebuildOfflineLedger(v.Replica.Set.State, v.Signer.Public(), since)
			v.Periods++
		} else {
			v.Ledger.Reset(0)
		}
	}
}

// WouldSync reports whether a group of n venues stays in sync under the
// isolation rule once heartbeats from outside it have expired.
func (h *Harness) WouldSync(n int) bool {
	others := uint64(len(h.venues) - 1)
	fresh := uint64(n - 1)
	p := h.Settings().MinPeersPercent
	return !(fresh*100 < p*others || fresh == 0 && p > 0)
}

// emit makes venue v's next op, adds it to v's replica and delivers it at
// once to the other venues of v's group, as gossip does; then the venues
// act on the conflicts it revealed (settle).
func (h *Harness) emit(v int, body crdt.Body) (crdt.Op, error) {
	op, err := h.broadcast(v, body)
	if err != nil {
		return op, err
	}
	return op, h.settle()
}

// broadcast makes venue v's next op and delivers it to v's group.
func (h *Harness) broadcast(v int, body crdt.Body) (crdt.Op, error) {
	ven := h.venues[v]
	op := ven.Author.Make(body)
	if err := ven.Replica.Deliver(op); err != nil {
		return op, fmt.Errorf("simulations: venue %d refused its own %s: %w", v, op.Kind, err)
	}
	for u := range h.venues {
		if u == v || h.group[u] != h.group[v] {
			continue
		}
		if err := h.venues[u].Replica.Deliver(op); err != nil {
			return op, fmt.Errorf("simulations: venue %d refused %s from %d: %w", u, op.Kind, v, err)
		}
	}
	return op, nil
}

// settle is node/writer.go's autoBlock on every venue, in venue order: a
// venue whose replica holds a double-spend or stale-stamp conflict it had
// not seen blocks the card, when the federation settings ask for it and it
// does not already see the card blocked. Each block op reaches the venue's
// group before the next venue looks, so one group blocks a card once.
func (h *Harness) settle() error {
	for progress := true; progress; {
		progress = false
		for v, ven := range h.venues {
			st := ven.Replica.Set.State
			if len(st.Conflicts) == len(ven.seen) {
				continue
			}
			for _, c := range st.SortedConflicts() {
				k := c.Key()
				if ven.seen[k] {
					continue
				}
				ven.seen[k] = true
				if !st.Settings.AutoBlock || !ven.Replica.Set.IsMember(ven.Signer.Public()) ||
					c.Kind != crdt.ConflictDoubleSpend && c.Kind != crdt.ConflictStaleStamp {
					continue
				}
				if card := st.Card(c.Card); card == nil || card.Blocked {
					continue
				}
				if _, err := h.broadcast(v, &crdt.CardBlock{Card: c.Card, Reason: fmt.Sprintf("automatic: %s detected", c.Kind)}); err != nil {
					return err
				}
				h.Blocks++
				progress = true
			}
		}
	}
	return nil
}

// TopUp credits a card at venue v (cash desk). Like a node, it accepts a
// top-up while isolated and refuses one for a card it knows is blocked.
func (h *Harness) TopUp(v int, card crdt.CardID, amount uint64) (crdt.Op, error) {
	h.evaluate()
	if c := h.venues[v].Replica.Set.State.Card(card); c != nil && c.Blocked {
		return crdt.Op{}, crdt.ErrCardBlocked
	}
	return h.emit(v, &crdt.TopUp{Card: card, Amount: amount, Method: crdt.MethodCash})
}

// Decide runs the payment rules at venue v now, with its sync state and
// ledger, without paying.
func (h *Harness) Decide(v int, card crdt.CardID, amount uint64, stamp *crdt.CardStamp) (crdt.PaymentDecision, error) {
	d, _, err := h.decide(v, card, amount, stamp)
	return d, err
}

// decide also says whether the payment fell under the caps because the
// venue, though it believes itself in sync, cannot reach a quorum now.
func (h *Harness) decide(v int, card crdt.CardID, amount uint64, stamp *crdt.CardStamp) (crdt.PaymentDecision, bool, error) {
	h.evaluate()
	ven := h.venues[v]
	st := ven.Replica.Set.State
	lost := !ven.Isolated && !h.cfg.NoQuorumCheck && !h.reachesQuorum(v)
	in := crdt.PaymentInput{Card: card, Amount: amount, Stamp: stamp, Now: h.now, Isolated: ven.Isolated || lost}
	ledger := &ven.Ledger
	if lost {
		l := crdt.CardLedger(st, ven.Signer.Public(), card, h.now-int64(st.Settings.IsolationAfter))
		ledger = &l
	}
	d, err := st.DecidePayment(ven.Signer.Public(), in, ledger)
	return d, lost, err
}

// reachesQuorum reports whether venue v can reach a quorum of the other
// venues right now: the venues of its group.
func (h *Harness) reachesQuorum(v int) bool {
	st := h.venues[v].Replica.Set.State
	self := h.venues[v].Signer.Public()
	others, reach := 0, 0
	for k, ven := range st.Venues {
		if ven.Revoked || k == self {
			continue
		}
		others++
		if u, ok := h.byKey[k]; ok && h.group[u] == h.group[v] {
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
	// Offline is true when the venue was isolated; Period is then the
	// venue's isolation period.
	Offline bool
	Period  int
	// Stamp is the new signed stamp to write back on the card.
	Stamp []byte
}

// Pay is node/money.go's pay on venue v: the rules with the venue's sync
// state and offline ledger, a signed payment op with the decision's
// counters, the ledger recorded when offline, and a new signed stamp.
func (h *Harness) Pay(v int, card crdt.CardID, amount uint64, stamp *crdt.CardStamp, label string) (Paid, error) {
	d, lost, err := h.decide(v, card, amount, stamp)
	if err != nil {
		return Paid{}, err
	}
	ven := h.venues[v]
	offline, period := ven.Isolated || lost, 0
	if ven.Isolated {
		period = ven.Periods
	} else if lost {
		// Before isolation is noticed: a period of its own (capped by
		// the card's recent payments, then counted again by the ledger of
		// the isolation that follows, so a separate cap is an upper bound).
		period = -1 - ven.Periods
	}
	op, err := h.emit(v, &crdt.Payment{Card: card, Amount: amount, Counter: d.Counter, Label: label, StampCounter: d.StampCounter})
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

// Digests returns every replica's digest.
func (h *Harness) Digests() [][32]byte {
	out := make([][32]byte, len(h.venues))
	for i, v := range h.venues {
		out[i] = v.Replica.Set.Digest()
	}
	return out
}
