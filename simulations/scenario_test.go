package simulations

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
// scenarios (evening, festival, territory) with every invariant checked:
// evening and territory on their files' transports (real libp2p hosts;
// mocknet, 16 venues for 3 h, 17 s on a quiet 2-core machine), festival
// on the memory transport, which keeps the three within a minute (on
// libp2p the festival cut took 71 s on a loaded 2-core machine;
// TestScenarioOverLibp2p and TestScenarioOverMocknetWithLatency run the
// network transports further).
func TestScenarioSmallVersions(t *testing.T) {
	for _, tc := range []struct {
		file   string
		shrink func(*Scenario)
	}{
		{"evening.toml", func(sc *Scenario) { sc.Cards.Count, sc.Store = 150, StoreMemory }},
		{"festival.toml", func(sc *Scenario) {
			sc.Cards.Count, sc.Duration.Duration, sc.Libp2p.Nodes, sc.Network = 300, 9*time.Hour, 4, NetworkMemory
			sc.Crashes[0].At.Duration = 7 * time.Hour
		}},
		{"territory.toml", func(sc *Scenario) {
			sc.Venues.Count, sc.Cards.Count, sc.Duration.Duration, sc.Random.Count, sc.Clones.Count, sc.Libp2p.Nodes = 16, 200, 3*time.Hour, 3, 4, 0
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

const attackScenario = `name = "attack"
seed = 7
duration = "2h"
[venues]
count = 4
[cards]
count = 30
[[partitions]]
at = "30m"
for = "30m"
isolate = ["3"]
[clones]
count = 3
topup_cents = 15000
`

// TestScenarioBrokenCapsRuleIsCaught runs one attack with the caps
// enforced and with the test-only broken rule (caps ignored by the
// venues): the clone-loss invariant holds in the first and stops the run
// with the offending ops in the second.
func TestScenarioBrokenCapsRuleIsCaught(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ignoreCaps bool
		wantErr    bool
	}{
		{"caps enforced", false, false},
		{"caps ignored", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc, err := ParseScenario([]byte(attackScenario))
			if err != nil {
				t.Fatal(err)
			}
			res, err := RunScenario(context.Background(), sc, ScenarioOptions{IgnoreCaps: tc.ignoreCaps})
			if !tc.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				if res.LossCents == 0 || res.LossCents > res.BoundCents {
					t.Fatalf("loss %d, bound %d: want 0 < loss ≤ bound (the attack must cost something)", res.LossCents, res.BoundCents)
				}
				return
			}
			if !errors.Is(err, ErrInvariant) || res == nil || res.Violation == nil {
				t.Fatalf("want an invariant violation, got %v", err)
			}
			if v := res.Violation; v.Invariant != "clone loss ≤ the caps' bound" || len(v.Ops) == 0 {
				t.Fatalf("violation %q with %d ops, want the clone-loss invariant with its ops", v.Invariant, len(v.Ops))
			}
			t.Log(res.Violation)
		})
	}
}

const refundAttackScenario = `name = "refund-attack"
seed = 11
duration = "2h"
[venues]
count = 4
[cards]
count = 30
[[partitions]]
at = "30m"
for = "30m"
isolate = ["3"]
[clones]
count = 3
topup_cents = 15000
[refunds]
share = 0.3
clones = true
`

// TestBrokenRuleRefundWithoutQuorumCaught: the clones ask the isolated
// venue for the card's balance in cash. With the node's rule
// (crdt.State.DecideRefund fed the venue's isolation and quorum check)
// every such refund is refused and the loss stays within the caps' bound;
// with the test-only broken rule (the quorum input bypassed) the refunds
// are paid out and the run stops on the clone-loss invariant, listing the
// refunds.
func TestBrokenRuleRefundWithoutQuorumCaught(t *testing.T) {
	for _, tc := range []struct {
		name   string
		broken bool
	}{
		{"quorum checked", false},
		{"quorum bypassed", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc, err := ParseScenario([]byte(refundAttackScenario))
			if err != nil {
				t.Fatal(err)
			}
			res, err := RunScenario(context.Background(), sc, ScenarioOptions{RefundWithoutQuorum: tc.broken})
			if !tc.broken {
				if err != nil {
					t.Fatal(err)
				}
				if res.CloneRefunds != 0 || res.CloneRefundsRefused == 0 || res.Refunds == 0 {
					t.Fatalf("clone refunds %d accepted, %d refused; holder refunds %d: want 0, > 0, > 0", res.CloneRefunds, res.CloneRefundsRefused, res.Refunds)
				}
				return
			}
			if !errors.Is(err, ErrInvariant) || res == nil || res.Violation == nil {
				t.Fatalf("want an invariant violation, got %v", err)
			}
			v := res.Violation
			if v.Invariant != "clone loss ≤ the caps' bound" || !strings.Contains(strings.Join(v.Ops, "\n"), "refund card") {
				t.Fatalf("violation %q with ops %q: want the clone-loss invariant listing the refunds", v.Invariant, v.Ops)
			}
			t.Log(v)
		})
	}
}

