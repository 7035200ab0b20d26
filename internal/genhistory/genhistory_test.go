package genhistory

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/node"
	"github.com/cagnotte/cagnotte/node/store"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func generate(t *testing.T, cfg Config) *Manifest {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(t.TempDir(), "node")
	}
	cfg.Logger = quiet()
	m, err := Generate(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestGenerateHistory: the history has the asked size and mix, a hot card,
// no conflict, and the store loads it with the generator's digest.
func TestGenerateHistory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	m := generate(t, Config{Dir: dir, Ops: 20_000, Seed: 7, Venues: 10, HotEntries: 500})
	if m.Ops != 20_000 || m.Venues != 10 {
		t.Fatalf("manifest: %d ops, %d venues", m.Ops, m.Venues)
	}
	if m.HotEntries != 500 {
		t.Errorf("hot card has %d entries, want 500", m.HotEntries)
	}
	if m.Cards != 2000+1 {
		t.Errorf("%d cards, want 2001 (Ops/10 and the hot card)", m.Cards)
	}
	share := func(kinds ...string) float64 {
		var n uint64
		for _, k := range kinds {
			n += m.Kinds[k]
		}
		return float64(n) / float64(m.Ops)
	}
	for _, tc := range []struct {
		kinds  []string
		lo, hi float64
	}{
		{[]string{"payment"}, 0.72, 0.78},
		{[]string{"topup"}, 0.17, 0.25},
		{[]string{"refund"}, 0.005, 0.03},
		{[]string{"event_upsert", "event_cancel", "venue_info", "products", "card_link"}, 0.005, 0.04},
	} {
		if s := share(tc.kinds...); s < tc.lo || s > tc.hi {
			t.Errorf("%v: %.3f of the ops, want %.3f to %.3f", tc.kinds, s, tc.lo, tc.hi)
		}
	}
	if len(m.PayCards) == 0 {
		t.Error("no card to pay with")
	}
	if !m.First.After(DefaultStart.Add(-time.Second)) || !m.Last.Before(time.Now()) {
		t.Errorf("season from %s to %s", m.First, m.Last)
	}
	for _, f := range []string{node.KeyFile, node.TokensFile, node.FederationFile, ManifestFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	for _, f := range []string{node.FederationKeyFile, node.FederationChainFile} {
		if _, err := os.Stat(filepath.Join(dir+"-federation", f)); err != nil {
			t.Error(err)
		}
	}

	st, err := store.Open(store.Config{Dir: filepath.Join(dir, node.StoreDir), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	set, err := st.Load(m.Federation)
	if err != nil {
		t.Fatal(err)
	}
	if set.Len() != m.Ops || len(set.State.Conflicts) != 0 {
		t.Fatalf("loaded %d ops with %d conflicts", set.Len(), len(set.State.Conflicts))
	}
	d := set.Digest()
	if got := fmt.Sprintf("%x", d[:]); got != m.Digest {
		t.Errorf("loaded digest %s, generated %s", got, m.Digest)
	}
	hot := set.State.Card(m.HotCard)
	if hot == nil || hot.Balance < 0 {
		t.Fatalf("hot card %+v", hot)
	}
	if len(set.State.Venues) != 10 {
		t.Errorf("%d venues", len(set.State.Venues))
	}
}

// TestGenerateDeterministic: a seed gives one history; another seed
// another.
func TestGenerateDeterministic(t *testing.T) {
	cfg := Config{Ops: 3000, Venues: 5, HotEntries: 100}
	var digests []string
	for _, seed := range []uint64{1, 1, 2} {
		cfg.Seed = seed
		cfg.Dir = ""
		digests = append(digests, generate(t, cfg).Digest)
	}
	if digests[0] != digests[1] {
		t.Errorf("seed 1 gave %s and %s", digests[0], digests[1])
	}
	if digests[0] == digests[2] {
		t.Error("seeds 1 and 2 gave the same history")
	}
}

// TestGenerateRefusesExistingStore: a data dir that holds a store is left
// alone.
func TestGenerateRefusesExistingStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	generate(t, Config{Dir: dir, Ops: 1000, Venues: 5})
	_, err := Generate(t.Context(), Config{Dir: dir, Ops: 1000, Venues: 5, Logger: quiet()})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second generate: %v, want ErrExists", err)
	}
}

// TestGenerateConfig: bad configs are refused, small ones bounded.
func TestGenerateConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"no dir", Config{Ops: 5000}, false},
		{"too few ops", Config{Dir: "x", Ops: 500}, false},
		{"too few per venue", Config{Dir: "x", Ops: 1000, Venues: 60}, false},
		{"defaults", Config{Dir: "x"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.setDefaults()
			if (err == nil) != tc.ok {
				t.Fatalf("setDefaults: %v", err)
			}
			if tc.ok && (tc.cfg.Cards != DefaultOps/10 || tc.cfg.Settings.MinPeersPercent != 0 || tc.cfg.FederationDir != "x-federation") {
				t.Errorf("defaults: %+v", tc.cfg)
			}
		})
	}
}

