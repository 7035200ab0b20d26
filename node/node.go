// Package node is one venue's Cagnotte node: it holds the node key, opens
// the Badger store (node/store), keeps the op set in memory, applies the
// money rules, serves the HTTP API and commits every write durably before
// answering. Replication (p2p) plugs in through Ingest and OnCommit.
package node

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/nfc"
	"github.com/cagnotte/cagnotte/node/store"
	"github.com/cagnotte/cagnotte/p2p"
)

// File names inside a node's data directory.
const (
	KeyFile        = "node.key"
	StoreDir       = "store"
	FederationFile = "federation.ops"
	TokensFile     = "staff-tokens"
)

// Config configures a Node. Zero fields take the documented defaults.
type Config struct {
	// DataDir holds the node key, the store and the federation bundle.
	// Required.
	DataDir string
	// Federation is the federation's chain up to (at least) this venue's
	// admission. Default: read from DataDir/federation.ops.
	Federation []crdt.Op
	// Key is the node identity. Default: DataDir/node.key, created if absent.
	Key *crdt.Signer
	// StaffTokens are the bearer tokens the venue's staff use for writes.
	// Default: one per line in DataDir/staff-tokens. At least one is needed.
	StaffTokens []string
	// HTTPAddr is the API's listen address. Default "127.0.0.1:8080"; use
	// port 0 for a free port.
	HTTPAddr string
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
	// Now is the wall clock. Default time.Now. Tests inject their own.
	Now func() time.Time
	// MaxBodyBytes bounds a request body. Default 16 KiB.
	MaxBodyBytes int64
	// RequestTimeout bounds the handling of one request. Default 10 s.
	RequestTimeout time.Duration
	// MaxBatch bounds the writes grouped into one durable commit. Default 256.
	MaxBatch int
	// QuorumTimeout bounds the round trip a payment waits for to confirm
	// that the node reaches a quorum of venues now. Default 300 ms.
	QuorumTimeout time.Duration
	// AloneInSync lets a networked node that knows no other venue count
	// itself in sync: only for a federation of a single venue. Default
	// false: such a node is isolated (offline caps apply) until another
	// venue's admission reaches it.
	AloneInSync bool
	// SignGateTimeout bounds how long, after start, the node waits to
	// confirm with a peer that its own chain is not ahead of its disk (a
	// data dir restored from an older copy) before it signs anyway. Writes
	// wait for the confirmation (or answer 503 catching_up). Default: the
	// federation's IsolationAfter.
	SignGateTimeout time.Duration
	// Readers are the NFC readers attached to this node (nfc.PCSC,
	// nfc.SimReader): the node watches each from Start, publishes its taps
	// (Taps) and writes stamps back (WriteStamp); it closes them when it
	// stops. Default: none.
	Readers []nfc.Reader
	// SimCards is where the simulated readers' cards come from when a tap
	// is simulated through the API (POST /api/v1/taps/simulate). Default:
	// new NTAG215 cards kept in memory.
	SimCards *nfc.SimCards
	// P2P configures the node's network (see p2p.DefaultConfig); nil runs
	// the node without networking. Its Logger and Now default to the
	// node's; its Isolated reports the node's isolation.
	P2P *p2p.Config
	// Stripe makes the node a Stripe payment gateway for online top-ups
	// (see StripeConfig, docs/stripe.md); the zero value takes none.
	Stripe StripeConfig
	// Checkpoints configures attested checkpoints (see CheckpointConfig,
	// docs/checkpoints.md); the zero value takes the defaults.
	Checkpoints CheckpointConfig
	// Security bounds token guessing over HTTP (see SecurityConfig).
	Security SecurityConfig
	// MinFreeBytes is the free space kept on the store's disk: below it,
	// writes are refused with 507 disk_full until space is freed (see
	// store.Config.MinFreeBytes). Default 0: store.DefaultMinFreeBytes
	// (128 MiB); negative turns the check off.
	MinFreeBytes int64
	// IdempotencyTTL is how long an API answer stays stored under its
	// idempotency key (see store.Config.IdempotencyTTL). Default 0:
	// store.DefaultIdempotencyTTL (7 days); negative keeps them forever.
	IdempotencyTTL time.Duration

	// storeTableSize overrides the store's table size (tests and
	// benchmarks only; see storeConfig).
	storeTableSize int64
}