// TestBrokenRuleAntiEntropyOffCaught (on the memory transport; see
// TestBrokenRuleAntiEntropyOffCaughtOverNetwork for real hosts): with
// anti-entropy off, venues that
// come back together only resume gossip, and the ops made apart never
// reach the other side: the run stops on "one digest everywhere after
// each heal", listing the ops each venue lacks.
func TestBrokenRuleAntiEntropyOffCaught(t *testing.T) {
	for _, tc := range []struct {
		name   string
		broken bool
	}{
		{"anti-entropy on", false},
		{"anti-entropy off", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc, err := ParseScenario([]byte(attackScenario))
			if err != nil {
				t.Fatal(err)
			}
			res, err := RunScenario(context.Background(), sc, ScenarioOptions{NoAntiEntropy: tc.broken, Network: NetworkMemory})
			if !tc.broken {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvariant) || res == nil || res.Violation == nil {
				t.Fatalf("want an invariant violation, got %v", err)
			}
			v := res.Violation
			if v.Invariant != "one digest everywhere after each heal" || !strings.Contains(strings.Join(v.Ops, "\n"), "lacks ") {
				t.Fatalf("violation %q with ops %q: want the digest invariant with the ops lacking", v.Invariant, v.Ops)
			}
			t.Log(v)
		})
	}
}

const crashScenario = `name = "crashes"
seed = 5
duration = "6h"
start = "18:00"
store = "%s"
[venues]
count = 3
open = "18:00"
close = "23:00"
[[venues.override]]
venue = "2"
open = "always"
latency = "300ms"
bandwidth_kbps = 64
loss = 0.1
[cards]
count = 40
visits_per_evening = 6
[events]
per_venue_per_day = 40
[refunds]
share = 0.2
[[crashes]]
venue = "0"
at = "1h"
for = "5m"
[random_crashes]
per_venue_per_day = 6
`

// TestScenarioCrashesLoseNothingAcknowledged kills nodes (a scheduled
// crash and random ones) in a run with events, refunds, per-venue hours
// and uplinks, with memory stores and with real Badger stores (reopened
// from their files as the killed process left them): every restart holds
// every op the venue acknowledged, and every invariant holds.
func TestScenarioCrashesLoseNothingAcknowledged(t *testing.T) {
	for _, store := range []string{StoreMemory, StoreBadger} {
		t.Run(store, func(t *testing.T) {
			sc, err := ParseScenario([]byte(fmt.Sprintf(crashScenario, store)))
			if err != nil {
				t.Fatal(err)
			}
			res := runScenario(t, sc, ScenarioOptions{TempDir: t.TempDir()})
			t.Logf("%s: ops %d, crashes %d, events %d (%.0f B/op), refunds %d (%d refused offline), closed %d, wall %s",
				store, res.Ops, res.Crashes, res.Events, res.EventBytesPerOp, res.Refunds, res.RefundsRefusedOffline, res.HonestClosed, res.Wall)
			if res.Crashes < 2 || res.Events == 0 || res.Refunds == 0 || res.HonestClosed == 0 || len(res.EventVisibilityMs) == 0 {
				t.Fatalf("crashes %d, events %d, refunds %d, closed %d: want crashes, events, refunds and closed hours", res.Crashes, res.Events, res.Refunds, res.HonestClosed)
			}
			if store == StoreBadger && res.VenueFigures[0].StoreBytes == 0 {
				t.Fatalf("no Badger store measured: %+v", res.VenueFigures[0])
			}
			// Venue 2 never closes and has the slow uplink: the slowest
			// gossip delay is at least its latency.
			if slices.Max(res.VisibilityMs) < 300 {
				t.Fatalf("visibility max %d ms: want at least venue 2's latency", slices.Max(res.VisibilityMs))
			}
		})
	}
}

