package simulations

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
)

// euros renders cents as 12.34.
func euros(c int64) string {
	sign := ""
	if c < 0 {
		sign, c = "-", -c
	}
	return fmt.Sprintf("%s%d.%02d", sign, c/100, c%100)
}

func (c OfflineConfig) describe() string {
	iso := "instant isolation"
	if c.DetectionLag {
		iso = "isolation from heartbeats"
		if c.NoQuorumCheck {
			iso += ", no quorum ping"
		} else {
			iso += " and a quorum ping per payment"
		}
	}
	d := fmt.Sprintf("%d venues, %d partitions, %d cards, %d clones (%s stamps), %s, attack %ds after the split",
		c.Venues, c.Episodes, c.Cards, c.Clones, c.CloneStamps, iso, c.AttackAfterMs/1000)
	if c.AttackerTopUpCents > 0 {
		d += fmt.Sprintf(", cloned cards topped up to %s €", euros(c.AttackerTopUpCents))
	}
	if c.NoReservations {
		d += ", no reservations"
	}
	if c.RefundShare > 0 {
		d += fmt.Sprintf(", %.0f %% of holder events are refunds", 100*c.RefundShare)
	}
	if c.DoubleSigners > 0 {
		d += fmt.Sprintf(", a venue copied to a second till in %d partitions", c.DoubleSigners)
	}
	if c.UIDOnlyShare > 0 {
		d += fmt.Sprintf(", %.0f %% of venues read the UID only", 100*c.UIDOnlyShare)
	}
	return d
}

// String renders the report as text: the partitions, then the figures.
func (r OfflineReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "offline risk, seed %d: %s\n\n", r.Config.Seed, r.Config.describe())
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "partition\tat\tminutes\tgroups\tin sync\tpayments\toffline\tattack\tattack €\t")
	for _, e := range r.Episodes {
		sizes := make([]string, len(e.Groups))
		for i, g := range e.Groups {
			sizes[i] = fmt.Sprint(len(g))
		}
		sync := "none"
		if e.InSyncGroup >= 0 {
			sync = fmt.Sprintf("the %d", len(e.Groups[e.InSyncGroup]))
		}
		fmt.Fprintf(w, "%d\t+%dm\t%d\t%s\t%s\t%d\t%d\t%d\t%s\t\n", e.Episode, e.StartMs/60_000, e.DurationMs/60_000,
			strings.Join(sizes, "/"), sync, e.Payments, e.OfflinePayments, e.AttackPayments, euros(e.AttackCents))
	}
	w.Flush()
	b.WriteString("\n")
	w = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "loss from clones\t%s €\t(%d cards overdrawn)\n", euros(r.LossCents), r.LossCards)
	fmt.Fprintf(w, "bound from the caps\t%s €\tloss/bound %.1f %%\n", euros(r.BoundCents), 100*r.LossRatio())
	fmt.Fprintf(w, "in-sync exposure\t%s €\t(cards paid in sync in two groups of a partition); %d cards lost more than their caps allow\n", euros(r.SyncExposureCents), r.CardsOverCapBound)
	fmt.Fprintf(w, "attack accepted\t%s €\t%d payments: %d offline (%s €), %d in sync (%s €); clones %d (%s €)\n",
		euros(r.Attack.Cents), r.Attack.Payments, r.Attack.OfflinePayments, euros(r.Attack.OfflineCents),
		r.Attack.InSyncPayments, euros(r.Attack.InSyncCents), r.Attack.ClonePayments, euros(r.Attack.CloneCents))
	fmt.Fprintf(w, "double spends\t%d caused\t%d detected, on every replica, once each\n", r.DoubleSpends, r.DoubleSpendsDetected)
	fmt.Fprintf(w, "stale stamps\t%d caused\t%d detected\n", r.StaleStamps, r.StaleStampsDetected)
	fmt.Fprintf(w, "detected\t%.1f %%\t%d duplicate, %d false conflicts; %d block ops, %d cards blocked\n",
		r.DetectedPercent(), r.DuplicateConflicts, r.FalseConflicts, r.BlockOps, r.BlockedCards)
	hs := r.Honest
	fmt.Fprintf(w, "honest payments\t%d asked\t%d accepted, %d asked offline (%d accepted)\n", hs.Attempted, hs.Accepted, hs.OfflineAttempted, hs.OfflineAccepted)
	fmt.Fprintf(w, "refused by the caps\t%d\t%.2f %% of honest payments%s\n", hs.RefusedCap, r.RefusedHonestPercent(), capBreakdown(hs.RefusedCapBy))
	fmt.Fprintf(w, "refused otherwise\t%d\t%d insufficient funds (top-up not seen across the partition), %d other\n", hs.RefusedFunds+hs.RefusedOther, hs.RefusedFunds, hs.RefusedOther)
	fmt.Fprintf(w, "honest cards\t%d\t%d blocked with no money missing; %d collisions, %d stale stamps (UID-only readers)\n", hs.Cards, hs.FalseBlocks, hs.Collisions, hs.StaleStamps)
	hr, ar := r.HonestRefunds, r.AttackRefunds
	fmt.Fprintf(w, "refunds\t%d asked\t%d accepted (%s €), %d refused offline or in the detection window, %d for funds, %d other; clones: %d asked, %d accepted (%s €); accepted while isolated %d\n",
		hr.Attempted, hr.Accepted, euros(hr.Cents), hr.RefusedOffline, hr.RefusedFunds, hr.RefusedOther, ar.Attempted, ar.Accepted, euros(ar.Cents), hr.AcceptedIsolated+ar.AcceptedIsolated)
	fmt.Fprintf(w, "copied tills\t%d forks\t%d listed as an equivocation on every replica; money ops erased %d\n", r.Forks, r.ForksDetected, r.ErasedOps)
	check := "ok"
	if r.CreditsCents-r.DebitsCents != r.BalancesCents || r.CreditsCents != r.ToppedUpCents || r.DebitsCents != r.PaidCents {
		check = "MISMATCH"
	}
	fmt.Fprintf(w, "money\t%s\tcredits %s − debits %s = Σ balances %s €\n", check, euros(r.CreditsCents), euros(r.DebitsCents), euros(r.BalancesCents))
	conv := "converged"
	if !r.Converged {
		conv = "DIVERGED"
	}
	fmt.Fprintf(w, "replicas\t%s\t%d venues, %d ops, digest %.16s\n", conv, r.Config.Venues, r.Ops, r.Digest)
	w.Flush()
	if len(r.Violations) > 0 {
		b.WriteString("\nVIOLATIONS:\n")
		for _, v := range r.Violations {
			b.WriteString("  - " + v + "\n")
		}
	}
	return b.String()
}

