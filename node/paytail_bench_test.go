package node

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/cagnotte/cagnotte/p2p"
)

// Issue 11's "no writer stall": payment p99 <= 10 ms at 200/s at every
// history size, including while background persistence or compaction
// runs. BenchmarkPaymentsDuringCompaction reproduces the season
// benchmark's payment minute in one process: it copies a generated
// history (cagnotte gen-history), opens it (the first open of a freshly
// generated store rewrites its records and Badger recompresses every
// table: compaction runs through the whole measure), and pays at
// -paytail.rate per second over HTTP, open loop, each payment acknowledged
// once durable. It reports p50/p99/max and where the slow writes' time went
// (the writer's phases, from cagnotte_write_phase_seconds), and the Go
// runtime's stop-the-world pauses.
//
//	go test ./node -run '^$' -bench PaymentsDuringCompaction -benchtime 1x \
//	    -paytail.history /tmp/season-cache/gen1-store2-ops100000-seed1/node
//
// Without -paytail.history it generates -paytail.ops ops first (about a
// minute per 100,000 ops on a quiet machine).
var (
	payTailHistory  = flag.String("paytail.history", "", "gen-history data directory to copy and pay against (empty: generate -paytail.ops ops)")
	payTailOps      = flag.Uint64("paytail.ops", 100_000, "ops to generate when -paytail.history is empty")
	payTailRate     = flag.Int("paytail.rate", 200, "payments per second offered")
	payTailDuration = flag.Duration("paytail.duration", 30*time.Second, "how long payments are offered")
	payTailMemLimit = flag.Int64("paytail.memlimit", 256<<20, "soft memory limit during the run, as the cagnotte binary sets its own (0: leave the runtime's)")
	payTailTrace    = flag.String("paytail.trace", "", "write a runtime/trace of the payment run to this file")
	payTailLog      = flag.String("paytail.log", "", "write the node's debug log (slow write groups) to this file")
	payTailSettle   = flag.Duration("paytail.settle", 0, "wait this long after the node started before paying (lets the first compaction run its course)")
	payTailHeap     = flag.String("paytail.heapprofile", "", "write a heap profile taken when the live heap peaked during the run to this file")
	payTailTables   = flag.Int64("paytail.tablesize", 0, "Badger table size of the node's store (0: the node's choice, store.DefaultTableSize for an existing store)")
	payTailP2P      = flag.Bool("paytail.p2p", true, "run the node's network (libp2p on loopback, no peer) as cagnotte node does")
)

// payTailManifest is the part of genhistory.Manifest the benchmark reads
// (package genhistory imports this one).
type payTailManifest struct {
	StaffToken string `json:"staff_token"`
	PayCards   []struct {
		Card    string `json:"card"`
		Balance int64  `json:"balance_cents"`
	} `json:"pay_cards"`
}

func BenchmarkPaymentsDuringCompaction(b *testing.B) {
	src := *payTailHistory
	if src == "" {
		src = generateHistory(b, *payTailOps)
	}
	var m payTailManifest
	raw, err := os.ReadFile(filepath.Join(src, "genhistory.json"))
	if err != nil {
		b.Fatalf("-paytail.history %s: %v (a cagnotte gen-history data directory)", src, err)
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		b.Fatal(err)
	}
	if len(m.PayCards) == 0 {
		b.Fatal("the history has no card to pay with")
	}
	if *payTailMemLimit > 0 {
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(*payTailMemLimit))
	}
	for range b.N {
		b.StopTimer()
		dir := filepath.Join(b.TempDir(), "node")
		if out, err := exec.Command("cp", "-a", src, dir).CombinedOutput(); err != nil {
			b.Fatalf("copy %s: %v %s", src, err, out)
		}
		// A node starts on a store already on disk: without this, the
		// copy's dirty pages are written back during the payments, and
		// each commit's flush waits for them.
		if out, err := exec.Command("sync").CombinedOutput(); err != nil {
			b.Fatalf("sync after the copy: %v %s", err, out)
		}
		v := &testVenue{t: b, dir: dir, token: m.StaffToken}
		logger := quietLogger()
		if *payTailLog != "" {
			f, err := os.Create(*payTailLog)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			logger = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
		opened := time.Now()
		cfg := Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", Logger: logger, storeTableSize: *payTailTables}
		if *payTailP2P {
			pc := p2p.DefaultConfig()
			pc.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
			pc.MDNS, pc.NATPortMap, pc.HolePunching = false, false, false
			cfg.P2P = &pc
		}
		n, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		if err := n.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		v.node, v.api = n, "http://"+n.Addr()
		b.Logf("opened in %s", time.Since(opened).Round(time.Millisecond))
		// Like the season benchmark, pay once the node may sign (without a
		// peer, the sign gate opens after the federation's isolation delay).
		waitUntil(b, time.Minute, "the node to open its sign gate", func() bool {
			n.mu.RLock()
			seq, _ := n.set.Head(n.cfg.Key.Public())
			n.mu.RUnlock()
			return n.gate.check(seq) == nil
		})
		b.Logf("signing after %s", time.Since(opened).Round(time.Millisecond))
		time.Sleep(*payTailSettle) // a benchmark parameter, not a wait for a condition
		b.StartTimer()
		r := payTail(b, v, &m, *payTailRate, *payTailDuration)
		b.StopTimer()
		r.report(b, n)
		v.stop()
	}
}

