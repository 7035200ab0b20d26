package simulations

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
)

// ErrInvariant is wrapped by the error of a scenario run that violated an
// invariant; the result's Violation shows the ops.
var ErrInvariant = errors.New("invariant violated")

// ScenarioOptions configures RunScenario. The zero value is a normal run.
type ScenarioOptions struct {
	// Progress, if set, is called after every step of the virtual clock
	// (the caller throttles its output).
	Progress func(ScenarioProgress)
	// Logger receives the run's milestones (default: discarded).
	Logger *slog.Logger
	// IgnoreCaps is for tests only: the venues run with the offline caps
	// lifted (a broken rule), while the checker still bounds the loss by
	// the scenario's caps, so the clone-loss invariant must fail.
	IgnoreCaps bool
}

// ScenarioProgress is where a run is.
type ScenarioProgress struct {
	SimMs, TotalMs int64
	Wall           time.Duration
}

// ETA estimates the wall time left, linearly.
func (p ScenarioProgress) ETA() time.Duration {
	if p.SimMs <= 0 {
		return 0
	}
	return time.Duration(float64(p.Wall) * float64(p.TotalMs-p.SimMs) / float64(p.SimMs))
}

// Violation is a failed invariant with the ops that show it (op ids in
// hex, with what they are).
type Violation struct {
	Invariant string   `json:"invariant"`
	AtMs      int64    `json:"at_ms"`
	Detail    string   `json:"detail"`
	Ops       []string `json:"ops"`
}

func (v *Violation) String() string {
	return fmt.Sprintf("%s at %s: %s\n  ops:\n    %s", v.Invariant, fmtSim(v.AtMs), v.Detail, strings.Join(v.Ops, "\n    "))
}

// Sample is the state of a run at one step.
type Sample struct {
	AtMs              int64 `json:"at_ms"`
	Groups            int   `json:"groups"`
	IsolatedVenues    int   `json:"isolated_venues"`
	DownVenues        int   `json:"down_venues"`
	Ops               int   `json:"ops"`
	OfflineCents      int64 `json:"offline_cents"`
	HonestRefusedCap  int   `json:"honest_refused_cap"`
	HonestAccepted    int   `json:"honest_accepted"`
	LossCents         int64 `json:"loss_cents"`
	BoundCents        int64 `json:"bound_cents"`
	ConflictsDetected int   `json:"conflicts_detected"`
}

// HealRecord is one heal of the whole network.
type HealRecord struct {
	AtMs int64 `json:"at_ms"`
	// SplitMs is how long the network was not whole before it.
	SplitMs int64 `json:"split_ms"`
	// MissingOps and MissingBytes are, summed over venues, what they
	// lacked at the heal; MaxVenueBytes what the neediest venue lacked.
	MissingOps    int64 `json:"missing_ops"`
	MissingBytes  int64 `json:"missing_bytes"`
	MaxVenueBytes int64 `json:"max_venue_bytes"`
	// EstConvergeMs estimates the catch-up on the scenario's uplinks:
	// 3 × latency + MaxVenueBytes / bandwidth.
	EstConvergeMs int64 `json:"est_converge_ms"`
	// Digest is the common digest after the heal (hex prefix).
	Digest string `json:"digest"`
}

// VenueFigures are one venue's figures.
type VenueFigures struct {
	Name            string `json:"name"`
	OpsMade         int    `json:"ops_made"`
	Payments        int    `json:"payments"`
	OfflinePayments int    `json:"offline_payments"`
	OfflineCents    int64  `json:"offline_cents"`
	// DiskBytes is the encoded size of the ops the venue holds at the end
	// (the op log, before the store's own overhead); RecvBytesPerDay the
	// op bytes it received from others per simulated day (each op once:
	// gossip payload, not wire bytes).
	DiskBytes       int64   `json:"disk_bytes"`
	RecvBytesPerDay float64 `json:"recv_bytes_per_day"`
}

