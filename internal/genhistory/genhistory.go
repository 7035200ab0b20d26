// Package genhistory generates large, realistic federation histories into a
// node data directory, for benchmarks (bench/season, `cagnotte
// gen-history`). It is a benchmark helper: nothing in a running node uses
// it.
//
// A generated federation has Config.Venues venues (50 by default) and up to
// Config.Cards cards (50,000) issued over the first part of the season.
// About 75 % of the ops are payments, the rest top-ups (cash, card terminal
// and online with an external reference), refunds, and a few events, venue
// infos, product lists and card links. Every card's counters are those a
// real federation would hold (the next after the card's highest, with the
// card's stamp naming the venue of its previous payment on writable cards),
// no card is ever overdrawn nor above the balance ceiling, and one hot card
// carries Config.HotEntries money entries (10,000) for the card-read
// benchmark. Everything is deterministic from Config.Seed: keys, cards,
// amounts and timestamps (the season starts at Config.Start).
//
// The ops are signed with the venues' keys ([crdt.NewAuthor]) and written
// through the store's public API only, as a node that received the history
// by sync would write it: [store.Store.Load] for the op set,
// [crdt.OpSet.AddTrusted] (the generator just signed the ops) and
// [store.Store.Commit] in batches of a few hundred ops carrying the set. No
// Badger key is written directly, so the generator follows the store's
// format as it changes. By default the store is opened for a bulk load
// ([store.OpenBulk]: no fsync, no compaction until the end, then one merge
// of every table into the last level by [store.FinishBulk]): the same keys
// and values as commits through the node's options
// (Config.NodeWrites), in a fraction of the time and disk writes at
// millions of ops.
//
// The data directory is the one `cagnotte node init` and a first start
// with `--federation` leave: node.key (venue 0's key), staff-tokens,
// federation.ops (the federation's chain) and store/. Beside it, the
// federation directory (federation.key, chain.ops) lets the benchmark admit
// a new venue with `cagnotte federation admit`. genhistory.json in the data
// directory describes what was generated (see [Manifest]).
package genhistory

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/node"
	"github.com/cagnotte/cagnotte/node/store"
)

// Defaults of Config.
const (
	DefaultOps        = 100_000
	DefaultVenues     = 50
	DefaultCards      = 50_000
	DefaultHotEntries = 10_000
	DefaultMeanGap    = 3500 * time.Millisecond
	DefaultBatchOps   = 256
)

// DefaultStart is the default of Config.Start: the season's first op.
var DefaultStart = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// ManifestFile is the name of the manifest written in the data directory.
const ManifestFile = "genhistory.json"

// Version is the generator's version, in the manifest: a cache of
// generated directories is stale when it changes.
const Version = 1

