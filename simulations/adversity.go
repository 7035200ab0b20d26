package simulations

import (
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/cagnotte/cagnotte/crdt"
)

// SimultaneousConfig configures RunSimultaneous: cloned cards tapped at K
// venues of a whole, in-sync network within a few milliseconds, inside
// the gossip delay (issue 9, scenario 8).
type SimultaneousConfig struct {
	// Venues in the federation (default 10).
	Venues int `json:"venues"`
	// K is the number of venues each cloned card is tapped at (2 to
	// Venues; default 3).
	K int `json:"k"`
	// Cards is the number of cloned cards, attacked one after the other
	// (default 50).
	Cards int `json:"cards"`
	// Seed makes the run reproducible.
	Seed uint64 `json:"seed"`
	// Settings of the genesis (nil: crdt.DefaultSettings).
	Settings *crdt.Settings `json:"settings,omitempty"`
	// NoReservations turns reservations off: today's behaviour before
	// them, each venue deciding on its own view.
	NoReservations bool `json:"no_reservations,omitempty"`
	// SpreadMs is the time over which one card's K taps fall (default 5):
	// all of them before any of the payments is gossiped.
	SpreadMs int64 `json:"spread_ms"`
}

func (c SimultaneousConfig) withDefaults() SimultaneousConfig {
	if c.Venues == 0 {
		c.Venues = 10
	}
	if c.K == 0 {
		c.K = 3
	}
	if c.Cards == 0 {
		c.Cards = 50
	}
	if c.SpreadMs == 0 {
		c.SpreadMs = 5
	}
	if c.Settings == nil {
		s := crdt.DefaultSettings()
		c.Settings = &s
	}
	return c
}

// SimultaneousReport is the outcome of RunSimultaneous. Amounts in cents.
type SimultaneousReport struct {
	Config SimultaneousConfig `json:"config"`
	// Taps counts the payments asked for; Accepted those taken, AcceptedCents
	// their sum; Busy those refused because another venue held the card's
	// reservation (crdt.ErrCardBusy).
	Taps          int   `json:"taps"`
	Accepted      int   `json:"accepted"`
	AcceptedCents int64 `json:"accepted_cents"`
	Busy          int   `json:"busy"`
	// BalanceCents is Σ of the cards' balances before the attack.
	BalanceCents int64 `json:"balance_cents"`
	// LossCents is the in-sync exposure realised: Σ max(0, −balance) after
	// the payments are gossiped. MaxCardLossCents is the largest for one
	// card. BoundCents is Cards × (K − 1) × floor limit, the bound
	// reservations promise.
	LossCents        int64 `json:"loss_cents"`
	MaxCardLossCents int64 `json:"max_card_loss_cents"`
	BoundCents       int64 `json:"bound_cents"`
	// DoubleSpends counts (card, counter) pairs paid twice or more;
	// DoubleSpendsDetected those that are one double_spend conflict with
	// exactly those payments on every replica.
	DoubleSpends         int `json:"double_spends"`
	DoubleSpendsDetected int `json:"double_spends_detected"`
	// Overdrawn counts cards with money missing; OverdrawnBlocked those
	// blocked on every replica (crdt.Card.NeedsAutoBlock).
	Overdrawn        int    `json:"overdrawn"`
	OverdrawnBlocked int    `json:"overdrawn_blocked"`
	Converged        bool   `json:"converged"`
	Digest           string `json:"digest"`
	// Violations lists every invariant that failed.
	Violations []string `json:"violations,omitempty"`
}

// Err returns the violated invariants as one error, or nil.
func (r *SimultaneousReport) Err() error {
	if len(r.Violations) == 0 {
		return nil
	}
	return fmt.Errorf("simultaneous taps (seed %d, k %d): %s", r.Config.Seed, r.Config.K, strings.Join(r.Violations, "; "))
}

