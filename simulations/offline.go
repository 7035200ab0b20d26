package simulations

import (
	"cmp"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/cagnotte/cagnotte/crdt"
)

// StampPolicy says which stamp a cloned card presents.
type StampPolicy string

// Stamp policies of cloned cards.
const (
	// StampFrozen: the clone always presents the stamp copied from the
	// card when it was cloned (a copy nobody writes back to).
	StampFrozen StampPolicy = "frozen"
	// StampPerGroup: within one partition group the clone carries the
	// stamps venues write back, like a real card, so the venues of that
	// group never see a stale stamp; entering another group it presents
	// the copied stamp again, so that group's venues judge it on their own
	// (older) view of the balance. This is the strongest clone the caps
	// have to contain.
	StampPerGroup StampPolicy = "per_group"
)

// OfflineConfig configures RunOffline. Start from DefaultOfflineConfig or
// FullOfflineConfig and change what you need: RunOffline fills zero fields
// with the defaults, except Seed, Clones, AttackAfterMs and DetectionLag,
// where zero means what it says, and Settings, where nil means
// crdt.DefaultSettings.
type OfflineConfig struct {
	// Venues in the federation.
	Venues int `json:"venues"`
	// Episodes is the number of partitions in the evening: each splits the
	// venues into 2 to MaxGroups random groups for a random time, then
	// heals, then the network stays whole for a random time.
	Episodes int `json:"episodes"`
	// Cards is the number of cards issued (topped up at a random venue)
	// before the first partition.
	Cards int `json:"cards"`
	// Clones is the number of cards cloned, each at a random moment before
	// the last partition. From then on the attacker holds the card and its
	// clone; both leave the honest traffic.
	Clones int `json:"clones"`
	// Seed makes the run reproducible (keys, partitions, traffic).
	Seed uint64 `json:"seed"`
	// Settings are the federation settings of the genesis (nil: defaults).
	Settings *crdt.Settings `json:"settings,omitempty"`
	// MaxGroups bounds the groups of one partition (at least 2).
	MaxGroups int `json:"max_groups"`
	// HealMinMs and HealMaxMs bound the whole-network time after each
	// partition (and before the first one).
	HealMinMs int64 `json:"heal_min_ms"`
	HealMaxMs int64 `json:"heal_max_ms"`
	// SplitMinMs and SplitMaxMs bound the length of a partition.
	SplitMinMs int64 `json:"split_min_ms"`
	SplitMaxMs int64 `json:"split_max_ms"`
	// PaymentsPerCardHour is the honest traffic: each card in honest hands
	// pays this many times per hour on average (a Poisson process).
	PaymentsPerCardHour float64 `json:"payments_per_card_hour"`
	// AttackAfterMs is how long after a partition starts the attackers
	// strike; 0 means as it starts.
	AttackAfterMs int64 `json:"attack_after_ms"`
	// DetectionLag makes venues detect isolation as node/offline.go does,
	// from heartbeats that expire after Settings.IsolationAfter, instead of
	// at the moment of the split.
	DetectionLag bool `json:"detection_lag"`
	// NoQuorumCheck turns off the nodes' quorum ping before a payment (see
	// HarnessConfig.NoQuorumCheck), to measure the detection window alone.
	NoQuorumCheck bool `json:"no_quorum_check,omitempty"`
	// CloneStamps is the stamp policy of clones (default StampFrozen).
	CloneStamps StampPolicy `json:"clone_stamps"`
	// AttackerTopUpCents, when positive, has the attacker top the card up
	// to that balance just before cloning it (an attacker cloning their own
	// card): the balance then exceeds what the caps let a clone take.
	AttackerTopUpCents int64 `json:"attacker_topup_cents,omitempty"`
	// NoReservations turns off the reservation of cards above the floor
	// limit (see HarnessConfig.NoReservations).
	NoReservations bool `json:"no_reservations,omitempty"`
	// RefundShare is the share of honest card events that are a cash
	// refund of the rest of the card's balance at a random venue instead of
	// a payment. With refunds, every clone also asks each venue it reaches
	// on the far side of a partition for the card's balance in cash.
	RefundShare float64 `json:"refund_share,omitempty"`
	// DoubleSigners is how many partitions (the first ones) start with a
	// random venue's data dir copied to a second till on another side: two
	// tills signing with one key, until the heal switches the copy off.
	DoubleSigners int `json:"double_signers,omitempty"`
	// UIDOnlyShare is the share of venues whose readers read the card's
	// UID only: they neither read nor write stamps.
	UIDOnlyShare float64 `json:"uid_only_share,omitempty"`
}

const minute = 60_000

// DefaultOfflineConfig is the small run of the default tests: 10 venues, 3
// partitions, 40 cards, 4 clones, defaults settings, instant isolation.
func DefaultOfflineConfig() OfflineConfig {
	return OfflineConfig{
		Venues: 10, Episodes: 3, Cards: 40, Clones: 4, MaxGroups: 3,
		HealMinMs: 5 * minute, HealMaxMs: 20 * minute,
		SplitMinMs: 10 * minute, SplitMaxMs: 45 * minute,
		PaymentsPerCardHour: 1, AttackAfterMs: minute, CloneStamps: StampFrozen,
	}
}

// FullOfflineConfig is the benchmark's size: 10 venues, 20 partitions, 500
// cards, 50 clones.
func FullOfflineConfig() OfflineConfig {
	c := DefaultOfflineConfig()
	c.Episodes, c.Cards, c.Clones = 20, 500, 50
	return c
}

func (c OfflineConfig) withDefaults() OfflineConfig {
	d := DefaultOfflineConfig()
	set := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	set64 := func(p *int64, v int64) {
		if *p == 0 {
			*p = v
		}
	}
	set(&c.Venues, d.Venues)
	set(&c.Episodes, d.Episodes)
	set(&c.Cards, d.Cards)
	set(&c.MaxGroups, d.MaxGroups)
	set64(&c.HealMinMs, d.HealMinMs)
	set64(&c.HealMaxMs, d.HealMaxMs)
	set64(&c.SplitMinMs, d.SplitMinMs)
	set64(&c.SplitMaxMs, d.SplitMaxMs)
	if c.PaymentsPerCardHour == 0 {
		c.PaymentsPerCardHour = d.PaymentsPerCardHour
	}
	if c.CloneStamps == "" {
		c.CloneStamps = StampFrozen
	}
	if c.Settings == nil {
		s := crdt.DefaultSettings()
		c.Settings = &s
	}
	return c
}