// Config configures Generate. Zero fields take the documented defaults.
type Config struct {
	// Dir is the node data directory to create. Required; it must not hold
	// a store yet.
	Dir string
	// FederationDir receives the federation's key and chain (as
	// `cagnotte federation init` leaves them). Default Dir + "-federation".
	FederationDir string
	// Ops is the number of ops in the history, all authors together
	// (federation and venue setup ops included). Default 100,000; at least
	// 1,000.
	Ops uint64
	// Seed makes the history: the same seed and config give the same ops.
	Seed uint64
	// Venues is the number of venues. Default 50. The node's own venue is
	// venue 0.
	Venues int
	// Cards is the number of cards issued. Default 50,000, at most Ops/10
	// (a smaller history issues fewer cards, so that cards are used). Cards
	// are issued (a first top-up) over the first 80 % of the season.
	Cards int
	// HotEntries is the number of money entries of the hot card. Default
	// 10,000, at most Ops/10.
	HotEntries int
	// Start is the time of the season's first op. Default DefaultStart
	// (2025-01-01 UTC). Keep the season in the past: a node holds ops
	// stamped ahead of its clock.
	Start time.Time
	// MeanGap is the mean time between two ops (exponential gaps).
	// Default 3.5 s: about 9 M ops a year, a 50-venue territory.
	MeanGap time.Duration
	// Settings are the federation's settings. Default crdt.DefaultSettings
	// with MinPeersPercent 0: a benchmark runs one node of the 50, which
	// must count as in sync alone (no quorum to reach, no offline caps).
	Settings *crdt.Settings
	// BatchOps is the number of ops per store commit. Default 256.
	BatchOps int
	// NodeWrites writes through the node's own Badger options, each batch
	// fsync'd and compacted as it goes, as a node that received the
	// history by sync would. Default false: a bulk load (store.OpenBulk,
	// then store.FinishBulk), which leaves the same keys and values.
	NodeWrites bool
	// Bulk tunes the bulk load. Zero fields take store.BulkConfig's
	// defaults.
	Bulk store.BulkConfig
	// Workers is the number of goroutines signing ops. Default
	// min(GOMAXPROCS, 4).
	Workers int
	// Progress receives a progress line every ProgressEvery. Default
	// io.Discard.
	Progress io.Writer
	// ProgressEvery is the interval of progress lines. Default 2 s.
	ProgressEvery time.Duration
	// Logger receives the store's logs. Default: a logger that drops info.
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.Dir == "" {
		return errors.New("genhistory: Config.Dir is required")
	}
	if c.FederationDir == "" {
		c.FederationDir = filepath.Clean(c.Dir) + "-federation"
	}
	if c.Ops == 0 {
		c.Ops = DefaultOps
	}
	if c.Venues <= 0 {
		c.Venues = DefaultVenues
	}
	if c.Ops < 1000 || c.Ops < uint64(20*c.Venues) {
		return fmt.Errorf("genhistory: %d ops is too few (at least 1,000 and 20 per venue)", c.Ops)
	}
	if c.Cards <= 0 {
		c.Cards = DefaultCards
	}
	c.Cards = min(c.Cards, int(c.Ops/10))
	if c.HotEntries <= 0 {
		c.HotEntries = DefaultHotEntries
	}
	c.HotEntries = min(c.HotEntries, int(c.Ops/10))
	if c.Start.IsZero() {
		c.Start = DefaultStart
	}
	if c.MeanGap <= 0 {
		c.MeanGap = DefaultMeanGap
	}
	if c.Settings == nil {
		s := crdt.DefaultSettings()
		s.MinPeersPercent = 0
		c.Settings = &s
	}
	if c.BatchOps <= 0 {
		c.BatchOps = DefaultBatchOps
	}
	if c.Workers <= 0 {
		c.Workers = min(runtime.GOMAXPROCS(0), 4)
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.ProgressEvery <= 0 {
		c.ProgressEvery = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return nil
}

// CardBalance is a card and its balance at the end of the history.
type CardBalance struct {
	Card    crdt.CardID `json:"card"`
	Balance int64       `json:"balance_cents"`
	Counter uint64      `json:"counter"`
}

// Manifest describes a generated history. Generate writes it as
// genhistory.json in the data directory.
type Manifest struct {
	Version       int            `json:"version"`
	Seed          uint64         `json:"seed"`
	Ops           uint64         `json:"ops"`
	Venues        int            `json:"venues"`
	Cards         int            `json:"cards"`
	Federation    crdt.PublicKey `json:"federation"`
	FederationDir string         `json:"federation_dir"`
	// Venue is the data directory's own venue (venue 0).
	Venue     crdt.PublicKey `json:"venue"`
	VenueName string         `json:"venue_name"`
	// StaffToken is the staff token written in staff-tokens (derived from
	// the seed: a benchmark's data directory, not a real venue's).
	StaffToken string `json:"staff_token"`
	// HotCard has HotEntries money entries.
	HotCard    crdt.CardID `json:"hot_card"`
	HotEntries int         `json:"hot_entries"`
	// Kinds counts the ops by kind.
	Kinds map[string]uint64 `json:"kinds"`
	// First and Last are the wall-clock times of the first and last op.
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
	// Digest is the op set's digest at the end (crdt.OpSet.Digest).
	Digest string `json:"digest"`
	// PayCards are up to 5,000 cards holding at least 20.00 at the end
	// (not the hot card), by card id: cards a benchmark can charge.
	PayCards []CardBalance `json:"pay_cards"`
	// Seconds is how long generation took; OpsPerSecond its rate.
	Seconds      float64 `json:"seconds"`
	OpsPerSecond float64 `json:"ops_per_second"`
}

// ReadManifest reads the manifest of a generated data directory.
func ReadManifest(dir string) (*Manifest, error) {
	p, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(p, &m); err != nil {
		return nil, fmt.Errorf("genhistory: %s: %w", ManifestFile, err)
	}
	return &m, nil
}

// Keys are the federation's and the venues' signing keys of a seed.
type Keys struct {
	Federation *crdt.Signer
	Venues     []*crdt.Signer
}

// DeriveKeys returns the keys a seed gives, for venues venues.
func DeriveKeys(seed uint64, venues int) (Keys, error) {
	var k Keys
	var err error
	if k.Federation, err = crdt.SignerFromSeed(derive(seed, "federation", 0)); err != nil {
		return k, err
	}
	for i := range venues {
		s, err := crdt.SignerFromSeed(derive(seed, "venue", i))
		if err != nil {
			return k, err
		}
		k.Venues = append(k.Venues, s)
	}
	return k, nil
}

// StaffToken is the staff token a seed gives.
func StaffToken(seed uint64) string { return hex.EncodeToString(derive(seed, "staff-token", 0)[:16]) }

func derive(seed uint64, what string, i int) []byte {
	h := sha256.New()
	fmt.Fprintf(h, "cagnotte genhistory v1\x00%s\x00", what)
	h.Write(binary.BigEndian.AppendUint64(nil, seed))
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(i)))
	return h.Sum(nil)
}

