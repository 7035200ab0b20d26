package season

// How to run (never part of the default test run: it is a benchmark):
//
//	go test ./bench/season -run '^$' -bench Season -benchtime 1x -timeout 0 -v \
//	    -season.ops 100000,1000000 -season.pay 3m
//
// For each history size in -season.ops (100000, 1000000, 10000000, ...)
// it generates a history with `cagnotte gen-history` (50 venues, 50,000
// cards, 75 % payments; or reuses the one cached under -season.cache,
// keyed by size, seed, generator version and store format: pass
// -season.regen after a store format change that kept its version
// number), copies it to a work directory and, on real `cagnotte node`
// processes built from this checkout with go build (or -season.bin):
//
//  1. starts the node (venue 0 of the history) and times its cold start:
//     process start → GET /api/v1/sync/status answers 200;
//  2. reads the hot card (10,000 entries) -season.reads times, one page of
//     50 (GET /api/v1/cards/{card}?limit=50, staff token), and walks its
//     whole history by pages once;
//  3. pays at -season.rate (200/s) for -season.pay (default 3 min; issue
//     11 asks for an hour: -season.pay 1h), open loop, latency measured
//     from each payment's scheduled time;
//  4. admits a new venue (`cagnotte federation admit` on the generated
//     federation directory; the loaded node holds a checkpoint of the
//     generated state attested by a quorum of the generated venues, saved
//     before its first start unless -season.checkpoint=false, so the new
//     venue joins from it), starts it with only its bundle, bootstrapped
//     to the loaded node, and times its first successful payment (polled
//     every 200 ms until 200, on 200 cards reserved for it in turn: a card
//     it blocked while catching up refuses) and its full catch-up (the
//     loaded node's ops, the admission and its own), with its RSS and the
//     number of cards it blocked; at most -season.join (5 min);
//  5. stops the node (SIGTERM) and restarts it -season.restarts times
//     (10), timing each cold start and measuring the data directory (du)
//     after each stop: disk bytes per op across restarts.
//
// During the payment run the loaded node's disk writes are read from
// /proc/PID/io (write_bytes: what reached the block layer). With
// -season.profiles DIR the loaded node runs with --pprof and its heap
// profiles after the start and after the payments are saved in DIR.
//
// RSS is sampled from /proc/PID/status (VmRSS, VmHWM) every 100 ms for
// every node process: "steady" is the median VmRSS during the payment run,
// "peak" the highest VmHWM of the loaded node's processes (start, payments,
// stop with its last snapshot, restarts), with the phase in which it was
// first sampled (the payments' minute, the new venue's join, a restart)
// and what VmRSS held then. The figures are printed
// (-v) and reported as benchmark metrics. The generated federation counts
// one node alone as in sync (min peers 0): the benchmark measures the
// node's storage and views, not the quorum of a 50-venue network.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/internal/genhistory"
	"github.com/cagnotte/cagnotte/node/store"
)

var (
	flagOps      = flag.String("season.ops", "100000", "history sizes to benchmark, comma-separated (e.g. 100000,1000000,10000000)")
	flagSeed     = flag.Uint64("season.seed", 1, "seed of the generated histories")
	flagCache    = flag.String("season.cache", filepath.Join(os.TempDir(), "cagnotte-season"), "directory of cached generated histories")
	flagRegen    = flag.Bool("season.regen", false, "regenerate the histories even if cached")
	flagBin      = flag.String("season.bin", "", "cagnotte binary to run (default: go build of this checkout into a temp dir)")
	flagPay      = flag.Duration("season.pay", 3*time.Minute, "duration of the payment run (issue 11: 1h)")
	flagRate     = flag.Int("season.rate", 200, "payments per second")
	flagReads    = flag.Int("season.reads", 1000, "reads of the hot card's first page")
	flagRestarts = flag.Int("season.restarts", 10, "restarts for the disk-per-op measure")
	flagJoinWait = flag.Duration("season.join", 5*time.Minute, "longest wait for the new venue to sell and to catch up (0: no new venue)")
	// flagJoinSettle keeps the new venue running after it caught up, to
	// read its steady RSS (issue 11: a node's limits, 256 MiB steady).
	flagJoinSettle = flag.Duration("season.joinsettle", 30*time.Second, "how long the new venue runs after it caught up; its steady RSS is the median over the second half (0: none)")
	flagBatch      = flag.Int("season.batch", genhistory.DefaultBatchOps, "ops per store commit when generating (gen-history --batch)")
	flagKeep       = flag.Bool("season.keep", false, "keep the work directory (its path is logged)")
	flagCkpt       = flag.Bool("season.checkpoint", true, "save a checkpoint of the history attested by a quorum of the generated venues before the first start (genhistory.SaveAttestedCheckpoint), so that the new venue can join from it")
	flagLogLevel   = flag.String("season.loglevel", "info", "the loaded node's --log-level (debug logs its slow write groups and its page-outs of mapped tables to loaded.log)")
	flagProfiles   = flag.String("season.profiles", "", "directory for heap profiles of the loaded node (run with --pprof) after its start and after the payments (default: none)")
)

// BenchmarkSeason runs the season scenario for each size of -season.ops.
func BenchmarkSeason(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("the season benchmark reads /proc/PID/status: linux only")
	}
	var sizes []uint64
	for _, s := range strings.Split(*flagOps, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
		if err != nil {
			b.Fatalf("-season.ops %q: %v", *flagOps, err)
		}
		sizes = append(sizes, n)
	}
	bin := buildBinary(b)
	for _, n := range sizes {
		b.Run(fmt.Sprintf("ops=%d", n), func(b *testing.B) {
			for range b.N {
				r := runSeason(b, bin, n)
				b.Log("\n" + r.String())
				r.report(b)
			}
		})
	}
}

func buildBinary(b *testing.B) string {
	if *flagBin != "" {
		return *flagBin
	}
	bin := filepath.Join(b.TempDir(), "cagnotte")
	start := time.Now()
	out, err := exec.Command("go", "build", "-o", bin, "github.com/cagnotte/cagnotte/cmd/cagnotte").CombinedOutput()
	if err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	b.Logf("built %s in %s", bin, time.Since(start).Round(time.Millisecond))
	return bin
}

