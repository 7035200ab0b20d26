package node

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
)

// p99 returns the 99th percentile of ds.
func p99(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*99/100)]
}

// A venue that starts from a checkpoint sells at once, then fetches the
// history the checkpoint summarizes in the background, in small ranges
// from the venues in turn: it ends holding every op the others hold, the
// history folded aside encodes to the attested checkpoint, and its
// payments keep their latency while the fetch runs.
func TestJoinerFetchesOlderHistoryInBackground(t *testing.T) {
	root := t.TempDir()
	cp := CheckpointConfig{Every: 300 * time.Millisecond, QuietFor: 400 * time.Millisecond, JoinDeadline: 15 * time.Second}
	_, nodes, history := checkpointedFederation(t, root, 3, 3, 40, cp)
	vs, err := PrepareFederation(root, 4, checkpointSettings()) // admits the new venue
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedLog{}
	joinCfg := cp
	// Small ranges and a long pause: the fetch lasts long enough for the
	// venue to sell in the middle of it.
	joinCfg.HistoryBatch, joinCfg.HistoryPause = 4, 100*time.Millisecond
	start := time.Now()
	d := startCheckpointVenue(t, vs[3], nodes[0].node.Network().P2PAddrs(), joinCfg,
		slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	defer func() {
		if t.Failed() {
			t.Logf("joiner's log:\n%s", logs.String())
		}
	}()
	// The binary's collector target follows JoiningOrFetchingHistory: it
	// must not drop between the join and the fetch (it did while the fetch
	// read the checkpoint and the log, 0.3 s at 10 M ops, and the target
	// swung to 100 % and back during the catch-up).
	gapStop, gapDone := make(chan struct{}), make(chan int)
	go func() {
		seen, prev, gaps := false, false, 0
		for {
			select {
			case <-gapStop:
				gapDone <- gaps
				return
			case <-time.After(200 * time.Microsecond):
			}
			v := d.node.JoiningOrFetchingHistory()
			if d.node.CheckpointStatus().History.Done {
				continue // ended: false from now on
			}
			if seen && prev && !v {
				gaps++
			}
			seen, prev = seen || v, v
		}
	}()
	waitUntil(t, 15*time.Second, "the new venue to install a checkpoint", func() bool { return d.node.CheckpointStatus().Installed })
	waitUntil(t, 5*time.Second, "the new venue to end its join", func() bool { return !d.node.CheckpointStatus().Joining })
	pay := func(key string) time.Duration {
		t0 := time.Now()
		if st, r := d.post("/api/v1/payments", map[string]any{"card": fmt.Sprintf("04CC00%08X", 0), "amount_cents": 1, "idempotency_key": key}); st != 200 {
			t.Fatalf("payment %s: %d %v", key, st, r)
		}
		return time.Since(t0)
	}
	// In sync, not selling offline: an isolated venue would sell too, but
	// within the offline caps (20 payments a card), which this test's
	// payments on one card would exceed.
	waitUntil(t, 15*time.Second, "the new venue to sell in sync", func() bool {
		if d.node.Isolation().Isolated {
			return false
		}
		st, _ := d.post("/api/v1/payments", map[string]any{"card": fmt.Sprintf("04CC00%08X", 0), "amount_cents": 1, "idempotency_key": "first"})
		return st == 200
	})
	sold := time.Since(start)
	atSale := d.node.CheckpointStatus().History
	if atSale.Done {
		t.Fatalf("the history was complete before the first sale (%s): the test shows nothing", atSale)
	}
	var during, after []time.Duration
	// Active is what the binary's collector target follows
	// (cmd/cagnotte, followGCTarget): set through the fetch, clear after.
	sawActive := atSale.Active
	for i := 0; !d.node.CheckpointStatus().History.Done; i++ {
		if time.Since(start) > 60*time.Second {
			t.Fatalf("the history is not complete after a minute: %s", d.node.CheckpointStatus().History)
		}
		during = append(during, pay(fmt.Sprintf("during-%d", i)))
		sawActive = sawActive || d.node.CheckpointStatus().History.Active && d.node.JoiningOrFetchingHistory()
	}
	if !sawActive {
		t.Error("the history fetch never reported itself Active")
	}
	close(gapStop)
	if gaps := <-gapDone; gaps > 0 {
		t.Errorf("JoiningOrFetchingHistory went false %d times between the join and the end of the fetch", gaps)
	}
	fetched := time.Since(start)
	waitUntil(t, 30*time.Second, "the history folded and verified", func() bool {
		h := d.node.CheckpointStatus().History
		if h.Err != "" {
			t.Fatalf("history: %s", h)
		}
		return h.Verified
	})
	waitUntil(t, 5*time.Second, "the fetch to end", func() bool {
		return !d.node.CheckpointStatus().History.Active && !d.node.JoiningOrFetchingHistory()
	})
	for i := range max(len(during), 30) {
		after = append(after, pay(fmt.Sprintf("after-%d", i)))
	}
	all := append([]*testVenue{d}, nodes...)
	waitUntil(t, 15*time.Second, "the same digest everywhere", func() bool {
		for _, v := range all {
			if v.digest() != d.digest() {
				return false
			}
		}
		return true
	})
	// The full op set: every op of every author that the others hold.
	count := func(v *testVenue) map[crdt.PublicKey]int {
		out := map[crdt.PublicKey]int{}
		for k, c := range v.node.Chains() {
			_ = v.node.store.ReadRange(k, 1, c.Seq, func(crdt.Op) error { out[k]++; return nil })
		}
		return out
	}
	mine, theirs := count(d), count(nodes[0])
	for k, c := range theirs {
		if mine[k] != c {
			t.Errorf("author %s: the joiner holds %d ops from seq 1, venue 0 holds %d", k.Short(), mine[k], c)
		}
	}
	h := d.node.CheckpointStatus().History
	t.Logf("history %d ops: sold after %v at %q; %s after %v; payment p99 %v during the fetch (%d), %v after (%d)",
		history, sold.Round(time.Millisecond), atSale.String(), h, fetched.Round(time.Millisecond),
		p99(during), len(during), p99(after), len(after))
	if len(during) < 5 {
		t.Errorf("only %d payments during the fetch", len(during))
	}
	// Loose: a loaded machine shares two cores between four venues.
	if p99(during) > 3*p99(after)+100*time.Millisecond {
		t.Errorf("payment p99 %v during the history fetch, %v after", p99(during), p99(after))
	}
	if h.Held != h.Total || h.Total < history-10 {
		t.Errorf("history status %+v for a history of %d ops", h, history)
	}
	if st, r := d.do("GET", "/api/v1/sync/status", d.token, nil); st != 200 || !strings.HasPrefix(fmt.Sprint(r["history"]), "history: 100 % (") {
		t.Errorf("sync status: %d, history %q", st, r["history"])
	}
	if got := logs.lines("history:", "%"); len(got) < 2 {
		t.Errorf("progress log lines: %q", got)
	}
}