// ScenarioResult is what RunScenario measured.
type ScenarioResult struct {
	Scenario   string        `json:"scenario"`
	Seed       uint64        `json:"seed"`
	Venues     int           `json:"venues"`
	Cards      int           `json:"cards"`
	DurationMs int64         `json:"duration_ms"`
	Settings   crdt.Settings `json:"settings"`
	Engine     string        `json:"engine"`
	Wall       time.Duration `json:"wall_ns"`

	Ops    int    `json:"ops"`
	Digest string `json:"digest"`

	HonestAttempted    int   `json:"honest_attempted"`
	HonestAccepted     int   `json:"honest_accepted"`
	HonestRefusedCap   int   `json:"honest_refused_cap"`
	HonestRefusedFunds int   `json:"honest_refused_funds"`
	HonestRefusedOther int   `json:"honest_refused_other"`
	HonestClosed       int   `json:"honest_closed_or_down"`
	TopUps             int   `json:"topups"`
	OnlineTopUps       int   `json:"online_topups"`
	ToppedUpCents      int64 `json:"topped_up_cents"`
	PaidCents          int64 `json:"paid_cents"`
	OfflineCents       int64 `json:"offline_cents"`
	OfflinePayments    int   `json:"offline_payments"`

	Clones         int   `json:"clones"`
	AttackPayments int   `json:"attack_payments"`
	AttackCents    int64 `json:"attack_cents"`
	LossCents      int64 `json:"loss_cents"`
	BoundCents     int64 `json:"bound_cents"`
	// DoubleSpends is the (card, counter) pairs paid twice or more;
	// DoubleSpendsDetected those reported as a double_spend conflict
	// holding those payments; Conflicts all the conflicts at the end.
	DoubleSpends         int `json:"double_spends"`
	DoubleSpendsDetected int `json:"double_spends_detected"`
	Conflicts            int `json:"conflicts"`
	BlockedCards         int `json:"blocked_cards"`

	// BytesPerOp is the mean encoded op size; BytesPerOpPerNode what one
	// op costs the federation per receiving node (its size, received once).
	BytesPerOp float64 `json:"bytes_per_op"`

	Samples      []Sample       `json:"samples"`
	Heals        []HealRecord   `json:"heals"`
	VisibilityMs []int64        `json:"visibility_ms"`
	VenueFigures []VenueFigures `json:"venue_figures"`
	Checks       int            `json:"invariant_checks"`

	// Libp2p is the real-hosts measurement the scenario asked for.
	Libp2p *ReconvergenceReport `json:"libp2p,omitempty"`

	Violation *Violation `json:"violation,omitempty"`
}

// cut is one active reason the network is split: a label per venue (0:
// the main side) and whether it makes venues go down (a crash).
type cut struct {
	from, to int64
	labels   []int
	down     int // venue down (crash), or -1
	attack   bool
}

type scCard struct {
	id      crdt.CardID
	homes   []int
	credits int64
	debits  int64
	stamp   []byte
	cloned  bool
	clone   []byte // the clone's stamp
}

type scPay struct {
	card    crdt.CardID
	id      crdt.OpID
	venue   int
	amount  uint64
	counter uint64
	offline bool
	period  int
}

type scRun struct {
	sc    *Scenario
	opts  ScenarioOptions
	h     *Harness
	rng   *rand.Rand
	res   *ScenarioResult
	start int64 // Unix ms of t=0
	now   int64 // ms since t=0
	cards []*scCard
	byID  map[crdt.CardID]*scCard
	cuts  []*cut
	// attacks are the times clones strike; clonings when each card is cloned.
	attacks  []int64
	clonings []int64
	layout   string
	splitAt  int64
	pays     []scPay
	ops      []crdt.Op
	pending  []int64 // creation times of ops not yet everywhere
	down     []bool
	check    crdt.Settings // the caps the checker bounds the loss by
	lastLoss int64
	lastBnd  int64
}