// result holds one size's figures.
type result struct {
	Ops        uint64
	GenSeconds float64
	GenRate    float64
	GenCached  bool

	ColdStarts   []time.Duration // first start, then each restart
	ColdCPU      []time.Duration // CPU time of each cold start (to the API answering)
	StartedLog   time.Duration   // "node started" in the first start's log
	RSSStarted   int64           // kB, after the first start (idle)
	RSSSteady    int64           // kB, median during the payment run
	RSSPeak      int64           // kB, highest VmHWM of the loaded node
	AnonSteady   int64           // kB, median RssAnon during the payment run
	FileSteady   int64           // kB, median RssFile (mapped Badger files) during the payment run
	AnonPeak     int64           // kB, highest RssAnon sampled of the loaded node
	PeakWhere    string          // the phase in which the loaded node's peak was first sampled
	PeakSample   memStatus       // VmRSS and its parts in that sample
	phases       []phase         // the loaded node's phases, in order
	StopTime     time.Duration   // SIGTERM → exit, after the payment run
	Pay          latencies
	PayErrors    int
	PayLate      int
	Reads        latencies
	ReadErrors   int
	WalkEntries  int
	WalkPages    int
	WalkTime     time.Duration
	JoinSell     time.Duration // new venue: process start → first payment 200
	JoinSellOK   bool
	JoinSynced   time.Duration // new venue: process start → op count equal
	JoinSyncedOK bool
	JoinFirstLog time.Duration // new venue: its first "synced" log line
	JoinRSS      int64         // kB, the new venue's VmRSS when caught up (or at the end)
	JoinPeak     int64         // kB, its VmHWM
	JoinAnonPeak int64         // kB, its highest RssAnon sampled
	JoinSteady   int64         // kB, its median VmRSS over the second half of the settle time
	JoinSteadyAn int64         // kB, its median RssAnon over the same
	JoinSettle   time.Duration // the settle time
	JoinCodes    map[int]int   // HTTP status of its payment attempts
	JoinBlocked  int           // cards it blocked (log lines "card blocked")
	PayCodes     map[int]int   // HTTP status of the payment run's refusals
	PaySlow      []int         // payments over slowPayment, by minute of the payment run
	// PayLag is how late each payment left the generator (from its
	// scheduled time to its request starting: the generator's own
	// scheduling, part of every latency); PaySlowLagged counts the
	// payments over slowPayment that had left over slowPayment/2 late.
	PayLag        latencies
	PaySlowLagged int
	LoadAvg       string // /proc/loadavg at the end of the payment run
	// PayWriteBytes is what the loaded node caused to be written to disk
	// during the payment run (write_bytes of /proc/PID/io).
	PayWriteBytes int64
	Checkpoint    genhistory.CheckpointInfo // the attested checkpoint saved before the first start
	DiskBytes     []int64                   // du of the data dir: after generation, then after each stop
	DiskOps       []uint64                  // ops at each measure
}

// phase is a part of the run, from its start to the next phase's.
type phase struct {
	name   string
	at     time.Time
	minute bool // name the minute of the phase rather than the second
}

func (r *result) mark(name string, minute bool) {
	r.phases = append(r.phases, phase{name, time.Now(), minute})
}

// where names the phase t falls in, and how far into it.
func (r *result) where(t time.Time) string {
	for i := len(r.phases) - 1; i >= 0; i-- {
		ph := r.phases[i]
		if t.Before(ph.at) {
			continue
		}
		if ph.minute {
			return fmt.Sprintf("%s, minute %d", ph.name, int(t.Sub(ph.at)/time.Minute)+1)
		}
		return fmt.Sprintf("%s, +%.1f s", ph.name, t.Sub(ph.at).Seconds())
	}
	return "before the first start"
}

// latencies is a sorted list of durations.
type latencies []time.Duration