// VenueName is the name of venue i.
func VenueName(i int) string { return fmt.Sprintf("Venue %02d", i) }

// Errors of Generate.
var (
	// ErrExists is returned when the data directory already holds a store.
	ErrExists = errors.New("genhistory: the data directory already holds a store")
	// ErrMismatch is returned when the op set's fold disagrees with what
	// the generator meant (a card's balance or counter, a conflict): the
	// history would not be the realistic one asked for.
	ErrMismatch = errors.New("genhistory: the op set disagrees with the generator")
)

// Generate writes a history into cfg.Dir and cfg.FederationDir and returns
// its manifest. It stops early, leaving a partial directory, when ctx ends.
func Generate(ctx context.Context, cfg Config) (*Manifest, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	start := time.Now()
	storeDir := filepath.Join(cfg.Dir, node.StoreDir)
	if ents, err := os.ReadDir(storeDir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrExists, storeDir)
	}
	keys, err := DeriveKeys(cfg.Seed, cfg.Venues)
	if err != nil {
		return nil, err
	}
	g := newGen(cfg, keys)
	fedOps, err := g.federationOps()
	if err != nil {
		return nil, err
	}
	if err := writeDirs(cfg, keys, fedOps); err != nil {
		return nil, err
	}

	stCfg := store.Config{Dir: storeDir, Logger: cfg.Logger}
	var st *store.Store
	if cfg.NodeWrites {
		st, err = store.Open(stCfg)
	} else {
		st, err = store.OpenBulk(stCfg, cfg.Bulk)
	}
	if err != nil {
		return nil, fmt.Errorf("genhistory: %w", err)
	}
	defer st.Close()
	set, err := st.Load(keys.Federation.Public())
	if err != nil {
		return nil, fmt.Errorf("genhistory: %w", err)
	}
	w := &writer{cfg: cfg, st: st, set: set, started: start, lastProgress: start}
	if err := w.add(ctx, fedOps); err != nil {
		return nil, err
	}
	if err := w.flush(); err != nil {
		return nil, err
	}
	// The next chunk is planned and signed while the writer adds the last
	// one to the set and the store (the plan and the signers touch only
	// g; the writer only the set and the store).
	chunks := make(chan []crdt.Op, 1)
	pctx, stop := context.WithCancel(ctx)
	var producer sync.WaitGroup
	defer func() { stop(); producer.Wait() }()
	producer.Add(1)
	go func() {
		defer producer.Done()
		defer close(chunks)
		for left := cfg.Ops - w.n; left > 0; {
			n := min(4096, left)
			ops := g.sign(g.plan(int(n)))
			left -= n
			select {
			case chunks <- ops:
			case <-pctx.Done():
				return
			}
		}
	}()
	for ops := range chunks {
		if err := w.add(ctx, ops); err != nil {
			return nil, err
		}
	}
	producer.Wait()
	if w.n < cfg.Ops {
		return nil, fmt.Errorf("genhistory: stopped at %d ops: %w", w.n, ctx.Err())
	}
	if err := w.flush(); err != nil {
		return nil, err
	}
	if err := g.check(set); err != nil {
		return nil, err
	}
	m := g.manifest(set)
	if err := st.Close(); err != nil {
		return nil, fmt.Errorf("genhistory: %w", err)
	}
	if !cfg.NodeWrites {
		t := time.Now()
		fmt.Fprintf(cfg.Progress, "genhistory: %d ops written in %s, merging the tables\n", m.Ops, t.Sub(start).Round(time.Second))
		if err := store.FinishBulk(ctx, stCfg); err != nil {
			return nil, fmt.Errorf("genhistory: %w", err)
		}
		fmt.Fprintf(cfg.Progress, "genhistory: tables merged in %s\n", time.Since(t).Round(time.Second))
	}
	m.Seconds = time.Since(start).Seconds()
	m.OpsPerSecond = float64(m.Ops) / m.Seconds
	p, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := node.WriteFileAtomic(filepath.Join(cfg.Dir, ManifestFile), append(p, '\n'), 0o644); err != nil {
		return nil, err
	}
	fmt.Fprintf(cfg.Progress, "genhistory: %d ops in %.1fs (%.0f ops/s), %d cards, hot card %s with %d entries, digest %s\n",
		m.Ops, m.Seconds, m.OpsPerSecond, m.Cards, m.HotCard, m.HotEntries, m.Digest[:16])
	return m, nil
}

