package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime/debug"
	"time"
)

// defaultMemoryLimit is the soft memory limit the binary sets for itself
// when the operator sets none (GOMEMLIMIT): a node must fit a small machine
// (a 1 GB Raspberry Pi runs the OS, the node and its Badger caches), and the
// Go runtime otherwise lets the heap grow to twice its live size between
// collections. It is a soft limit: the node never fails for it, the
// collector just works harder near it.
//
// 256 MiB: a node's live heap is 60-100 MiB at 1 M ops (the cards, Badger's
// memtables, block and index caches), and a memtable flush adds about
// 60 MiB for its level-0 table builder, a compaction its own builders: at
// 192 MiB the live heap reached the limit during a flush (170 MiB live in
// the payment-tail bench) and the collector ran back to back (26 cycles in
// a 70 s payment run against 11 at 256 MiB; before the store's records
// were made smaller, up to 290 cycles in the flush's seconds against 5-17),
// stalling payments behind it. The
// limit does not raise the steady memory: between flushes the heap stays
// under GOGC's target (about 155 MiB of RSS at 1 M ops), and the peak stays
// under the 512 MiB a node may reach (docs/benchmarks.md, "Payment tail,
// second pass").
const defaultMemoryLimit = 256 << 20

// The collector's target the binary sets for itself when the operator
// sets none (GOGC): steadyGCPercent (the runtime's own default, the heap
// may double its live size between collections) while the node serves,
// and fetchGCPercent (it may grow by a quarter) while the node joins
// from a checkpoint and fetches the history older than it.
//
// A node's live heap swings with Badger's compactions: their table
// builders come from a pool of eight allocators that keep their buffers
// (tens of MiB each) while compactions follow one another. A new venue
// that joined a 10 M-op federation from a checkpoint and fetches the older
// history in the background compacts all the time, and its live heap went
// between 70 and 170 MiB: at 100 % the collector let the heap reach the
// memory limit's goal (232 MiB) and the venue's RSS stayed at 260-275 MiB
// with the mapped tables, over the 256 MiB a node may hold; at 50 % its
// anonymous memory went from 210-223 to 171 MiB, but its RSS still
// reached 252-267 MiB in the season benchmark; at 25 % it held 185-189
// MiB (anonymous 125-141) where 50 % held 212-256 in the same reruns
// (bench/season/rejoin.sh). Collecting more often costs the venue CPU
// while it fetches, which the fetch's pace leaves it. A low target on
// every node cost the payment tail: at 50 %, 12 collections against 6-7
// in 40 s of payments on a store paying compaction debt and p99 5.0-5.8
// against 3.2-4.6 ms; an hour at 10 M ops, 12.42 ms against 6.42 at 100 %
// (docs/benchmarks.md, issue 11's fourth and fifth passes): so only the
// join and the fetch pay it.
const (
	steadyGCPercent = 100
	fetchGCPercent  = 25
)

// gcFollowEvery is how often the binary looks whether the node joins or
// fetches older history, to set the collector's target.
const gcFollowEvery = 2 * time.Second

// setRuntimeLimits applies the binary's runtime defaults, unless the
// operator chose their own through the environment. It reports whether
// the collector's target is the binary's to follow (followGCTarget).
func setRuntimeLimits() (followGC bool) {
	if limit, ok := memoryLimit(os.Getenv); ok {
		debug.SetMemoryLimit(limit)
	}
	if pct, ok := gcPercent(os.Getenv); ok {
		debug.SetGCPercent(pct)
		return true
	}
	return false
}

// gcPercent returns the collector's target the binary should set at
// start, and false when the operator set one (GOGC, which the runtime
// applies itself).
func gcPercent(getenv func(string) string) (int, bool) {
	if getenv("GOGC") != "" {
		return 0, false
	}
	return steadyGCPercent, true
}

// memoryLimit returns the soft memory limit the binary should set, and
// false when the operator set one (GOMEMLIMIT, which the runtime applies
// itself).
func memoryLimit(getenv func(string) string) (int64, bool) {
	if getenv("GOMEMLIMIT") != "" {
		return 0, false
	}
	return defaultMemoryLimit, true
}

// gcTarget is the collector's target for a node that is fetching older
// history or not.
func gcTarget(fetching bool) int {
	if fetching {
		return fetchGCPercent
	}
	return steadyGCPercent
}

// followGCTarget sets the collector's target (through set, which is
// debug.SetGCPercent in the binary) from fetching every interval, each
// time it changes, until ctx ends. It returns when ctx ends.
func followGCTarget(ctx context.Context, every time.Duration, fetching func() bool, set func(int) int, log *slog.Logger) {
	cur := -1
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if pct := gcTarget(fetching()); pct != cur {
			set(pct)
			if cur != -1 {
				log.Info("collector target", "gogc", pct, "joining_or_fetching_history", pct == fetchGCPercent)
			}
			cur = pct
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// errPprofNotLoopback is returned by servePprof for an address that is not
// on the loopback interface: profiles show the node's memory (keys, tokens
// in flight) and must never be reachable from the network.
var errPprofNotLoopback = errors.New("--pprof must listen on a loopback address (127.0.0.1 or [::1])")

// startPprof serves the profiles on addr (servePprof) until the returned
// stop is called, which waits for the server to end. An empty addr serves
// nothing.
func startPprof(ctx context.Context, addr string, log *slog.Logger) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	pctx, cancel := context.WithCancel(ctx)
	_, done, err := servePprof(pctx, addr, log)
	if err != nil {
		cancel()
		return nil, err
	}
	return func() { cancel(); <-done }, nil
}

// servePprof serves net/http/pprof's handlers on addr, which must be a
// loopback address, until ctx ends. It returns the address it listens on
// (addr may name port 0) and a channel closed once the server has stopped.
func servePprof(ctx context.Context, addr string, log *slog.Logger) (string, <-chan struct{}, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", nil, fmt.Errorf("--pprof %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "", nil, fmt.Errorf("%w: got %q", errPprofNotLoopback, addr)
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("--pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("pprof server", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("pprof server shutdown", "err", err)
		}
	}()
	log.Info("pprof listening", "addr", ln.Addr().String())
	return ln.Addr().String(), done, nil
}