func capBreakdown(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// OfflineSummary adds up several runs.
type OfflineSummary struct {
	Runs              int     `json:"runs"`
	LossCents         int64   `json:"loss_cents"`
	BoundCents        int64   `json:"bound_cents"`
	SyncExposureCents int64   `json:"sync_exposure_cents"`
	LossRatio         float64 `json:"loss_ratio"`
	// MaxLossRatio is the largest loss/bound of one run.
	MaxLossRatio  float64 `json:"max_loss_ratio"`
	RunsOverBound int     `json:"runs_over_bound"`
	// CardsOverCapBound adds up OfflineReport.CardsOverCapBound.
	CardsOverCapBound int     `json:"cards_over_cap_bound"`
	DoubleSpends      int     `json:"double_spends"`
	StaleStamps       int     `json:"stale_stamps"`
	Detected          int     `json:"detected"`
	DetectedPercent   float64 `json:"detected_percent"`
	HonestAttempted   int     `json:"honest_attempted"`
	HonestRefusedCap  int     `json:"honest_refused_cap"`
	// RefusedHonestPercent is the share of honest payments refused by the
	// offline caps.
	RefusedHonestPercent float64 `json:"refused_honest_percent"`
	// RefusedOfflinePercent is the same share among honest payments asked
	// at an isolated venue.
	RefusedOfflinePercent float64 `json:"refused_offline_percent"`
	OfflineAttempted      int     `json:"offline_attempted"`
	Violations            int     `json:"violations"`
	// HonestCards, FalseBlocks and Collisions add up the honest cards,
	// those blocked with no money missing, and their counter collisions.
	HonestCards int `json:"honest_cards"`
	FalseBlocks int `json:"false_blocks"`
	Collisions  int `json:"collisions"`
	// FalseBlockPercent is FalseBlocks / HonestCards.
	FalseBlockPercent float64 `json:"false_block_percent"`
	// HonestRefunds and AttackRefunds add up the refunds.
	HonestRefunds RefundStats `json:"honest_refunds"`
	AttackRefunds RefundStats `json:"attack_refunds"`
	// Forks, ForksDetected and ErasedOps add up the copied tills.
	Forks         int `json:"forks"`
	ForksDetected int `json:"forks_detected"`
	ErasedOps     int `json:"erased_ops"`
}

// SummarizeOffline adds up runs.
func SummarizeOffline(rs []OfflineReport) OfflineSummary {
	var s OfflineSummary
	for i := range rs {
		r := &rs[i]
		s.Runs++
		s.LossCents += r.LossCents
		s.BoundCents += r.BoundCents
		s.SyncExposureCents += r.SyncExposureCents
		s.MaxLossRatio = max(s.MaxLossRatio, r.LossRatio())
		if r.LossCents > r.BoundCents {
			s.RunsOverBound++
		}
		s.CardsOverCapBound += r.CardsOverCapBound
		s.DoubleSpends += r.DoubleSpends
		s.StaleStamps += r.StaleStamps
		s.Detected += r.DoubleSpendsDetected + r.StaleStampsDetected
		s.HonestAttempted += r.Honest.Attempted
		s.HonestRefusedCap += r.Honest.RefusedCap
		s.OfflineAttempted += r.Honest.OfflineAttempted
		s.Violations += len(r.Violations)
		s.HonestCards += r.Honest.Cards
		s.FalseBlocks += r.Honest.FalseBlocks
		s.Collisions += r.Honest.Collisions
		addRefunds(&s.HonestRefunds, &r.HonestRefunds)
		addRefunds(&s.AttackRefunds, &r.AttackRefunds)
		s.Forks += r.Forks
		s.ForksDetected += r.ForksDetected
		s.ErasedOps += r.ErasedOps
	}
	s.FalseBlockPercent = 100 * ratio(int64(s.FalseBlocks), int64(s.HonestCards))
	s.LossRatio = ratio(s.LossCents, s.BoundCents)
	s.DetectedPercent = percent(s.Detected, s.DoubleSpends+s.StaleStamps)
	s.RefusedHonestPercent = 100 * ratio(int64(s.HonestRefusedCap), int64(s.HonestAttempted))
	s.RefusedOfflinePercent = 100 * ratio(int64(s.HonestRefusedCap), int64(s.OfflineAttempted))
	return s
}

// FormatOfflineRuns renders runs as a table, one row per seed and a total.
func FormatOfflineRuns(rs []OfflineReport) string {
	if len(rs) == 0 {
		return "no runs\n"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "offline risk: %s\n\n", rs[0].Config.describe())
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "seed\tloss €\tbound €\tloss/bound\tin-sync exp. €\tdouble spends\tstale stamps\tdetected\thonest\trefused by caps\tviolations\t")
	row := func(name string, loss, bound, exp int64, ds, ss int, det float64, honest, refused int, viol int) {
		fmt.Fprintf(w, "%s\t%s\t%s\t%.1f %%\t%s\t%d\t%d\t%.1f %%\t%d\t%d (%.2f %%)\t%d\t\n", name, euros(loss), euros(bound),
			100*ratio(loss, bound), euros(exp), ds, ss, det, honest, refused, 100*ratio(int64(refused), int64(honest)), viol)
	}
	for i := range rs {
		r := &rs[i]
		row(fmt.Sprint(r.Config.Seed), r.LossCents, r.BoundCents, r.SyncExposureCents, r.DoubleSpends, r.StaleStamps,
			r.DetectedPercent(), r.Honest.Attempted, r.Honest.RefusedCap, len(r.Violations))
	}
	s := SummarizeOffline(rs)
	row("all", s.LossCents, s.BoundCents, s.SyncExposureCents, s.DoubleSpends, s.StaleStamps, s.DetectedPercent,
		s.HonestAttempted, s.HonestRefusedCap, s.Violations)
	w.Flush()
	fmt.Fprintf(&b, "\nworst run loss/bound %.1f %%, runs over the caps bound %d, cards over their own caps bound %d; honest payments refused by the caps: %.2f %% of all, %.2f %% of those asked offline\n",
		100*s.MaxLossRatio, s.RunsOverBound, s.CardsOverCapBound, s.RefusedHonestPercent, s.RefusedOfflinePercent)
	fmt.Fprintf(&b, "honest cards blocked with no money missing: %d of %d (%.2f %%), counter collisions %d\n", s.FalseBlocks, s.HonestCards, s.FalseBlockPercent, s.Collisions)
	if s.HonestRefunds.Attempted+s.AttackRefunds.Attempted > 0 {
		fmt.Fprintf(&b, "refunds: holders %d asked, %d accepted, %d refused offline; clones %d asked, %d accepted (%s €); accepted while isolated %d\n",
			s.HonestRefunds.Attempted, s.HonestRefunds.Accepted, s.HonestRefunds.RefusedOffline, s.AttackRefunds.Attempted, s.AttackRefunds.Accepted,
			euros(s.AttackRefunds.Cents), s.HonestRefunds.AcceptedIsolated+s.AttackRefunds.AcceptedIsolated)
	}
	if s.Forks > 0 {
		fmt.Fprintf(&b, "copied tills: %d venues signed on two tills, %d listed as an equivocation on every replica, %d money ops erased\n", s.Forks, s.ForksDetected, s.ErasedOps)
	}
	return b.String()
}
