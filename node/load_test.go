package node

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"github.com/cagnotte/cagnotte/crdt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	loadRate     = flag.Int("load.rate", 200, "payments per second offered by BenchmarkPaymentLoad")
	loadDuration = flag.Duration("load.duration", 10*time.Second, "how long BenchmarkPaymentLoad offers load")
)

// loadClient posts payments to a node and records latencies.
type loadClient struct {
	api, token string
	http       *http.Client
	cards      []string
	seq        atomic.Int64
	mu         sync.Mutex
	lat        []time.Duration
	errors     atomic.Int64
}

// newLoadVenue starts a one-venue federation without a balance ceiling, so
// that a few cards can pay for the whole run.
func newLoadVenue(b *testing.B) *testVenue {
	b.Helper()
	settings := crdt.DefaultSettings()
	settings.BalanceMax = 0
	vs, err := PrepareFederation(b.TempDir(), 1, settings)
	if err != nil {
		b.Fatal(err)
	}
	v := &testVenue{t: b, dir: vs[0].Dir, token: vs[0].Token}
	v.start()
	b.Cleanup(v.stop)
	return v
}

func newLoadClient(b *testing.B, v *testVenue, ncards int) *loadClient {
	lc := &loadClient{api: v.api, token: v.token, http: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256},
	}}
	for i := 0; i < ncards; i++ {
		c := fmt.Sprintf("0400000000%04X", i)
		lc.cards = append(lc.cards, c)
		if st, body := v.post("/api/v1/topups", map[string]any{"card": c, "amount_cents": 50_000_000, "method": "cash", "idempotency_key": "load-top-" + c}); st != 200 {
			b.Fatalf("top-up: %d %v", st, body)
		}
	}
	return lc
}

func (lc *loadClient) pay(ctx context.Context) {
	i := lc.seq.Add(1)
	body, _ := json.Marshal(map[string]any{"card": lc.cards[int(i)%len(lc.cards)], "amount_cents": 1 + i%300, "idempotency_key": fmt.Sprintf("load-%d", i)})
	req, _ := http.NewRequestWithContext(ctx, "POST", lc.api+"/api/v1/payments", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+lc.token)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := lc.http.Do(req)
	if err != nil {
		lc.errors.Add(1)
		return
	}
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	d := time.Since(start)
	if resp.StatusCode != 200 {
		lc.errors.Add(1)
		return
	}
	lc.mu.Lock()
	lc.lat = append(lc.lat, d)
	lc.mu.Unlock()
}

func (lc *loadClient) report(b *testing.B, elapsed time.Duration) {
	slices.Sort(lc.lat)
	if len(lc.lat) == 0 {
		b.Fatal("no payment succeeded")
	}
	q := func(p float64) time.Duration { return lc.lat[min(len(lc.lat)-1, int(p*float64(len(lc.lat))))] }
	b.ReportMetric(float64(q(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(q(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(lc.lat[len(lc.lat)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(len(lc.lat))/elapsed.Seconds(), "payments/s")
	b.ReportMetric(float64(lc.errors.Load()), "errors")
	if lc.errors.Load() > 0 {
		b.Errorf("%d payments failed", lc.errors.Load())
	}
}

// BenchmarkPaymentLoad offers an open-loop load of -load.rate payments per
// second over HTTP on loopback for -load.duration, each acknowledged only
// once durable (fsync'd, group commit), and reports latency percentiles and
// the throughput reached.
// Run: go test ./node -run=^$ -bench=PaymentLoad -benchtime=1x
func BenchmarkPaymentLoad(b *testing.B) {
	v := newLoadVenue(b)
	lc := newLoadClient(b, v, 64)
	ctx := context.Background()
	b.ResetTimer()
	var elapsed time.Duration
	for range b.N {
		lc.lat = lc.lat[:0]
		interval := time.Second / time.Duration(*loadRate)
		total := int(loadDuration.Seconds() * float64(*loadRate))
		var wg sync.WaitGroup
		start := time.Now()
		for i := 0; i < total; i++ {
			// Open loop: request i leaves at start + i*interval whatever the
			// answers, so a slow answer cannot hide queueing.
			if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
				time.Sleep(d)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				lc.pay(ctx)
			}()
		}
		wg.Wait()
		elapsed += time.Since(start)
	}
	lc.report(b, elapsed/time.Duration(b.N))
}

// BenchmarkPaymentThroughput drives payments with 64 concurrent clients as
// fast as the node answers them (closed loop): the node's capacity.
// Run: go test ./node -run=^$ -bench=PaymentThroughput -benchtime=5000x
func BenchmarkPaymentThroughput(b *testing.B) {
	v := newLoadVenue(b)
	lc := newLoadClient(b, v, 64)
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				lc.pay(ctx)
			}
		}()
	}
	wg.Wait()
	lc.report(b, time.Since(start))
}