// writeDirs writes the node's files and the federation directory.
func writeDirs(cfg Config, keys Keys, fedOps []crdt.Op) error {
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.FederationDir, 0o700); err != nil {
		return err
	}
	seedHex := func(s *crdt.Signer) []byte { return []byte(hex.EncodeToString(s.PrivateKey().Seed()) + "\n") }
	bundle := node.EncodeBundle(fedOps)
	files := []struct {
		path string
		data []byte
		perm os.FileMode
	}{
		{filepath.Join(cfg.Dir, node.KeyFile), seedHex(keys.Venues[0]), 0o600},
		{filepath.Join(cfg.Dir, node.TokensFile), []byte(StaffToken(cfg.Seed) + "\n"), 0o600},
		{filepath.Join(cfg.Dir, node.FederationFile), bundle, 0o644},
		{filepath.Join(cfg.FederationDir, node.FederationKeyFile), seedHex(keys.Federation), 0o600},
		{filepath.Join(cfg.FederationDir, node.FederationChainFile), bundle, 0o644},
	}
	for _, f := range files {
		if err := node.WriteFileAtomic(f.path, f.data, f.perm); err != nil {
			return fmt.Errorf("genhistory: %w", err)
		}
	}
	return nil
}

// writer adds signed ops to the set and commits them in batches.
type writer struct {
	cfg          Config
	st           *store.Store
	set          *crdt.OpSet
	batch        []crdt.Op
	n            uint64
	started      time.Time
	lastProgress time.Time
}

func (w *writer) add(ctx context.Context, ops []crdt.Op) error {
	for _, op := range ops {
		out, err := w.set.AddTrusted(op)
		if err != nil {
			return fmt.Errorf("genhistory: op %s#%d (%s) refused: %w", op.Author.Short(), op.Seq, op.Kind, err)
		}
		if out != crdt.Added {
			return fmt.Errorf("%w: op %s#%d kept as evidence", ErrMismatch, op.Author.Short(), op.Seq)
		}
		w.batch = append(w.batch, op)
		w.n++
		if len(w.batch) >= w.cfg.BatchOps {
			if err := w.flush(); err != nil {
				return err
			}
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("genhistory: stopped at %d ops: %w", w.n, err)
			}
		}
	}
	return nil
}