// RunScenario plays a scenario on the virtual-clock harness (the crdt
// rules every node runs: payments, top-ups, quorum, reservations, caps,
// anti-entropy at each heal), checks the invariants at every heal of the
// whole network and at the end, and stops at the first violation
// (returning the result with Violation set and an error wrapping
// ErrInvariant). If the scenario asks for it, it then measures a heal on
// real libp2p hosts.
func RunScenario(ctx context.Context, sc *Scenario, opts ScenarioOptions) (*ScenarioResult, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	wall := time.Now()
	settings := sc.Settings()
	run := settings
	if opts.IgnoreCaps {
		run.OfflinePaymentMax, run.OfflineCardMax, run.OfflineVenueBudget = crdt.MaxAmount, crdt.MaxAmount, crdt.MaxAmount
		run.OfflineCardCount = 1_000_000
	}
	startClock, _ := parseClock(sc.Start)
	start := time.Date(2026, 6, 5, 0, 0, 0, 0, time.UTC).UnixMilli() + int64(startClock)*minute
	h, err := NewHarness(HarnessConfig{Venues: sc.Venues.Count, Seed: sc.Seed, Settings: run, Start: start})
	if err != nil {
		return nil, fmt.Errorf("simulations: scenario %s: %w", sc.Name, err)
	}
	r := &scRun{
		sc: sc, opts: opts, h: h, rng: newRng(sc.Seed ^ 0x5c3e), start: start, byID: map[crdt.CardID]*scCard{},
		down: make([]bool, sc.Venues.Count), check: settings,
		res: &ScenarioResult{
			Scenario: sc.Name, Seed: sc.Seed, Venues: sc.Venues.Count, Cards: sc.Cards.Count,
			DurationMs: sc.Duration.Ms(), Settings: run, Engine: "virtual clock (simulations.Harness, crdt rules)",
			Clones: sc.Clones.Count,
		},
	}
	r.schedule()
	err = r.run(ctx)
	r.res.Wall = time.Since(wall)
	if err != nil {
		return r.res, err
	}
	if sc.Libp2p.Nodes > 0 {
		opts.Logger.Info("simulate: libp2p heal measurement", "nodes", sc.Libp2p.Nodes)
		rep, err := RunReconvergence(ctx, ReconvergenceConfig{Cluster: ClusterConfig{Nodes: sc.Libp2p.Nodes, Seed: sc.Seed}, OpsPerSide: sc.Libp2p.OpsPerSide})
		if err != nil {
			return r.res, fmt.Errorf("simulations: libp2p measurement: %w", err)
		}
		r.res.Libp2p = &rep
		r.res.Engine += " + libp2p on loopback (heal measurement)"
	}
	r.res.Wall = time.Since(wall)
	return r.res, nil
}

func (r *scRun) between(lo, hi int64) int64 {
	if hi <= lo {
		return lo
	}
	return lo + r.rng.Int64N(hi-lo+1)
}

// schedule lays out the partitions, flaps, crashes, attacks and clonings.
func (r *scRun) schedule() {
	sc, n := r.sc, r.sc.Venues.Count
	end := sc.Duration.Ms()
	for _, p := range sc.Partitions {
		labels := make([]int, n)
		for i, name := range p.Isolate {
			v, _ := sc.VenueIndex(name)
			labels[v] = i + 1
		}
		for g, members := range p.Groups {
			for _, name := range members {
				v, _ := sc.VenueIndex(name)
				labels[v] = g + 1
			}
		}
		r.cuts = append(r.cuts, &cut{from: p.At.Ms(), to: p.At.Ms() + p.For.Ms(), labels: labels, down: -1, attack: true})
	}
	for range sc.Random.Count {
		from := r.between(0, end-1)
		k := 2 + r.rng.IntN(sc.Random.MaxGroups-1)
		labels := make([]int, n)
		for v := range labels {
			labels[v] = r.rng.IntN(k)
		}
		r.cuts = append(r.cuts, &cut{from: from, to: from + r.between(sc.Random.MinFor.Ms(), sc.Random.MaxFor.Ms()), labels: labels, down: -1, attack: true})
	}
	if f := sc.Venues.Uplink.FlapsPerHour; f > 0 {
		for v := range n {
			for t := int64(0); ; {
				t += int64(r.rng.ExpFloat64() / f * 3_600_000)
				if t >= end {
					break
				}
				labels := make([]int, n)
				labels[v] = 1
				r.cuts = append(r.cuts, &cut{from: t, to: t + sc.Venues.Uplink.FlapDuration.Ms(), labels: labels, down: -1})
			}
		}
	}
	for _, c := range sc.Crashes {
		v, _ := sc.VenueIndex(c.Venue)
		labels := make([]int, n)
		labels[v] = 1
		r.cuts = append(r.cuts, &cut{from: c.At.Ms(), to: c.At.Ms() + c.For.Ms(), labels: labels, down: v})
	}
	slices.SortStableFunc(r.cuts, func(a, b *cut) int { return int(a.from - b.from) })
	for _, c := range r.cuts {
		if c.attack && sc.Clones.Count > 0 {
			r.attacks = append(r.attacks, c.from+sc.Clones.AttackAfter.Ms())
		}
	}
	if len(r.attacks) > 0 {
		first := r.attacks[0]
		for range sc.Clones.Count {
			r.clonings = append(r.clonings, r.between(0, max(0, first-1)))
		}
		slices.Sort(r.clonings)
	}
}

func (r *scRun) newCardID() crdt.CardID {
	for {
		b := make([]byte, 7)
		b[0] = 0x04
		for i := 1; i < len(b); i++ {
			b[i] = byte(r.rng.UintN(256))
		}
		id := crdt.CardID(strings.ToUpper(hex.EncodeToString(b)))
		if r.byID[id] == nil {
			return id
		}
	}
}