// generateHistory runs cagnotte gen-history into a temporary directory.
func generateHistory(b *testing.B, ops uint64) string {
	b.Helper()
	tmp := b.TempDir()
	bin := filepath.Join(tmp, "cagnotte")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/cagnotte/cagnotte/cmd/cagnotte").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	dir := filepath.Join(tmp, "history")
	start := time.Now()
	cmd := exec.Command(bin, "gen-history", "--data", dir, "--ops", strconv.FormatUint(ops, 10), "--seed", "1", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		b.Fatalf("gen-history: %v", err)
	}
	b.Logf("generated %d ops in %s", ops, time.Since(start).Round(time.Second))
	return dir
}

// payTailResult is one payment run's latencies.
type payTailResult struct {
	lat     []time.Duration // by send order
	sent    []time.Duration // send time since the run's start
	errors  int
	why     map[string]int // the failures' causes: HTTP status and error code, or the client's error
	elapsed time.Duration
	pauses  [2]float64 // GC stop-the-world pause: total seconds and max bucket, during the run
	cycles  uint64     // GC cycles during the run
	written int64      // bytes the process wrote to disk during the run (/proc/self/io write_bytes), -1 if unknown
}

// diskWritten returns the bytes this process caused to be written to disk
// (/proc/self/io's write_bytes: Badger's logs, tables and compactions),
// or -1 where the kernel does not say.
func diskWritten() int64 {
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return -1
	}
	for _, line := range bytes.Split(raw, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("write_bytes: ")); ok {
			n, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}