func (w *writer) flush() error {
	if len(w.batch) == 0 {
		return nil
	}
	if err := w.st.Commit(store.Batch{Ops: w.batch, State: w.set}); err != nil {
		return fmt.Errorf("genhistory: commit at %d ops: %w", w.n, err)
	}
	w.batch = w.batch[:0]
	if now := time.Now(); now.Sub(w.lastProgress) >= w.cfg.ProgressEvery {
		w.lastProgress = now
		el := now.Sub(w.started).Seconds()
		rate := float64(w.n) / el
		eta := time.Duration(float64(w.cfg.Ops-w.n)/rate) * time.Second
		fmt.Fprintf(w.cfg.Progress, "genhistory: %d/%d ops (%.0f%%), %.0f ops/s, %s elapsed, eta %s\n",
			w.n, w.cfg.Ops, 100*float64(w.n)/float64(w.cfg.Ops), rate, time.Duration(el*float64(time.Second)).Round(time.Second), eta.Round(time.Second))
	}
	return nil
}

// card is the generator's view of one card.
type card struct {
	id         crdt.CardID
	balance    int64
	counter    uint64
	stampVenue int // venue of the payment that wrote the card's stamp; -1: none
	writable   bool
	linked     bool
}

// planned is an op to sign: its author (-1: the federation), wall time and
// body.
type planned struct {
	author int
	ms     int64
	body   crdt.Body
}

// gen holds the generator's state.
type gen struct {
	cfg     Config
	keys    Keys
	rng     *rand.Rand
	authors []*crdt.Author // venues
	walls   []int64        // the wall clock each venue's author reads
	weights []float64      // cumulative venue weights
	now     int64          // ms
	made    uint64         // ops planned, federation included

	cards    []*card // issued, in issue order (not the hot card)
	ids      map[crdt.CardID]bool
	hot      *card
	hotEvery uint64
	hotMade  int
	events   [][]string // per venue: event ids not cancelled
	nextEv   []int
	refs     uint64
	kinds    map[crdt.Kind]uint64
	first    int64
	last     int64
	issueEnd uint64 // op count by which every card is issued
}

func newGen(cfg Config, keys Keys) *gen {
	g := &gen{
		cfg:   cfg,
		keys:  keys,
		rng:   rand.New(rand.NewPCG(cfg.Seed, 0x9e3779b97f4a7c15)),
		ids:   map[crdt.CardID]bool{},
		kinds: map[crdt.Kind]uint64{},
	}
	g.walls = make([]int64, cfg.Venues)
	g.events = make([][]string, cfg.Venues)
	g.nextEv = make([]int, cfg.Venues)
	var sum float64
	for i := range cfg.Venues {
		// A few big venues, many small ones.
		sum += 1 / (1 + 0.08*float64(i))
		g.weights = append(g.weights, sum)
		wall := &g.walls[i]
		g.authors = append(g.authors, crdt.NewAuthor(keys.Venues[i], crdt.NewClock(func() int64 { return *wall }), 0, crdt.OpID{}))
	}
	g.hot = &card{id: g.newCardID(), stampVenue: -1, writable: true}
	g.hotEvery = max(1, cfg.Ops/uint64(cfg.HotEntries+1))
	g.issueEnd = cfg.Ops * 8 / 10
	g.now = cfg.Start.UnixMilli()
	return g
}

// federationOps makes the genesis and the admissions, before the season.
func (g *gen) federationOps() ([]crdt.Op, error) {
	t := g.cfg.Start.Add(-48 * time.Hour).UnixMilli()
	clock := crdt.NewClock(func() int64 { return t })
	a := crdt.NewAuthor(g.keys.Federation, clock, 0, crdt.OpID{})
	ops := []crdt.Op{a.Make(&crdt.Genesis{Name: fmt.Sprintf("Generated federation %d", g.cfg.Seed), Currency: "EUR", Settings: *g.cfg.Settings})}
	for i, v := range g.keys.Venues {
		t += 60_000
		ops = append(ops, a.Make(&crdt.Admit{Venue: v.Public(), Name: VenueName(i)}))
	}
	g.made = uint64(len(ops))
	for _, op := range ops {
		g.kinds[op.Kind]++
	}
	return ops, nil
}