func (r *scRun) emitted(v int, op crdt.Op) {
	r.ops = append(r.ops, op)
	r.res.VenueFiguresAt(v, r.sc).OpsMade++
	r.pending = append(r.pending, r.now)
	if r.layout == "" {
		r.res.VisibilityMs = append(r.res.VisibilityMs, 0)
		r.pending = r.pending[:len(r.pending)-1]
	}
}

// VenueFiguresAt returns venue v's figures, creating them.
func (res *ScenarioResult) VenueFiguresAt(v int, sc *Scenario) *VenueFigures {
	for len(res.VenueFigures) <= v {
		res.VenueFigures = append(res.VenueFigures, VenueFigures{Name: sc.VenueName(len(res.VenueFigures))})
	}
	return &res.VenueFigures[v]
}

func (r *scRun) run(ctx context.Context) error {
	sc := r.sc
	// Issue the cards while the network is whole.
	for range sc.Cards.Count {
		c := &scCard{id: r.newCardID()}
		for _, v := range r.rng.Perm(sc.Venues.Count)[:sc.Cards.HomeVenues] {
			c.homes = append(c.homes, v)
		}
		r.cards = append(r.cards, c)
		r.byID[c.id] = c
		if err := r.topUp(c.homes[0], c, sc.TopUps.InitialCents, false); err != nil {
			return err
		}
	}
	step, end := sc.Step.Ms(), sc.Duration.Ms()
	wall := time.Now()
	for r.now = 0; r.now <= end; r.now += step {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("simulations: scenario %s: %w", sc.Name, err)
		}
		r.h.AdvanceTo(r.start + r.now)
		if err := r.applyLayout(); err != nil {
			return err
		}
		for len(r.clonings) > 0 && r.clonings[0] <= r.now {
			r.clonings = r.clonings[1:]
			if err := r.cloneOne(); err != nil {
				return err
			}
		}
		for len(r.attacks) > 0 && r.attacks[0] <= r.now {
			r.attacks = r.attacks[1:]
			if err := r.attack(); err != nil {
				return err
			}
		}
		if err := r.traffic(step); err != nil {
			return err
		}
		r.sample()
		if r.opts.Progress != nil {
			r.opts.Progress(ScenarioProgress{SimMs: min(r.now+step, end), TotalMs: end, Wall: time.Since(wall)})
		}
	}
	// The end: every cut is over; heal and check once more.
	r.now = end
	r.cuts = nil
	if r.layout != "" {
		if err := r.heal(); err != nil {
			return err
		}
	} else if err := r.checkAll(true); err != nil {
		return err
	}
	r.finish()
	return nil
}

// applyLayout composes the active cuts into groups and applies a change.
func (r *scRun) applyLayout() error {
	n := r.sc.Venues.Count
	keys := make([]string, n)
	clear(r.down)
	active := 0
	for _, c := range r.cuts {
		if c.from > r.now || c.to <= r.now {
			continue
		}
		active++
		for v := range n {
			keys[v] += fmt.Sprintf("%d,", c.labels[v])
		}
		if c.down >= 0 {
			r.down[c.down] = true
		}
	}
	groupOf := map[string]int{}
	var groups [][]int
	for v, k := range keys {
		g, ok := groupOf[k]
		if !ok {
			g = len(groups)
			groupOf[k] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], v)
	}
	layout := ""
	if len(groups) > 1 {
		layout = fmt.Sprint(groups)
	}
	if layout == r.layout {
		return nil
	}
	prev := r.layout
	r.layout = layout
	before := make([]int, n)
	for v := range n {
		before[v] = r.h.Group(v)
	}
	if layout == "" {
		return r.heal()
	}
	if prev == "" {
		r.splitAt = r.now
	}
	if err := r.h.Partition(groups); err != nil {
		return fmt.Errorf("simulations: partition: %w", err)
	}
	// Venues newly on one side run anti-entropy with each other.
	for _, g := range groups {
		for _, a := range g {
			for _, b := range g {
				if a != b && before[a] != before[b] {
					if err := pull(r.h.Venue(a).Replica, r.h.Venue(b).Replica); err != nil {
						return fmt.Errorf("simulations: sync in group: %w", err)
					}
				}
			}
		}
	}
	return nil
}

