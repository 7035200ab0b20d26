package simulations

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// loadScenario reads a committed scenario and scales it down for the
// default test run (fewer cards and venues-hours; no libp2p unless keep).
func loadScenario(t *testing.T, name string, shrink func(*Scenario)) *Scenario {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("scenarios", name))
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ParseScenario(src)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if shrink != nil {
		shrink(sc)
	}
	return sc
}

func runScenario(t *testing.T, sc *Scenario, opts ScenarioOptions) *ScenarioResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := RunScenario(ctx, sc, opts)
	if err != nil {
		t.Fatalf("%s: %v", sc.Name, err)
	}
	return res
}

// TestScenarioSmallVersions runs small versions of the three committed
// scenarios (evening, festival, territory) with every invariant checked.
func TestScenarioSmallVersions(t *testing.T) {
	for _, tc := range []struct {
		file   string
		shrink func(*Scenario)
	}{
		{"evening.toml", func(sc *Scenario) { sc.Cards.Count = 150 }},
		{"festival.toml", func(sc *Scenario) {
			sc.Cards.Count, sc.Duration.Duration, sc.Libp2p.Nodes = 400, 12*time.Hour, 4
			sc.Crashes[0].At.Duration = 10 * time.Hour
		}},
		{"territory.toml", func(sc *Scenario) {
			sc.Cards.Count, sc.Duration.Duration, sc.Random.Count, sc.Clones.Count, sc.Libp2p.Nodes = 300, 6*time.Hour, 4, 6, 0
		}},
	} {
		t.Run(strings.TrimSuffix(tc.file, ".toml"), func(t *testing.T) {
			sc := loadScenario(t, tc.file, tc.shrink)
			res := runScenario(t, sc, ScenarioOptions{})
			t.Logf("%s: ops %d, heals %d, checks %d, honest %d/%d (cap-refused %d), offline %s, attack %s, loss %s ≤ bound %s, double spends %d/%d, wall %s",
				sc.Name, res.Ops, len(res.Heals), res.Checks, res.HonestAccepted, res.HonestAttempted, res.HonestRefusedCap,
				euros(res.OfflineCents), euros(res.AttackCents), euros(res.LossCents), euros(res.BoundCents), res.DoubleSpendsDetected, res.DoubleSpends, res.Wall)
			if res.Checks < 2 || res.HonestAccepted == 0 {
				t.Fatalf("nothing checked or paid: %+v", res.Checks)
			}
		})
	}
}
