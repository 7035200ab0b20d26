package simulations

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// TestScenarioOverLibp2p runs a small evening with the venues' ops on
// real libp2p hosts (TCP on 127.0.0.1): the ops cross the real network
// (wire bytes counted per venue and protocol), the heal after La Cave's
// outage converges through the real anti-entropy (its wall time measured),
// and every invariant holds.
func TestScenarioOverLibp2p(t *testing.T) {
	sc := loadScenario(t, "evening.toml", func(sc *Scenario) {
		// Four hours: La Cave's outage (3:00-3:40) and its heal.
		sc.Cards.Count, sc.Store, sc.Libp2p.Nodes, sc.Duration.Duration = 150, StoreMemory, 0, 4*time.Hour
	})
	res := runScenario(t, sc, ScenarioOptions{Network: NetworkLibp2p})
	t.Logf("evening over libp2p: ops %d, heals %d, wall %s, wire %d bytes (%.0f B per op per node: %v), visibility p50 %.1f ms max %.1f ms",
		res.Ops, len(res.Heals), res.Wall, res.WireBytes, res.WireBytesPerOpPerNode, res.WireByProtocol,
		pct(res.MeasuredVisibilityMs, 0.5), pct(res.MeasuredVisibilityMs, 1))
	if res.Network != NetworkLibp2p {
		t.Fatalf("network %q", res.Network)
	}
	if len(res.Heals) == 0 || res.Heals[0].MeasuredConvergeMs <= 0 {
		t.Fatalf("heals %+v: want a measured heal", res.Heals)
	}
	var gossip int64
	for p, b := range res.WireByProtocol {
		if strings.HasPrefix(p, "/meshsub/") {
			gossip += b
		}
	}
	t.Logf("heals: %+v", res.Heals)
	if res.WireBytes <= 0 || gossip <= 0 {
		t.Fatalf("wire %d bytes %v: want gossip bytes", res.WireBytes, res.WireByProtocol)
	}
	for _, f := range res.VenueFigures {
		if f.WireBytes <= 0 {
			t.Fatalf("venue %s sent nothing", f.Name)
		}
	}
	if len(res.MeasuredVisibilityMs) < res.Ops/2 {
		t.Fatalf("%d visibility samples for %d ops", len(res.MeasuredVisibilityMs), res.Ops)
	}
	if res.Net == nil || res.Net.SyncOpsIn == 0 {
		t.Fatalf("no op came by anti-entropy: %+v", res.Net)
	}
}

// pct returns the q-quantile of sorted values.
func pct(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

const latencyScenario = `name = "latency"
seed = 11
duration = "40m"
[venues]
count = 4
[venues.uplink]
latency = "40ms"
bandwidth_kbps = 1000
[[venues.override]]
venue = "3"
latency = "120ms"
bandwidth_kbps = 256
[cards]
count = 40
visits_per_evening = 24
[[partitions]]
at = "10m"
for = "15m"
isolate = ["3"]
[events]
per_venue_per_day = 100
`

// TestScenarioOverMocknetWithLatency runs a scenario on go-libp2p's
// mocknet with each link's latency and bandwidth taken from the two
// venues' uplinks: every op's measured visibility delay (until the last
// venue of its side holds it) is at least the smallest modelled link
// latency, the ops of venue 3 (slow uplink) at least its links' latency,
// and the heal converges through the real anti-entropy in at least one
// round trip of venue 3's links.
func TestScenarioOverMocknetWithLatency(t *testing.T) {
	sc, err := ParseScenario([]byte(latencyScenario))
	if err != nil {
		t.Fatal(err)
	}
	res := runScenario(t, sc, ScenarioOptions{Network: NetworkMocknet})
	v := res.MeasuredVisibilityMs
	t.Logf("latency over mocknet: ops %d, wall %s, visibility min %.1f p50 %.1f max %.1f ms, heals %+v", res.Ops, res.Wall, pct(v, 0), pct(v, 0.5), pct(v, 1), res.Heals)
	if res.Network != NetworkMocknet || len(v) < res.Ops/2 {
		t.Fatalf("network %q, %d visibility samples for %d ops", res.Network, len(v), res.Ops)
	}
	// The fastest link: two 40 ms uplinks.
	const fastest = 80.0
	if v[0] < fastest {
		t.Fatalf("an op was visible everywhere after %.1f ms, under the modelled link latency %v ms", v[0], fastest)
	}
	// Venue 3 (120 ms) with a 40 ms venue: 160 ms one way; a heal's
	// anti-entropy session takes several exchanges on that link.
	if len(res.Heals) != 1 || res.Heals[0].MeasuredConvergeMs < 160 {
		t.Fatalf("heals %+v: want one heal measured at least venue 3's link latency", res.Heals)
	}
	if res.WireBytes != 0 {
		t.Fatalf("mocknet hosts count no wire bytes, got %d", res.WireBytes)
	}
}

// TestBrokenRuleAntiEntropyOffCaughtOverNetwork is
// TestBrokenRuleAntiEntropyOffCaught on real libp2p hosts: with the
// networks' anti-entropy held (p2p.Config.HoldCatchUp, never resumed),
// the venues that come back together only resume gossip, the ops made
// apart never cross, and the run stops on "one digest everywhere after
// each heal" once the convergence deadline passes, listing the ops each
// venue lacks; with anti-entropy on, the same run holds every invariant.
func TestBrokenRuleAntiEntropyOffCaughtOverNetwork(t *testing.T) {
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
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			opts := ScenarioOptions{Network: NetworkLibp2p, NoAntiEntropy: tc.broken}
			if tc.broken {
				// Nothing will come: no need to wait the default minute.
				opts.ConvergeTimeout = 3 * time.Second
			}
			res, err := RunScenario(ctx, sc, opts)
			if !tc.broken {
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("heals %+v, network wait %s of %s", res.Heals, res.NetworkWait, res.Wall)
				if len(res.Heals) == 0 || res.Heals[0].MeasuredConvergeMs <= 0 || res.Net.SyncOpsIn == 0 {
					t.Fatalf("heals %+v, sync ops %d: want a heal by anti-entropy", res.Heals, res.Net.SyncOpsIn)
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
			if res.Net == nil || res.Net.SyncOpsIn != 0 {
				t.Fatalf("anti-entropy carried ops with the broken rule: %+v", res.Net)
			}
			t.Log(v)
		})
	}
}