func (r *scRun) heal() error {
	rec := HealRecord{AtMs: r.now, SplitMs: r.now - r.splitAt}
	union := crdt.VersionVector{}
	vvs := make([]crdt.VersionVector, r.h.Len())
	for i := range r.h.Len() {
		vvs[i] = r.h.Venue(i).Replica.Set.VersionVector()
		for a, s := range vvs[i] {
			union[a] = max(union[a], s)
		}
	}
	mean := r.meanOpSize()
	for _, vv := range vvs {
		var ops int64
		for a, s := range union {
			ops += int64(s - min(s, vv[a]))
		}
		rec.MissingOps += ops
		b := int64(float64(ops) * mean)
		rec.MissingBytes += b
		rec.MaxVenueBytes = max(rec.MaxVenueBytes, b)
	}
	u := r.sc.Venues.Uplink
	rec.EstConvergeMs = 3*u.Latency.Ms() + rec.MaxVenueBytes*8/int64(u.BandwidthKbps)
	r.layout = ""
	if err := r.h.Heal(); err != nil {
		return r.violate("one digest everywhere after each heal", err.Error(), r.digestOps())
	}
	ds := r.h.Digests()
	rec.Digest = hex.EncodeToString(ds[0][:6])
	r.res.Heals = append(r.res.Heals, rec)
	for _, t := range r.pending {
		r.res.VisibilityMs = append(r.res.VisibilityMs, r.now-t)
	}
	r.pending = r.pending[:0]
	return r.checkAll(false)
}

func (r *scRun) meanOpSize() float64 {
	if len(r.ops) == 0 {
		return 0
	}
	var s int
	for i := range r.ops {
		s += r.ops[i].Size()
	}
	return float64(s) / float64(len(r.ops))
}

func (r *scRun) digestOps() []string {
	var out []string
	for i, d := range r.h.Digests() {
		out = append(out, fmt.Sprintf("venue %s digest %x ops %d", r.sc.VenueName(i), d[:6], r.h.Venue(i).Replica.Set.Len()))
	}
	return out
}

func (r *scRun) violate(inv, detail string, ops []string) error {
	if len(ops) > 50 {
		ops = append(ops[:50], fmt.Sprintf("… %d more", len(ops)-50))
	}
	r.res.Violation = &Violation{Invariant: inv, AtMs: r.now, Detail: detail, Ops: ops}
	r.finish()
	return fmt.Errorf("simulations: scenario %s: %w: %s", r.sc.Name, ErrInvariant, r.res.Violation)
}

func opDesc(id crdt.OpID, what string) string {
	return fmt.Sprintf("%x %s", id[:8], what)
}