func (g *gen) newCardID() crdt.CardID {
	for {
		b := make([]byte, 7)
		b[0] = 0x04
		binary.BigEndian.PutUint32(b[1:5], g.rng.Uint32())
		binary.BigEndian.PutUint16(b[5:7], uint16(g.rng.Uint32()))
		id := crdt.CardID(fmt.Sprintf("%X", b))
		if !g.ids[id] {
			g.ids[id] = true
			return id
		}
	}
}

func (g *gen) venue() int {
	x := g.rng.Float64() * g.weights[len(g.weights)-1]
	i, _ := slices.BinarySearch(g.weights, x)
	return min(i, len(g.weights)-1)
}

// pick returns an issued card, the early (regular) ones more often.
func (g *gen) pick() *card {
	u := g.rng.Float64()
	return g.cards[int(float64(len(g.cards))*u*u)]
}

var prices = []uint64{150, 200, 250, 300, 350, 400, 450, 500, 600, 700, 800, 1000, 1200, 1500}
var topUps = []uint64{1000, 2000, 2000, 3000, 5000}
var labels = []string{"beer", "coffee", "lemonade", "wine", "sandwich", "ticket", "cider", "tea", "crisps", "soup"}

// plan plans the next n ops in time order.
func (g *gen) plan(n int) []planned {
	out := make([]planned, 0, n)
	for range n {
		g.now += max(1, int64(g.rng.ExpFloat64()*float64(g.cfg.MeanGap.Milliseconds())))
		v := g.venue()
		var b crdt.Body
		switch {
		case g.nextEv[v] == 0:
			// A venue's first op describes it.
			b = g.setup(v)
		case g.made%g.hotEvery == 0 && g.hotMade < g.cfg.HotEntries:
			b = g.money(v, g.hot, true)
			g.hotMade++
		default:
			b = g.next(v)
		}
		g.kinds[b.Kind()]++
		g.made++
		if g.first == 0 {
			g.first = g.now
		}
		g.last = g.now
		out = append(out, planned{author: v, ms: g.now, body: b})
	}
	return out
}

// setup is a venue's first op: its info (its products come with its first
// "other" op).
func (g *gen) setup(v int) crdt.Body {
	g.nextEv[v] = 1
	return &crdt.VenueInfo{Name: VenueName(v), Address: fmt.Sprintf("%d rue du Marché", 1+v), URL: fmt.Sprintf("https://venue%02d.example", v)}
}

// next plans an ordinary op: payments (78 % asked, about 75 % made: a
// card that cannot pay is topped up instead), top-ups (card issues
// among them), refunds and, for the last 1.7 %, agenda, venue and card-link
// ops.
func (g *gen) next(v int) crdt.Body {
	r := g.rng.Float64()
	switch {
	case len(g.cards) == 0:
		return g.issue(v)
	case r < 0.78:
		return g.money(v, nil, true)
	case r < 0.965 && g.needIssue():
		return g.issue(v)
	case r < 0.965:
		return g.money(v, nil, false)
	case r < 0.983:
		return g.refund(v)
	default:
		return g.other(v)
	}
}

// needIssue reports whether cards are issued behind schedule.
func (g *gen) needIssue() bool {
	if len(g.cards) >= g.cfg.Cards {
		return false
	}
	due := uint64(g.cfg.Cards) * min(g.made, g.issueEnd) / g.issueEnd
	return uint64(len(g.cards)) < due
}

// issue tops up a new card.
func (g *gen) issue(v int) crdt.Body {
	c := &card{id: g.newCardID(), stampVenue: -1, writable: g.rng.Float64() < 0.85}
	g.cards = append(g.cards, c)
	return g.topUp(v, c, topUps[g.rng.IntN(len(topUps))])
}