// RunSimultaneous plays the synchronized in-sync clone attack: on a whole
// network, each cloned card (topped up to a random balance up to the
// ceiling, then used once so it carries a stamp) is tapped at K random
// venues within SpreadMs, before gossip carries any of those payments.
// At each venue the attacker asks for the card's whole balance and, if
// that is refused, for the largest amount that needs no reservation (the
// floor limit, or the balance if lower). The venues run the node's rules
// (Harness.Pay: quorum check, reservation with the card's coordinators
// above the floor limit, crdt.State.DecidePayment); the coordinators
// answer in tap order, the order that favours the attacker. Then gossip
// delivers, and the run checks convergence, detection and blocks, and,
// with reservations, that each card lost at most (K − 1) × floor limit.
func RunSimultaneous(cfg SimultaneousConfig) (SimultaneousReport, error) {
	cfg = cfg.withDefaults()
	rep := SimultaneousReport{Config: cfg}
	if cfg.Venues < 2 || cfg.K < 2 || cfg.K > cfg.Venues || cfg.Cards < 1 || cfg.SpreadMs < 0 {
		return rep, errors.New("simulations: need 2 ≤ k ≤ venues and at least one card")
	}
	h, err := NewHarness(HarnessConfig{Venues: cfg.Venues, Seed: cfg.Seed, Settings: *cfg.Settings, Start: simStart, NoReservations: cfg.NoReservations})
	if err != nil {
		return rep, err
	}
	rng := newRng(cfg.Seed ^ 0x73696d756c74)
	set := h.Settings()
	ceiling := int64(set.BalanceMax)
	if ceiling <= 0 {
		ceiling = 15000
	}
	type card struct {
		id    crdt.CardID
		stamp *crdt.CardStamp
	}
	cards := make([]card, cfg.Cards)
	for i := range cards {
		id := crdt.CardID(fmt.Sprintf("04A77AC4%06X", i))
		balance := 2000 + rng.Int64N(ceiling/500-3)*500 // 20.00 to the ceiling
		if _, err := h.TopUp(rng.IntN(cfg.Venues), id, uint64(balance)); err != nil {
			return rep, fmt.Errorf("simulations: top-up: %w", err)
		}
		p, err := h.Pay(rng.IntN(cfg.Venues), id, 350, nil, "coffee")
		if err != nil {
			return rep, fmt.Errorf("simulations: first payment: %w", err)
		}
		st, err := crdt.DecodeStamp(p.Stamp)
		if err != nil {
			return rep, fmt.Errorf("simulations: stamp: %w", err)
		}
		cards[i] = card{id: id, stamp: &st}
		h.AdvanceTo(h.Now() + 1000)
	}
	for _, c := range cards {
		rep.BalanceCents += h.Venue(0).Replica.Set.State.Card(c.id).Balance
	}
	byCounter := map[counterKey][]crdt.OpID{}
	for _, c := range cards {
		// Far from the previous attack: every reservation has expired.
		h.AdvanceTo(h.Now() + 2*crdt.DefaultReservationTTL)
		start := h.Now()
		venues := rng.Perm(cfg.Venues)[:cfg.K]
		h.HoldGossip()
		for i, v := range venues {
			h.AdvanceTo(start + int64(i)*cfg.SpreadMs/int64(cfg.K))
			whole := uint64(max(c.stamp.Balance, 1))
			for _, amount := range []uint64{whole, min(whole, set.OfflinePaymentMax)} {
				rep.Taps++
				p, err := h.Pay(v, c.id, amount, c.stamp, "clone")
				if err == nil {
					rep.Accepted++
					rep.AcceptedCents += int64(amount)
					k := counterKey{c.id, p.Decision.Counter}
					byCounter[k] = append(byCounter[k], p.ID)
					break
				}
				if errors.Is(err, crdt.ErrCardBusy) {
					rep.Busy++
				} else if !refusal(err) {
					return rep, err
				}
			}
		}
		if err := h.Flush(); err != nil {
			return rep, err
		}
	}
	if err := h.Heal(); err != nil {
		return rep, err
	}
	ids := make([]crdt.CardID, len(cards))
	for i, c := range cards {
		ids[i] = c.id
	}
	rep.check(h, ids, byCounter)
	return rep, nil
}

