package simulations

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/p2p"
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
	// NoAntiEntropy is for tests only, a broken rule: when the network
	// heals (or venues come to one side) they only resume gossip, never
	// running the catch-up sync, so the "one digest everywhere after each
	// heal" invariant must fail.
	NoAntiEntropy bool
	// RefundWithoutQuorum is for tests only, a broken rule: refunds are
	// decided by crdt.State.DecideRefund as if the venue were in sync with
	// a quorum (HarnessConfig.RefundWithoutQuorum), so a clone's refund on
	// the far side of a partition overdraws its card beyond the caps'
	// bound.
	RefundWithoutQuorum bool
	// Network, if set, overrides the scenario's transport (Scenario.Network:
	// "auto", "memory", "libp2p" or "mocknet").
	Network string
	// ConvergeTimeout bounds, in wall time, each wait for the network to
	// carry a step's ops to every venue of their side, or to converge
	// after a heal (default DefaultConvergeTimeout, 60 s). Past it the run
	// stops on a violation listing the ops each venue lacks.
	ConvergeTimeout time.Duration
	// NetLogger receives the venues' networks' own logs (p2p, GossipSub;
	// default: discarded, as they are many on a busy machine).
	NetLogger *slog.Logger
	// TempDir holds the venues' Badger stores (store = "badger"; default
	// os.TempDir()); they are removed when the run ends.
	TempDir string
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
	// EstConvergeMs estimates the catch-up on the venues' uplinks: the
	// largest over venues of (3 × latency + the bytes it lacked /
	// bandwidth) / (1 − loss).
	EstConvergeMs int64 `json:"est_converge_ms"`
	// MeasuredConvergeMs is, on a network transport, the wall time from
	// the heal (the venues unblocked) until every venue held the same ops
	// through the real anti-entropy (0 on the memory transport), times
	// the transport's time scale (Scenario.Transport.TimeScale): the time
	// on the scenario's uplinks. MeasuredWallMs is the wall time itself.
	MeasuredConvergeMs float64 `json:"measured_converge_ms"`
	MeasuredWallMs     float64 `json:"measured_wall_ms,omitempty"`
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
	// WireBytes is what the venue's libp2p hosts sent over the run, all
	// protocols (network = "libp2p"; mocknet hosts count nothing);
	// WireByProtocol splits it.
	WireBytes      int64            `json:"wire_bytes,omitempty"`
	WireByProtocol map[string]int64 `json:"wire_by_protocol,omitempty"`
	// StoreBytes is the size of the venue's Badger directory at the end
	// (store = "badger"; 0 otherwise).
	StoreBytes int64 `json:"store_bytes"`
	// Events is the agenda ops the venue published; Crashes its crashes.
	Events  int `json:"events"`
	Crashes int `json:"crashes"`
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

	// Refunds are the holders' refunds accepted (RefundedCents in all);
	// RefundsRefusedOffline those refused because the venue was isolated
	// or without a quorum (asked again later); CloneRefunds* the clones'.
	Refunds               int   `json:"refunds"`
	RefundedCents         int64 `json:"refunded_cents"`
	RefundsRefusedOffline int   `json:"refunds_refused_offline"`
	CloneRefunds          int   `json:"clone_refunds"`
	CloneRefundCents      int64 `json:"clone_refund_cents"`
	CloneRefundsRefused   int   `json:"clone_refunds_refused"`

	// Events is the agenda ops published (new events and updates);
	// EventBytesPerOp their mean size; EventVisibilityMs the delay of
	// each until every venue holds it.
	Events            int     `json:"events"`
	EventBytesPerOp   float64 `json:"event_bytes_per_op"`
	EventVisibilityMs []int64 `json:"event_visibility_ms"`

	// Crashes is the nodes killed (kill -9) and restarted; each restart
	// is checked to hold every op the venue acknowledged.
	Crashes int `json:"crashes"`
	// Store is "memory" or "badger".
	Store string `json:"store"`

	// Network is the transport the ops travelled on: "memory", "libp2p"
	// (real hosts on 127.0.0.1) or "mocknet".
	Network string `json:"network"`
	// MeasuredVisibilityMs is, on a network transport, each op's wall
	// time from the moment the network could carry it (the end of the
	// step that made it) until the last venue of its side held it, times
	// TimeScale, sorted.
	MeasuredVisibilityMs []float64 `json:"measured_visibility_ms,omitempty"`
	// TimeScale is the mocknet time scale the measured delays were
	// multiplied back by (1: real time; Scenario.Transport.TimeScale).
	TimeScale float64 `json:"time_scale,omitempty"`
	// CarriedOps is the ops the networks carried (all but the cards'
	// issuing before t = 0, delivered as catch-up runs before the
	// networks start). WireBytes is what all hosts sent (network =
	// "libp2p"), WireByProtocol split by protocol, and
	// WireBytesPerOpPerNode WireBytes / (CarriedOps × venues): the issue's
	// "bytes per op per node" on the wire, periodic traffic (heartbeats,
	// GossipSub control, periodic sync) over the run's wall time included.
	CarriedOps            int              `json:"carried_ops,omitempty"`
	WireBytes             int64            `json:"wire_bytes,omitempty"`
	WireByProtocol        map[string]int64 `json:"wire_by_protocol,omitempty"`
	WireBytesPerOpPerNode float64          `json:"wire_bytes_per_op_per_node,omitempty"`
	// NetworkWait is the wall time the run spent letting the networks
	// carry the ops (the virtual clock stopped), heals included; the rest
	// of Wall is the harness playing the steps.
	NetworkWait time.Duration `json:"network_wait_ns,omitempty"`
	// Net sums the networks' counters (gossip messages, sync sessions).
	Net *p2p.Stats `json:"net,omitempty"`

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
	killed   bool // the crash has happened
}