// checkAll checks the invariants on the converged network; all says to
// check every replica (at the end), else replica 0 (the heal has just
// checked that all digests are equal).
func (r *scRun) checkAll(all bool) error {
	r.res.Checks++
	venues := []int{0}
	if all {
		venues = r.h.Active()
	}
	for _, v := range venues {
		rep := r.h.Venue(v).Replica
		st := rep.Set.State
		// Conservation of money.
		var sum int64
		for _, c := range st.Cards {
			sum += c.Balance
		}
		if sum != st.Credits-st.Debits || st.Credits != r.res.ToppedUpCents || st.Debits != r.res.PaidCents {
			var ops []string
			for _, c := range r.cards {
				if sc := st.Cards[c.id]; sc == nil || sc.Credits != c.credits || sc.Debits != c.debits {
					for _, p := range r.pays {
						if p.card == c.id {
							ops = append(ops, opDesc(p.id, fmt.Sprintf("payment card %s %s at %s", c.id, euros(int64(p.amount)), r.sc.VenueName(p.venue))))
						}
					}
				}
			}
			return r.violate("conservation of money", fmt.Sprintf("venue %s: Σ balances %s, credits %s − debits %s; the run topped up %s and paid %s",
				r.sc.VenueName(v), euros(sum), euros(st.Credits), euros(st.Debits), euros(r.res.ToppedUpCents), euros(r.res.PaidCents)), ops)
		}
		// No acknowledged op lost (across crashes and forks).
		var lost []string
		for i := range r.ops {
			op := &r.ops[i]
			if !holds(rep, op.Author, op.Seq, op.ID()) {
				lost = append(lost, opDesc(op.ID(), fmt.Sprintf("%s seq %d", op.Kind, op.Seq)))
			}
		}
		if len(lost) > 0 {
			return r.violate("no acknowledged op lost", fmt.Sprintf("venue %s lacks %d acknowledged ops", r.sc.VenueName(v), len(lost)), lost)
		}
		// Every double spend reported, no false conflict.
		byCounter := map[counterKey][]scPay{}
		for _, p := range r.pays {
			k := counterKey{card: p.card, counter: p.counter}
			byCounter[k] = append(byCounter[k], p)
		}
		ds, det := 0, 0
		for k, ps := range byCounter {
			if len(ps) < 2 {
				continue
			}
			ds++
			key := (&crdt.Conflict{Kind: crdt.ConflictDoubleSpend, Card: k.card, Counter: k.counter}).Key()
			cf := st.Conflicts[key]
			ok := cf != nil
			for _, p := range ps {
				if ok && !slices.Contains(cf.Ops, p.id) {
					ok = false
				}
			}
			if !ok {
				var ops []string
				for _, p := range ps {
					ops = append(ops, opDesc(p.id, fmt.Sprintf("payment card %s counter %d %s at %s", p.card, p.counter, euros(int64(p.amount)), r.sc.VenueName(p.venue))))
				}
				return r.violate("every double spend reported", fmt.Sprintf("card %s counter %d paid %d times, not reported as one double_spend conflict", k.card, k.counter, len(ps)), ops)
			}
			det++
		}
		r.res.DoubleSpends, r.res.DoubleSpendsDetected = ds, det
		for _, cf := range st.Conflicts {
			if c := r.byID[cf.Card]; cf.Card != "" && (c == nil || !c.cloned) {
				var ops []string
				for _, id := range cf.Ops {
					ops = append(ops, opDesc(id, string(cf.Kind)))
				}
				return r.violate("no false conflict", fmt.Sprintf("conflict %s on card %s, which was never cloned", cf.Key(), cf.Card), ops)
			}
		}
		r.res.Conflicts = len(st.Conflicts)
		// Clone loss within the caps' bound.
		loss, bound, over := r.lossAndBound(st)
		r.lastLoss, r.lastBnd = loss, bound
		if len(over) > 0 {
			return r.violate("honest cards never overdrawn", "honest card overdrawn", over)
		}
		if r.check.MinPeersPercent >= 50 && loss > bound {
			var ops []string
			for _, p := range r.pays {
				if c := r.byID[p.card]; c.cloned && p.offline {
					ops = append(ops, opDesc(p.id, fmt.Sprintf("offline payment card %s %s at %s (period %d)", p.card, euros(int64(p.amount)), r.sc.VenueName(p.venue), p.period)))
				}
			}
			return r.violate("clone loss ≤ the caps' bound", fmt.Sprintf("loss %s > bound %s (caps: payment %s, card %s, %d payments, venue %s)",
				euros(loss), euros(bound), euros(int64(r.check.OfflinePaymentMax)), euros(int64(r.check.OfflineCardMax)), r.check.OfflineCardCount, euros(int64(r.check.OfflineVenueBudget))), ops)
		}
	}
	return nil
}

type periodKey struct{ venue, period int }

// lossAndBound is the loss (Σ max(0, −balance)) and the caps' bound over
// (venue, isolation period) with the checker's caps; over lists the
// honest cards overdrawn.
func (r *scRun) lossAndBound(st *crdt.State) (loss, bound int64, over []string) {
	overdrawn := map[crdt.CardID]bool{}
	for _, c := range r.cards {
		sc := st.Cards[c.id]
		if sc == nil || sc.Balance >= 0 {
			continue
		}
		if !c.cloned {
			over = append(over, fmt.Sprintf("card %s balance %s", c.id, euros(sc.Balance)))
		}
		loss += -sc.Balance
		overdrawn[c.id] = true
	}
	per := map[periodKey]map[crdt.CardID]bool{}
	for _, p := range r.pays {
		if p.offline && overdrawn[p.card] {
			k := periodKey{p.venue, p.period}
			if per[k] == nil {
				per[k] = map[crdt.CardID]bool{}
			}
			per[k][p.card] = true
		}
	}
	s := r.check
	card := min(s.OfflineCardMax, satMul(s.OfflineCardCount, s.OfflinePaymentMax))
	for _, cards := range per {
		bound += int64(min(s.OfflineVenueBudget, satMul(uint64(len(cards)), card)))
	}
	return loss, bound, over
}