func (r *SimultaneousReport) check(h *Harness, cards []crdt.CardID, byCounter map[counterKey][]crdt.OpID) {
	fail := func(format string, a ...any) { r.Violations = append(r.Violations, fmt.Sprintf(format, a...)) }
	cfg := r.Config
	floor := int64(h.Settings().OfflinePaymentMax)
	r.BoundCents = int64(cfg.Cards) * int64(cfg.K-1) * floor
	ds := h.Digests()
	r.Digest = hex.EncodeToString(ds[0][:])
	r.Converged = true
	for i, d := range ds {
		if d != ds[0] {
			r.Converged = false
			fail("replica %d digest differs from replica 0's", i)
		}
	}
	st0 := h.Venue(0).Replica.Set.State
	for _, id := range cards {
		c := st0.Card(id)
		if c.Balance >= 0 {
			continue
		}
		loss := -c.Balance
		r.LossCents += loss
		r.MaxCardLossCents = max(r.MaxCardLossCents, loss)
		r.Overdrawn++
		blocked := true
		for _, i := range h.Active() {
			blocked = blocked && h.Venue(i).Replica.Set.State.Card(id).Blocked
		}
		if blocked {
			r.OverdrawnBlocked++
		} else {
			fail("overdrawn card %s not blocked everywhere", id)
		}
		if !cfg.NoReservations && loss > int64(cfg.K-1)*floor {
			fail("card %s lost %d with reservations, more than (k−1) × floor limit = %d", id, loss, int64(cfg.K-1)*floor)
		}
	}
	for k, ids := range byCounter {
		if len(ids) < 2 {
			continue
		}
		r.DoubleSpends++
		found := 0
		for _, i := range h.Active() {
			c := h.Venue(i).Replica.Set.State.Conflicts[(&crdt.Conflict{Kind: crdt.ConflictDoubleSpend, Card: k.card, Counter: k.counter}).Key()]
			if c != nil && sameIDs(c.Ops, ids) {
				found++
			}
		}
		if found == len(h.Active()) {
			r.DoubleSpendsDetected++
		}
	}
	if r.DoubleSpendsDetected != r.DoubleSpends {
		fail("detected %d of %d double spends on every replica", r.DoubleSpendsDetected, r.DoubleSpends)
	}
	var sum int64
	for _, c := range st0.Cards {
		sum += c.Balance
	}
	if sum != st0.Credits-st0.Debits {
		fail("Σ balances %d != credits %d − debits %d", sum, st0.Credits, st0.Debits)
	}
	slices.Sort(r.Violations)
}

// RunSimultaneousSeeds runs cfg once per seed.
func RunSimultaneousSeeds(cfg SimultaneousConfig, seeds []uint64) ([]SimultaneousReport, error) {
	out := make([]SimultaneousReport, 0, len(seeds))
	for _, seed := range seeds {
		cfg.Seed = seed
		r, err := RunSimultaneous(cfg)
		if err != nil {
			return out, fmt.Errorf("seed %d: %w", seed, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// FormatSimultaneous renders runs as a table, one row per run.
func FormatSimultaneous(rs []SimultaneousReport) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "k\treservations\tseed\tcards\tbalance €\ttaps\taccepted\tbusy\tloss €\tloss/balance\tmax per card €\tbound (k−1)×floor €\tdouble spends\tdetected\tblocked\tviolations\t")
	for i := range rs {
		r := &rs[i]
		res := "yes"
		if r.Config.NoReservations {
			res = "no"
		}
		fmt.Fprintf(w, "%d\t%s\t%d\t%d\t%s\t%d\t%d\t%d\t%s\t%.1f %%\t%s\t%s\t%d\t%d\t%d/%d\t%d\t\n", r.Config.K, res, r.Config.Seed, r.Config.Cards,
			euros(r.BalanceCents), r.Taps, r.Accepted, r.Busy, euros(r.LossCents), 100*ratio(r.LossCents, r.BalanceCents),
			euros(r.MaxCardLossCents), euros(r.BoundCents), r.DoubleSpends, r.DoubleSpendsDetected, r.OverdrawnBlocked, r.Overdrawn, len(r.Violations))
	}
	w.Flush()
	return b.String()
}