// TestGeneratedNodeServes: a real node opens the generated data dir, sells
// on one of the manifest's cards and pages the hot card's history.
func TestGeneratedNodeServes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	m := generate(t, Config{Dir: dir, Ops: 5000, Seed: 3, Venues: 8, HotEntries: 300})
	n, err := node.New(node.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	api := "http://" + n.Addr()
	do := func(method, path string, body any) (int, map[string]any) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			p, _ := json.Marshal(body)
			rd = bytes.NewReader(p)
		}
		req, _ := http.NewRequestWithContext(ctx, method, api+path, rd)
		req.Header.Set("Authorization", "Bearer "+m.StaffToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	pc := m.PayCards[0]
	code, out := do("POST", "/api/v1/payments", map[string]any{"card": pc.Card, "amount_cents": 100, "idempotency_key": "gen-test-1"})
	if code != http.StatusOK {
		t.Fatalf("payment: %d %v", code, out)
	}
	code, out = do("GET", "/api/v1/cards/"+string(m.HotCard)+"?limit=50", nil)
	if code != http.StatusOK {
		t.Fatalf("hot card: %d %v", code, out)
	}
	if h, _ := out["history"].([]any); len(h) != 50 || out["next"] == nil {
		t.Errorf("hot card page: %d entries, next %v", len(h), out["next"])
	}
	var ops uint64
	n.View(func(set *crdt.OpSet) { ops = set.Len() })
	if ops != m.Ops+1 {
		t.Errorf("node holds %d ops, want %d", ops, m.Ops+1)
	}
}

// TestSaveAttestedCheckpoint: the checkpoint saved in a generated store
// is attested by a quorum of the federation's venues (as the federation's
// own chain lists them), verifies, and holds the generated digest.
func TestSaveAttestedCheckpoint(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	m := generate(t, Config{Dir: dir, Ops: 5000, Seed: 5, Venues: 8, HotEntries: 100})
	info, err := SaveAttestedCheckpoint(t.Context(), dir, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if info.Ops != m.Ops || info.Attestations != 5 || info.Bytes == 0 {
		t.Errorf("checkpoint %+v: want %d ops and 5 attestations (half of 8 venues and a joiner, rounded up)", info, m.Ops)
	}
	st, err := store.Open(store.Config{Dir: filepath.Join(dir, node.StoreDir), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cp, atts, err := st.LatestCheckpoint()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := DeriveKeys(m.Seed, m.Venues)
	if err != nil {
		t.Fatal(err)
	}
	members := map[crdt.PublicKey]bool{}
	for _, k := range keys.Venues {
		members[k.Public()] = true
	}
	for _, tc := range []struct {
		name string
		need int
		ok   bool
	}{
		{"quorum", info.Attestations, true},
		{"one more than attested", info.Attestations + 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := crdt.VerifyCheckpoint(cp, atts, members, tc.need)
			if (err == nil) != tc.ok {
				t.Fatalf("VerifyCheckpoint: %v", err)
			}
			if !tc.ok {
				return
			}
			set := crdt.CheckpointSet(crdt.Config{Federation: m.Federation}, d)
			if got := set.Digest(); fmt.Sprintf("%x", got[:]) != m.Digest {
				t.Errorf("checkpoint digest %x, generated %s", got, m.Digest)
			}
		})
	}
}