func (l latencies) q(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

// slowPayment is the bound on a payment (p99 ≤ 10 ms): the
// payments over it are counted by minute of the run, to tell a tail spread
// over the run from a few bad minutes (a compaction, a flush).
const slowPayment = 10 * time.Millisecond

// countSlow adds a payment sent at offset since the run's start that took
// el to the per-minute counts of payments over slowPayment.
func countSlow(slow []int, offset, el time.Duration) []int {
	if el <= slowPayment {
		return slow
	}
	m := int(offset / time.Minute)
	for len(slow) <= m {
		slow = append(slow, 0)
	}
	slow[m]++
	return slow
}

// slowMinutes formats the per-minute counts: the total, and the minutes
// that had any ("m12:340"), the worst first, at most ten.
func slowMinutes(slow []int) string {
	total := 0
	var mins []int
	for m, n := range slow {
		total += n
		if n > 0 {
			mins = append(mins, m)
		}
	}
	if total == 0 {
		return "none"
	}
	slices.SortStableFunc(mins, func(a, b int) int { return slow[b] - slow[a] })
	parts := make([]string, 0, 10)
	for _, m := range mins[:min(len(mins), 10)] {
		parts = append(parts, fmt.Sprintf("m%d:%d", m, slow[m]))
	}
	more := ""
	if len(mins) > 10 {
		more = fmt.Sprintf(" (and %d more minutes)", len(mins)-10)
	}
	return fmt.Sprintf("%d in %d minutes, worst %s%s", total, len(mins), strings.Join(parts, " "), more)
}

func mib(kb int64) string { return fmt.Sprintf("%.0f MiB", float64(kb)/1024) }

func (r *result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "season of %d ops\n", r.Ops)
	cached := ""
	if r.GenCached {
		cached = " (cached)"
	}
	fmt.Fprintf(&b, "  generation:        %.1f s, %.0f ops/s%s\n", r.GenSeconds, r.GenRate, cached)
	fmt.Fprintf(&b, "  RSS:               %s after start, %s steady (median during payments), %s peak (VmHWM over start, payments, stop, restarts)\n",
		mib(r.RSSStarted), mib(r.RSSSteady), mib(r.RSSPeak))
	fmt.Fprintf(&b, "                     of which anonymous %s steady, %s peak; file-mapped (Badger's tables and logs) %s steady\n",
		mib(r.AnonSteady), mib(r.AnonPeak), mib(r.FileSteady))
	if r.PeakWhere != "" {
		fmt.Fprintf(&b, "                     peak first sampled in %s: VmRSS %s then, anonymous %s, file-mapped %s\n",
			r.PeakWhere, mib(r.PeakSample.rss), mib(r.PeakSample.anon), mib(r.PeakSample.file))
	}
	cs := make([]string, len(r.ColdStarts))
	for i, d := range r.ColdStarts {
		cs[i] = fmt.Sprintf("%.2f", d.Seconds())
	}
	fmt.Fprintf(&b, "  cold start (s):    first %s (\"node started\" logged at %.2f s); restarts %s\n", first(cs), r.StartedLog.Seconds(), strings.Join(rest(cs), " "))
	cpu := make([]string, len(r.ColdCPU))
	for i, d := range r.ColdCPU {
		cpu[i] = fmt.Sprintf("%.2f", d.Seconds())
	}
	fmt.Fprintf(&b, "  cold start CPU (s): first %s; restarts %s (user+system time until the API answered)\n", first(cpu), strings.Join(rest(cpu), " "))
	fmt.Fprintf(&b, "  payments:          %d at %d/s: p50 %s, p99 %s, max %s, %d errors, %d not sent on time\n",
		len(r.Pay), *flagRate, ms(r.Pay.q(0.5)), ms(r.Pay.q(0.99)), ms(r.Pay.q(1)), r.PayErrors, r.PayLate)
	fmt.Fprintf(&b, "                     machine load average at the end of the run: %s\n", r.LoadAvg)
	fmt.Fprintf(&b, "                     written to disk by the node during the run: %.1f MB, %.0f bytes per payment (write_bytes less cancelled_write_bytes of /proc/PID/io)\n",
		float64(r.PayWriteBytes)/1e6, float64(r.PayWriteBytes)/float64(max(len(r.Pay), 1)))
	if len(r.PayCodes) > 0 {
		fmt.Fprintf(&b, "                     refusals by HTTP status (0: no answer) %v\n", r.PayCodes)
	}
	fmt.Fprintf(&b, "                     over %s, by minute of the run: %s\n", ms(slowPayment), slowMinutes(r.PaySlow))
	fmt.Fprintf(&b, "                     left the generator late by: p50 %s, p99 %s, max %s; of the payments over %s, %d had left over %s late\n",
		ms(r.PayLag.q(0.5)), ms(r.PayLag.q(0.99)), ms(r.PayLag.q(1)), ms(slowPayment), r.PaySlowLagged, ms(slowPayment/2))
	fmt.Fprintf(&b, "  stop after payments: %.2f s\n", r.StopTime.Seconds())
	fmt.Fprintf(&b, "  hot card read:     %d reads of 50 entries: p50 %s, p99 %s, max %s, %d errors; whole history %d entries in %d pages, %.2f s\n",
		len(r.Reads), ms(r.Reads.q(0.5)), ms(r.Reads.q(0.99)), ms(r.Reads.q(1)), r.ReadErrors, r.WalkEntries, r.WalkPages, r.WalkTime.Seconds())
	synced := "none"
	if r.JoinFirstLog > 0 {
		synced = fmt.Sprintf("%.2f s", r.JoinFirstLog.Seconds())
	}
	if r.Checkpoint.Ops > 0 {
		fmt.Fprintf(&b, "  checkpoint:        %d ops, %.1f MB, %d attestations, saved in %.1f s before the first start; %d events in the state\n",
			r.Checkpoint.Ops, float64(r.Checkpoint.Bytes)/1e6, r.Checkpoint.Attestations, r.Checkpoint.Took.Seconds(), r.Checkpoint.Events)
	}
	fmt.Fprintf(&b, "  new venue:         first payment %s, caught up %s, first \"synced\" log %s; RSS %s when caught up, peak %s\n",
		okTime(r.JoinSell, r.JoinSellOK), okTime(r.JoinSynced, r.JoinSyncedOK), synced, mib(r.JoinRSS), mib(r.JoinPeak))
	fmt.Fprintf(&b, "                     of which anonymous %s peak\n", mib(r.JoinAnonPeak))
	if r.JoinSettle > 0 {
		fmt.Fprintf(&b, "                     RSS steady %s (anonymous %s): median over the last %.0f s of %.0f s after it caught up\n",
			mib(r.JoinSteady), mib(r.JoinSteadyAn), r.JoinSettle.Seconds()/2, r.JoinSettle.Seconds())
	}
	fmt.Fprintf(&b, "                     payment attempts by HTTP status %v; cards it blocked while catching up: %d\n", r.JoinCodes, r.JoinBlocked)
	bpo := make([]string, len(r.DiskBytes))
	for i := range r.DiskBytes {
		bpo[i] = fmt.Sprintf("%.0f", float64(r.DiskBytes[i])/float64(max(r.DiskOps[i], 1)))
	}
	fmt.Fprintf(&b, "  disk (B/op):       generated %s; after each stop %s\n", first(bpo), strings.Join(rest(bpo), " "))
	return b.String()
}

func first(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return s[0]
}

func rest(s []string) []string {
	if len(s) < 2 {
		return nil
	}
	return s[1:]
}