// storeConfig returns the store's configuration. A store that does not
// exist yet is a venue's first start: it will catch up with the
// federation (from a checkpoint, compacting all the time), so it builds
// small tables (store.NewStoreTableSize); a store that holds data builds
// the default ones, which cost a node under payments fewer compactions.
func storeConfig(cfg Config, log *slog.Logger) (store.Config, error) {
	dir := filepath.Join(cfg.DataDir, StoreDir)
	sc := store.Config{Dir: dir, Logger: log, MinFreeBytes: cfg.MinFreeBytes, IdempotencyTTL: cfg.IdempotencyTTL, TableSize: cfg.storeTableSize}
	if sc.TableSize == 0 {
		exists, err := store.Exists(dir)
		if err != nil {
			return sc, fmt.Errorf("node: open store: %w", err)
		}
		if !exists {
			sc.TableSize = store.NewStoreTableSize
		}
	}
	return sc, nil
}

func (c *Config) setDefaults() error {
	if c.DataDir == "" {
		return errors.New("node: DataDir is required")
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = "127.0.0.1:8080"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 16 << 10
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 256
	}
	if c.QuorumTimeout <= 0 {
		c.QuorumTimeout = 300 * time.Millisecond
	}
	if c.Key == nil {
		k, _, err := LoadOrCreateKey(filepath.Join(c.DataDir, KeyFile))
		if err != nil {
			return fmt.Errorf("node key: %w", err)
		}
		c.Key = k
	}
	if c.Federation == nil {
		ops, err := ReadBundle(filepath.Join(c.DataDir, FederationFile))
		if err != nil {
			return fmt.Errorf("node: federation bundle: %w", err)
		}
		c.Federation = ops
	}
	if len(c.StaffTokens) == 0 {
		toks, err := ReadTokens(filepath.Join(c.DataDir, TokensFile))
		if err != nil {
			return fmt.Errorf("node: staff tokens: %w", err)
		}
		c.StaffTokens = toks
	}
	if len(c.StaffTokens) == 0 {
		return errors.New("node: no staff token configured")
	}
	return nil
}

// Node is one venue's node.
type Node struct {
	cfg    Config
	log    *slog.Logger
	store  *store.Store
	fed    crdt.PublicKey
	tokens [][32]byte

	mu      sync.RWMutex // guards set, author, clock, pending, future
	set     *crdt.OpSet
	clock   *crdt.Clock
	author  *crdt.Author
	pending crdt.Pending
	// future holds remote ops stamped too far ahead of this node's clock
	// (crdt.Settings.TooFarAhead) until they no longer are.
	future []crdt.Op
	gate   signGate
	taps   TapHub
	// suspects are cards seen overdrawn while the node had not caught up
	// (settle.go); caughtUp is refreshed every second from heartbeats.
	suspects     map[crdt.CardID]struct{}
	caughtUp     atomic.Bool
	caughtUpOnce atomic.Bool // the last refresh found it caught up
	nfcs         nfcState    // the cards on the node's NFC readers

	writes  chan *writeReq
	stopped chan struct{} // closed when the writer has exited
	started time.Time
	net     *p2p.Network // nil without networking
	failed  atomic.Bool  // storage failed: writes refused until restart
	disk    diskState    // disk full: writes refused until space is back (diskfull.go)
	metrics *metrics
	iso     isolation

	hooksMu sync.Mutex
	hooks   []func([]crdt.Op)

	stripe *stripeGateway // online top-ups (node/stripe.go)
	cps    *checkpointer  // checkpoints (node/checkpoint.go); nil without networking

	httpSrv  *http.Server
	listener net.Listener
	stop     context.CancelFunc
	wg       sync.WaitGroup
	closeMu  sync.Mutex
	closed   bool
}