// TestScenarioValidationErrors checks that a bad scenario is refused with
// the line and the field.
func TestScenarioValidationErrors(t *testing.T) {
	base := "name = \"x\"\nduration = \"1h\"\n[venues]\ncount = 3\n[cards]\ncount = 10\n"
	for _, tc := range []struct {
		name, src, want string
	}{
		{"no duration", "[venues]\ncount = 3\n[cards]\ncount = 1\n", "duration: required"},
		{"bad duration", "duration = \"soon\"\n", "line 1"},
		{"one venue", "duration = \"1h\"\n[venues]\ncount = 1\n", "line 3: venues.count"},
		{"unknown field", base + "colour = \"red\"\n", "line 7: cards.colour: unknown field"},
		{"bad loss", base + "[venues.uplink]\nflaps_per_hour = -1\n", "line 8: venues.uplink.flaps_per_hour"},
		{"unknown venue", base + "[[partitions]]\nat = \"1m\"\nfor = \"1m\"\nisolate = [\"0\"]\n[[partitions]]\nat = \"2m\"\nfor = \"1m\"\nisolate = [\"Nowhere\"]\n", `line 14: partitions[1].isolate: no venue "Nowhere"`},
		{"crash outside", base + "[[crashes]]\nvenue = \"0\"\nat = \"2h\"\nfor = \"1m\"\n", "line 9: crashes[0].at"},
		{"stamp policy", base + "[random_partitions]\ncount = 1\n[clones]\ncount = 1\nstamps = \"sticky\"\n", "line 11: clones.stamps"},
		{"too many hosts", base + "[libp2p]\nnodes = 31\n", "line 8: libp2p.nodes"},
		{"unknown transport", "network = \"pigeons\"\n" + base, `line 1: network: "auto", "memory", "libp2p" or "mocknet"`},
		{"syntax", base + "[cards\n", "line 8: expected"},
		{"store", "store = \"disk\"\n" + base, "line 1: store"},
		{"override venue", base + "[[venues.override]]\nvenue = \"0\"\n[[venues.override]]\nvenue = \"9\"\n", "line 10: venues.override[1].venue"},
		{"override loss", base + "[[venues.override]]\nvenue = \"1\"\nloss = 2.0\n", "line 9: venues.override[0].loss"},
		{"override hours", base + "[[venues.override]]\nvenue = \"1\"\nopen = \"25:00\"\nclose = \"02:00\"\n", "line 9: venues.override[0].open"},
		{"uplink loss", base + "[venues.uplink]\nloss = 1\n", "line 8: venues.uplink.loss"},
		{"events", base + "[events]\nper_venue_per_day = -1\n", "line 8: events.per_venue_per_day"},
		{"refunds", base + "[refunds]\nshare = 1.5\n", "line 8: refunds.share"},
		{"random crashes", base + "[random_crashes]\nmin_down = \"10m\"\nmax_down = \"1m\"\n", "line 9: random_crashes.max_down"},
		{"time scale", base + "[transport]\ntime_scale = 0.5\n", "line 8: transport.time_scale: between 1 and 1000"},
		{"time scale on real hosts", "network = \"libp2p\"\n" + base + "[transport]\ntime_scale = 10\n", "line 9: transport.time_scale: mocknet only"},
		{"transport heartbeat", base + "[transport]\ntime_scale = 2\nheartbeat = \"5ms\"\n", "line 9: transport.heartbeat: between 100ms and 10m"},
		{"mesh degree", base + "[transport]\nmesh_degree = 3\n", "line 8: transport.mesh_degree: between 2 and venues.count-1"},
		{"transport unknown", base + "[transport]\nscale = 10\n", "line 8: transport.scale: unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseScenario([]byte(tc.src))
			if !errors.Is(err, ErrScenario) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an ErrScenario containing %q", err, tc.want)
			}
		})
	}
}

var fullScenario = flag.String("simulate.full", "", "run this committed scenario (e.g. territory.toml) at full size in TestScenarioFull; -simulate.hours cuts its duration")
var fullHours = flag.Float64("simulate.hours", 0, "with -simulate.full: play only this many simulated hours (0: the whole duration)")

// TestScenarioFull runs one committed scenario at full size when
// -simulate.full names it (for profiling: -cpuprofile); skipped otherwise.
func TestScenarioFull(t *testing.T) {
	if *fullScenario == "" {
		t.Skip("-simulate.full not set (a full-size run is long: use it to profile)")
	}
	sc := loadScenario(t, *fullScenario, func(sc *Scenario) {
		sc.Libp2p.Nodes = 0
		if *fullHours > 0 {
			sc.Duration.Duration = time.Duration(*fullHours * float64(time.Hour))
		}
	})
	res, err := RunScenario(context.Background(), sc, ScenarioOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: ops %d, heals %d, checks %d, wall %s", sc.Name, res.Ops, len(res.Heals), res.Checks, res.Wall)
}