func (g *gen) topUp(v int, c *card, amount uint64) crdt.Body {
	c.balance += int64(amount)
	b := &crdt.TopUp{Card: c.id, Amount: amount, Method: crdt.MethodCash}
	switch r := g.rng.Float64(); {
	case r < 0.3:
		g.refs++
		b.Method, b.ExternalRef = crdt.MethodOnline, fmt.Sprintf("cs_gen_%d_%d", g.cfg.Seed, g.refs)
	case r < 0.6:
		b.Method = crdt.MethodCardTerminal
	}
	return b
}

// money plans a payment (or, when no card can pay, a top-up) on c, or on
// a card it picks when c is nil.
func (g *gen) money(v int, c *card, pay bool) crdt.Body {
	ceiling := int64(g.cfg.Settings.BalanceMax)
	if ceiling == 0 {
		ceiling = math.MaxInt64
	}
	if pay {
		price := prices[g.rng.IntN(len(prices))]
		try := c
		for range 5 {
			if c == nil {
				try = g.pick()
			}
			if try.balance >= int64(price) {
				return g.pay(v, try, price)
			}
			if c != nil {
				break
			}
		}
		c = try // nobody could pay: top that card up instead
	}
	amount := topUps[g.rng.IntN(len(topUps))]
	try := c
	for range 5 {
		if c == nil {
			try = g.pick()
		}
		for _, a := range []uint64{amount, 1000, 500} {
			if try.balance+int64(a) <= ceiling {
				return g.topUp(v, try, a)
			}
		}
		if c != nil {
			break
		}
	}
	// Every card tried is full: it pays instead.
	return g.pay(v, try, prices[0])
}

func (g *gen) pay(v int, c *card, amount uint64) crdt.Body {
	b := &crdt.Payment{Card: c.id, Amount: amount, Counter: c.counter + 1, Label: labels[g.rng.IntN(len(labels))]}
	if c.writable && c.stampVenue >= 0 {
		b.StampCounter, b.StampVenue = c.counter, g.keys.Venues[c.stampVenue].Public()
	}
	c.counter++
	c.balance -= int64(amount)
	if c.writable {
		c.stampVenue = v
	}
	return b
}

// refund gives back a card's balance (or part of it).
func (g *gen) refund(v int) crdt.Body {
	for range 5 {
		c := g.pick()
		if c.balance <= 0 {
			continue
		}
		amount := c.balance
		if g.rng.Float64() < 0.5 {
			amount = max(1, c.balance/2)
		}
		c.balance -= amount
		b := &crdt.Refund{Card: c.id, Amount: uint64(amount), Reason: "rest of the balance"}
		if g.rng.Float64() < 0.3 {
			g.refs++
			b.ExternalRef = fmt.Sprintf("re_gen_%d_%d", g.cfg.Seed, g.refs)
		}
		return b
	}
	return g.money(v, nil, false)
}

// other plans an agenda, venue or card-link op.
func (g *gen) other(v int) crdt.Body {
	r := g.rng.Float64()
	evs := g.events[v]
	switch {
	case g.nextEv[v] == 1:
		g.nextEv[v] = 2
		items := make([]crdt.Product, 0, 8)
		for i, l := range labels[:8] {
			items = append(items, crdt.Product{Name: l, Price: prices[i]})
		}
		return &crdt.Products{Items: items}
	case r < 0.4 || len(evs) == 0:
		id := fmt.Sprintf("ev-%d", g.nextEv[v])
		g.nextEv[v]++
		g.events[v] = append(evs, id)
		startsAt := g.now + int64(1+g.rng.IntN(30))*86_400_000
		return &crdt.EventUpsert{EventID: id, Fields: crdt.FieldTitle | crdt.FieldStartsAt | crdt.FieldEndsAt | crdt.FieldDescription | crdt.FieldLocation,
			Title: fmt.Sprintf("%s, night %d", VenueName(v), g.nextEv[v]-1), StartsAt: startsAt, EndsAt: startsAt + 4*3_600_000,
			Description: "Concert and open bar. Cashless: pay with your card.", Location: fmt.Sprintf("%d rue du Marché", 1+v)}
	case r < 0.6:
		id := evs[g.rng.IntN(len(evs))]
		return &crdt.EventUpsert{EventID: id, Fields: crdt.FieldDescription, Description: fmt.Sprintf("Updated programme (%d).", g.made)}
	case r < 0.65:
		i := g.rng.IntN(len(evs))
		id := evs[i]
		g.events[v] = slices.Delete(evs, i, i+1)
		return &crdt.EventCancel{EventID: id, Reason: "cancelled by the venue"}
	case r < 0.78:
		return &crdt.VenueInfo{Name: VenueName(v), Address: fmt.Sprintf("%d rue du Marché", 1+v), URL: fmt.Sprintf("https://venue%02d.example/%d", v, g.made)}
	default:
		c := g.pick()
		c.linked = true
		return &crdt.CardLink{Card: c.id, Holder: "holder-" + hex.EncodeToString(derive(g.cfg.Seed, string(c.id), 1)[:8])}
	}
}