// New opens a node: its store (rebuilding the op set from disk) and the
// federation chain it was given. It does not listen yet: see Start.
func New(cfg Config) (*Node, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if len(cfg.Federation) == 0 || cfg.Federation[0].Kind != crdt.KindGenesis {
		return nil, errors.New("node: the federation chain must start with its genesis")
	}
	n := &Node{
		cfg:      cfg,
		log:      cfg.Logger.With("venue", cfg.Key.Public().Short()),
		fed:      cfg.Federation[0].Author,
		writes:   make(chan *writeReq, 1024),
		stopped:  make(chan struct{}),
		started:  cfg.Now(),
		metrics:  newMetrics(),
		suspects: map[crdt.CardID]struct{}{},
	}
	n.caughtUp.Store(cfg.P2P == nil)
	for _, t := range cfg.StaffTokens {
		n.tokens = append(n.tokens, sha256.Sum256([]byte(t)))
	}
	sc, err := storeConfig(cfg, n.log)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(sc)
	if err != nil {
		return nil, fmt.Errorf("node: open store: %w", err)
	}
	n.store = st
	set, err := st.Load(n.fed)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("node: load store: %w", err)
	}
	n.set = set
	n.clock = crdt.NewClock(func() int64 { return n.cfg.Now().UnixMilli() })
	n.resetAuthor()
	// The federation chain may be newer than what the store holds.
	if err := n.ingestNow(cfg.Federation); err != nil {
		st.Close()
		return nil, fmt.Errorf("node: federation chain: %w", err)
	}
	if n.set.State.Venues[cfg.Key.Public()] == nil { // a revoked venue starts, and refuses writes
		st.Close()
		return nil, fmt.Errorf("node: this node (%s) is not an admitted venue of the federation %q: %w",
			cfg.Key.Public().Short(), n.set.State.Name, crdt.ErrUnknownAuthor)
	}
	n.restoreIsolation()
	n.watchRevocation()
	n.metrics.observeState(n.set)
	// A crash between a commit that overdrew a card and its block.
	if err := n.autoBlockAll(); err != nil {
		st.Close()
		return nil, fmt.Errorf("node: auto block at start: %w", err)
	}
	if err := n.openStripe(); err != nil {
		st.Close()
		return nil, err
	}
	return n, nil
}

// resetAuthor restarts the node's own chain from the set (after a load or a
// failed commit). Caller holds mu or has exclusive access.
func (n *Node) resetAuthor() {
	// The node's ops may not be older than its admission, even if its
	// wall clock is behind the maintainers' machine.
	if a := n.set.Authors[n.cfg.Key.Public()]; a != nil {
		n.clock.Observe(a.AdmittedAt)
	}
	seq, head := n.set.Head(n.cfg.Key.Public())
	if seq > 0 {
		// New ops must sort after the last one made before a restart, even
		// if the wall clock went back.
		_ = n.store.ReadRange(n.cfg.Key.Public(), seq, seq, func(op crdt.Op) error {
			n.clock.Observe(op.HLC)
			return nil
		})
	}
	n.author = crdt.NewAuthor(n.cfg.Key, n.clock, seq, head)
}

// ingestNow adds ops synchronously before the node starts.
func (n *Node) ingestNow(ops []crdt.Op) error {
	tx := &writeTx{n: n, trusted: true}
	if err := tx.ingest(ops); err != nil {
		return err
	}
	return n.commit(tx)
}

// Start listens on the HTTP address and starts the writer. It returns once
// the API accepts connections.
func (n *Node) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", n.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("node: listen %s: %w", n.cfg.HTTPAddr, err)
	}
	n.listener = ln
	ctx, n.stop = context.WithCancel(ctx)
	n.httpSrv = &http.Server{
		Handler:           n.secure(n.withBackup(n.Handler())),
		MaxHeaderBytes:    64 << 10,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       n.cfg.RequestTimeout,
		WriteTimeout:      n.cfg.RequestTimeout + 5*time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	if n.cfg.P2P != nil && n.quorumNeed() > 0 {
		// Closed before the API serves: a write that arrives before the
		// network starts must not be signed either (a data dir restored
		// from an older copy forked its chain in that window: the fault
		// suite's RestartFromOldCopy). startNetwork opens it.
		n.gate.arm()
	}
	n.wg.Add(3)
	go func() {
		defer n.wg.Done()
		n.writer(ctx)
	}()
	go func() {
		defer n.wg.Done()
		n.watchIsolation(ctx)
	}()
	go func() {
		defer n.wg.Done()
		if err := n.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("http server stopped", "err", err)
		}
	}()
	n.startReaders(ctx)
	if n.cfg.P2P != nil {
		if err := n.startNetwork(ctx); err != nil {
			return err
		}
	}
	n.startStripe(ctx)
	n.log.Info("node started", "api", "http://"+ln.Addr().String(), "federation", n.set.State.Name)
	return nil
}

