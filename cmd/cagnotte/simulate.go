package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cagnotte/cagnotte/simulations"
)

// simulateConfig is `cagnotte simulate`'s configuration.
type simulateConfig struct {
	// Out is the report directory (default "simulate-<scenario name>").
	Out string
	// Progress is the minimum wall time between two progress lines
	// (default 200 ms).
	Progress time.Duration
	// CPUProfile, if set, receives a CPU profile of the run (go tool
	// pprof); default none.
	CPUProfile string
	// GCPercent is the garbage collector's target while the run lasts
	// (runtime/debug.SetGCPercent; default 400): the run keeps every
	// venue's replica in one heap, and at Go's default of 100 the
	// collector took half the CPU of a territory run.
	GCPercent int
	// Network, if set, overrides the scenario's transport ("auto",
	// "memory", "libp2p", "mocknet"); default: the scenario's (whose
	// default is "auto").
	Network string
	// ConvergeTimeout bounds each wait for the network to carry a step's
	// ops or to converge after a heal (default 60 s).
	ConvergeTimeout time.Duration
}

// newSimulateCmd is `cagnotte simulate SCENARIO.toml --out DIR`.
func newSimulateCmd(g *globals) *cobra.Command {
	cfg := simulateConfig{Progress: 200 * time.Millisecond, GCPercent: 400, ConvergeTimeout: simulations.DefaultConvergeTimeout}
	cmd := &cobra.Command{
		Use:   "simulate SCENARIO.toml",
		Short: "Simulate a territory of venues from a scenario file and write a report",
		Long: `Play a scenario (a TOML file) on the virtual-clock harness: every venue runs
the federation's rules (crdt: payments, top-ups, quorum, reservations,
offline caps, refunds, anti-entropy at each heal) in this process; the
invariants (conservation of money, one digest everywhere after each heal,
no acknowledged op lost, also at each restart after a crash, every double
spend reported and no false conflict, no honest card overdrawn, clone loss
within the caps' bound) are checked at every heal and at the end, and the
first violation stops the run and prints the ops that show it (exit status
1; the report is still written). Stores are in memory, or real Badger
databases (node/store) with store = "badger"; a crash is kill -9 (the
store reopened from its files as the process left them). The ops
travel on real networks: each venue runs a p2p.Network (GossipSub, the
node's anti-entropy) over its replica, on real libp2p hosts on 127.0.0.1
(network = "libp2p") or go-libp2p's mocknet with each link's latency and
bandwidth from the venues' uplinks ("mocknet"); "auto" (default) is
libp2p up to 30 venues and mocknet beyond, "memory" the harness's direct
delivery. The virtual clock stops while the network carries each step's
ops and each heal; the wall time these take is measured and reported. A
[libp2p] section adds a separate heal measured on real libp2p hosts.

The report goes to --out: report.html (self-contained: open it offline),
result.json and the raw figures as CSV. A progress line with the simulated
time and an ETA goes to stderr.

Scenario format (docs/simulate.md; examples in simulations/scenarios/):

  name = "evening"          seed = 1
  duration = "8h"           start = "18:00"     step = "1m"
  store = "memory" | "badger"
  network = "auto" | "memory" | "libp2p" | "mocknet"
  [venues]     count, names, open, close
  [venues.uplink] latency, bandwidth_kbps, loss, flaps_per_hour, flap_duration
  [[venues.override]] venue, open, close (or open = "always"), latency,
               bandwidth_kbps, loss, flaps_per_hour, flap_duration
  [cards]      count, home_venues, visits_per_evening, basket_min_cents, basket_max_cents
  [topups]     initial_cents, refill_cents, online_share
  [[partitions]] at, for, isolate = [venues] | groups = [[venues], ...]
  [random_partitions] count, max_groups, min_for, max_for
  [[crashes]]  venue, at, for
  [random_crashes] per_venue_per_day, min_down, max_down
  [events]     per_venue_per_day, description_bytes, update_share
  [refunds]    share, clones
  [clones]     count, topup_cents, attack_after, stamps ("frozen" | "per_group")
  [federation] offline_payment_max_cents, offline_card_max_cents,
               offline_card_count, offline_venue_budget_cents,
               balance_max_cents, min_peers_percent, heartbeat, isolation_after
  [libp2p]     nodes (2..30), ops_per_side

Examples:
  cagnotte simulate simulations/scenarios/evening.toml --out /tmp/evening
  cagnotte simulate simulations/scenarios/festival.toml --out /tmp/festival
  cagnotte simulate simulations/scenarios/territory.toml --out /tmp/territory`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSimulate(cmd, g, cfg, args[0])
		},
	}
	cmd.Flags().StringVar(&cfg.Out, "out", "", `report directory (default "simulate-<scenario name>")`)
	cmd.Flags().StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	cmd.Flags().StringVar(&cfg.Network, "network", "", `transport of the ops, overriding the scenario's: "auto", "memory", "libp2p" or "mocknet"`)
	cmd.Flags().DurationVar(&cfg.ConvergeTimeout, "converge-timeout", cfg.ConvergeTimeout, "wall time the network may take to carry a step's ops or to converge after a heal before the run stops on a violation")
	cmd.Flags().IntVar(&cfg.GCPercent, "gc-percent", cfg.GCPercent, "garbage collector target during the run (GOGC; higher: less CPU, more memory)")
	return cmd
}