func (r *scRun) finish() {
	res := r.res
	res.Ops = len(r.ops)
	ds := r.h.Digests()
	res.Digest = hex.EncodeToString(ds[0][:8])
	res.BytesPerOp = r.meanOpSize()
	days := math.Max(float64(r.sc.Duration.Ms())/86_400_000, 1.0/24)
	var total int64
	made := make([]int64, r.sc.Venues.Count)
	for i := range r.ops {
		total += int64(r.ops[i].Size())
	}
	for v := range r.sc.Venues.Count {
		f := res.VenueFiguresAt(v, r.sc)
		made[v] = int64(float64(f.OpsMade) * res.BytesPerOp)
		var held int64
		vv := r.h.Venue(v).Replica.Set.VersionVector()
		for _, s := range vv {
			held += int64(s)
		}
		f.DiskBytes = int64(float64(held) * res.BytesPerOp)
		f.RecvBytesPerDay = float64(total-made[v]) / days
	}
	st := r.h.Venue(0).Replica.Set.State
	for _, c := range st.Cards {
		if c.Blocked {
			res.BlockedCards++
		}
	}
	res.LossCents, res.BoundCents = r.lastLoss, r.lastBnd
}

func (r *scRun) sample() {
	s := Sample{AtMs: r.now, Groups: len(r.h.Groups()), Ops: len(r.ops), OfflineCents: r.res.OfflineCents,
		HonestRefusedCap: r.res.HonestRefusedCap, HonestAccepted: r.res.HonestAccepted, LossCents: r.lastLoss, BoundCents: r.lastBnd,
		ConflictsDetected: len(r.h.Venue(0).Replica.Set.State.Conflicts)}
	for v := range r.h.Len() {
		if r.h.Venue(v).Isolated {
			s.IsolatedVenues++
		}
		if r.down[v] {
			s.DownVenues++
		}
	}
	r.res.Samples = append(r.res.Samples, s)
}

func (r *scRun) open(v int) bool {
	if r.down[v] {
		return false
	}
	if r.sc.Venues.Open == "" {
		return true
	}
	o, _ := parseClock(r.sc.Venues.Open)
	c, _ := parseClock(r.sc.Venues.Close)
	s, _ := parseClock(r.sc.Start)
	m := int((int64(s) + r.now/minute) % 1440)
	if o <= c {
		return m >= o && m < c
	}
	return m >= o || m < c
}