// sign signs a chunk of planned ops, each venue's in order, on
// cfg.Workers goroutines (a venue's ops on one of them), and returns them
// in plan order.
func (g *gen) sign(chunk []planned) []crdt.Op {
	ops := make([]crdt.Op, len(chunk))
	var wg sync.WaitGroup
	for w := range g.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, p := range chunk {
				if p.author%g.cfg.Workers != w {
					continue
				}
				g.walls[p.author] = p.ms
				ops[i] = g.authors[p.author].Make(p.body)
			}
		}()
	}
	wg.Wait()
	return ops
}

// check compares the set's fold with the generator's cards.
func (g *gen) check(set *crdt.OpSet) error {
	if n := len(set.State.Conflicts); n > 0 {
		return fmt.Errorf("%w: %d conflicts", ErrMismatch, n)
	}
	if set.Len() != g.cfg.Ops {
		return fmt.Errorf("%w: the set holds %d ops, %d planned", ErrMismatch, set.Len(), g.cfg.Ops)
	}
	for _, c := range append(slices.Clone(g.cards), g.hot) {
		sc := set.State.Card(c.id)
		if sc == nil {
			if c == g.hot && g.hotMade == 0 {
				continue
			}
			return fmt.Errorf("%w: card %s unknown to the set", ErrMismatch, c.id)
		}
		if sc.Balance != c.balance || sc.Counter != c.counter || sc.Blocked {
			return fmt.Errorf("%w: card %s: set balance %d counter %d blocked %v, generator balance %d counter %d",
				ErrMismatch, c.id, sc.Balance, sc.Counter, sc.Blocked, c.balance, c.counter)
		}
	}
	return nil
}

func (g *gen) manifest(set *crdt.OpSet) *Manifest {
	d := set.Digest()
	m := &Manifest{
		Version:       Version,
		Seed:          g.cfg.Seed,
		Ops:           set.Len(),
		Venues:        g.cfg.Venues,
		Cards:         len(g.cards) + 1,
		Federation:    g.keys.Federation.Public(),
		FederationDir: g.cfg.FederationDir,
		Venue:         g.keys.Venues[0].Public(),
		VenueName:     VenueName(0),
		StaffToken:    StaffToken(g.cfg.Seed),
		HotCard:       g.hot.id,
		HotEntries:    g.hotMade,
		Kinds:         map[string]uint64{},
		First:         time.UnixMilli(g.first).UTC(),
		Last:          time.UnixMilli(g.last).UTC(),
		Digest:        hex.EncodeToString(d[:]),
	}
	for k, n := range g.kinds {
		m.Kinds[k.String()] = n
	}
	var pay []CardBalance
	for _, c := range g.cards {
		if c.balance >= 2000 {
			pay = append(pay, CardBalance{Card: c.id, Balance: c.balance, Counter: c.counter})
		}
	}
	slices.SortFunc(pay, func(a, b CardBalance) int {
		if a.Card < b.Card {
			return -1
		}
		if a.Card > b.Card {
			return 1
		}
		return 0
	})
	if len(pay) > 5000 {
		pay = pay[:5000]
	}
	m.PayCards = pay
	return m
}