// startNetwork joins the federation's network once the writer runs.
func (n *Node) startNetwork(ctx context.Context) error {
	cfg := *n.cfg.P2P
	// Heartbeats follow the federation's settings, so that every node
	// judges isolation on the same rhythm; a configured interval may only
	// be faster.
	n.mu.RLock()
	fedBeat := time.Duration(n.set.State.Settings.HeartbeatInterval) * time.Millisecond
	n.mu.RUnlock()
	if fedBeat > 0 && (cfg.HeartbeatInterval == 0 || cfg.HeartbeatInterval > fedBeat) {
		cfg.HeartbeatInterval = fedBeat
	}
	if cfg.Logger == nil {
		cfg.Logger = n.log
	}
	if cfg.Now == nil {
		cfg.Now = n.cfg.Now
	}
	if cfg.Isolated == nil {
		cfg.Isolated = func() bool {
			n.iso.mu.Lock()
			defer n.iso.mu.Unlock()
			return n.iso.isolated
		}
	}
	// A new venue holds the catch-up until it has a checkpoint (or gave up).
	cfg.HoldCatchUp = cfg.HoldCatchUp || n.joinCandidate()
	nw, err := p2p.New(ctx, cfg, n, n.cfg.Key)
	if err != nil {
		return fmt.Errorf("node: network: %w", err)
	}
	n.net = nw
	if err := n.startCheckpoints(ctx, nw); err != nil {
		return err
	}
	n.SetPeerView(nw)
	if n.quorumNeed() > 0 {
		timeout := n.cfg.SignGateTimeout
		if timeout <= 0 {
			n.mu.RLock()
			timeout = time.Duration(n.set.State.Settings.IsolationAfter) * time.Millisecond
			n.mu.RUnlock()
		}
		n.gate.arm()
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.confirmOwnChain(ctx, timeout)
		}()
	}
	return nil
}

// Network returns the node's network, or nil when it runs without one.
func (n *Node) Network() *p2p.Network { return n.net }

// Addr returns the HTTP API's address once started.
func (n *Node) Addr() string {
	if n.listener == nil {
		return ""
	}
	return n.listener.Addr().String()
}

// Key returns the node's public key.
func (n *Node) Key() crdt.PublicKey { return n.cfg.Key.Public() }

// Signer returns the node's signer (for the p2p identity).
func (n *Node) Signer() *crdt.Signer { return n.cfg.Key }

// Federation returns the federation key.
func (n *Node) Federation() crdt.PublicKey { return n.fed }

// Logger returns the node's logger.
func (n *Node) Logger() *slog.Logger { return n.log }

// Run starts the node and serves until ctx ends, then closes it.
func (n *Node) Run(ctx context.Context) error {
	if err := n.Start(ctx); err != nil {
		n.Close()
		return err
	}
	<-ctx.Done()
	return n.Close()
}

// Close stops the API and the writer (answering writes in flight) and
// closes the store (everything is on disk already).
func (n *Node) Close() error {
	n.closeMu.Lock()
	defer n.closeMu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	if n.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = n.httpSrv.Shutdown(ctx)
		cancel()
	}
	var errs []error
	// The network goes first: its ingests need the writer.
	if n.net != nil {
		if err := n.net.Close(); err != nil {
			errs = append(errs, fmt.Errorf("network: %w", err))
		}
	}
	if n.stop != nil {
		n.stop()
	}
	n.wg.Wait()
	if err := n.closeStripe(); err != nil {
		errs = append(errs, fmt.Errorf("stripe journal: %w", err))
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.store.Close(); err != nil {
		errs = append(errs, err)
	}
	n.log.Info("node stopped")
	return errors.Join(errs...)
}

// OnCommit registers fn to be called, from the writer, with the ops of each
// durable commit (own and remote). fn must not block.
func (n *Node) OnCommit(fn func([]crdt.Op)) {
	n.hooksMu.Lock()
	n.hooks = append(n.hooks, fn)
	n.hooksMu.Unlock()
}

// View runs fn with the op set under a read lock. fn must not keep it.
func (n *Node) View(fn func(set *crdt.OpSet)) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	fn(n.set)
}

// Store returns the node's store, for the sync protocol's range reads.
func (n *Node) Store() *store.Store { return n.store }

func (n *Node) checkToken(tok string) bool {
	h := sha256.Sum256([]byte(tok))
	ok := 0
	for _, t := range n.tokens {
		ok |= subtle.ConstantTimeCompare(h[:], t[:])
	}
	return ok == 1
}

// ReadTokens reads staff tokens, one per line.
func ReadTokens(path string) ([]string, error) {
	p, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range splitLines(string(p)) {
		if l != "" && l[0] != '#' {
			out = append(out, l)
		}
	}
	return out, nil
}