func runSimulate(cmd *cobra.Command, g *globals, cfg simulateConfig, path string) error {
	const maxScenario = 1 << 20
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	src, err := io.ReadAll(io.LimitReader(f, maxScenario+1))
	f.Close()
	if err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	if len(src) > maxScenario {
		return fmt.Errorf("simulate: %s: larger than %d bytes", path, maxScenario)
	}
	sc, err := simulations.ParseScenario(src)
	if err != nil {
		return fmt.Errorf("simulate: %s: %w", path, err)
	}
	switch cfg.Network {
	case "", simulations.NetworkAuto, simulations.NetworkMemory, simulations.NetworkLibp2p, simulations.NetworkMocknet:
	default:
		return fmt.Errorf("simulate: --network %q: want auto, memory, libp2p or mocknet", cfg.Network)
	}
	if cfg.ConvergeTimeout <= 0 || cfg.ConvergeTimeout > time.Hour {
		return fmt.Errorf("simulate: --converge-timeout %s: between 0 and 1h", cfg.ConvergeTimeout)
	}
	out := cfg.Out
	if out == "" {
		out = "simulate-" + sc.Name
	}
	var last time.Time
	progress := func(p simulations.ScenarioProgress) {
		if time.Since(last) < cfg.Progress && p.SimMs < p.TotalMs {
			return
		}
		last = time.Now()
		fmt.Fprint(g.stderr, progressLine(p))
	}
	defer debug.SetGCPercent(debug.SetGCPercent(cfg.GCPercent))
	if os.Getenv("GOMEMLIMIT") == "" {
		// The binary's soft memory limit is a node's (setRuntimeLimits,
		// 256 MiB); the run holds every venue's replica and network in
		// one heap, well above it, and under it the collector ran half
		// of a mocknet territory's CPU. Without any limit the mocknet
		// territory reached 10 GiB at GOGC 400: the run's own limit.
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(simulateMemoryLimit))
	}
	if cfg.CPUProfile != "" {
		pf, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return fmt.Errorf("simulate: %w", err)
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return fmt.Errorf("simulate: cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	res, runErr := simulations.RunScenario(cmd.Context(), sc, simulations.ScenarioOptions{Progress: progress, Logger: g.logger(), Network: cfg.Network, ConvergeTimeout: cfg.ConvergeTimeout})
	fmt.Fprintln(g.stderr)
	if res == nil {
		return fmt.Errorf("simulate: %w", runErr)
	}
	if err := simulations.WriteScenarioReport(out, res); err != nil {
		return fmt.Errorf("simulate: %w", errors.Join(runErr, err))
	}
	report := filepath.Join(out, simulations.ReportHTML)
	if runErr != nil {
		fmt.Fprintf(g.stdout, "report (with the violation): %s\n", report)
		return fmt.Errorf("simulate: %w", runErr)
	}
	fmt.Fprintf(g.stdout, "%s: %d ops over %s, %d heals, %d crashes, every invariant held at %d checks; loss %s ≤ bound %s; %d/%d double spends reported; wall %s\nreport: %s\n",
		res.Scenario, res.Ops, res.Network, len(res.Heals), res.Crashes, res.Checks, cents(res.LossCents), cents(res.BoundCents), res.DoubleSpendsDetected, res.DoubleSpends,
		res.Wall.Round(time.Millisecond), report)
	return nil
}

// simulateMemoryLimit is the soft memory limit of a simulate run when
// GOMEMLIMIT is not set: the 50-venue territory's heap (50 replicas, 50
// networks) stays well under it, and the collector works harder only
// past it.
const simulateMemoryLimit = 4 << 30

func cents(c int64) string { return fmt.Sprintf("%d.%02d", c/100, c%100) }

// progressLine is a carriage-return progress bar: simulated time, share,
// ETA.
func progressLine(p simulations.ScenarioProgress) string {
	const width = 30
	frac := 0.0
	if p.TotalMs > 0 {
		frac = float64(p.SimMs) / float64(p.TotalMs)
	}
	n := int(frac * width)
	hm := func(ms int64) string { return fmt.Sprintf("%d:%02d", ms/3_600_000, ms/60_000%60) }
	return fmt.Sprintf("\r[%s%s] sim %s/%s %3.0f%% ETA %s ", strings.Repeat("=", n), strings.Repeat(" ", width-n),
		hm(p.SimMs), hm(p.TotalMs), 100*frac, p.ETA().Round(time.Second))
}