func (c OfflineConfig) validate() error {
	switch {
	case c.Venues < 2:
		return errors.New("simulations: at least 2 venues")
	case c.MaxGroups < 2 || c.MaxGroups > c.Venues:
		return fmt.Errorf("simulations: max groups must be between 2 and the number of venues")
	case c.Episodes < 1:
		return errors.New("simulations: at least one episode")
	case c.Cards < 1 || c.Clones < 0 || c.Clones > c.Cards:
		return errors.New("simulations: need cards, and no more clones than cards")
	case c.HealMinMs <= 0 || c.HealMaxMs < c.HealMinMs || c.SplitMinMs <= 0 || c.SplitMaxMs < c.SplitMinMs:
		return errors.New("simulations: durations must be positive, min <= max")
	case c.PaymentsPerCardHour < 0 || c.AttackAfterMs < 0 || c.AttackerTopUpCents < 0 || c.AttackerTopUpCents > crdt.MaxAmount:
		return errors.New("simulations: negative rate or delay")
	case c.RefundShare < 0 || c.RefundShare > 1 || c.UIDOnlyShare < 0 || c.UIDOnlyShare > 1 || c.DoubleSigners < 0:
		return errors.New("simulations: shares must be between 0 and 1, double signers not negative")
	case c.CloneStamps != StampFrozen && c.CloneStamps != StampPerGroup:
		return fmt.Errorf("simulations: unknown clone stamp policy %q", c.CloneStamps)
	}
	return nil
}

// EpisodeReport describes one partition.
type EpisodeReport struct {
	Episode int `json:"episode"`
	// StartMs is the split's offset from the start of the run.
	StartMs    int64 `json:"start_ms"`
	DurationMs int64 `json:"duration_ms"`
	// Groups lists the venues of each group.
	Groups [][]int `json:"groups"`
	// InSyncGroup is the group that stays in sync (a majority under
	// MinPeersPercent), or -1 when every venue is isolated.
	InSyncGroup     int   `json:"in_sync_group"`
	Payments        int   `json:"payments"`
	OfflinePayments int   `json:"offline_payments"`
	AttackPayments  int   `json:"attack_payments"`
	AttackCents     int64 `json:"attack_cents"`
	// CopiedVenue is the venue whose data dir was copied to a second till
	// for this partition, and CopyGroup the group the copy was in; -1
	// when none.
	CopiedVenue int `json:"copied_venue"`
	CopyGroup   int `json:"copy_group"`
}

// HonestStats is the honest traffic: payments of cards that were never
// cloned.
type HonestStats struct {
	Attempted int `json:"attempted"`
	Accepted  int `json:"accepted"`
	// OfflineAttempted were asked at an isolated venue.
	OfflineAttempted int `json:"offline_attempted"`
	OfflineAccepted  int `json:"offline_accepted"`
	// RefusedCap were refused with offline_cap_exceeded; RefusedCapBy
	// splits them by the first cap that refused: floor (per payment),
	// card_amount, card_count, venue_budget, validity.
	RefusedCap   int            `json:"refused_cap"`
	RefusedCapBy map[string]int `json:"refused_cap_by"`
	// RefusedFunds were refused for insufficient funds (a top-up made on
	// the other side of a partition is not seen yet).
	RefusedFunds int `json:"refused_funds"`
	RefusedOther int `json:"refused_other"`
	TopUps       int `json:"topups"`
	// Collisions counts the (card, counter) pairs of honest cards paid
	// twice (a reader that cannot read the stamp); StaleStamps the honest
	// payments made on an older stamp (a reader that could not write it).
	// Both are expected with UID-only readers; neither may block a card.
	Collisions  int `json:"collisions"`
	StaleStamps int `json:"stale_stamps"`
	// FalseBlocks counts honest cards blocked though no money is missing
	// (every honest card's balance is ≥ 0).
	FalseBlocks int `json:"false_blocks"`
	// Cards is the number of honest cards (never cloned).
	Cards int `json:"cards"`
}

// RefundStats counts cash refunds asked for.
type RefundStats struct {
	Attempted int   `json:"attempted"`
	Accepted  int   `json:"accepted"`
	Cents     int64 `json:"cents"`
	// RefusedOffline were refused because the venue was isolated or could
	// not reach a quorum now (crdt.ErrRefundOffline).
	RefusedOffline int `json:"refused_offline"`
	RefusedFunds   int `json:"refused_funds"`
	RefusedOther   int `json:"refused_other"`
	// AcceptedIsolated counts refunds accepted at a venue that was
	// isolated: the rules forbid it, so it must stay 0.
	AcceptedIsolated int `json:"accepted_isolated"`
}

// AttackStats is what the attackers (cloned cards and their originals)
// got accepted.
type AttackStats struct {
	Payments        int   `json:"payments"`
	Cents           int64 `json:"cents"`
	OfflinePayments int   `json:"offline_payments"`
	OfflineCents    int64 `json:"offline_cents"`
	InSyncPayments  int   `json:"in_sync_payments"`
	InSyncCents     int64 `json:"in_sync_cents"`
	ClonePayments   int   `json:"clone_payments"`
	CloneCents      int64 `json:"clone_cents"`
}