func payTail(b *testing.B, v *testVenue, m *payTailManifest, rate int, d time.Duration) *payTailResult {
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512}}
	defer hc.CloseIdleConnections()
	total := int(d.Seconds() * float64(rate))
	r := &payTailResult{lat: make([]time.Duration, total), sent: make([]time.Duration, total), why: map[string]int{}}
	spent := map[string]int64{}
	card := 0
	next := func() (string, bool) {
		for range m.PayCards {
			c := m.PayCards[card%len(m.PayCards)]
			card++
			if spent[c.Card]+10 <= c.Balance {
				spent[c.Card] += 10
				return c.Card, true
			}
		}
		return "", false
	}
	if *payTailTrace != "" {
		f, err := os.Create(*payTailTrace)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := trace.Start(f); err != nil {
			b.Fatal(err)
		}
		defer trace.Stop()
	}
	pausesBefore, cyclesBefore, writtenBefore := gcPauses(), gcCycles(), diskWritten()
	if *payTailHeap != "" {
		stop := watchHeapPeak(b, *payTailHeap)
		defer stop()
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs int
	)
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := range total {
		// Open loop: payment i leaves at start + i*interval whatever the
		// answers, so that a stall cannot hide the payments queued behind.
		if w := time.Until(start.Add(time.Duration(i) * interval)); w > 0 {
			time.Sleep(w)
		}
		c, ok := next()
		if !ok {
			b.Fatal("the history's pay cards are spent")
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent := time.Since(start)
			body, _ := json.Marshal(map[string]any{"card": c, "amount_cents": 10, "idempotency_key": fmt.Sprintf("tail-%d-%d", start.UnixNano(), i), "label": "bench"})
			req, _ := http.NewRequest("POST", v.api+"/api/v1/payments", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+v.token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			lat := time.Since(start) - sent
			ok := err == nil && resp.StatusCode == http.StatusOK
			why := ""
			if err != nil {
				why = err.Error()
			} else {
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
				resp.Body.Close()
				if !ok {
					var e struct {
						Code string `json:"error"`
					}
					_ = json.Unmarshal(body, &e)
					why = fmt.Sprintf("%d %s", resp.StatusCode, e.Code)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			r.sent[i], r.lat[i] = sent, lat
			if !ok {
				errs++
				r.why[why]++
				r.lat[i] = -1
			}
		}()
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	r.errors = errs
	after := gcPauses()
	r.pauses = [2]float64{after[0] - pausesBefore[0], after[1]}
	r.cycles = gcCycles() - cyclesBefore
	if w := diskWritten(); w >= 0 && writtenBefore >= 0 {
		r.written = w - writtenBefore
	} else {
		r.written = -1
	}
	return r
}

// gcPauses returns the process's total GC stop-the-world pause time
// (estimated from runtime/metrics' histogram) and its largest bucket.
func gcPauses() [2]float64 {
	s := []rtmetrics.Sample{{Name: "/sched/pauses/total/gc:seconds"}}
	rtmetrics.Read(s)
	if s[0].Value.Kind() != rtmetrics.KindFloat64Histogram {
		return [2]float64{}
	}
	h := s[0].Value.Float64Histogram()
	var total, biggest float64
	for i, c := range h.Counts {
		if c == 0 {
			continue
		}
		hi := h.Buckets[i+1]
		if hi > 1e9 {
			hi = h.Buckets[i]
		}
		total += float64(c) * hi
		biggest = hi
	}
	return [2]float64{total, biggest}
}

// watchHeapPeak samples the heap's live objects every 250 ms and writes a
// heap profile each time they reach a new peak (the file holds the last
// one), until the returned function is called.
func watchHeapPeak(b *testing.B, path string) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		var peak uint64
		s := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
		for {
			select {
			case <-done:
				b.Logf("live heap peak %d MiB (profile in %s)", peak>>20, path)
				return
			case <-t.C:
			}
			rtmetrics.Read(s)
			if s[0].Value.Kind() != rtmetrics.KindUint64 || s[0].Value.Uint64() <= peak {
				continue
			}
			peak = s[0].Value.Uint64()
			f, err := os.Create(path)
			if err != nil {
				continue
			}
			_ = pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
	}()
	return func() { close(done); <-finished }
}

// gcCycles returns the number of GC cycles the process completed.
func gcCycles() uint64 {
	s := []rtmetrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	rtmetrics.Read(s)
	if s[0].Value.Kind() != rtmetrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

func (r *payTailResult) report(b *testing.B, n *Node) {
	var ok []time.Duration
	for _, l := range r.lat {
		if l >= 0 {
			ok = append(ok, l)
		}
	}
	if len(ok) == 0 {
		b.Fatal("no payment succeeded")
	}
	slices.Sort(ok)
	q := func(p float64) time.Duration { return ok[min(len(ok)-1, max(0, int(p*float64(len(ok))+0.5)-1))] }
	b.ReportMetric(float64(q(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(q(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(ok[len(ok)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(r.errors), "errors")
	b.ReportMetric(r.pauses[0]*1000, "gc-stw-total-ms")
	b.ReportMetric(float64(r.cycles), "gc-cycles")
	b.ReportMetric(0, "ns/op")
	if r.written >= 0 {
		b.ReportMetric(float64(r.written)/float64(len(ok)), "disk-bytes/payment")
	}
	// The seconds of the run where the slowest payments were sent.
	slow := map[int]int{}
	for i, l := range r.lat {
		if l > 10*time.Millisecond {
			slow[int(r.sent[i].Seconds())]++
		}
	}
	secs := make([]int, 0, len(slow))
	for s := range slow {
		secs = append(secs, s)
	}
	slices.Sort(secs)
	var line bytes.Buffer
	for _, s := range secs {
		fmt.Fprintf(&line, " %ds:%d", s, slow[s])
	}
	b.Logf("%d payments in %s: p50 %s, p99 %s, max %s, %d errors; %d GC cycles, stop-the-world %.1f ms in all (largest bucket %.2f ms)",
		len(ok), r.elapsed.Round(time.Millisecond), q(0.5), q(0.99), ok[len(ok)-1], r.errors, r.cycles, r.pauses[0]*1000, r.pauses[1]*1000)
	b.Logf("disk written during the run: %d bytes, %d per payment (write_bytes of /proc/self/io: logs, tables, compactions)", r.written, r.written/int64(len(ok)))
	b.Logf("payments over 10 ms by the second they were sent:%s", line.String())
	b.Logf("writer phases (cagnotte_write_phase_seconds, whole run): %s", writePhases(n))
	if r.errors > 0 {
		b.Errorf("%d payments failed: %v", r.errors, r.why)
	}
}

// writePhases summarises the writer's phase histograms: count, mean and
// the upper bound of the bucket holding the 99th percentile.
func writePhases(n *Node) string {
	var out bytes.Buffer
	for _, phase := range []string{"queue", "apply", "store_wait", "fill", "durable", "after"} {
		var pb dto.Metric
		if err := n.metrics.writePhase.WithLabelValues(phase).(interface{ Write(*dto.Metric) error }).Write(&pb); err != nil {
			continue
		}
		h := pb.GetHistogram()
		cnt := h.GetSampleCount()
		if cnt == 0 {
			continue
		}
		p99 := "+Inf"
		for _, bk := range h.GetBucket() {
			if float64(bk.GetCumulativeCount()) >= 0.99*float64(cnt) {
				p99 = fmt.Sprintf("%.1f ms", bk.GetUpperBound()*1000)
				break
			}
		}
		fmt.Fprintf(&out, " %s: mean %.2f ms, p99 <= %s;", phase, h.GetSampleSum()/float64(cnt)*1000, p99)
	}
	return out.String()
}
