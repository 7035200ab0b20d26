package simulations

import (
	"encoding/json"
	"flag"
	"reflect"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

var simSeeds = flag.Int("sim.seeds", 0, "seeds per offline-risk scenario (default: 6 in tests, 3 in the benchmark)")

// seeds returns 1..n, n from -sim.seeds or def.
func seeds(def int) []uint64 {
	n := def
	if *simSeeds > 0 {
		n = *simSeeds
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = uint64(i + 1)
	}
	return out
}

func runSeeds(t testing.TB, cfg OfflineConfig, n int) []OfflineReport {
	t.Helper()
	rs, err := RunOfflineSeeds(cfg, seeds(n))
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// checkRun asserts the invariants every run must keep.
func checkRun(t *testing.T, r *OfflineReport) {
	t.Helper()
	if err := r.Err(); err != nil {
		t.Errorf("%v\n%s", err, r)
	}
	if !r.Converged {
		t.Errorf("seed %d: replicas did not converge", r.Config.Seed)
	}
	if r.LossCents > r.BoundCents+r.SyncExposureCents {
		t.Errorf("seed %d: loss %d > bound %d + in-sync exposure %d", r.Config.Seed, r.LossCents, r.BoundCents, r.SyncExposureCents)
	}
	if r.DoubleSpendsDetected != r.DoubleSpends || r.StaleStampsDetected != r.StaleStamps || r.DetectedPercent() != 100 {
		t.Errorf("seed %d: detected %.1f %% (%d/%d double spends, %d/%d stale stamps)", r.Config.Seed, r.DetectedPercent(),
			r.DoubleSpendsDetected, r.DoubleSpends, r.StaleStampsDetected, r.StaleStamps)
	}
	if r.DuplicateConflicts != 0 || r.FalseConflicts != 0 {
		t.Errorf("seed %d: %d duplicate and %d false conflicts", r.Config.Seed, r.DuplicateConflicts, r.FalseConflicts)
	}
	if r.BalancesCents != r.CreditsCents-r.DebitsCents || r.CreditsCents != r.ToppedUpCents || r.DebitsCents != r.PaidCents {
		t.Errorf("seed %d: money not conserved: %d − %d vs Σ %d (run: %d topped up, %d paid)", r.Config.Seed,
			r.CreditsCents, r.DebitsCents, r.BalancesCents, r.ToppedUpCents, r.PaidCents)
	}
	if r.ErasedOps != 0 {
		t.Errorf("seed %d: %d money ops erased", r.Config.Seed, r.ErasedOps)
	}
	if r.HonestNegatives != 0 {
		t.Errorf("seed %d: %d honest cards overdrawn", r.Config.Seed, r.HonestNegatives)
	}
}

// TestOfflineRisk is the default run: 10 venues, 3 partitions, 40 cards, 4
// clones, a few seeds, for both clone stamp policies. With isolation
// detected at once and MinPeersPercent at 50, the loss stays within the
// bound from the caps alone.
func TestOfflineRisk(t *testing.T) {
	for _, policy := range []StampPolicy{StampFrozen, StampPerGroup} {
		t.Run(string(policy), func(t *testing.T) {
			cfg := DefaultOfflineConfig()
			cfg.CloneStamps = policy
			rs := runSeeds(t, cfg, 6)
			lossy, doubled := false, false
			for i := range rs {
				r := &rs[i]
				checkRun(t, r)
				if r.SyncExposureCents != 0 {
					t.Errorf("seed %d: in-sync exposure %d with instant isolation", r.Config.Seed, r.SyncExposureCents)
				}
				if r.LossCents > r.BoundCents {
					t.Errorf("seed %d: loss %d > bound %d", r.Config.Seed, r.LossCents, r.BoundCents)
				}
				if r.CardsOverCapBound != 0 {
					t.Errorf("seed %d: %d cards lost more than their caps allow", r.Config.Seed, r.CardsOverCapBound)
				}
				lossy = lossy || r.LossCents > 0
				doubled = doubled || r.DoubleSpends > 0
			}
			// The scenario must be able to fail: clones do steal.
			if !lossy || !doubled {
				t.Errorf("no seed had clones causing a loss (%v) or a double spend (%v)", lossy, doubled)
			}
			t.Log("\n" + FormatOfflineRuns(rs))
		})
	}
}

// TestOfflineRiskCapsBind tops the cloned cards up beyond what the caps let
// a clone take, so the caps, not the balances, limit the loss.
func TestOfflineRiskCapsBind(t *testing.T) {
	cfg := DefaultOfflineConfig()
	cfg.CloneStamps = StampPerGroup
	cfg.AttackerTopUpCents = 15000
	rs := runSeeds(t, cfg, 4)
	for i := range rs {
		r := &rs[i]
		checkRun(t, r)
		if r.LossCents > r.BoundCents {
			t.Errorf("seed %d: loss %d > bound %d", r.Config.Seed, r.LossCents, r.BoundCents)
		}
	}
	t.Log("\n" + FormatOfflineRuns(rs))
}

// TestOfflineRiskDetectionLag runs the node's isolation timing (a peer
// counts as heard for IsolationAfter after its last heartbeat) with
// attackers striking as the split begins, before any venue knows it is
// isolated. The caps bound alone does not hold then; the run checks the
// general bound (caps + in-sync exposure) and that the exposure term is
// reached.
func TestOfflineRiskDetectionLag(t *testing.T) {
	cfg := DefaultOfflineConfig()
	cfg.DetectionLag = true
	cfg.NoQuorumCheck = true
	cfg.AttackAfterMs = 0
	cfg.CloneStamps = StampPerGroup
	cfg.AttackerTopUpCents = 15000
	rs := runSeeds(t, cfg, 4)
	exposed := false
	for i := range rs {
		checkRun(t, &rs[i])
		exposed = exposed || rs[i].SyncExposureCents > 0
	}
	if !exposed {
		t.Error("attacks inside the detection lag never paid in sync in two groups")
	}
	t.Log("\n" + FormatOfflineRuns(rs))

	// Striking once the venues know they are isolated, the clones pay
	// offline only: the caps bound holds again.
	cfg.AttackAfterMs = 2 * int64(crdt.DefaultSettings().IsolationAfter)
	for _, r := range runSeeds(t, cfg, 4) {
		checkRun(t, &r)
		if r.CardsOverCapBound != 0 || r.LossCents > r.BoundCents {
			t.Errorf("seed %d, attack after the lag: loss %d, bound %d, %d cards over their caps", r.Config.Seed, r.LossCents, r.BoundCents, r.CardsOverCapBound)
		}
	}
}

// TestOfflineRiskSplitBrain lowers MinPeersPercent below 50: two groups of
// one partition can both be in sync. The general bound still holds.
func TestOfflineRiskSplitBrain(t *testing.T) {
	set := crdt.DefaultSettings()
	set.MinPeersPercent = 40
	cfg := DefaultOfflineConfig()
	cfg.Settings = &set
	cfg.CloneStamps = StampPerGroup
	cfg.Episodes = 6
	for _, r := range runSeeds(t, cfg, 4) {
		checkRun(t, &r)
	}
}

// TestOfflineRiskDeterministic: one seed, one outcome.
func TestOfflineRiskDeterministic(t *testing.T) {
	cfg := DefaultOfflineConfig()
	cfg.Seed = 7
	a, err := RunOffline(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := RunOffline(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Fatalf("two runs of seed 7 differ:\n%s\n%s", ja, jb)
	}
	var back OfflineReport
	if err := json.Unmarshal(ja, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, a) {
		t.Fatal("the report does not survive a JSON round trip")
	}
	cfg.Seed = 8
	c, err := RunOffline(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.Digest == a.Digest {
		t.Fatal("seeds 7 and 8 gave the same ledger")
	}
}

func TestOfflineConfigRefused(t *testing.T) {
	for name, mod := range map[string]func(*OfflineConfig){
		"one venue":      func(c *OfflineConfig) { c.Venues = 1 },
		"groups":         func(c *OfflineConfig) { c.MaxGroups = 11 },
		"clones > cards": func(c *OfflineConfig) { c.Clones = 41 },
		"durations":      func(c *OfflineConfig) { c.SplitMaxMs = c.SplitMinMs - 1 },
		"policy":         func(c *OfflineConfig) { c.CloneStamps = "magic" },
		"negative delay": func(c *OfflineConfig) { c.AttackAfterMs = -1 },
	} {
		cfg := DefaultOfflineConfig()
		mod(&cfg)
		if _, err := RunOffline(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestOfflineRiskQuorumCheck: with the node's heartbeat timing and
// attackers striking as the split begins, the quorum ping each payment
// makes puts every payment of a side that cannot reach a quorum under the
// caps at once: no in-sync exposure, and the caps bound holds.
func TestOfflineRiskQuorumCheck(t *testing.T) {
	cfg := DefaultOfflineConfig()
	cfg.DetectionLag = true
	cfg.AttackAfterMs = 0
	cfg.CloneStamps = StampPerGroup
	cfg.AttackerTopUpCents = 15000
	rs := runSeeds(t, cfg, 4)
	lost := false
	for i := range rs {
		checkRun(t, &rs[i])
		if rs[i].SyncExposureCents != 0 {
			t.Errorf("seed %d: in-sync exposure %d with the quorum check", rs[i].Config.Seed, rs[i].SyncExposureCents)
		}
		if rs[i].LossCents > rs[i].BoundCents {
			t.Errorf("seed %d: loss %d > bound %d", rs[i].Config.Seed, rs[i].LossCents, rs[i].BoundCents)
		}
		lost = lost || rs[i].LossCents > 0
	}
	if !lost {
		t.Error("the attack never cost anything: the test would not notice a broken bound")
	}
	t.Log("\n" + FormatOfflineRuns(rs))
}

// BenchmarkOfflineRisk runs the scenario at full size (10 venues, 20
// partitions, 500 cards, 50 clones) over -sim.seeds seeds (default 3):
//
//	frozen        clones present the stamp copied when cloned (the scenario)
//	per_group     clones carry stamps within a group, start again in the next
//	caps_bind     per_group, cloned cards topped up to the 150.00 balance ceiling first
//	lag_attack    caps_bind with the node's heartbeat timing and quorum ping, striking as the split begins
//	lag_no_ping   lag_attack without the quorum ping: the detection window alone
//	lag_no_reservations  lag_attack without reservations above the floor limit
//	adversity     lag_attack with refunds (3 % of holder events; clones ask
//	              for cash at every venue they reach) and, in every
//	              partition, a venue's data dir copied to a second till
func BenchmarkOfflineRisk(b *testing.B) {
	full := FullOfflineConfig()
	perGroup := full
	perGroup.CloneStamps = StampPerGroup
	capsBind := perGroup
	capsBind.AttackerTopUpCents = 15000
	lag := capsBind
	lag.DetectionLag = true
	lag.AttackAfterMs = 0
	noPing := lag
	noPing.NoQuorumCheck = true
	noRes := lag
	noRes.NoReservations = true
	adv := lag
	adv.RefundShare = 0.03
	adv.DoubleSigners = adv.Episodes
	for _, bc := range []struct {
		name string
		cfg  OfflineConfig
	}{{"frozen", full}, {"per_group", perGroup}, {"caps_bind", capsBind}, {"lag_attack", lag}, {"lag_no_ping", noPing},
		{"lag_no_reservations", noRes}, {"adversity", adv}} {
		b.Run(bc.name, func(b *testing.B) {
			var rs []OfflineReport
			for b.Loop() {
				rs = runSeeds(b, bc.cfg, 3)
			}
			for i := range rs {
				if err := rs[i].Err(); err != nil {
					b.Error(err)
				}
			}
			s := SummarizeOffline(rs)
			b.ReportMetric(float64(s.LossCents)/100, "loss-eur")
			b.ReportMetric(float64(s.BoundCents)/100, "bound-eur")
			b.ReportMetric(100*s.LossRatio, "loss/bound-%")
			b.ReportMetric(float64(s.SyncExposureCents)/100, "exposure-eur")
			b.ReportMetric(float64(s.CardsOverCapBound), "cards-over-caps")
			b.ReportMetric(s.DetectedPercent, "detected-%")
			b.ReportMetric(s.RefusedHonestPercent, "refused-honest-%")
			b.Log("\n" + FormatOfflineRuns(rs))
		})
	}
}