// OfflineReport is the outcome of one run. All amounts are in cents.
type OfflineReport struct {
	Config   OfflineConfig   `json:"config"`
	Episodes []EpisodeReport `json:"episodes"`
	Ops      uint64          `json:"ops"`
	// Digest is the replicas' common digest after the final heal (hex);
	// Converged says every replica has it.
	Digest    string `json:"digest"`
	Converged bool   `json:"converged"`

	// LossCents is Σ over cards of max(0, −balance) in the converged
	// ledger: money spent that was never credited. LossCards counts them.
	LossCents int64 `json:"loss_cents"`
	LossCards int   `json:"loss_cards"`
	// BoundCents is the bound from the offline caps: over every (venue,
	// isolation period), min(OfflineVenueBudget, Σ over the overdrawn
	// cards that paid there offline of min(OfflineCardMax,
	// OfflineCardCount × OfflinePaymentMax)).
	BoundCents int64 `json:"bound_cents"`
	// SyncExposureCents is the extra term when one card paid in sync in
	// more than one group of a partition (isolation detected late, or
	// MinPeersPercent below 50): Σ (groups − 1) × its balance at the split.
	// Loss ≤ Bound + SyncExposure always; SyncExposure is 0 when isolation
	// is detected at once and MinPeersPercent ≥ 50.
	SyncExposureCents int64 `json:"sync_exposure_cents"`
	// CardsOverCapBound counts overdrawn cards whose loss exceeds their own
	// share of the caps (Σ over the isolation periods of the venues where
	// they paid offline of the per-card cap): losses the caps did not
	// bound.
	CardsOverCapBound int `json:"cards_over_cap_bound"`

	// DoubleSpends counts the (card, counter) pairs the run paid twice or
	// more; DoubleSpendsDetected those found as one double_spend conflict
	// with exactly those payments, on every replica.
	DoubleSpends         int `json:"double_spends"`
	DoubleSpendsDetected int `json:"double_spends_detected"`
	// StaleStamps counts the payments made on a stamp older than the
	// venue's counter; StaleStampsDetected those in their card's
	// stale_stamp conflict on every replica.
	StaleStamps         int `json:"stale_stamps"`
	StaleStampsDetected int `json:"stale_stamps_detected"`
	// DuplicateConflicts counts conflicts reported more than once for one
	// (kind, card, counter); FalseConflicts those the run did not cause.
	DuplicateConflicts int `json:"duplicate_conflicts"`
	FalseConflicts     int `json:"false_conflicts"`
	// UnflaggedLossCards are overdrawn cards without any conflict, not
	// counting RefundOverdrawnCards, overdrawn cards that were refunded
	// (a refund has no counter to collide on).
	UnflaggedLossCards   int `json:"unflagged_loss_cards"`
	RefundOverdrawnCards int `json:"refund_overdrawn_cards"`
	BlockOps             int `json:"block_ops"`
	BlockedCards         int `json:"blocked_cards"`

	Honest HonestStats `json:"honest"`
	Attack AttackStats `json:"attack"`

	// Money: the converged ledger's credits, debits and Σ balances, and
	// what the run credited and debited.
	CreditsCents    int64 `json:"credits_cents"`
	DebitsCents     int64 `json:"debits_cents"`
	BalancesCents   int64 `json:"balances_cents"`
	ToppedUpCents   int64 `json:"topped_up_cents"`
	PaidCents       int64 `json:"paid_cents"`
	HonestNegatives int   `json:"honest_negatives"`
	// ErasedOps counts (op, replica) pairs where a payment, refund or
	// top-up the run made is not counted in its card's history: money
	// erased.
	ErasedOps int `json:"erased_ops"`

	// HonestRefunds are the holders' refunds, AttackRefunds the clones'.
	HonestRefunds RefundStats `json:"honest_refunds"`
	AttackRefunds RefundStats `json:"attack_refunds"`

	// Forks counts the venue keys that signed on two tills (both signed
	// after the copy); ForksDetected those listed as an equivocation
	// conflict on every replica.
	Forks         int `json:"forks"`
	ForksDetected int `json:"forks_detected"`
	// RefusalBlocks counts the block ops made after a refused payment
	// (a stale stamp presented while isolated).
	RefusalBlocks int `json:"refusal_blocks"`

	// Violations lists every invariant that failed; empty on a good run.
	Violations []string `json:"violations,omitempty"`
}

// LossRatio is loss / bound (0 when the bound is 0).
func (r *OfflineReport) LossRatio() float64 { return ratio(r.LossCents, r.BoundCents) }

// DetectedPercent is the share of double spends and stale stamps found.
func (r *OfflineReport) DetectedPercent() float64 {
	return percent(r.DoubleSpendsDetected+r.StaleStampsDetected, r.DoubleSpends+r.StaleStamps)
}

// RefusedHonestPercent is the share of honest payments refused by the
// offline caps.
func (r *OfflineReport) RefusedHonestPercent() float64 {
	return 100 * ratio(int64(r.Honest.RefusedCap), int64(r.Honest.Attempted))
}

// Err returns the violated invariants as one error, or nil.
func (r *OfflineReport) Err() error {
	if len(r.Violations) == 0 {
		return nil
	}
	return fmt.Errorf("offline simulation (seed %d): %s", r.Config.Seed, strings.Join(r.Violations, "; "))
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func percent(a, b int) float64 {
	if b == 0 {
		return 100
	}
	return 100 * float64(a) / float64(b)
}

// actor says who made a payment.
type actor uint8

const (
	actorHonest actor = iota
	actorOriginal
	actorClone
)

// payRec is one accepted payment, as the simulation saw it.
type payRec struct {
	refund       bool
	card         crdt.CardID
	id           crdt.OpID
	venue        int
	amount       uint64
	counter      uint64
	stampCounter uint64
	offline      bool
	period       int
	episode      int // -1 while the network is whole
	group        int
	actor        actor
}

type simCard struct {
	refunds RefundStats
	id      crdt.CardID
	stamp   []byte // the stamp on the real card
	credits int64
	debits  int64
	cloned  bool
	honest  HonestStats
}

func (c *simCard) balance() int64 { return c.credits - c.debits }

type simClone struct {
	card   *simCard
	frozen []byte
	madeAt int64
}

// copyRec is a venue's data dir copied to a second till.
type copyRec struct {
	venue, twin int
	key         crdt.PublicKey
	seq         uint64 // the author's seq at the copy
}

type evKind uint8

// Event kinds, in the order they run when they share a time.
const (
	evHeal evKind = iota
	evSplit
	evIssue
	evClone
	evAttack
)

type event struct {
	t    int64
	kind evKind
	ep   int
	idx  int
}

type scenario struct {
	uidOnly []bool
	// twin[v] is the index of venue v's active copy, if any.
	twin    map[int]int
	copies  []copyRec
	topups  []crdt.OpID
	cfg     OfflineConfig
	set     crdt.Settings
	rng     *rand.Rand
	h       *Harness
	start   int64
	cards   []*simCard
	honest  []int
	clones  []*simClone
	pays    []payRec
	episode int
	b0      []map[crdt.CardID]int64
	rep     OfflineReport
	paid    int64
	topped  int64
}

// simStart is the virtual start of every run, Unix ms: an evening in June
// (2026-06-20 18:00 UTC).
const simStart int64 = 1_781_978_400_000

// RunOffline runs the offline-risk scenario: venues under random
// partitions, honest card traffic, cloned cards spending all they can on
// the far side of each partition, then a final heal. It returns the report;
// invariant failures are in OfflineReport.Violations (see Err), and the
// error is for a run that could not be carried out.
func RunOffline(cfg OfflineConfig) (OfflineReport, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return OfflineReport{Config: cfg}, err
	}
	s := &scenario{
		cfg:     cfg,
		set:     *cfg.Settings,
		rng:     newRng(cfg.Seed),
		start:   simStart,
		episode: -1,
		twin:    map[int]int{},
	}
	s.rep.Config = cfg
	h, err := NewHarness(HarnessConfig{Venues: cfg.Venues, Seed: cfg.Seed, Settings: s.set, Start: s.start,
		DetectionLag: cfg.DetectionLag, NoQuorumCheck: cfg.NoQuorumCheck, NoReservations: cfg.NoReservations})
	if err != nil {
		return s.rep, err
	}
	s.h = h
	s.uidOnly = make([]bool, cfg.Venues)
	for _, v := range s.rng.Perm(cfg.Venues)[:int(math.Round(cfg.UIDOnlyShare*float64(cfg.Venues)))] {
		s.uidOnly[v] = true
	}
	if err := s.run(); err != nil {
		return s.rep, err
	}
	s.check()
	return s.rep, nil
}