func okTime(d time.Duration, ok bool) string {
	if !ok {
		return fmt.Sprintf("NOT within %s", d.Round(time.Second))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func (r *result) report(b *testing.B) {
	b.ReportMetric(float64(r.RSSSteady)/1024, "rss-steady-MiB")
	b.ReportMetric(float64(r.RSSPeak)/1024, "rss-peak-MiB")
	if len(r.ColdStarts) > 0 {
		b.ReportMetric(slices.Max(r.ColdStarts).Seconds(), "coldstart-max-s")
	}
	if len(r.ColdCPU) > 0 {
		b.ReportMetric(slices.Max(r.ColdCPU).Seconds(), "coldstart-cpu-max-s")
	}
	b.ReportMetric(float64(r.Pay.q(0.99))/1e6, "pay-p99-ms")
	b.ReportMetric(float64(r.Reads.q(0.99))/1e6, "cardread-p99-ms")
	if n := len(r.DiskBytes); n > 0 {
		b.ReportMetric(float64(r.DiskBytes[n-1])/float64(max(r.DiskOps[n-1], 1)), "disk-B/op")
	}
	b.ReportMetric(r.JoinSell.Seconds(), "newvenue-sell-s")
	b.ReportMetric(float64(r.JoinPeak)/1024, "newvenue-peak-MiB")
	if r.JoinSettle > 0 {
		b.ReportMetric(float64(r.JoinSteady)/1024, "newvenue-steady-MiB")
	}
	b.ReportMetric(0, "ns/op")
}

// storeInUse reports whether a process holds the Badger store in dir
// (Badger takes an exclusive flock on the directory while open).
func storeInUse(dir string) bool {
	f, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// runSeason runs the scenario for one history size.
func runSeason(b *testing.B, bin string, ops uint64) *result {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := &result{Ops: ops, JoinCodes: map[int]int{}, PayCodes: map[int]int{}}
	src, m := cachedHistory(b, bin, ops, r)
	work, err := os.MkdirTemp("", "cagnotte-season-work-")
	if err != nil {
		b.Fatal(err)
	}
	if *flagKeep {
		b.Logf("work directory: %s", work)
	} else {
		defer os.RemoveAll(work)
	}
	dataDir, fedDir := filepath.Join(work, "node"), filepath.Join(work, "node-federation")
	for _, p := range [][2]string{{filepath.Join(src, "node"), dataDir}, {filepath.Join(src, "node-federation"), fedDir}} {
		if out, err := exec.Command("cp", "-a", p[0], p[1]).CombinedOutput(); err != nil {
			b.Fatalf("copy %s: %v %s", p[0], err, out)
		}
	}
	// A node starts on a store already on disk: without this, the copies'
	// dirty pages (gigabytes at 10 M ops) are written back during the
	// payments, and each commit's flush waits behind them.
	if out, err := exec.Command("sync").CombinedOutput(); err != nil {
		b.Fatalf("sync after the copies: %v %s", err, out)
	}
	r.DiskBytes = append(r.DiskBytes, du(b, dataDir))
	r.DiskOps = append(r.DiskOps, m.Ops)
	if *flagCkpt {
		info, err := genhistory.SaveAttestedCheckpoint(ctx, dataDir, nil)
		if err != nil {
			b.Fatal(err)
		}
		r.Checkpoint = info
		b.Logf("checkpoint of %d ops (%d bytes, %d attestations) saved in %.1f s; %d events in the state", info.Ops, info.Bytes, info.Attestations, info.Took.Seconds(), info.Events)
	}

	httpL, p2pL := freePort(b), freePort(b)
	pprofL := ""
	if *flagProfiles != "" {
		pprofL = freePort(b)
		if err := os.MkdirAll(*flagProfiles, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	loaded := func() *proc {
		args := []string{"node", "--data", dataDir, "--http", httpL, "--listen", "/ip4/127.0.0.1/tcp/" + portOf(p2pL), "--mdns=false", "--log-level", *flagLogLevel}
		if pprofL != "" {
			args = append(args, "--pprof", pprofL)
		}
		return startProc(ctx, b, bin, filepath.Join(work, "loaded.log"), args...)
	}
	profile := func(name string) { profileAt(ctx, b, pprofL, fmt.Sprintf("ops%d-%s.heap", ops, name)) }

	cl := &client{base: "http://" + httpL, token: m.StaffToken, hc: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: time.Minute},
	}}

	// 1. Start.
	r.mark("start", false)
	p := loaded()
	st, cold := waitAPI(ctx, b, p, cl)
	r.ColdStarts = append(r.ColdStarts, cold)
	r.ColdCPU = append(r.ColdCPU, p.startCPU)
	b.Logf("loaded node up in %.2f s: %d ops, peer %s", cold.Seconds(), st.Ops, st.Node)
	sleepCtx(ctx, 3*time.Second)
	r.RSSStarted = p.rss()
	r.StartedLog = p.logAt("node started")
	profile("started")

	// 2. The hot card.
	readHotCard(ctx, b, cl, m, r)

	// 3. Payments.
	if len(m.PayCards) < 2*joinCards {
		b.Fatalf("the history has %d cards to pay with", len(m.PayCards))
	}
	// The new venue charges cards the loaded node never charges.
	var joinCard []string
	for _, c := range m.PayCards[:joinCards] {
		joinCard = append(joinCard, string(c.Card))
	}
	pay := &payer{cards: m.PayCards[joinCards:]}
	r.mark("payments", true)
	from := time.Now()
	wb0, _ := writeBytes(p.cmd.Process.Pid)
	payRun(ctx, cl, pay, *flagRate, *flagPay, r)
	if wb1, ok := writeBytes(p.cmd.Process.Pid); ok && wb1 >= wb0 {
		r.PayWriteBytes = wb1 - wb0
	}
	profile("paid")
	r.RSSSteady = p.medianRSS(from, time.Now())
	r.AnonSteady = p.median(from, time.Now(), func(m memStatus) int64 { return m.anon })
	r.FileSteady = p.median(from, time.Now(), func(m memStatus) int64 { return m.file })
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		r.LoadAvg = strings.TrimSpace(string(la))
	}
	b.Logf("payments: %d, p99 %s, %d errors", len(r.Pay), ms(r.Pay.q(0.99)), r.PayErrors)

	// 4. A new venue (-season.join 0 skips it).
	if *flagJoinWait > 0 {
		r.mark("the new venue joining", false)
		newVenue(ctx, b, bin, work, fedDir, st.Node, p2pL, cl, joinCard, fmt.Sprintf("ops%d-newvenue", ops), r)
	}

	// 5. Stop, then restarts; the data dir is measured after each stop.
	stopAndMeasure := func(p *proc) time.Duration {
		st, err := cl.status(ctx)
		if err != nil {
			b.Fatal(err)
		}
		r.mark("stop", false)
		d := p.stop(b)
		if pk := p.peak(); pk > r.RSSPeak {
			if s, ok := p.firstAt(pk); ok {
				r.PeakWhere, r.PeakSample = r.where(s.at), s.memStatus
			}
		}
		r.RSSPeak = max(r.RSSPeak, p.peak())
		r.AnonPeak = max(r.AnonPeak, p.peakAnon())
		r.DiskBytes = append(r.DiskBytes, du(b, dataDir))
		r.DiskOps = append(r.DiskOps, st.Ops)
		return d
	}
	r.StopTime = stopAndMeasure(p)
	for i := range *flagRestarts {
		r.mark(fmt.Sprintf("restart %d", i+1), false)
		p = loaded()
		st, cold := waitAPI(ctx, b, p, cl)
		r.ColdStarts = append(r.ColdStarts, cold)
		r.ColdCPU = append(r.ColdCPU, p.startCPU)
		// A few payments, so that each run writes.
		for j := range 20 {
			if c, ok := pay.next(); ok {
				_, _ = cl.pay(ctx, c, fmt.Sprintf("restart-%d-%d", i, j))
			}
		}
		stopAndMeasure(p)
		b.Logf("restart %d: cold start %.2f s, %d ops, data dir %d bytes", i+1, cold.Seconds(), st.Ops, r.DiskBytes[len(r.DiskBytes)-1])
	}
	return r
}

// cachedStoreFormat names the store format in the cache's directories: the
// oldest format this build opens without rebuilding anything. Format 3
// stores differ from format 2 only in records this build reads either way
// (store.FormatVersion), so the histories generated as format 2 are kept.
const cachedStoreFormat = 2

// cachedHistory returns the cached directory of a generated history
// (holding node/ and node-federation/), generating it if needed.
func cachedHistory(b *testing.B, bin string, ops uint64, r *result) (string, *genhistory.Manifest) {
	dir := filepath.Join(*flagCache, fmt.Sprintf("gen%d-store%d-ops%d-seed%d", genhistory.Version, cachedStoreFormat, ops, *flagSeed))
	nodeDir := filepath.Join(dir, "node")
	m, err := genhistory.ReadManifest(nodeDir)
	if err == nil && !*flagRegen {
		r.GenSeconds, r.GenRate, r.GenCached = m.Seconds, m.OpsPerSecond, true
		b.Logf("history of %d ops cached in %s (generated in %.1f s)", ops, dir, m.Seconds)
		return dir, m
	}
	if storeInUse(filepath.Join(nodeDir, "store")) {
		// Badger holds its directory's LOCK: a generation (or a node) is
		// running there; removing it would destroy that run.
		b.Fatalf("%s is in use by another process (a generation still running?): not regenerating it", dir)
	}
	if err := os.RemoveAll(dir); err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	b.Logf("generating %d ops into %s", ops, dir)
	cmd := exec.Command(bin, "gen-history", "--data", nodeDir, "--ops", strconv.FormatUint(ops, 10),
		"--seed", strconv.FormatUint(*flagSeed, 10), "--batch", strconv.Itoa(*flagBatch), "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		b.Fatalf("gen-history: %v", err)
	}
	if m, err = genhistory.ReadManifest(nodeDir); err != nil {
		b.Fatal(err)
	}
	r.GenSeconds, r.GenRate = m.Seconds, m.OpsPerSecond
	return dir, m
}

// proc is a running cagnotte process with its RSS sampled.
type proc struct {
	cmd     *exec.Cmd
	started time.Time
	exited  chan struct{}

	mu       sync.Mutex
	lines    []logLine
	samples  []sample
	startCPU time.Duration // CPU time used when the API first answered
}

type logLine struct {
	at   time.Duration
	text string
}

type sample struct {
	at time.Time
	memStatus
}

// memStatus holds a process's memory figures from /proc/PID/status, in kB:
// VmRSS, VmHWM, and the resident anonymous and file-mapped parts of VmRSS
// (Badger maps its tables and logs: those pages are reclaimable).
type memStatus struct {
	rss, hwm, anon, file int64
}

func startProc(ctx context.Context, b *testing.B, bin, logPath string, args ...string) *proc {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stdout = logf
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { // ends when the process closes stderr
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			p.mu.Lock()
			p.lines = append(p.lines, logLine{time.Since(p.started), line})
			p.mu.Unlock()
		}
		_ = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	go func() { // ends when the process exits
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if m, ok := readStatus(cmd.Process.Pid); ok {
				p.mu.Lock()
				p.samples = append(p.samples, sample{time.Now(), m})
				p.mu.Unlock()
			}
			select {
			case <-p.exited:
				return
			case <-t.C:
			}
		}
	}()
	b.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	context.AfterFunc(ctx, func() { _ = cmd.Process.Signal(syscall.SIGTERM) })
	return p
}

// writeBytes returns the bytes a process caused to be written to disk so
// far: write_bytes of /proc/PID/io (the pages it dirtied, each counted
// again when dirtied again after a write-back, as Badger's write-ahead log
// is after every fsync'd commit) less cancelled_write_bytes (dirty pages
// of files truncated or deleted before their write-back).
func writeBytes(pid int) (int64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, false
	}
	return parseWriteBytes(b)
}

