package simulations

import (
	"context"
	"errors"
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
		sc.Cards.Count, sc.Store, sc.Libp2p.Nodes = 150, StoreMemory, 0
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

var _ = errors.Is
var _ = strings.Contains
var _ = context.Background
var _ = time.Second
