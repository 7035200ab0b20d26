package simulations

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/p2p"
)

// Sizes of the replication benchmarks (the tests run small fixed sizes).
var (
	replLog = flag.Bool("repl.log", false, "replication scenarios: log the nodes (Info) to stderr")

	reconvNodes = flag.Int("repl.reconv.nodes", 20, "BenchmarkReconvergence20x10k: nodes")
	reconvOps   = flag.Int("repl.reconv.ops", 10000, "BenchmarkReconvergence20x10k: ops made on each side")

	visNodes    = flag.Int("repl.vis.nodes", 50, "BenchmarkGossipVisibility50: nodes")
	visMocknet  = flag.Bool("repl.vis.mocknet", true, "BenchmarkGossipVisibility50: hosts on mocknet (false: TCP on 127.0.0.1)")
	visRate     = flag.Float64("repl.vis.rate", 100, "BenchmarkGossipVisibility50 and BenchmarkSteadyStateCost: ops/s in total")
	visDuration = flag.Duration("repl.vis.duration", 20*time.Second, "BenchmarkGossipVisibility50 and BenchmarkSteadyStateCost: load duration")

	replProfile = flag.String("repl.profile", "", "replication benchmarks: write a CPU profile of the measured phase (heal, or load) to DIR/<benchmark>.prof")

	replHeartbeat = flag.Duration("repl.heartbeat", 0, "replication benchmarks: HeartbeatInterval (0: the federation's, 2 s)")
	replMesh      = flag.Int("repl.mesh", 0, "replication benchmarks: p2p MeshDegree (0: the default)")
)

// replNetwork returns the network tweak of the benchmarks: the defaults,
// or what -repl.heartbeat and -repl.mesh give.
func replNetwork() func(int, *p2p.Config) {
	return func(_ int, cfg *p2p.Config) {
		if *replHeartbeat > 0 {
			cfg.HeartbeatInterval = *replHeartbeat
		}
		if *replMesh > 0 {
			cfg.MeshDegree = *replMesh
		}
	}
}