func parseWriteBytes(p []byte) (int64, bool) {
	var written, cancelled int64
	found := false
	for _, line := range strings.Split(string(p), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "write_bytes" && k != "cancelled_write_bytes") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, false
		}
		if k == "write_bytes" {
			written, found = n, true
		} else {
			cancelled = n
		}
	}
	return written - cancelled, found
}

// profileAt saves the heap profile of the node serving pprof on addr (no-op
// when addr is empty) as name in -season.profiles.
func profileAt(ctx context.Context, b *testing.B, addr, name string) {
	if addr == "" {
		return
	}
	path := filepath.Join(*flagProfiles, name)
	if err := saveHeapProfile(ctx, "http://"+addr+"/debug/pprof/heap?gc=1", path); err != nil {
		b.Errorf("heap profile %s: %v", name, err)
		return
	}
	b.Logf("heap profile: %s", path)
}

// saveHeapProfile writes the heap profile served at url to path.
func saveHeapProfile(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// cpuTime returns the CPU time (user and system) a process has used so
// far, from /proc/PID/stat: on a loaded machine, the cold start's wall time
// mostly measures the wait for a core, its CPU time what the start costs.
func cpuTime(pid int) (time.Duration, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	return parseStatCPU(b, 100) // USER_HZ is 100 on Linux
}

// parseStatCPU reads utime and stime (fields 14 and 15, in clock ticks
// of hz per second) of a /proc/PID/stat line.
func parseStatCPU(stat []byte, hz int64) (time.Duration, bool) {
	s := string(stat)
	i := strings.LastIndexByte(s, ')') // the command may hold spaces
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:]) // from field 3 (state) on
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(u+st) * time.Second / time.Duration(hz), true
}

