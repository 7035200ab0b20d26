package node_test

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
	"path/filepath"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/internal/genhistory"
	"github.com/cagnotte/cagnotte/node"
	"github.com/cagnotte/cagnotte/p2p"
)

var (
	flagCheckpointOps = flag.Uint64("checkpoint.ops", 100_000, "ops of the history BenchmarkNewVenueJoinsFromCheckpoint generates")
	flagCheckpointLog = flag.Bool("checkpoint.log", false, "BenchmarkNewVenueJoinsFromCheckpoint: the nodes' info logs on stderr")
)

func benchP2P(bootstrap []string) *p2p.Config {
	cfg := p2p.DefaultConfig()
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.MDNS, cfg.NATPortMap, cfg.HolePunching = false, false, false
	cfg.Bootstrap = bootstrap
	return &cfg
}

// BenchmarkNewVenueJoinsFromCheckpoint generates a history
// (internal/genhistory: 50 venues, -checkpoint.ops ops), runs its node,
// gives it a checkpoint attested by a quorum of the 50 venues (signed with
// their seed-derived keys, as if they ran and held the same state), admits
// a new venue and measures, on real nodes over loopback, how long the new
// venue takes to install the checkpoint, to sell, and to hold the loaded
// node's digest. Run it with
//
//	go test -run '^$' -bench NewVenueJoinsFromCheckpoint -benchtime 1x ./node/ -checkpoint.ops 1000000
func BenchmarkNewVenueJoinsFromCheckpoint(b *testing.B) {
	for range b.N {
		benchJoin(b)
	}
}

func benchJoin(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if *flagCheckpointLog {
		quiet = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	root := b.TempDir()
	loadedDir := filepath.Join(root, "loaded")
	start := time.Now()
	const seed = 11
	m, err := genhistory.Generate(ctx, genhistory.Config{Dir: loadedDir, Ops: *flagCheckpointOps, Seed: seed})
	if err != nil {
		b.Fatal(err)
	}
	genTook := time.Since(start)
	loaded, err := node.New(node.Config{DataDir: loadedDir, HTTPAddr: "127.0.0.1:0", Logger: quiet, P2P: benchP2P(nil)})
	if err != nil {
		b.Fatal(err)
	}
	if err := loaded.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer loaded.Close()

	keys, err := genhistory.DeriveKeys(seed, m.Venues)
	if err != nil {
		b.Fatal(err)
	}
	var cp []byte
	var atts []crdt.Attestation
	var encodeTook time.Duration
	var history uint64
	loaded.View(func(set *crdt.OpSet) {
		history = set.Len()
		t := time.Now()
		cp, err = set.EncodeCheckpoint()
		encodeTook = time.Since(t)
		if err != nil {
			return
		}
		// The joiner counts the 50 venues and itself.
		need := set.State.Settings.CheckpointQuorum(m.Venues + 1)
		for i := range need {
			atts = append(atts, set.Attest(keys.Venues[i], cp))
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := loaded.Store().SaveCheckpoint(cp, atts); err != nil {
		b.Fatal(err)
	}

	f, err := node.OpenFederation(m.FederationDir, nil)
	if err != nil {
		b.Fatal(err)
	}
	newDir := filepath.Join(root, "new")
	key, _, err := node.LoadOrCreateKey(filepath.Join(newDir, node.KeyFile))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := f.Admit(key.Public(), "New venue"); err != nil {
		b.Fatal(err)
	}
	if err := node.WriteFileAtomic(filepath.Join(newDir, node.FederationFile), f.Bundle(), 0o644); err != nil {
		b.Fatal(err)
	}
	token, err := node.EnsureToken(filepath.Join(newDir, node.TokensFile))
	if err != nil {
		b.Fatal(err)
	}

	b.ResetTimer()
	start = time.Now()
	nv, err := node.New(node.Config{DataDir: newDir, HTTPAddr: "127.0.0.1:0", Logger: quiet, P2P: benchP2P(loaded.Network().P2PAddrs())})
	if err != nil {
		b.Fatal(err)
	}
	if err := nv.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer nv.Close()
	wait := func(what string, cond func() bool) time.Duration {
		deadline := time.Now().Add(5 * time.Minute)
		for !cond() {
			if time.Now().After(deadline) {
				b.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond) // polling a condition in a benchmark
		}
		return time.Since(start)
	}
	installed := wait("the checkpoint to be installed", func() bool { return nv.CheckpointStatus().Installed })
	card := m.PayCards[0].Card
	sold := wait("the new venue to sell", func() bool {
		body, _ := json.Marshal(map[string]any{"card": card, "amount_cents": 100, "idempotency_key": "bench-join"})
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+nv.Addr()+"/api/v1/payments", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	synced := wait("the same digest", func() bool {
		d1, _ := nv.Digest()
		d2, _ := loaded.Digest()
		return d1 == d2
	})
	storedAtSync := nv.Store().Stats().OpsStored
	// The history older than the checkpoint, fetched in the background
	// (CheckpointConfig.NoHistory is false by default).
	fetched := wait("the older history", func() bool { return nv.CheckpointStatus().History.Done })
	verified := wait("the history folded", func() bool {
		h := nv.CheckpointStatus().History
		return h.Verified || h.Err != ""
	})
	b.StopTimer()
	h := nv.CheckpointStatus().History
	if h.Err != "" {
		b.Fatalf("history: %s", h)
	}
	b.ReportMetric(installed.Seconds(), "s-installed")
	b.ReportMetric(sold.Seconds(), "s-sold")
	b.ReportMetric(synced.Seconds(), "s-synced")
	b.ReportMetric(fetched.Seconds(), "s-history")
	b.Logf("history %d ops (%d cards; generated in %v); checkpoint %s, encoded in %v, %d attestations; new venue: installed %v, first payment %v, same digest %v; it stores %d ops then, received %d by sync",
		history, m.Cards, genTook.Round(time.Second), fmtBytes(len(cp)), encodeTook.Round(time.Millisecond), len(atts),
		installed.Round(time.Millisecond), sold.Round(time.Millisecond), synced.Round(time.Millisecond),
		storedAtSync, nv.Network().Stats().SyncOpsIn)
	b.Logf("older history in the background: %s after %v, folded and checked by %v; the new venue stores %d ops; process peak RSS %s (both nodes and the generator, one process)",
		h, fetched.Round(time.Millisecond), verified.Round(time.Millisecond), nv.Store().Stats().OpsStored, peakRSS())
}

// peakRSS reads the process's peak resident set (VmHWM) from /proc.
func peakRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("VmHWM:")); ok {
			return string(bytes.TrimSpace(v))
		}
	}
	return "unknown"
}

func fmtBytes(n int) string {
	return fmt.Sprintf("%.1f MB", float64(n)/1e6)
}