// replLogger is nil (discard) unless -repl.log.
func replLogger() *slog.Logger {
	if !*replLog {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// fastNetwork is the tests' network: heartbeats every 300 ms so the mesh
// forms quickly; everything else is the default.
func fastNetwork(_ int, cfg *p2p.Config) { cfg.HeartbeatInterval = 300 * time.Millisecond }

// checkNoLeak waits until the goroutines started since before have ended
// (libp2p keeps a few process-wide ones: slack).
func checkNoLeak(t testing.TB, before int) {
	t.Helper()
	const slack = 10
	err := poll(context.Background(), 10*time.Second, 20*time.Millisecond, "the goroutines to end", func() bool {
		return runtime.NumGoroutine() <= before+slack
	})
	if err != nil {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("%d goroutines left running after the cluster closed (%d before)\n%s", runtime.NumGoroutine(), before, buf)
	}
}

// TestReplicationReconvergence: 6 nodes split 3/3, 300 ops on each side,
// heal: every node ends with every op once, one digest, and the bytes sent
// stay close to the size of what was missing.
func TestReplicationReconvergence(t *testing.T) {
	before := runtime.NumGoroutine()
	ctx := context.Background()
	r, err := RunReconvergence(ctx, ReconvergenceConfig{
		Cluster:    ClusterConfig{Nodes: 6, Seed: 1, Network: fastNetwork, Logger: replLogger()},
		OpsPerSide: 300,
		Timeout:    20 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(r)
	if want := int64(6 * 300); r.MissingOps != want {
		t.Fatalf("missing at heal: %d ops, want %d (each node lacks the other side's 300)", r.MissingOps, want)
	}
	if got := r.Net.SyncOpsIn + r.Net.OpsReceived; got != uint64(r.MissingOps) {
		t.Errorf("anti-entropy and gossip delivered %d ops for %d missing: some op was sent twice", got, r.MissingOps)
	}
	if r.Took > 10*time.Second {
		t.Errorf("reconvergence took %s", r.Took)
	}
	if ratio := r.Ratio(); ratio < 1 || ratio > 1.6 {
		t.Errorf("bytes sent / bytes missing = %.3f, want within [1, 1.6]", ratio)
	}
	checkNoLeak(t, before)
}

// TestReplicationSteady: 10 nodes, 50 ops/s for 3 s: every op reaches
// every node, quickly, and the bytes per op per node are plausible for a
// gossip mesh.
func TestReplicationSteady(t *testing.T) {
	before := runtime.NumGoroutine()
	r, err := RunSteady(context.Background(), SteadyConfig{
		Cluster:  ClusterConfig{Nodes: 10, Seed: 2, Network: fastNetwork, Logger: replLogger()},
		Rate:     50,
		Duration: 3 * time.Second,
		Timeout:  20 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(r)
	if r.Ops != 150 {
		t.Fatalf("%d ops", r.Ops)
	}
	if r.P99 > time.Second {
		t.Errorf("p99 creation -> every node %s", r.P99)
	}
	// An op is ~170 bytes; each node forwards it to a handful of mesh
	// peers, and heartbeats come on top.
	if b := r.BytesPerOpPerNode(); b < 170 || b > 20000 {
		t.Errorf("%.0f bytes per op per node", b)
	}
	checkNoLeak(t, before)
}

// TestReplicationSteadyMocknet: the same on mocknet hosts (no sockets),
// as the 50-node benchmark runs.
func TestReplicationSteadyMocknet(t *testing.T) {
	before := runtime.NumGoroutine()
	r, err := RunSteady(context.Background(), SteadyConfig{
		Cluster:  ClusterConfig{Nodes: 8, Seed: 4, Mocknet: true, Network: fastNetwork, Logger: replLogger()},
		Rate:     50,
		Duration: 2 * time.Second,
		Timeout:  20 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(r)
	if r.Ops != 100 || r.Transport != "mocknet" {
		t.Fatalf("%d ops on %s", r.Ops, r.Transport)
	}
	if r.P99 > time.Second {
		t.Errorf("p99 creation -> every node %s", r.P99)
	}
	checkNoLeak(t, before)
}

// TestClusterPartition: a partition leaves no connection across groups
// and ops stay on their side until the heal.
func TestClusterPartition(t *testing.T) {
	before := runtime.NumGoroutine()
	ctx := context.Background()
	c, err := startCluster(ctx, ClusterConfig{Nodes: 4, Seed: 3, Network: fastNetwork, Logger: replLogger()}, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
		checkNoLeak(t, before)
	}()
	if err := c.Partition(ctx, [][]int{{0, 1}, {2, 3}}); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, err := c.Make(0); err != nil {
			t.Fatal(err)
		}
	}
	fed := uint64(c.FederationOps())
	if err := poll(ctx, 10*time.Second, 5*time.Millisecond, "node 1", func() bool { return c.Converged(fed+10, 0, 1) }); err != nil {
		t.Fatal(err)
	}
	// Nodes 2 and 3 get nothing while the partition lasts: once each has
	// heard a heartbeat of the other sent after the ops reached node 1
	// (the network is alive and gossip had its chance), they still hold
	// the federation ops only.
	made := time.Now()
	n2, n3 := c.Nodes()[2], c.Nodes()[3]
	err = poll(ctx, 10*time.Second, 5*time.Millisecond, "heartbeats within the side", func() bool {
		return n2.Net.LastHeard()[n3.Signer.Public()].After(made) && n3.Net.LastHeard()[n2.Signer.Public()].After(made)
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []*ClusterNode{n2, n3} {
		if _, l := n.Replica.Digest(); l != fed {
			t.Fatalf("node %d got ops across the partition", n.Index)
		}
	}
	if ops, _ := c.missing(); ops != 20 {
		t.Fatalf("missing %d ops, want 20", ops)
	}
	c.Heal()
	if err := poll(ctx, 10*time.Second, 5*time.Millisecond, "the heal", func() bool { return c.Converged(fed + 10) }); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkReconvergence20x10k: 20 nodes split in two halves, 10,000 ops
// made on each side, heal. Targets: ≤ 3 s and ≤ 1.3× the missing bytes.
func BenchmarkReconvergence20x10k(b *testing.B) {
	for i := range b.N {
		cfg := ReconvergenceConfig{
			Cluster:    ClusterConfig{Nodes: *reconvNodes, Seed: uint64(100 + i), Network: replNetwork(), Logger: replLogger()},
			OpsPerSide: *reconvOps,
		}
		if f := profileFile(b); f != nil {
			defer f.Close()
			cfg.Profile = f
		}
		before := runtime.NumGoroutine()
		r, err := RunReconvergence(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		checkNoLeak(b, before)
		b.Log(r)
		b.ReportMetric(r.Took.Seconds(), "seconds")
		b.ReportMetric(r.Ratio(), "bytes-ratio")
	}
}

// BenchmarkGossipVisibility50: 50 nodes, 100 ops/s for 20 s: time from an
// op's creation to its arrival at every node. Target: p99 ≤ 250 ms.
func BenchmarkGossipVisibility50(b *testing.B) {
	for i := range b.N {
		r := runSteadyBench(b, *visNodes, *visMocknet, uint64(200+i))
		b.ReportMetric(float64(r.P50)/float64(time.Millisecond), "p50-ms")
		b.ReportMetric(float64(r.P99)/float64(time.Millisecond), "p99-ms")
		b.ReportMetric(float64(r.Max)/float64(time.Millisecond), "max-ms")
	}
}

// BenchmarkSteadyStateCost: bytes sent on the wire per op per node with no
// partition, heartbeats and gossip overhead included, at 20 and 50 nodes.
func BenchmarkSteadyStateCost(b *testing.B) {
	for _, nodes := range []int{20, 50} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			for i := range b.N {
				r := runSteadyBench(b, nodes, false, uint64(300+i))
				b.ReportMetric(r.BytesPerOpPerNode(), "bytes/op/node")
				b.ReportMetric(r.HeartbeatInterval.Seconds(), "heartbeat-s")
			}
		})
	}
}

// profileFile creates DIR/<benchmark>.prof when -repl.profile=DIR.
func profileFile(b *testing.B) *os.File {
	if *replProfile == "" {
		return nil
	}
	f, err := os.Create(filepath.Join(*replProfile, strings.ReplaceAll(b.Name(), "/", "_")+".prof"))
	if err != nil {
		b.Fatal(err)
	}
	return f
}

func runSteadyBench(b *testing.B, nodes int, mock bool, seed uint64) SteadyReport {
	cfg := SteadyConfig{
		Cluster:  ClusterConfig{Nodes: nodes, Seed: seed, Mocknet: mock, Network: replNetwork(), Logger: replLogger()},
		Rate:     *visRate,
		Duration: *visDuration,
	}
	if f := profileFile(b); f != nil {
		defer f.Close()
		cfg.Profile = f
	}
	before := runtime.NumGoroutine()
	r, err := RunSteady(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	checkNoLeak(b, before)
	b.Log(r)
	return r
}