// readStatus reads the memory figures of a process.
func readStatus(pid int) (memStatus, bool) {
	p, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memStatus{}, false
	}
	return parseStatus(p)
}

func parseStatus(p []byte) (m memStatus, ok bool) {
	for _, line := range strings.Split(string(p), "\n") {
		k, v, found := strings.Cut(line, ":")
		if !found {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			m.rss = n
		case "VmHWM":
			m.hwm = n
		case "RssAnon":
			m.anon = n
		case "RssFile":
			m.file = n
		}
	}
	return m, m.rss > 0
}

func (p *proc) rss() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.samples) == 0 {
		return 0
	}
	return p.samples[len(p.samples)-1].rss
}

func (p *proc) peak() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var m int64
	for _, s := range p.samples {
		m = max(m, s.hwm, s.rss)
	}
	return m
}

// firstAt returns the first sample whose VmHWM or VmRSS reached kb.
func (p *proc) firstAt(kb int64) (sample, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.samples {
		if max(s.hwm, s.rss) >= kb {
			return s, true
		}
	}
	return sample{}, false
}

// peakAnon returns the highest anonymous RSS sampled (kB).
func (p *proc) peakAnon() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var m int64
	for _, s := range p.samples {
		m = max(m, s.anon)
	}
	return m
}

// medianRSS returns the median VmRSS sampled between from and to (kB).
func (p *proc) medianRSS(from, to time.Time) int64 {
	return p.median(from, to, func(m memStatus) int64 { return m.rss })
}

// median returns the median of one figure sampled between from and to.
func (p *proc) median(from, to time.Time, f func(memStatus) int64) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var v []int64
	for _, s := range p.samples {
		if !s.at.Before(from) && !s.at.After(to) {
			v = append(v, f(s.memStatus))
		}
	}
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// count returns how many log lines contain s.
func (p *proc) count(s string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.lines {
		if strings.Contains(l.text, s) {
			n++
		}
	}
	return n
}

// logAt returns when the first log line containing s was read (0: none).
func (p *proc) logAt(s string) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		if strings.Contains(l.text, s) {
			return l.at
		}
	}
	return 0
}

// stop sends SIGTERM and waits for the exit; it returns how long that took.
func (p *proc) stop(b *testing.B) time.Duration {
	start := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Minute):
		_ = p.cmd.Process.Kill()
		<-p.exited
		b.Errorf("node did not stop within 10 minutes of SIGTERM: killed")
	}
	return time.Since(start)
}

