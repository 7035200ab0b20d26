package main

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"

	"github.com/cagnotte/cagnotte/internal/genhistory"
	"github.com/spf13/cobra"
)

// newGenHistoryCmd is `cagnotte gen-history`, the benchmark helper that
// writes a large generated history into a node data directory (hidden:
// not for operators).
func newGenHistoryCmd(g *globals) *cobra.Command {
	var cfg genhistory.Config
	var pprofAddr string
	cmd := &cobra.Command{
		Use:    "gen-history",
		Short:  "Benchmark helper: generate a large federation history into a new node data directory",
		Hidden: true,
		Long: `Generate a federation's history (50 venues, up to 50,000 cards, about 75 %
payments, the rest top-ups, refunds, events and venue infos, one hot card
with 10,000 entries), deterministic from --seed, into a new node data
directory (--data), as 'cagnotte node init' and a first start with
--federation leave it: the node is venue 0 and its staff token is derived
from the seed. The federation's key and chain go to --federation-dir
(default <data>-federation), for 'cagnotte federation admit'. What was
generated is described in <data>/genhistory.json. Progress goes to stderr.

The store is written by the node's own commits, as sync would write them,
into a store opened for a bulk load (no fsync, no compaction until the
end, then one merge of every table into the last level): about 1.4 KB
written to disk per op and 10,000+ ops/s at 10 M ops, where the node's
options rewrote each byte at every level of the tree. --node-writes
writes through the node's options instead (same keys and values).

For benchmarks only (bench/season, docs/benchmarks.md): the keys derive
from the seed, and the federation's settings count one node alone as in
sync (min peers 0).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			stopPprof, err := startPprof(cmd.Context(), pprofAddr, g.logger())
			if err != nil {
				return err
			}
			defer stopPprof()
			if os.Getenv("GOMEMLIMIT") == "" {
				// The binary's soft limit is the node's (see
				// setRuntimeLimits): the generator's heap holds
				// Badger's large bulk-load memtables, and under that
				// limit the garbage collector ran half the time.
				debug.SetMemoryLimit(math.MaxInt64)
			}
			cfg.Progress = g.stderr
			cfg.Logger = g.logger()
			if cfg.FederationDir != "" {
				cfg.FederationDir = filepath.Clean(cfg.FederationDir)
			}
			_, err = genhistory.Generate(cmd.Context(), cfg)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Dir, "data", "", "the node data directory to create (required; must hold no store yet)")
	f.StringVar(&cfg.FederationDir, "federation-dir", "", "where to write the federation's key and chain (default <data>-federation)")
	f.Uint64Var(&cfg.Ops, "ops", genhistory.DefaultOps, "ops in the history, all authors together")
	f.Uint64Var(&cfg.Seed, "seed", 1, "seed: the same seed and flags give the same history")
	f.IntVar(&cfg.Venues, "venues", genhistory.DefaultVenues, "number of venues")
	f.IntVar(&cfg.Cards, "cards", genhistory.DefaultCards, "number of cards (at most ops/10)")
	f.IntVar(&cfg.HotEntries, "hot-entries", genhistory.DefaultHotEntries, "money entries of the hot card (at most ops/10)")
	f.IntVar(&cfg.BatchOps, "batch", genhistory.DefaultBatchOps, "ops per store commit (one fsync each with --node-writes): larger batches generate faster")
	f.BoolVar(&cfg.NodeWrites, "node-writes", false, "write through the node's own store options (each batch fsync'd, compacted as it goes) instead of a bulk load: same store, much slower at millions of ops")
	f.StringVar(&pprofAddr, "pprof", "", "serve Go's profiles (net/http/pprof) on this loopback address while generating (default: off)")
	_ = cmd.MarkFlagRequired("data")
	return cmd
}