const timeScaleScenario = `name = "time scale"
seed = 5
duration = "30m"
network = "mocknet"
[venues]
count = 4
[venues.uplink]
latency = "150ms"
bandwidth_kbps = 2000
[cards]
count = 40
visits_per_evening = 24
[[partitions]]
at = "10m"
for = "10m"
isolate = ["3"]
[transport]
time_scale = 10
heartbeat = "1s"
`

// TestScenarioMocknetTimeScaleReportsScaledTimes runs a scenario on
// mocknet with transport.time_scale = 10: the links carry 300 ms of
// latency (two 150 ms uplinks) in 30 ms of wall time, and the measured
// delays are reported multiplied back by 10, as times on the uplinks:
// every op's visibility is at least the link's 300 ms although its wall
// time was a tenth of it, the heal's measured time is its wall time × 10
// (both reported), and the result says the scale.
func TestScenarioMocknetTimeScaleReportsScaledTimes(t *testing.T) {
	sc, err := ParseScenario([]byte(timeScaleScenario))
	if err != nil {
		t.Fatal(err)
	}
	res := runScenario(t, sc, ScenarioOptions{})
	v := res.MeasuredVisibilityMs
	t.Logf("time scale 10 over mocknet: ops %d, wall %s, network wait %s, visibility min %.1f p50 %.1f max %.1f ms, heals %+v",
		res.Ops, res.Wall, res.NetworkWait, pct(v, 0), pct(v, 0.5), pct(v, 1), res.Heals)
	if res.Network != NetworkMocknet || res.TimeScale != 10 {
		t.Fatalf("network %q, time scale %v: want mocknet at 10", res.Network, res.TimeScale)
	}
	if len(v) < res.Ops/2 {
		t.Fatalf("%d visibility samples for %d ops", len(v), res.Ops)
	}
	// Scaled back: at least one link's latency on the uplinks (300 ms),
	// though the link ran at 30 ms.
	if v[0] < 300 {
		t.Fatalf("an op was visible everywhere after %.1f ms (scaled), under the uplinks' 300 ms link latency: not scaled back", v[0])
	}
	if len(res.Heals) != 1 {
		t.Fatalf("heals %+v: want one", res.Heals)
	}
	h := res.Heals[0]
	if h.MeasuredWallMs <= 0 || math.Abs(h.MeasuredConvergeMs-10*h.MeasuredWallMs) > 0.01 {
		t.Fatalf("heal measured %.3f ms for %.3f ms of wall time: want the wall time × 10", h.MeasuredConvergeMs, h.MeasuredWallMs)
	}
	// The links ran 10 times faster: the fastest op's wall time (its
	// scaled delay / 10) is under the uplinks' 300 ms.
	if v[0]/10 >= 300 {
		t.Fatalf("the fastest op took %.1f ms of wall time: the links did not run faster than the uplinks' 300 ms", v[0]/10)
	}
}

// TestScenarioMocknetWithoutPeerScoring runs the time-scale scenario
// with transport.peer_scoring = false (p2p.Config.NoPeerScoring in every
// venue's network, as territory.toml does): the ops still cross the
// mocknet by gossip, the heal converges through the real anti-entropy,
// and every invariant holds.
func TestScenarioMocknetWithoutPeerScoring(t *testing.T) {
	sc, err := ParseScenario([]byte(timeScaleScenario + "peer_scoring = false\n"))
	if err != nil {
		t.Fatal(err)
	}
	if sc.Transport.PeerScoring == nil || *sc.Transport.PeerScoring {
		t.Fatalf("transport.peer_scoring parsed as %v", sc.Transport.PeerScoring)
	}
	res := runScenario(t, sc, ScenarioOptions{})
	t.Logf("without peer scoring over mocknet: ops %d, wall %s, network wait %s, heals %+v, net %+v", res.Ops, res.Wall, res.NetworkWait, res.Heals, res.Net)
	if res.Network != NetworkMocknet || len(res.Heals) != 1 || res.Heals[0].MeasuredWallMs <= 0 {
		t.Fatalf("network %q, heals %+v: want one measured heal on mocknet", res.Network, res.Heals)
	}
	if res.Net == nil || res.Net.MessagesAccepted == 0 || res.Net.SyncOpsIn == 0 {
		t.Fatalf("net %+v: want ops by gossip and by anti-entropy", res.Net)
	}
}