func (r *scRun) poisson(lambda float64) int {
	if lambda > 30 {
		return max(0, int(math.Round(lambda+math.Sqrt(lambda)*r.rng.NormFloat64())))
	}
	l, k, p := math.Exp(-lambda), 0, 1.0
	for {
		p *= r.rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// traffic plays one step of the holders' payments.
func (r *scRun) traffic(step int64) error {
	sc := r.sc
	lambda := float64(len(r.cards)) * sc.Cards.VisitsPerEvening / (6 * 60 * minute) * float64(step)
	for range r.poisson(lambda) {
		c := r.cards[r.rng.IntN(len(r.cards))]
		if c.cloned {
			continue
		}
		v := c.homes[r.rng.IntN(len(c.homes))]
		if !r.open(v) {
			r.res.HonestClosed++
			continue
		}
		amount := sc.Cards.BasketMinCents + r.rng.Uint64N(sc.Cards.BasketMaxCents-sc.Cards.BasketMinCents+1)
		if c.credits-c.debits < int64(amount) {
			at, online := v, r.rng.Float64() < sc.TopUps.OnlineShare
			if online {
				var up []int
				for u := range r.h.Len() {
					if !r.down[u] && !r.h.Venue(u).Isolated {
						up = append(up, u)
					}
				}
				if len(up) > 0 {
					at = up[r.rng.IntN(len(up))]
				}
			}
			want := r.largestTopUp(at, c.id, sc.TopUps.RefillCents)
			if want > 0 {
				if err := r.topUp(at, c, want, online); err != nil {
					return err
				}
			}
		}
		r.res.HonestAttempted++
		_, err := r.pay(v, c, amount, &c.stamp, true)
		switch {
		case err == nil:
			r.res.HonestAccepted++
		case errors.Is(err, crdt.ErrOfflineCap):
			r.res.HonestRefusedCap++
		case errors.Is(err, crdt.ErrInsufficientFunds):
			r.res.HonestRefusedFunds++
		case refusal(err):
			r.res.HonestRefusedOther++
		default:
			return err
		}
	}
	return nil
}

func (r *scRun) largestTopUp(v int, card crdt.CardID, want uint64) uint64 {
	st := r.h.Venue(v).Replica.Set.State
	lo, hi := uint64(0), want
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if _, err := st.DecideTopUp(card, mid); err == nil {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

func (r *scRun) topUp(v int, c *scCard, amount uint64, online bool) error {
	op, err := r.h.TopUp(v, c.id, amount)
	if errors.Is(err, crdt.ErrCardBlocked) || errors.Is(err, crdt.ErrBalanceCeiling) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("simulations: top-up: %w", err)
	}
	r.emitted(v, op)
	c.credits += int64(amount)
	r.res.ToppedUpCents += int64(amount)
	r.res.TopUps++
	if online {
		r.res.OnlineTopUps++
	}
	return nil
}

// pay pays at v presenting *stamp (written back with the new stamp when
// write is set, as a genuine card's reader does).
func (r *scRun) pay(v int, c *scCard, amount uint64, stamp *[]byte, write bool) (Paid, error) {
	st, err := decodeStamp(*stamp)
	if err != nil {
		return Paid{}, err
	}
	p, err := r.h.Pay(v, c.id, amount, st, "sim")
	if err != nil {
		return p, err
	}
	r.emitted(v, p.Op)
	if write {
		*stamp = p.Stamp
	}
	c.debits += int64(amount)
	r.res.PaidCents += int64(amount)
	f := r.res.VenueFiguresAt(v, r.sc)
	f.Payments++
	if p.Offline {
		f.OfflinePayments++
		f.OfflineCents += int64(amount)
		r.res.OfflineCents += int64(amount)
		r.res.OfflinePayments++
	}
	r.pays = append(r.pays, scPay{card: c.id, id: p.ID, venue: v, amount: amount, counter: p.Decision.Counter, offline: p.Offline, period: p.Period})
	if c.cloned {
		r.res.AttackPayments++
		r.res.AttackCents += int64(amount)
	}
	return p, nil
}

// cloneOne clones a random honest card (the attacker first topping it up
// if the scenario says so).
func (r *scRun) cloneOne() error {
	var honest []*scCard
	for _, c := range r.cards {
		if !c.cloned {
			honest = append(honest, c)
		}
	}
	if len(honest) == 0 {
		return nil
	}
	c := honest[r.rng.IntN(len(honest))]
	if t := int64(r.sc.Clones.TopUpCents); t > 0 {
		v := r.live()
		if bal := c.credits - c.debits; bal < t && v >= 0 {
			if want := r.largestTopUp(v, c.id, uint64(t-bal)); want > 0 {
				if err := r.topUp(v, c, want, false); err != nil {
					return err
				}
			}
		}
	}
	c.cloned = true
	c.clone = slices.Clone(c.stamp)
	return nil
}

func (r *scRun) live() int {
	for _, v := range r.rng.Perm(r.h.Len()) {
		if !r.down[v] {
			return v
		}
	}
	return -1
}

// attack: the original spends all it can on the in-sync side, the clone
// at every venue of the other sides.
func (r *scRun) attack() error {
	groups := r.h.Groups()
	if len(groups) < 2 {
		return nil
	}
	main := r.rng.IntN(len(groups))
	for g, members := range groups {
		if !r.h.Venue(members[0]).Isolated {
			main = g
			break
		}
	}
	for _, c := range r.cards {
		if !c.cloned {
			continue
		}
		for g, members := range groups {
			stamp, write := &c.stamp, true
			if g != main {
				copied := slices.Clone(c.clone)
				stamp, write = &copied, r.sc.Clones.Stamps == string(StampPerGroup)
			}
			for _, v := range members {
				if r.down[v] {
					continue
				}
				if err := r.spree(v, c, stamp, write); err != nil {
					return err
				}
				if g == main {
					break
				}
			}
		}
	}
	return nil
}

func (r *scRun) spree(v int, c *scCard, stamp *[]byte, write bool) error {
	for range 10_000 {
		st, err := decodeStamp(*stamp)
		if err != nil {
			return err
		}
		if _, err := r.h.Decide(v, c.id, 1, st); err != nil {
			if !refusal(err) {
				return err
			}
			if _, err := r.pay(v, c, 1, stamp, write); err == nil || !refusal(err) {
				return fmt.Errorf("simulations: venue %d: a refused payment of %s: %v", v, c.id, err)
			}
			return nil
		}
		lo, hi := uint64(1), uint64(crdt.MaxAmount)
		for lo < hi {
			mid := lo + (hi-lo+1)/2
			if _, err := r.h.Decide(v, c.id, mid, st); err == nil {
				lo = mid
			} else {
				hi = mid - 1
			}
		}
		if _, err := r.pay(v, c, lo, stamp, write); err != nil {
			if refusal(err) {
				return nil
			}
			return err
		}
	}
	return fmt.Errorf("simulations: venue %d kept accepting payments of card %s", v, c.id)
}

// fmtSim formats a simulated offset as h:mm.
func fmtSim(ms int64) string {
	return fmt.Sprintf("%d:%02d", ms/3_600_000, ms/minute%60)
}