func freePort(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// du is the disk usage of a directory tree (allocated blocks, as du).
func du(b *testing.B, dir string) int64 {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		} else {
			n += info.Size()
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// client calls a node's API with a staff token.
type client struct {
	base, token string
	hc          *http.Client
}

type syncStatus struct {
	Node string `json:"node"`
	Ops  uint64 `json:"ops"`
}

func (c *client) do(ctx context.Context, method, path string, body any, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		p, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(p)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode == http.StatusOK {
		return resp.StatusCode, json.NewDecoder(resp.Body).Decode(out)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

func (c *client) status(ctx context.Context) (syncStatus, error) {
	var st syncStatus
	code, err := c.do(ctx, "GET", "/api/v1/sync/status", nil, &st)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("sync status: HTTP %d", code)
	}
	return st, err
}

func (c *client) pay(ctx context.Context, card, key string) (int, error) {
	return c.do(ctx, "POST", "/api/v1/payments", map[string]any{"card": card, "amount_cents": payAmount, "idempotency_key": key, "label": "bench"}, nil)
}

// waitAPI polls the sync status until it answers and returns it with the
// time since the process started.
func waitAPI(ctx context.Context, b *testing.B, p *proc, c *client) (syncStatus, time.Duration) {
	deadline := time.Now().Add(30 * time.Minute)
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := c.status(rctx)
		cancel()
		if err == nil {
			d := time.Since(p.started)
			if cpu, ok := cpuTime(p.cmd.Process.Pid); ok {
				p.mu.Lock()
				p.startCPU = cpu
				p.mu.Unlock()
			}
			return st, d
		}
		select {
		case <-p.exited:
			b.Fatalf("node exited before its API answered; see its log")
		case <-ctx.Done():
			b.Fatal(ctx.Err())
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("API not answering after 30 minutes: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// joinCards is the number of cards reserved for the new venue: it tries
// them in turn (a card it blocked while catching up refuses payments).
const joinCards = 200

// payAmount is what each benchmark payment charges, in cents.
const payAmount = 10

// payer hands out cards to charge, within their balances.
type payer struct {
	mu    sync.Mutex
	cards []genhistory.CardBalance
	i     int
	spent map[string]int64
}

func (p *payer) next() (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.spent == nil {
		p.spent = map[string]int64{}
	}
	for range len(p.cards) {
		c := p.cards[p.i%len(p.cards)]
		p.i++
		if p.spent[string(c.Card)]+payAmount <= c.Balance {
			p.spent[string(c.Card)] += payAmount
			return string(c.Card), true
		}
	}
	return "", false
}

// payRun pays at rate per second for d, open loop.
func payRun(ctx context.Context, c *client, p *payer, rate int, d time.Duration, r *result) {
	total := int(d.Seconds() * float64(rate))
	interval := time.Second / time.Duration(rate)
	var (
		mu      sync.Mutex
		lat     = make(latencies, 0, total)
		errs    atomic.Int64
		late    int
		wg      sync.WaitGroup
		inFlite = make(chan struct{}, 512)
	)
	start := time.Now()
	for i := range total {
		at := start.Add(time.Duration(i) * interval)
		if w := time.Until(at); w > 0 {
			sleepCtx(ctx, w)
		}
		if ctx.Err() != nil {
			break
		}
		card, ok := p.next()
		if !ok {
			errs.Add(1)
			continue
		}
		select {
		case inFlite <- struct{}{}:
		default:
			late++
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-inFlite }()
			lag := time.Since(at)
			code, err := c.pay(ctx, card, fmt.Sprintf("season-%d-%d", start.UnixNano(), i))
			el := time.Since(at)
			if err != nil || code != http.StatusOK {
				errs.Add(1)
				mu.Lock()
				r.PayCodes[code]++
				mu.Unlock()
				return
			}
			mu.Lock()
			lat = append(lat, el)
			r.PayLag = append(r.PayLag, lag)
			r.PaySlow = countSlow(r.PaySlow, at.Sub(start), el)
			if el > slowPayment && lag > slowPayment/2 {
				r.PaySlowLagged++
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	r.Pay, r.PayErrors, r.PayLate = lat, int(errs.Load()), late
}

type cardPage struct {
	History []json.RawMessage `json:"history"`
	Next    string            `json:"next"`
}

// readHotCard times reads of the hot card's first page and one walk of its
// whole history.
func readHotCard(ctx context.Context, b *testing.B, c *client, m *genhistory.Manifest, r *result) {
	path := "/api/v1/cards/" + string(m.HotCard) + "?limit=50"
	for range *flagReads {
		start := time.Now()
		var pg cardPage
		code, err := c.do(ctx, "GET", path, nil, &pg)
		if err != nil || code != http.StatusOK || len(pg.History) != 50 {
			r.ReadErrors++
			continue
		}
		r.Reads = append(r.Reads, time.Since(start))
	}
	start := time.Now()
	next := ""
	for {
		p := path
		if next != "" {
			p += "&before=" + next
		}
		var pg cardPage
		code, err := c.do(ctx, "GET", p, nil, &pg)
		if err != nil || code != http.StatusOK {
			b.Errorf("walking the hot card's history: HTTP %d %v", code, err)
			return
		}
		r.WalkPages++
		r.WalkEntries += len(pg.History)
		if pg.Next == "" {
			break
		}
		next = pg.Next
	}
	r.WalkTime = time.Since(start)
	if r.WalkEntries != m.HotEntries {
		b.Errorf("hot card: %d entries read, %d generated", r.WalkEntries, m.HotEntries)
	}
}

// newVenue admits a venue, starts it bootstrapped to the loaded node and
// times its first payment and its catch-up.
func newVenue(ctx context.Context, b *testing.B, bin, work, fedDir, loadedPeer, loadedP2P string, loaded *client, cards []string, profName string, r *result) {
	dir := filepath.Join(work, "newvenue")
	out, err := exec.Command(bin, "node", "init", "--data", dir).CombinedOutput()
	if err != nil {
		b.Fatalf("node init: %v %s", err, out)
	}
	peer := ""
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "peer id: "); ok {
			peer = strings.TrimSpace(v)
		}
	}
	bundle := filepath.Join(work, "newvenue.ops")
	if out, err := exec.Command(bin, "federation", "admit", "--dir", fedDir, "--peer", peer, "--name", "New venue", "--out", bundle).CombinedOutput(); err != nil {
		b.Fatalf("federation admit: %v %s", err, out)
	}
	tok, err := os.ReadFile(filepath.Join(dir, "staff-tokens"))
	if err != nil {
		b.Fatal(err)
	}
	httpN, p2pN := freePort(b), freePort(b)
	c := &client{base: "http://" + httpN, token: strings.TrimSpace(strings.Split(string(tok), "\n")[0]), hc: &http.Client{Timeout: 10 * time.Second}}
	want, err := loaded.status(ctx)
	if err != nil {
		b.Fatal(err)
	}
	args := []string{"node", "--data", dir, "--federation", bundle, "--http", httpN,
		"--listen", "/ip4/127.0.0.1/tcp/" + portOf(p2pN), "--mdns=false",
		"--bootstrap", "/ip4/127.0.0.1/tcp/" + portOf(loadedP2P) + "/p2p/" + loadedPeer}
	pprofN := ""
	if *flagProfiles != "" {
		pprofN = freePort(b)
		args = append(args, "--pprof", pprofN)
	}
	p := startProc(ctx, b, bin, filepath.Join(work, "newvenue.log"), args...)
	defer p.stop(b)
	deadline := p.started.Add(*flagJoinWait)
	sold := uint64(0)
	for i := 0; time.Now().Before(deadline) && !(r.JoinSellOK && r.JoinSyncedOK); i++ {
		if !r.JoinSellOK {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			code, err := c.pay(rctx, cards[i%len(cards)], fmt.Sprintf("newvenue-%d", i))
			cancel()
			if err == nil {
				r.JoinCodes[code]++
			}
			if err == nil && code == http.StatusOK {
				r.JoinSell, r.JoinSellOK = time.Since(p.started), true
				sold = 1
				b.Logf("new venue: first payment after %.2f s", r.JoinSell.Seconds())
				profileAt(ctx, b, pprofN, profName+"-sold.heap")
			}
		}
		if !r.JoinSyncedOK {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			st, err := c.status(rctx)
			cancel()
			// Caught up: the loaded node's ops, the admission and its own.
			if err == nil && st.Ops >= want.Ops+1+sold {
				r.JoinSynced, r.JoinSyncedOK = time.Since(p.started), true
				r.JoinRSS = p.rss()
				b.Logf("new venue: caught up (%d ops) after %.2f s", st.Ops, r.JoinSynced.Seconds())
			}
		}
		select {
		case <-p.exited:
			b.Errorf("new venue exited; see %s", filepath.Join(work, "newvenue.log"))
			return
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	if !r.JoinSellOK {
		r.JoinSell = *flagJoinWait
	}
	if !r.JoinSyncedOK {
		r.JoinSynced = *flagJoinWait
		r.JoinRSS = p.rss()
	}
	if r.JoinSyncedOK && *flagJoinSettle > 0 {
		settled := time.Now()
		select {
		case <-p.exited:
			b.Errorf("new venue exited; see %s", filepath.Join(work, "newvenue.log"))
			return
		case <-ctx.Done():
			return
		case <-time.After(*flagJoinSettle):
		}
		r.JoinSettle = *flagJoinSettle
		from := settled.Add(*flagJoinSettle / 2)
		r.JoinSteady = p.medianRSS(from, time.Now())
		r.JoinSteadyAn = p.median(from, time.Now(), func(m memStatus) int64 { return m.anon })
		b.Logf("new venue: RSS steady %d MiB (anonymous %d MiB) over the last %s after it caught up", r.JoinSteady/1024, r.JoinSteadyAn/1024, *flagJoinSettle/2)
		profileAt(ctx, b, pprofN, profName+"-settled.heap")
	}
	r.JoinFirstLog = p.logAt("msg=synced")
	r.JoinBlocked = p.count("card blocked")
	r.JoinPeak = p.peak()
	r.JoinAnonPeak = p.peakAnon()
}

func TestSlowMinutes(t *testing.T) {
	var slow []int
	for _, p := range []struct{ offset, el time.Duration }{
		{10 * time.Second, 11 * time.Millisecond},
		{70 * time.Second, 10 * time.Millisecond}, // at the bound: not slow
		{3*time.Minute + time.Second, 50 * time.Millisecond},
		{3*time.Minute + 2*time.Second, 12 * time.Millisecond},
	} {
		slow = countSlow(slow, p.offset, p.el)
	}
	if want := []int{1, 0, 0, 2}; !slices.Equal(slow, want) {
		t.Fatalf("countSlow = %v, want %v", slow, want)
	}
	for _, tc := range []struct {
		name string
		in   []int
		want string
	}{
		{"none", nil, "none"},
		{"zeros", []int{0, 0}, "none"},
		{"worst first", slow, "3 in 2 minutes, worst m3:2 m0:1"},
		{"more than ten", []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 5}, "16 in 12 minutes, worst m11:5 m0:1 m1:1 m2:1 m3:1 m4:1 m5:1 m6:1 m7:1 m8:1 (and 2 more minutes)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := slowMinutes(tc.in); got != tc.want {
				t.Errorf("slowMinutes(%v) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestParseWriteBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want int64
		ok   bool
	}{
		{"proc io", "rchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4\nread_bytes: 4096\nwrite_bytes: 81920\ncancelled_write_bytes: 0\n", 81920, true},
		{"cancelled", "write_bytes: 81920\ncancelled_write_bytes: 8192\n", 73728, true},
		{"missing", "rchar: 1\n", 0, false},
		{"garbage", "write_bytes: x\n", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseWriteBytes([]byte(tc.in))
			if got != tc.want || ok != tc.ok {
				t.Errorf("parseWriteBytes = %d, %v; want %d, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want memStatus
		ok   bool
	}{
		{"linux", "Name:\tcagnotte\nVmPeak:\t 900 kB\nVmHWM:\t  5120 kB\nVmRSS:\t  4096 kB\nRssAnon:\t  3000 kB\nRssFile:\t  1096 kB\n", memStatus{4096, 5120, 3000, 1096}, true},
		{"no rss", "Name:\tzombie\n", memStatus{}, false},
		{"garbage", "VmRSS:\tlots kB\n", memStatus{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseStatus([]byte(tc.in))
			if got != tc.want || ok != tc.ok {
				t.Errorf("parseStatus = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestParseStatCPU(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want time.Duration
		ok   bool
	}{
		{"linux", "4242 (cagnotte) S 1 4242 4242 0 -1 4194560 5000 0 12 0 250 37 0 0 20 0 9 0 100 2000000 4000 18446744073709551615", 2870 * time.Millisecond, true},
		{"command with spaces", "4242 (my node) R 1 4242 4242 0 -1 0 0 0 0 0 100 100 0 0 20 0 1 0 1 1 1", 2 * time.Second, true},
		{"truncated", "4242 (cagnotte) S 1 4242", 0, false},
		{"no command", "garbage", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseStatCPU([]byte(tc.in), 100)
			if got != tc.want || ok != tc.ok {
				t.Errorf("parseStatCPU = %s, %v; want %s, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestLatencyQuantiles(t *testing.T) {
	var l latencies
	for i := 100; i >= 1; i-- {
		l = append(l, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := l.q(tc.q); got != tc.want {
			t.Errorf("q(%v) = %s, want %s", tc.q, got, tc.want)
		}
	}
	if (latencies{}).q(0.5) != 0 {
		t.Error("empty quantile")
	}
}

func TestStoreInUse(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(store.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		dir   string
		close bool // close the store before asking
		want  bool
	}{
		{"open store", dir, false, true},
		{"closed store", dir, true, false},
		{"no store", filepath.Join(t.TempDir(), "none"), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.close {
				if err := st.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if got := storeInUse(tc.dir); got != tc.want {
				t.Errorf("storeInUse = %v, want %v", got, tc.want)
			}
		})
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestWhere(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 20, 0, 0, 0, time.UTC)
	r := &result{phases: []phase{
		{"start", t0, false},
		{"payments", t0.Add(10 * time.Second), true},
		{"the new venue joining", t0.Add(3610 * time.Second), false},
	}}
	for _, c := range []struct {
		at   time.Duration
		want string
	}{
		{-time.Second, "before the first start"},
		{2500 * time.Millisecond, "start, +2.5 s"},
		{10 * time.Second, "payments, minute 1"},
		{(10 + 52*60 + 30) * time.Second, "payments, minute 53"},
		{3622 * time.Second, "the new venue joining, +12.0 s"},
	} {
		if got := r.where(t0.Add(c.at)); got != c.want {
			t.Errorf("where(+%s) = %q, want %q", c.at, got, c.want)
		}
	}
}
