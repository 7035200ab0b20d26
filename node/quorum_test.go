package node

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/p2p"
)

// pollUntil polls cond every 10 ms until it holds or timeout passes.
func pollUntil(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// startVenues starts venues of a new federation on real libp2p hosts on
// loopback TCP (real nodes, Badger in temp dirs), each bootstrapping from
// every venue started before it.
func startVenues(tb testing.TB, venues int, settings crdt.Settings) []*testVenue {
	tb.Helper()
	vs, err := PrepareFederation(tb.TempDir(), venues, settings)
	if err != nil {
		tb.Fatal(err)
	}
	var nodes []*testVenue
	for _, v := range vs {
		cfg := p2p.DefaultConfig()
		cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
		cfg.MDNS, cfg.NATPortMap, cfg.HolePunching = false, false, false
		cfg.SyncInterval = 500 * time.Millisecond
		for _, prev := range nodes {
			cfg.Bootstrap = append(cfg.Bootstrap, prev.node.Network().P2PAddrs()...)
		}
		n, err := New(Config{DataDir: v.Dir, HTTPAddr: "127.0.0.1:0", Logger: quietLogger(), P2P: &cfg})
		if err != nil {
			tb.Fatal(err)
		}
		if err := n.Start(context.Background()); err != nil {
			tb.Fatal(err)
		}
		tv := &testVenue{t: tb, dir: v.Dir, token: v.Token, node: n, api: "http://" + n.Addr()}
		tb.Cleanup(tv.stop)
		nodes = append(nodes, tv)
	}
	return nodes
}

var (
	quorumClients  = flag.Int("quorum.clients", 40, "concurrent clients of BenchmarkQuorumUnderLoad")
	quorumRate     = flag.Int("quorum.rate", 200, "payments per second BenchmarkQuorumUnderLoad offers")
	quorumDuration = flag.Duration("quorum.duration", 10*time.Second, "how long BenchmarkQuorumUnderLoad offers load")
	quorumVenues   = flag.Int("quorum.venues", 5, "venues of BenchmarkQuorumUnderLoad")
	quorumBig      = flag.Int("quorum.big", 20, "one payment in this many is above the floor limit (30.00) in BenchmarkQuorumUnderLoad; 0: none")
)

// quorumLoad counts what a loaded venue answered.
type quorumLoad struct {
	mu                          sync.Mutex
	lat                         []time.Duration
	online, offline, capRefused atomic.Int64
	other                       atomic.Int64
	firstOther                  atomic.Value
}

func (q *quorumLoad) pay(ctx context.Context, c *http.Client, v *testVenue, card string, cents int64, key string) {
	body, _ := json.Marshal(map[string]any{"card": card, "amount_cents": cents, "idempotency_key": key})
	req, _ := http.NewRequestWithContext(ctx, "POST", v.api+"/api/v1/payments", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+v.token)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		q.other.Add(1)
		q.firstOther.CompareAndSwap(nil, err.Error())
		return
	}
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	d := time.Since(start)
	switch {
	case resp.StatusCode == 200 && out["offline"] == true:
		q.offline.Add(1)
	case resp.StatusCode == 200:
		q.online.Add(1)
	case out["error"] == "offline_cap_exceeded":
		q.capRefused.Add(1)
	default:
		q.other.Add(1)
		q.firstOther.CompareAndSwap(nil, fmt.Sprint(resp.StatusCode, out))
	}
	q.mu.Lock()
	q.lat = append(q.lat, d)
	q.mu.Unlock()
}

// BenchmarkQuorumUnderLoad is issue 10's "a busy healthy bar is never
// taken for offline": -quorum.venues venues in sync on loopback (real
// nodes, libp2p hosts, Badger), -quorum.clients concurrent clients at the
// first venue offering -quorum.rate payments per second between them for
// -quorum.duration; one payment in -quorum.big is above the floor limit
// (30.00, refused when the venue believes it lost the quorum). Every payment runs the quorum check; it reports how
// many were refused by the offline caps (refused-offline) or taken under
// them (taken-offline), and the latency percentiles.
// Run: go test ./node -run=^$ -bench=QuorumUnderLoad -benchtime=1x
func BenchmarkQuorumUnderLoad(b *testing.B) {
	settings := crdt.DefaultSettings()
	nodes := startVenues(b, *quorumVenues, settings)
	pollUntil(b, 30*time.Second, "every venue in sync and connected to all", func() bool {
		for _, v := range nodes {
			if v.node.Isolation().Isolated || len(v.node.Network().Connected()) < len(nodes)-1 {
				return false
			}
		}
		return true
	})
	v := nodes[0]
	const ncards = 64
	cards := make([]string, ncards)
	for i := range cards {
		cards[i] = fmt.Sprintf("0400000000%04X", i)
		if st, body := v.post("/api/v1/topups", map[string]any{"card": cards[i], "amount_cents": 50_000_000, "method": "cash", "idempotency_key": "q-top-" + cards[i]}); st != 200 {
			b.Fatalf("top-up: %d %v", st, body)
		}
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}}
	ctx := context.Background()
	b.ResetTimer()
	var q quorumLoad
	var elapsed time.Duration
	for run := range b.N {
		clients := *quorumClients
		interval := time.Second / time.Duration(*quorumRate)
		total := int(quorumDuration.Seconds() * float64(*quorumRate))
		var seq atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for w := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Client w sends its k-th payment at start + (k·clients + w)·interval,
				// or at once if its previous answer came later.
				for k := 0; ; k++ {
					slot := k*clients + w
					if slot >= total {
						return
					}
					if d := time.Until(start.Add(time.Duration(slot) * interval)); d > 0 {
						time.Sleep(d)
					}
					i := seq.Add(1)
					cents := 100 + (i*37)%1900 // 1.00 to 20.00
					if *quorumBig > 0 && i%int64(*quorumBig) == 0 {
						cents = 3000 // above the floor limit
					}
					q.pay(ctx, client, v, cards[int(i)%ncards], cents, fmt.Sprintf("q-%d-%d", run, i))
				}
			}()
		}
		wg.Wait()
		elapsed += time.Since(start)
	}
	b.StopTimer()
	slices.Sort(q.lat)
	if len(q.lat) == 0 {
		b.Fatal("no payment answered")
	}
	pct := func(p float64) float64 {
		return float64(q.lat[min(len(q.lat)-1, int(p*float64(len(q.lat))))].Microseconds()) / 1000
	}
	n := float64(len(q.lat))
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(q.lat[len(q.lat)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(n/(elapsed/time.Duration(b.N)).Seconds()/float64(b.N), "payments/s")
	b.ReportMetric(float64(q.capRefused.Load()), "refused-offline")
	b.ReportMetric(float64(q.offline.Load()), "taken-offline")
	b.ReportMetric(100*float64(q.capRefused.Load()+q.offline.Load())/n, "%offline")
	b.ReportMetric(float64(q.other.Load()), "errors")
	if q.other.Load() > 0 {
		b.Logf("first error: %v", q.firstOther.Load())
	}
}