type scCard struct {
	id      crdt.CardID
	homes   []int
	credits int64
	debits  int64
	stamp   []byte
	cloned  bool
	clone   []byte // the clone's stamp
	// refundAt is when the holder asks for the balance back (-1: never);
	// refunded once they got it (the card leaves the traffic).
	refundAt int64
	refunded bool
}

type pendingOp struct {
	at    int64
	event bool
}

type scPay struct {
	card    crdt.CardID
	id      crdt.OpID
	venue   int
	amount  uint64
	counter uint64
	offline bool
	period  int
	refund  bool // a refund (no counter)
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
	pending  []pendingOp // ops not yet everywhere
	down     []bool
	uplinks  []Uplink
	// refunds lists the holders who will ask for a refund, by time.
	refunds []*scCard
	// events[v] is the ids of the events venue v published.
	events [][]string
	stores []*durable
	tmp    string
	// eventBytes sums the encoded size of the agenda ops.
	eventBytes int64
	check      crdt.Settings // the caps the checker bounds the loss by
	lastLoss   int64
	lastBnd    int64
	// On a network transport: carry runs the venues' networks; world is
	// held by the harness while it plays, released while the networks
	// carry the ops; ctx is the run's.
	network string
	carry   *netCarrier
	world   sync.RWMutex
	ctx     context.Context
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
	if opts.IgnoreCaps { // the broken rule (tests only)
		run.OfflinePaymentMax, run.OfflineCardMax, run.OfflineVenueBudget = crdt.MaxAmount, crdt.MaxAmount, crdt.MaxAmount
		run.OfflineCardCount = 1_000_000
	}
	startClock, _ := parseClock(sc.Start)
	start := time.Date(2026, 6, 5, 0, 0, 0, 0, time.UTC).UnixMilli() + int64(startClock)*minute
	h, err := NewHarness(HarnessConfig{Venues: sc.Venues.Count, Seed: sc.Seed, Settings: run, Start: start, RefundWithoutQuorum: opts.RefundWithoutQuorum})
	if err != nil {
		return nil, fmt.Errorf("simulations: scenario %s: %w", sc.Name, err)
	}
	r := &scRun{
		sc: sc, opts: opts, h: h, rng: newRng(sc.Seed ^ 0x5c3e), start: start, byID: map[crdt.CardID]*scCard{},
		down: make([]bool, sc.Venues.Count), check: settings,
		res: &ScenarioResult{
			Scenario: sc.Name, Seed: sc.Seed, Venues: sc.Venues.Count, Cards: sc.Cards.Count,
			DurationMs: sc.Duration.Ms(), Settings: run, Engine: "virtual clock (simulations.Harness, crdt rules)",
			Clones: sc.Clones.Count, Store: sc.Store,
		},
		events: make([][]string, sc.Venues.Count),
		ctx:    ctx,
	}
	r.network = opts.Network
	if r.network == "" {
		r.network = sc.Network
	}
	r.network = ResolveNetwork(r.network, sc.Venues.Count)
	switch r.network {
	case NetworkMemory, NetworkLibp2p, NetworkMocknet:
	default:
		return nil, fmt.Errorf("simulations: scenario %s: unknown network %q (auto, memory, libp2p or mocknet)", sc.Name, r.network)
	}
	r.res.Network = r.network
	r.res.TimeScale = 1
	if r.network == NetworkMocknet {
		r.res.TimeScale = sc.Transport.TimeScale
	}
	if r.network != NetworkMemory {
		r.res.Engine += " over p2p.Network on " + map[string]string{NetworkLibp2p: "real libp2p hosts (TCP on 127.0.0.1)", NetworkMocknet: "a go-libp2p mocknet (per-link latency and bandwidth)"}[r.network]
	}
	for v := range sc.Venues.Count {
		r.uplinks = append(r.uplinks, sc.VenueUplink(v))
	}
	if sc.Store == StoreBadger {
		if err := r.openStores(); err != nil {
			r.closeStores()
			return nil, err
		}
	}
	r.schedule()
	err = r.run(ctx)
	if cerr := r.closeStores(); err == nil && cerr != nil {
		err = cerr
	}
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
	for v := range n {
		u := r.uplinks[v]
		if u.FlapsPerHour <= 0 {
			continue
		}
		for t := int64(0); ; {
			t += int64(r.rng.ExpFloat64() / u.FlapsPerHour * 3_600_000)
			if t >= end {
				break
			}
			labels := make([]int, n)
			labels[v] = 1
			r.cuts = append(r.cuts, &cut{from: t, to: t + u.FlapMs, labels: labels, down: -1})
		}
	}
	if f := sc.RandomCrashes.PerVenuePerDay; f > 0 {
		for v := range n {
			for t := int64(0); ; {
				t += int64(r.rng.ExpFloat64() / f * 86_400_000)
				if t >= end {
					break
				}
				labels := make([]int, n)
				labels[v] = 1
				r.cuts = append(r.cuts, &cut{from: t, to: t + r.between(sc.RandomCrashes.MinDown.Ms(), sc.RandomCrashes.MaxDown.Ms()), labels: labels, down: v})
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

// emitted records an op venue v made. Made while the network is whole,
// it reaches every venue by gossip: its visibility delay is the time to
// send it on v's uplink and receive it on the slowest other uplink; made
// while split, it waits for the next heal (then its catch-up).
func (r *scRun) emitted(v int, op crdt.Op) {
	r.ops = append(r.ops, op)
	r.res.VenueFiguresAt(v, r.sc).OpsMade++
	event := op.Kind == crdt.KindEventUpsert || op.Kind == crdt.KindEventCancel
	if r.layout != "" {
		r.pending = append(r.pending, pendingOp{at: r.now, event: event})
		return
	}
	size := int64(op.Size())
	var recv int64
	for u, up := range r.uplinks {
		if u != v {
			recv = max(recv, up.TransferMs(1, size))
		}
	}
	d := r.uplinks[v].TransferMs(1, size) + recv
	r.res.VisibilityMs = append(r.res.VisibilityMs, d)
	if event {
		r.res.EventVisibilityMs = append(r.res.EventVisibilityMs, d)
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
	// Issue the cards while the network is whole; the venues receive
	// them as a backlog (one run per issuing venue).
	r.h.HoldGossip()
	for range sc.Cards.Count {
		c := &scCard{id: r.newCardID(), refundAt: -1}
		for _, v := range r.rng.Perm(sc.Venues.Count)[:sc.Cards.HomeVenues] {
			c.homes = append(c.homes, v)
		}
		r.cards = append(r.cards, c)
		r.byID[c.id] = c
		if err := r.topUp(c.homes[0], c, sc.TopUps.InitialCents, false); err != nil {
			return err
		}
		if sc.Refunds.Share > 0 && r.rng.Float64() < sc.Refunds.Share {
			c.refundAt = r.between(0, sc.Duration.Ms())
			r.refunds = append(r.refunds, c)
		}
	}
	if err := r.h.FlushBatched(); err != nil {
		return fmt.Errorf("simulations: issue the cards: %w", err)
	}
	slices.SortStableFunc(r.refunds, func(a, b *scCard) int { return cmp.Compare(a.refundAt, b.refundAt) })
	if err := r.commitStores(); err != nil {
		return err
	}
	if r.network != NetworkMemory {
		// From here on the venues' networks carry the ops: the harness
		// plays each step holding the world lock, and releases it for the
		// networks to carry what the step made.
		r.world.Lock()
		c, err := newNetCarrier(ctx, r.h, &r.world, netCarrierConfig{
			Kind: r.network, Uplinks: r.uplinks, NoAntiEntropy: r.opts.NoAntiEntropy, Timeout: r.opts.ConvergeTimeout,
			TimeScale: sc.Transport.TimeScale, Heartbeat: sc.Transport.Heartbeat.Duration, MeshDegree: sc.Transport.MeshDegree,
			NoPeerScoring: sc.Transport.PeerScoring != nil && !*sc.Transport.PeerScoring,
			Logger:        r.opts.Logger, NetLogger: r.opts.NetLogger,
		})
		if err != nil {
			r.world.Unlock()
			return fmt.Errorf("simulations: scenario %s: start the networks: %w", sc.Name, err)
		}
		r.carry = c
		defer func() {
			r.collectWire()
			r.world.Unlock()
			if cerr := c.close(); cerr != nil {
				r.opts.Logger.Warn("simulate: close the networks", "err", cerr)
			}
		}()
		if err := r.h.SetCarrier(c); err != nil {
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
		if err := r.crashes(); err != nil {
			return err
		}
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
		if err := r.holderRefunds(); err != nil {
			return err
		}
		if err := r.publish(step); err != nil {
			return err
		}
		if r.carry != nil {
			took, err := r.flow()
			r.opts.Logger.Debug("simulate: step carried", "sim", fmtSim(r.now), "wall", took, "ops", len(r.ops))
			if err != nil {
				if errors.Is(err, errNotConverged) {
					return r.violate("one digest on each side after each step", fmt.Sprintf("the network did not carry the ops of the step at %s to every venue of their side: %v", fmtSim(r.now), err), r.digestOps())
				}
				return err
			}
		}
		if err := r.commitStores(); err != nil {
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
	clear(r.down)
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
	if r.carry != nil {
		// The cuts go to the network (gater, closed connections); venues
		// newly on one side run the network's own anti-entropy, waited for.
		if err := r.carry.layout(r.ctx, r.down); err != nil {
			return fmt.Errorf("simulations: partition the network: %w", err)
		}
		if _, err := r.flow(); err != nil {
			if errors.Is(err, errNotConverged) {
				return r.violate("one digest on each side after each step", fmt.Sprintf("venues brought to one side at %s did not converge: %v", fmtSim(r.now), err), r.digestOps())
			}
			return err
		}
		return nil
	}
	// Venues newly on one side run anti-entropy with each other (unless
	// the test-only broken rule turns it off).
	if r.opts.NoAntiEntropy {
		return nil
	}
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
	for v, vv := range vvs {
		if v >= len(r.uplinks) {
			break
		}
		var ops int64
		for a, s := range union {
			ops += int64(s - min(s, vv[a]))
		}
		rec.EstConvergeMs = max(rec.EstConvergeMs, r.uplinks[v].TransferMs(3, int64(float64(ops)*mean)))
	}
	r.layout = ""
	if r.carry != nil {
		// The network heals: every venue unblocked and reconnected; the
		// real anti-entropy (sync on connect) merges the replicas, timed.
		if err := r.h.Heal(); err != nil {
			return err
		}
		start := time.Now()
		if err := r.carry.layout(r.ctx, r.down); err != nil {
			return fmt.Errorf("simulations: heal the network: %w", err)
		}
		_, err := r.flow()
		took := time.Since(start)
		if errors.Is(err, errNotConverged) {
			return r.violate("one digest everywhere after each heal", fmt.Sprintf("after the heal at %s the network's anti-entropy did not converge: %v", fmtSim(r.now), err), r.digestOps())
		}
		if err != nil {
			return err
		}
		rec.MeasuredConvergeMs = r.carry.unscaled(took)
		rec.MeasuredWallMs = float64(took.Microseconds()) / 1000
		if err := r.h.AfterHeal(); err != nil {
			return err
		}
		if _, err := r.flow(); err != nil {
			if errors.Is(err, errNotConverged) {
				return r.violate("one digest everywhere after each heal", fmt.Sprintf("the automatic blocks after the heal at %s did not reach every venue: %v", fmtSim(r.now), err), r.digestOps())
			}
			return err
		}
	} else if r.opts.NoAntiEntropy {
		// The broken rule: gossip resumes, no catch-up runs.
		if err := r.h.Partition([][]int{r.h.Active()}); err != nil {
			return fmt.Errorf("simulations: reconnect: %w", err)
		}
	} else if err := r.h.Heal(); err != nil {
		return r.violate("one digest everywhere after each heal", err.Error(), r.digestOps())
	}
	ds := r.h.Digests()
	for i := range ds {
		if ds[i] != ds[0] {
			return r.violate("one digest everywhere after each heal", fmt.Sprintf("after the heal at %s, venue %s has digest %x and venue %s %x",
				fmtSim(r.now), r.sc.VenueName(r.h.Active()[i]), ds[i][:6], r.sc.VenueName(r.h.Active()[0]), ds[0][:6]), r.digestOps())
		}
	}
	rec.Digest = hex.EncodeToString(ds[0][:6])
	r.res.Heals = append(r.res.Heals, rec)
	for _, p := range r.pending {
		d := r.now - p.at + rec.EstConvergeMs
		r.res.VisibilityMs = append(r.res.VisibilityMs, d)
		if p.event {
			r.res.EventVisibilityMs = append(r.res.EventVisibilityMs, d)
		}
	}
	r.pending = r.pending[:0]
	return r.checkAll(false)
}

// flow lets the networks carry what the harness made (netCarrier.run),
// hands each venue the ops it received (the reservations they settle are
// released), runs the automatic blocks they call for, and carries those
// too. It returns the wall time the first carriage took.
func (r *scRun) flow() (time.Duration, error) {
	var first time.Duration
	for i := 0; ; i++ {
		took, got, err := r.carry.run(r.ctx, r.down)
		r.res.NetworkWait += took
		if i == 0 {
			first = took
		}
		r.res.MeasuredVisibilityMs = append(r.res.MeasuredVisibilityMs, r.carry.visibility()...)
		if err != nil {
			return first, err
		}
		var cards []crdt.CardID
		for v, ops := range got {
			cards = append(cards, r.h.Delivered(v, ops)...)
		}
		if len(cards) > 0 {
			if err := r.h.Settle(cards); err != nil {
				return first, err
			}
		}
		if !r.carry.pendingOwn() {
			return first, nil
		}
	}
}

// collectWire records the wire bytes of every venue's hosts and the
// networks' counters (network transports).
func (r *scRun) collectWire() {
	if r.carry == nil {
		return
	}
	res := r.res
	res.WireBytes, res.WireByProtocol = 0, map[string]int64{}
	for v := range r.sc.Venues.Count {
		f := res.VenueFiguresAt(v, r.sc)
		f.WireBytes, f.WireByProtocol = 0, r.carry.wire(v)
		for p, b := range f.WireByProtocol {
			f.WireBytes += b
			res.WireByProtocol[p] += b
		}
		res.WireBytes += f.WireBytes
	}
	res.CarriedOps = r.carry.carried
	if ops := r.carry.carried; ops > 0 {
		res.WireBytesPerOpPerNode = float64(res.WireBytes) / float64(ops) / float64(r.sc.Venues.Count)
	}
	st := r.carry.stats()
	res.Net = &st
	slices.Sort(res.MeasuredVisibilityMs)
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

// digestOps lists each venue's digest and the ops the run made that it
// lacks.
func (r *scRun) digestOps() []string {
	var out, lacks []string
	for _, v := range r.h.Active() {
		rep := r.h.Venue(v).Replica
		d := rep.Set.Digest()
		state := ""
		if r.down[v] {
			state = " (down)"
		}
		out = append(out, fmt.Sprintf("venue %s digest %x ops %d%s", r.sc.VenueName(v), d[:6], rep.Set.Len(), state))
		n := 0
		for i := range r.ops {
			op := &r.ops[i]
			if !holds(rep, op.Author, op.Seq, op.ID()) {
				if n++; n <= 5 {
					lacks = append(lacks, fmt.Sprintf("venue %s lacks %s", r.sc.VenueName(v), opDesc(op.ID(), fmt.Sprintf("%s seq %d by %s", op.Kind, op.Seq, r.authorName(op.Author)))))
				}
			}
		}
		if n > 5 {
			lacks = append(lacks, fmt.Sprintf("venue %s lacks %d more", r.sc.VenueName(v), n-5))
		}
	}
	return append(out, lacks...)
}

func (r *scRun) authorName(k crdt.PublicKey) string {
	for v := range r.sc.Venues.Count {
		if r.h.Venue(v).Key() == k {
			return r.sc.VenueName(v)
		}
	}
	return k.Short()
}

func (r *scRun) violate(inv, detail string, ops []string) error {
	if len(ops) > 200 {
		ops = append(ops[:200], fmt.Sprintf("… %d more", len(ops)-200))
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
		if sum != st.Credits-st.Debits || st.Credits != r.res.ToppedUpCents || st.Debits != r.res.PaidCents+r.res.RefundedCents {
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
			return r.violate("conservation of money", fmt.Sprintf("venue %s: Σ balances %s, credits %s − debits %s; the run topped up %s, paid %s and refunded %s",
				r.sc.VenueName(v), euros(sum), euros(st.Credits), euros(st.Debits), euros(r.res.ToppedUpCents), euros(r.res.PaidCents), euros(r.res.RefundedCents)), ops)
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
			if p.refund {
				continue
			}
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
				if c := r.byID[p.card]; c.cloned && (p.offline || p.refund) {
					what := fmt.Sprintf("offline payment card %s %s at %s (period %d)", p.card, euros(int64(p.amount)), r.sc.VenueName(p.venue), p.period)
					if p.refund {
						what = fmt.Sprintf("refund card %s %s at %s (isolated: %v)", p.card, euros(int64(p.amount)), r.sc.VenueName(p.venue), p.offline)
					}
					ops = append(ops, opDesc(p.id, what))
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
		if p.offline && !p.refund && overdrawn[p.card] {
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
	if res.Events > 0 {
		res.EventBytesPerOp = float64(r.eventBytes) / float64(res.Events)
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

// open reports whether venue v sells now: up, and within its hours.
func (r *scRun) open(v int) bool {
	if r.down[v] {
		return false
	}
	o, c, always := r.sc.VenueHours(v)
	if always {
		return true
	}
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
		if c.cloned || c.refunded {
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
		if !c.cloned && !c.refunded {
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
				if r.sc.Refunds.Clones {
					if err := r.cloneRefund(v, c); err != nil {
						return err
					}
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
		lo := r.h.LargestAllowed(v, c.id, st)
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

// refund is a cash refund at venue v by the node's rule (Harness.Refund:
// the quorum check, crdt.State.DecideRefund); clone says the attacker
// asks. A refusal is returned as it is.
func (r *scRun) refund(v int, c *scCard, amount uint64, clone bool) error {
	op, _, err := r.h.Refund(v, c.id, amount, "sim: balance back in cash")
	if err != nil {
		return err
	}
	r.emitted(v, op)
	c.debits += int64(amount)
	r.res.RefundedCents += int64(amount)
	ven := r.h.Venue(v)
	r.pays = append(r.pays, scPay{card: c.id, id: op.ID(), venue: v, amount: amount, offline: ven.Isolated, period: ven.Periods, refund: true})
	if clone {
		r.res.CloneRefunds++
		r.res.CloneRefundCents += int64(amount)
	} else {
		r.res.Refunds++
	}
	return nil
}

// cloneRefund has the clone ask venue v for the card's balance as v sees
// it, in cash.
func (r *scRun) cloneRefund(v int, c *scCard) error {
	card := r.h.Venue(v).Replica.Set.State.Card(c.id)
	if card == nil || card.Balance <= 0 || card.Blocked {
		return nil
	}
	err := r.refund(v, c, uint64(card.Balance), true)
	if err != nil && !refusal(err) && !errors.Is(err, crdt.ErrRefundOffline) {
		return err
	}
	if err != nil {
		r.res.CloneRefundsRefused++
	}
	return nil
}

// holderRefunds has the holders whose time has come ask one of their
// venues (open) for their balance back; a refusal because the venue is
// offline (or busy, or behind) is asked again at the next step.
func (r *scRun) holderRefunds() error {
	keep := r.refunds[:0]
	for i, c := range r.refunds {
		if c.refundAt > r.now {
			keep = append(keep, r.refunds[i:]...)
			break
		}
		if c.cloned || c.refunded {
			continue
		}
		v := c.homes[r.rng.IntN(len(c.homes))]
		if !r.open(v) {
			keep = append(keep, c)
			continue
		}
		amount := c.credits - c.debits
		if amount <= 0 {
			c.refunded = true
			continue
		}
		err := r.refund(v, c, uint64(amount), false)
		switch {
		case err == nil:
			c.refunded = true
		case errors.Is(err, crdt.ErrRefundOffline):
			r.res.RefundsRefusedOffline++
			keep = append(keep, c)
		case refusal(err):
			keep = append(keep, c)
		default:
			return err
		}
	}
	r.refunds = keep
	return nil
}

// publish has each venue that is up publish its events of this step:
// event_upsert ops (a new event, or an update of one it published).
func (r *scRun) publish(step int64) error {
	ev := r.sc.Events
	if ev.PerVenuePerDay <= 0 {
		return nil
	}
	lambda := ev.PerVenuePerDay * float64(step) / 86_400_000
	for v := range r.sc.Venues.Count {
		if r.down[v] {
			continue
		}
		for range r.poisson(lambda) {
			body := &crdt.EventUpsert{Fields: crdt.FieldTitle | crdt.FieldStartsAt | crdt.FieldEndsAt | crdt.FieldDescription | crdt.FieldLocation}
			if mine := r.events[v]; len(mine) > 0 && r.rng.Float64() < ev.UpdateShare {
				body.EventID = mine[r.rng.IntN(len(mine))]
				body.Fields = crdt.FieldDescription | crdt.FieldStartsAt | crdt.FieldEndsAt
			} else {
				body.EventID = fmt.Sprintf("ev-%d-%d", v, len(mine))
				r.events[v] = append(r.events[v], body.EventID)
			}
			body.Title = fmt.Sprintf("Concert %d at %s", len(r.events[v]), r.sc.VenueName(v))
			body.StartsAt = r.start + r.now + r.between(3_600_000, 14*86_400_000)
			body.EndsAt = body.StartsAt + 3*3_600_000
			body.Description = filler(r.rng, ev.DescriptionBytes)
			body.Location = r.sc.VenueName(v)
			op, err := r.h.emit(v, body)
			if err != nil {
				return fmt.Errorf("simulations: publish an event: %w", err)
			}
			r.emitted(v, op)
			r.res.Events++
			r.eventBytes += int64(op.Size())
			r.res.VenueFiguresAt(v, r.sc).Events++
		}
	}
	return nil
}

// filler is n bytes of text.
func filler(rng *rand.Rand, n int) string {
	const words = "live music jazz quartet folk night open mic dj set brunch quiz tasting local beers "
	var b strings.Builder
	for b.Len() < n {
		i := rng.IntN(len(words) - 12)
		b.WriteString(words[i : i+12])
	}
	return b.String()[:n]
}

// crashes kills (kill -9) the nodes whose crash starts now and restarts
// them at once from what their store holds (the venue then stays down,
// cut off, until the crash's end). The restarted node must hold every op
// the venue acknowledged: "no acknowledged payment lost across crashes".
func (r *scRun) crashes() error {
	for _, c := range r.cuts {
		if c.down < 0 || c.killed || c.from > r.now || c.to <= r.now {
			continue
		}
		c.killed = true
		v := c.down
		ven := r.h.Venue(v)
		rep := ven.Replica
		if r.stores != nil {
			var err error
			next := filepath.Join(r.tmp, fmt.Sprintf("venue-%d-restart-%d", v, r.res.VenueFiguresAt(v, r.sc).Crashes+1))
			if rep, err = r.stores[v].kill(next); err != nil {
				return fmt.Errorf("simulations: crash of %s: %w", r.sc.VenueName(v), err)
			}
		}
		// Every op the venue signed (hence acknowledged) and every op
		// acknowledged to it that it had committed must be back.
		var lost []string
		for i := range r.ops {
			op := &r.ops[i]
			if op.Author == ven.Key() && !holds(rep, op.Author, op.Seq, op.ID()) {
				lost = append(lost, opDesc(op.ID(), fmt.Sprintf("%s seq %d by %s", op.Kind, op.Seq, r.sc.VenueName(v))))
			}
		}
		if before, after := ven.Replica.Set.Digest(), rep.Set.Digest(); before != after && len(lost) == 0 {
			lost = append(lost, fmt.Sprintf("venue %s: digest %x before the crash, %x after the restart (%d ops, then %d)",
				r.sc.VenueName(v), before[:6], after[:6], ven.Replica.Set.Len(), rep.Set.Len()))
		}
		if len(lost) > 0 {
			return r.violate("no acknowledged payment lost across crashes", fmt.Sprintf("%s restarted without %d acknowledged ops", r.sc.VenueName(v), len(lost)), lost)
		}
		if err := r.h.Restart(v, rep); err != nil {
			return r.violate("no acknowledged payment lost across crashes", err.Error(), nil)
		}
		if r.carry != nil {
			// The node's network dies with it; the restarted node starts a
			// new one over its durable state, and catches up by the real
			// sync when its cut ends.
			if err := r.carry.restart(r.ctx, v); err != nil {
				return fmt.Errorf("simulations: restart the network of %s: %w", r.sc.VenueName(v), err)
			}
		}
		r.res.Crashes++
		r.res.VenueFiguresAt(v, r.sc).Crashes++
	}
	return nil
}

// openStores gives every venue a Badger store in a temporary directory.
func (r *scRun) openStores() error {
	dir, err := os.MkdirTemp(r.opts.TempDir, "cagnotte-simulate-")
	if err != nil {
		return fmt.Errorf("simulations: store: %w", err)
	}
	r.tmp = dir
	fed := r.h.Venue(0).Replica.Set.Federation()
	for v := range r.sc.Venues.Count {
		d, err := openDurable(filepath.Join(dir, fmt.Sprintf("venue-%d", v)), fed, r.opts.Logger)
		if err != nil {
			return fmt.Errorf("simulations: store of %s: %w", r.sc.VenueName(v), err)
		}
		r.stores = append(r.stores, d)
	}
	return r.commitStores()
}

// commitStores commits every venue's new ops to its store (Badger mode).
func (r *scRun) commitStores() error {
	for v, d := range r.stores {
		if err := d.commit(r.h.Venue(v).Replica); err != nil {
			return err
		}
	}
	return nil
}

// closeStores closes the stores and removes their directory.
func (r *scRun) closeStores() error {
	var errs []error
	for v, d := range r.stores {
		r.res.VenueFiguresAt(v, r.sc).StoreBytes = d.size()
		errs = append(errs, d.st.Close())
	}
	r.stores = nil
	if r.tmp != "" {
		errs = append(errs, os.RemoveAll(r.tmp))
		r.tmp = ""
	}
	return errors.Join(errs...)
}