// RunOfflineSeeds runs cfg once per seed.
func RunOfflineSeeds(cfg OfflineConfig, seeds []uint64) ([]OfflineReport, error) {
	out := make([]OfflineReport, 0, len(seeds))
	for _, seed := range seeds {
		cfg.Seed = seed
		r, err := RunOffline(cfg)
		if err != nil {
			return out, fmt.Errorf("seed %d: %w", seed, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func (s *scenario) between(lo, hi int64) int64 {
	if hi <= lo {
		return lo
	}
	return lo + s.rng.Int64N(hi-lo+1)
}

// schedule draws the evening: card issues, partitions, clones, attacks.
func (s *scenario) schedule() ([]event, int64, int64) {
	cfg := s.cfg
	opening := cfg.HealMaxMs
	var evs []event
	for i := range cfg.Cards {
		evs = append(evs, event{t: s.start + s.rng.Int64N(opening/2+1), kind: evIssue, idx: i})
	}
	t := s.start + opening
	var lastSplit int64
	for e := range cfg.Episodes {
		d := s.between(cfg.SplitMinMs, cfg.SplitMaxMs)
		evs = append(evs, event{t: t, kind: evSplit, ep: e, idx: int(d)})
		at := min(t+cfg.AttackAfterMs, t+d-1)
		evs = append(evs, event{t: at, kind: evAttack, ep: e})
		evs = append(evs, event{t: t + d, kind: evHeal, ep: e})
		lastSplit = t
		t += d + s.between(cfg.HealMinMs, cfg.HealMaxMs)
	}
	honestFrom := s.start + opening/2 + 1
	for i := range cfg.Clones {
		evs = append(evs, event{t: s.between(honestFrom, lastSplit-1), kind: evClone, idx: i})
	}
	slices.SortStableFunc(evs, func(a, b event) int {
		if c := cmp.Compare(a.t, b.t); c != 0 {
			return c
		}
		if c := cmp.Compare(a.kind, b.kind); c != 0 {
			return c
		}
		return cmp.Compare(a.idx, b.idx)
	})
	return evs, honestFrom, t
}

func (s *scenario) run() error {
	evs, honestFrom, end := s.schedule()
	rate := float64(s.cfg.Cards) * s.cfg.PaymentsPerCardHour / 3_600_000 // per ms
	next := func(t int64) int64 {
		if rate <= 0 {
			return math.MaxInt64
		}
		return t + 1 + int64(s.rng.ExpFloat64()/rate)
	}
	nextHonest := next(honestFrom)
	for i := 0; i < len(evs) || nextHonest < end; {
		if i < len(evs) && evs[i].t <= nextHonest {
			ev := evs[i]
			i++
			s.h.AdvanceTo(ev.t)
			if err := s.handle(ev); err != nil {
				return err
			}
			continue
		}
		s.h.AdvanceTo(nextHonest)
		if err := s.honestPayment(); err != nil {
			return err
		}
		nextHonest = next(nextHonest)
	}
	s.h.AdvanceTo(end)
	return s.h.Heal()
}

func (s *scenario) handle(ev event) error {
	switch ev.kind {
	case evIssue:
		c := &simCard{id: s.newCardID()}
		s.cards = append(s.cards, c)
		s.honest = append(s.honest, len(s.cards)-1)
		amounts := []uint64{2000, 3000, 5000, 5000, 10000}
		return s.topUp(s.rng.IntN(s.cfg.Venues), c, amounts[s.rng.IntN(len(amounts))])
	case evSplit:
		return s.split(ev.ep, int64(ev.idx))
	case evHeal:
		s.episode = -1
		for v, t := range s.twin {
			s.h.Retire(t)
			delete(s.twin, v)
		}
		return s.h.Heal()
	case evClone:
		if len(s.honest) == 0 {
			return nil
		}
		i := s.rng.IntN(len(s.honest))
		c := s.cards[s.honest[i]]
		s.honest = slices.Delete(s.honest, i, i+1)
		c.cloned = true
		if short := s.cfg.AttackerTopUpCents - c.balance(); short > 0 {
			v := s.rng.IntN(s.cfg.Venues)
			if amount := s.largestTopUp(v, c.id, uint64(short)); amount > 0 {
				if err := s.topUp(v, c, amount); err != nil {
					return err
				}
			}
		}
		s.clones = append(s.clones, &simClone{card: c, frozen: slices.Clone(c.stamp), madeAt: s.h.Now()})
	case evAttack:
		return s.attack()
	}
	return nil
}

func (s *scenario) newCardID() crdt.CardID {
	for {
		b := make([]byte, 7)
		b[0] = 0x04 // NXP
		for i := 1; i < len(b); i++ {
			b[i] = byte(s.rng.UintN(256))
		}
		id := crdt.CardID(strings.ToUpper(hex.EncodeToString(b)))
		if !slices.ContainsFunc(s.cards, func(c *simCard) bool { return c.id == id }) {
			return id
		}
	}
}

// split partitions the venues into 2..MaxGroups random groups.
func (s *scenario) split(ep int, d int64) error {
	n := s.cfg.Venues
	k := min(n, 2+s.rng.IntN(s.cfg.MaxGroups-1))
	perm := s.rng.Perm(n)
	cuts := s.rng.Perm(n - 1)[:k-1]
	for i := range cuts {
		cuts[i]++
	}
	slices.Sort(cuts)
	cuts = append(cuts, n)
	groups := make([][]int, 0, k)
	from := 0
	for _, c := range cuts {
		g := slices.Clone(perm[from:c])
		slices.Sort(g)
		groups = append(groups, g)
		from = c
	}
	// The ledger is whole before a split: every replica holds the same
	// balances, the B0 of the bound's derivation.
	b0 := map[crdt.CardID]int64{}
	for id, c := range s.h.Venue(0).Replica.Set.State.Cards {
		b0[id] = c.Balance
	}
	s.b0 = append(s.b0, b0)
	copied, copyGroup := -1, -1
	if ep < s.cfg.DoubleSigners && len(groups) > 1 {
		// A venue's data dir copied to a second till, which opens on
		// another side of the split.
		v := s.rng.IntN(n)
		t, err := s.h.CopyVenue(v)
		if err != nil {
			return err
		}
		home := slices.IndexFunc(groups, func(g []int) bool { return slices.Contains(g, v) })
		copyGroup = (home + 1 + s.rng.IntN(len(groups)-1)) % len(groups)
		groups[copyGroup] = append(groups[copyGroup], t)
		s.twin[v] = t
		seq, _ := s.h.Venue(v).Replica.Set.Head(s.h.Venue(v).Key())
		s.copies = append(s.copies, copyRec{venue: v, twin: t, key: s.h.Venue(v).Key(), seq: seq})
		copied = v
	}
	if err := s.h.Partition(groups); err != nil {
		return err
	}
	s.episode = ep
	inSync := -1
	for g, m := range groups {
		if s.h.WouldSync(s.keys(m)) {
			inSync = g
		}
	}
	s.rep.Episodes = append(s.rep.Episodes, EpisodeReport{Episode: ep + 1, StartMs: s.h.Now() - s.start, DurationMs: d, Groups: groups,
		InSyncGroup: inSync, CopiedVenue: copied, CopyGroup: copyGroup})
	return nil
}

// amount draws an honest purchase: 90 % between 1.50 and 12.00 (a drink, a
// meal), 10 % between 12.00 and 50.00 (a round, a ticket), log-uniform, to
// the 10 cents.
func (s *scenario) amount() uint64 {
	lo, hi := 150.0, 1200.0
	if s.rng.Float64() < 0.1 {
		lo, hi = 1200, 5000
	}
	a := lo * math.Exp(s.rng.Float64()*math.Log(hi/lo))
	return uint64(math.Round(a/10)) * 10
}

// keys counts the distinct venue keys among venues (a copied till signs
// with its venue's key).
func (s *scenario) keys(venues []int) int {
	seen := map[crdt.PublicKey]bool{}
	for _, v := range venues {
		seen[s.h.Venue(v).Key()] = true
	}
	return len(seen)
}

// venue draws the venue a holder walks into: a random venue, or its
// second till while one is open.
func (s *scenario) venue() int {
	v := s.rng.IntN(s.cfg.Venues)
	if t, ok := s.twin[v]; ok && s.rng.IntN(2) == 0 {
		return t
	}
	return v
}

// reads reports whether venue v's readers read and write stamps.
func (s *scenario) reads(v int) bool {
	if t := s.h.Venue(v).Twin; t >= 0 {
		v = t
	}
	return !s.uidOnly[v]
}

func (s *scenario) topUp(v int, c *simCard, amount uint64) error {
	op, err := s.h.TopUp(v, c.id, amount)
	if errors.Is(err, crdt.ErrCardBlocked) {
		return nil
	}
	if err != nil {
		return err
	}
	c.credits += int64(amount)
	s.topped += int64(amount)
	s.topups = append(s.topups, op.ID())
	c.honest.TopUps++
	return nil
}

// largestTopUp is the largest top-up up to want that venue v accepts for
// card now (crdt.State.DecideTopUp: the balance ceiling as the venue sees
// the card).
func (s *scenario) largestTopUp(v int, card crdt.CardID, want uint64) uint64 {
	st := s.h.Venue(v).Replica.Set.State
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

func decodeStamp(p []byte) (*crdt.CardStamp, error) {
	if len(p) == 0 {
		return nil, nil
	}
	st, err := crdt.DecodeStamp(p)
	if err != nil {
		return nil, err
	}
	return &st, nil
}

// refusal reports whether err is a payment rule refusing, not a failure of
// the run.
func refusal(err error) bool {
	for _, e := range []error{crdt.ErrUnknownCard, crdt.ErrCardBlocked, crdt.ErrInsufficientFunds, crdt.ErrOfflineCap, crdt.ErrDailyCap,
		crdt.ErrBadStamp, crdt.ErrStaleStamp, crdt.ErrCardBusy, crdt.ErrRefundOffline, crdt.ErrBalanceCeiling} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// capReason names the offline cap that refused a payment (see
// Harness.CapRefused).
func (s *scenario) capReason(v int, c crdt.CardID, amount uint64, st *crdt.CardStamp) string {
	return s.h.CapRefused(v, c, amount, st)
}

// honestPayment: a card in honest hands pays at a random venue, topping up
// first when its holder knows the balance is short.
func (s *scenario) honestPayment() error {
	if len(s.honest) == 0 {
		return nil
	}
	c := s.cards[s.honest[s.rng.IntN(len(s.honest))]]
	v := s.venue()
	if s.cfg.RefundShare > 0 && s.rng.Float64() < s.cfg.RefundShare {
		return s.refund(v, c, &c.refunds, actorHonest)
	}
	amount := s.amount()
	if short := int64(amount) - c.balance(); short > 0 {
		top := (short+499)/500*500 + 500*int64(2+s.rng.IntN(9))
		if err := s.topUp(v, c, uint64(top)); err != nil {
			return err
		}
	}
	var st *crdt.CardStamp
	if s.reads(v) {
		var err error
		if st, err = decodeStamp(c.stamp); err != nil {
			return err
		}
	}
	offline := s.h.Venue(v).Isolated
	c.honest.Attempted++
	if offline {
		c.honest.OfflineAttempted++
	}
	p, err := s.pay(v, c, amount, st, actorHonest)
	switch {
	case err == nil:
		if s.reads(v) {
			c.stamp = p.Stamp
		}
		c.honest.Accepted++
		if p.Offline {
			c.honest.OfflineAccepted++
		}
	case errors.Is(err, crdt.ErrOfflineCap):
		c.honest.RefusedCap++
		if c.honest.RefusedCapBy == nil {
			c.honest.RefusedCapBy = map[string]int{}
		}
		c.honest.RefusedCapBy[s.capReason(v, c.id, amount, st)]++
	case errors.Is(err, crdt.ErrInsufficientFunds):
		c.honest.RefusedFunds++
	case refusal(err):
		c.honest.RefusedOther++
	default:
		return err
	}
	return nil
}

// refund asks venue v for the rest of the card's balance in cash: the
// balance its holder knows, or for a clone (who) the balance the venue
// shows for the card.
func (s *scenario) refund(v int, c *simCard, rs *RefundStats, who actor) error {
	amount := c.balance()
	if who == actorClone {
		amount = 0
		if lc := s.h.Venue(v).Replica.Set.State.Card(c.id); lc != nil {
			amount = lc.Balance
		}
	}
	if amount <= 0 {
		return nil
	}
	isolated := s.h.Venue(v).Isolated
	rs.Attempted++
	op, _, err := s.h.Refund(v, c.id, uint64(amount), "rest of the balance")
	switch {
	case err == nil:
		rs.Accepted++
		rs.Cents += amount
		if isolated {
			rs.AcceptedIsolated++
		}
		c.debits += amount
		s.paid += amount
		s.pays = append(s.pays, payRec{refund: true, card: c.id, id: op.ID(), venue: v, amount: uint64(amount),
			offline: false, episode: s.episode, group: s.h.Group(v), actor: who})
	case errors.Is(err, crdt.ErrRefundOffline):
		rs.RefusedOffline++
	case errors.Is(err, crdt.ErrInsufficientFunds):
		rs.RefusedFunds++
	case refusal(err):
		rs.RefusedOther++
	default:
		return err
	}
	return nil
}

// pay makes a payment at venue v and records it.
func (s *scenario) pay(v int, c *simCard, amount uint64, st *crdt.CardStamp, who actor) (Paid, error) {
	p, err := s.h.Pay(v, c.id, amount, st, "sim")
	if err != nil {
		return p, err
	}
	c.debits += int64(amount)
	s.paid += int64(amount)
	s.pays = append(s.pays, payRec{
		card: c.id, id: p.ID, venue: v, amount: amount,
		counter: p.Decision.Counter, stampCounter: p.Decision.StampCounter,
		offline: p.Offline, period: p.Period, episode: s.episode, group: s.h.Group(v), actor: who,
	})
	if s.episode >= 0 {
		e := &s.rep.Episodes[len(s.rep.Episodes)-1]
		e.Payments++
		if p.Offline {
			e.OfflinePayments++
		}
		if who != actorHonest {
			e.AttackPayments++
			e.AttackCents += int64(amount)
		}
	}
	if who != actorHonest {
		a := &s.rep.Attack
		a.Payments++
		a.Cents += int64(amount)
		if p.Offline {
			a.OfflinePayments++
			a.OfflineCents += int64(amount)
		} else {
			a.InSyncPayments++
			a.InSyncCents += int64(amount)
		}
		if who == actorClone {
			a.ClonePayments++
			a.CloneCents += int64(amount)
		}
	}
	return p, nil
}

// attack: every clone made so far strikes. The original card spends all
// it can in the group that stays in sync (a random group when none does),
// the clone at every venue of every other group.
func (s *scenario) attack() error {
	groups := s.h.Groups()
	inSync := -1
	for g, m := range groups {
		if s.h.WouldSync(s.keys(m)) {
			inSync = g
		}
	}
	for _, cl := range s.clones {
		if cl.madeAt > s.h.Now() {
			continue
		}
		home := inSync
		if home < 0 {
			home = s.rng.IntN(len(groups))
		}
		c := cl.card
		for _, v := range s.shuffled(groups[home]) {
			if err := s.spree(v, c, &c.stamp, true, actorOriginal); err != nil {
				return err
			}
		}
		for g, members := range groups {
			if g == home {
				continue
			}
			stamp := slices.Clone(cl.frozen)
			carry := s.cfg.CloneStamps == StampPerGroup
			for _, v := range s.shuffled(members) {
				if s.cfg.RefundShare > 0 {
					// Cash first: the card's whole balance back.
					if err := s.refund(v, c, &s.rep.AttackRefunds, actorClone); err != nil {
						return err
					}
				}
				if err := s.spree(v, c, &stamp, carry, actorClone); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (s *scenario) shuffled(vs []int) []int {
	out := slices.Clone(vs)
	s.rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// spree pays at venue v, again and again, the largest amount the rules
// accept, until they accept nothing more. carry writes each new stamp back.
func (s *scenario) spree(v int, c *simCard, stamp *[]byte, carry bool, who actor) error {
	reads := s.reads(v)
	for range 10_000 {
		var st *crdt.CardStamp
		if reads {
			var err error
			if st, err = decodeStamp(*stamp); err != nil {
				return err
			}
		}
		if _, err := s.h.Decide(v, c.id, 1, st); err != nil {
			if !refusal(err) {
				return err
			}
			// The clone is tapped anyway: the venue refuses, and blocks the
			// card if the rules say so (crdt.BlockAfterRefusal).
			if _, err := s.pay(v, c, 1, st, who); err == nil || !refusal(err) {
				return fmt.Errorf("simulations: venue %d: a refused payment of %s: %v", v, c.id, err)
			}
			return nil
		}
		lo := s.h.LargestAllowed(v, c.id, st)
		p, err := s.pay(v, c, lo, st, who)
		if err != nil {
			return err
		}
		if carry && reads {
			*stamp = p.Stamp
		}
	}
	return fmt.Errorf("simulations: venue %d kept accepting payments of card %s", v, c.id)
}

// satMul multiplies without overflowing.
func satMul(a, b uint64) uint64 {
	if a != 0 && b > math.MaxUint64/a {
		return math.MaxUint64
	}
	return a * b
}

type counterKey struct {
	card    crdt.CardID
	counter uint64
}

// check folds the run into the report and checks the invariants.
func (s *scenario) check() {
	r := &s.rep
	fail := func(format string, a ...any) { r.Violations = append(r.Violations, fmt.Sprintf(format, a...)) }
	h := s.h
	r.BlockOps = h.Blocks + h.RefusalBlocks
	r.RefusalBlocks = h.RefusalBlocks
	uidOnly := slices.Contains(s.uidOnly, true)

	// Convergence.
	ds := h.Digests()
	r.Digest = hex.EncodeToString(ds[0][:])
	r.Converged = true
	for i, d := range ds {
		if d != ds[0] {
			r.Converged = false
			fail("replica %d digest %x differs from replica 0's %x", i, d[:4], ds[0][:4])
		}
	}
	st0 := h.Venue(0).Replica.Set.State
	r.Ops = h.Venue(0).Replica.Set.Len()

	// Money conservation, on every replica.
	for _, i := range h.Active() {
		st := h.Venue(i).Replica.Set.State
		var sum int64
		for _, c := range st.Cards {
			sum += c.Balance
		}
		if sum != st.Credits-st.Debits {
			fail("replica %d: Σ balances %d != credits %d − debits %d", i, sum, st.Credits, st.Debits)
		}
		if i == 0 {
			r.CreditsCents, r.DebitsCents, r.BalancesCents = st.Credits, st.Debits, sum
		}
	}
	r.ToppedUpCents, r.PaidCents = s.topped, s.paid
	if r.CreditsCents != s.topped || r.DebitsCents != s.paid {
		fail("ledger credits %d / debits %d, the run topped up %d and paid %d", r.CreditsCents, r.DebitsCents, s.topped, s.paid)
	}
	// No payment, refund or top-up erased: each op the run made counts in
	// its card's history on every replica, whichever till signed it.
	for _, i := range h.Active() {
		counted := map[crdt.OpID]bool{}
		for _, c := range h.Venue(i).Replica.Set.State.Cards {
			for _, e := range h.Venue(i).Replica.Set.State.CardHistory(c.ID, nil, false, 0) {
				if e.Counted {
					counted[e.Op] = true
				}
			}
		}
		for _, p := range s.pays {
			if !counted[p.id] {
				r.ErasedOps++
			}
		}
		for _, id := range s.topups {
			if !counted[id] {
				r.ErasedOps++
			}
		}
	}
	if r.ErasedOps > 0 {
		fail("%d money ops the run made do not count on some replica", r.ErasedOps)
	}
	if n := r.HonestRefunds.AcceptedIsolated + r.AttackRefunds.AcceptedIsolated; n > 0 {
		fail("%d refunds accepted at an isolated venue", n)
	}

	// Loss.
	byID := map[crdt.CardID]*simCard{}
	for _, c := range s.cards {
		byID[c.id] = c
		lc := st0.Card(c.id)
		if lc == nil {
			fail("card %s unknown to the ledger", c.id)
			continue
		}
		if lc.Balance != c.balance() {
			fail("card %s: ledger balance %d, the run's %d", c.id, lc.Balance, c.balance())
		}
		if lc.Blocked {
			r.BlockedCards++
		}
		if lc.Balance < 0 {
			r.LossCents += -lc.Balance
			r.LossCards++
			if !c.cloned {
				r.HonestNegatives++
			}
		}
		if !c.cloned && lc.Blocked {
			r.Honest.FalseBlocks++
			fail("honest card %s was blocked (%s), its balance is %d", c.id, lc.BlockReason, lc.Balance)
		}
		if lc.Balance < 0 {
			for _, i := range h.Active() {
				if lc := h.Venue(i).Replica.Set.State.Card(c.id); !lc.Blocked {
					fail("overdrawn card %s is not blocked on replica %d", c.id, i)
				}
			}
		}
		if !c.cloned {
			r.Honest.Cards++
			addHonest(&r.Honest, &c.honest)
			addRefunds(&r.HonestRefunds, &c.refunds)
		}
	}
	if r.HonestNegatives > 0 {
		fail("%d honest cards overdrawn", r.HonestNegatives)
	}
	negative := func(id crdt.CardID) bool {
		c := st0.Card(id)
		return c != nil && c.Balance < 0
	}

	// The bound from the caps.
	set := s.set
	perCard := min(set.OfflineCardMax, satMul(set.OfflineCardCount, set.OfflinePaymentMax))
	type venuePeriod struct{ venue, period int }
	offlineAt := map[venuePeriod]map[crdt.CardID]bool{}
	type epCard struct {
		ep   int
		card crdt.CardID
	}
	syncGroups := map[epCard]map[int]bool{}
	for _, p := range s.pays {
		if !negative(p.card) {
			continue
		}
		if p.offline {
			k := venuePeriod{p.venue, p.period}
			if offlineAt[k] == nil {
				offlineAt[k] = map[crdt.CardID]bool{}
			}
			offlineAt[k][p.card] = true
		} else if p.episode >= 0 {
			k := epCard{p.episode, p.card}
			if syncGroups[k] == nil {
				syncGroups[k] = map[int]bool{}
			}
			syncGroups[k][p.group] = true
		}
	}
	var bound uint64
	cardBound := map[crdt.CardID]uint64{}
	for _, cards := range offlineAt {
		bound += min(set.OfflineVenueBudget, satMul(uint64(len(cards)), perCard))
		for c := range cards {
			cardBound[c] = min(cardBound[c]+perCard, math.MaxInt64)
		}
	}
	for id, c := range st0.Cards {
		if c.Balance < 0 && uint64(-c.Balance) > cardBound[id] {
			r.CardsOverCapBound++
		}
	}
	r.BoundCents = int64(min(bound, math.MaxInt64))
	for k, gs := range syncGroups {
		if len(gs) > 1 {
			r.SyncExposureCents += int64(len(gs)-1) * max(0, s.b0[k.ep][k.card])
		}
	}
	if r.LossCents > r.BoundCents+r.SyncExposureCents {
		fail("loss %d exceeds the bound %d + in-sync exposure %d", r.LossCents, r.BoundCents, r.SyncExposureCents)
	}
	if (!s.cfg.DetectionLag || !s.cfg.NoQuorumCheck) && set.MinPeersPercent >= 50 && r.SyncExposureCents > 0 {
		fail("a card paid in sync in two groups of one partition with instant isolation and MinPeersPercent %d", set.MinPeersPercent)
	}

	// Detection: what the run caused, against the conflicts on every replica.
	byCounter := map[counterKey][]crdt.OpID{}
	stale := map[crdt.CardID][]crdt.OpID{}
	for _, p := range s.pays {
		if p.refund {
			continue
		}
		k := counterKey{p.card, p.counter}
		byCounter[k] = append(byCounter[k], p.id)
		if p.stampCounter > 0 && p.counter > p.stampCounter+1 {
			stale[p.card] = append(stale[p.card], p.id)
		}
	}
	for k, ids := range byCounter {
		if len(ids) < 2 {
			delete(byCounter, k)
			continue
		}
		r.DoubleSpends++
		if c := byID[k.card]; c != nil && !c.cloned {
			r.Honest.Collisions++
			if !uidOnly {
				fail("honest card %s paid twice with counter %d", k.card, k.counter)
			}
		}
	}
	for card, ids := range stale {
		r.StaleStamps += len(ids)
		if c := byID[card]; c != nil && !c.cloned {
			r.Honest.StaleStamps += len(ids)
			if !uidOnly {
				fail("honest card %s presented a stale stamp", card)
			}
		}
	}
	forked := map[crdt.PublicKey]bool{}
	for _, cp := range s.copies {
		seq, _ := h.Venue(cp.venue).Replica.Set.Head(cp.key)
		if h.Venue(cp.twin).Author.Seq() > cp.seq && h.Venue(cp.venue).Author.Seq() > cp.seq && seq > 0 {
			forked[cp.key] = true
		}
	}
	r.Forks = len(forked)
	forkFound := map[crdt.PublicKey]int{}
	dsFound := map[counterKey]int{}   // replicas where the pair is detected as caused
	staleFound := map[crdt.OpID]int{} // replicas where the stale payment is evidence
	for _, i := range h.Active() {
		st := h.Venue(i).Replica.Set.State
		seen := map[string]int{}
		for _, c := range st.SortedConflicts() {
			ident := c.Key()
			seen[ident]++
			switch c.Kind {
			case crdt.ConflictDoubleSpend:
				k := counterKey{c.Card, c.Counter}
				want, ok := byCounter[k]
				if !ok {
					r.FalseConflicts++
					continue
				}
				if sameIDs(c.Ops, want) {
					dsFound[k]++
				} else if i == 0 {
					fail("double spend %s/%d: conflict holds %d ops, the run made %d", c.Card, c.Counter, len(c.Ops), len(want))
				}
			case crdt.ConflictStaleStamp:
				want, ok := stale[c.Card]
				if !ok {
					r.FalseConflicts++
					continue
				}
				if !sameIDs(c.Ops, want) && i == 0 {
					fail("stale stamps of %s: conflict holds %d ops, the run made %d", c.Card, len(c.Ops), len(want))
				}
				for _, id := range want {
					if slices.Contains(c.Ops, id) {
						staleFound[id]++
					}
				}
			case crdt.ConflictEquivocation:
				if !forked[c.Author] {
					r.FalseConflicts++
					continue
				}
				forkFound[c.Author]++
			default:
				r.FalseConflicts++
			}
		}
		for _, n := range seen {
			if n > 1 {
				r.DuplicateConflicts += n - 1
			}
		}
	}
	for _, n := range dsFound {
		if n == len(h.Active()) {
			r.DoubleSpendsDetected++
		}
	}
	for _, n := range staleFound {
		if n == len(h.Active()) {
			r.StaleStampsDetected++
		}
	}
	for _, n := range forkFound {
		if n == len(h.Active()) {
			r.ForksDetected++
		}
	}
	if r.ForksDetected != r.Forks {
		fail("%d of %d venues that signed on two tills are an equivocation conflict on every replica", r.ForksDetected, r.Forks)
	}
	if r.DoubleSpendsDetected != r.DoubleSpends || r.StaleStampsDetected != r.StaleStamps {
		fail("detected %d of %d double spends and %d of %d stale stamps", r.DoubleSpendsDetected, r.DoubleSpends, r.StaleStampsDetected, r.StaleStamps)
	}
	if r.DuplicateConflicts > 0 {
		fail("%d conflicts reported more than once", r.DuplicateConflicts)
	}
	if r.FalseConflicts > 0 {
		fail("%d conflicts the run did not cause", r.FalseConflicts)
	}
	refunded := map[crdt.CardID]bool{}
	for _, p := range s.pays {
		refunded[p.card] = refunded[p.card] || p.refund
	}
	for id, c := range st0.Cards {
		if c.Balance >= 0 {
			continue
		}
		if refunded[id] {
			// A refund has no counter: a clone's cash refund racing the
			// card's payments elsewhere leaves no conflict, only the
			// overdraft (and its block, checked above).
			r.RefundOverdrawnCards++
			continue
		}
		flagged := false
		for _, k := range st0.Conflicts {
			if k.Card == id && (k.Kind == crdt.ConflictDoubleSpend || k.Kind == crdt.ConflictStaleStamp) {
				flagged = true
				break
			}
		}
		if !flagged {
			r.UnflaggedLossCards++
		}
	}
	if r.UnflaggedLossCards > 0 {
		fail("%d overdrawn cards carry no conflict", r.UnflaggedLossCards)
	}
	slices.Sort(r.Violations)
}

func addHonest(dst, src *HonestStats) {
	dst.Attempted += src.Attempted
	dst.Accepted += src.Accepted
	dst.OfflineAttempted += src.OfflineAttempted
	dst.OfflineAccepted += src.OfflineAccepted
	dst.RefusedCap += src.RefusedCap
	dst.RefusedFunds += src.RefusedFunds
	dst.RefusedOther += src.RefusedOther
	dst.TopUps += src.TopUps
	for k, v := range src.RefusedCapBy {
		if dst.RefusedCapBy == nil {
			dst.RefusedCapBy = map[string]int{}
		}
		dst.RefusedCapBy[k] += v
	}
}

func addRefunds(dst, src *RefundStats) {
	dst.Attempted += src.Attempted
	dst.Accepted += src.Accepted
	dst.Cents += src.Cents
	dst.RefusedOffline += src.RefusedOffline
	dst.RefusedFunds += src.RefusedFunds
	dst.RefusedOther += src.RefusedOther
	dst.AcceptedIsolated += src.AcceptedIsolated
}

func sameIDs(got, want []crdt.OpID) bool {
	if len(got) != len(want) {
		return false
	}
	for _, id := range want {
		if !slices.Contains(got, id) {
			return false
		}
	}
	return true
}

// newRng is the run's random source: PCG seeded from the run's seed.
func newRng(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x6361676e6f747465)) }
