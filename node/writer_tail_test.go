package node

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestWriterGathersQueuedWritesAfterSlowGroup: after a slow group the
// writer takes every write already queued, and returns once none arrives
// within gatherIdle (bounded by gatherMax), or at once when its context
// ends.
func TestWriterGathersQueuedWritesAfterSlowGroup(t *testing.T) {
	cases := []struct {
		name     string
		queued   int
		maxBatch int
		cancel   bool
		want     int
	}{
		{"nothing queued", 0, 256, false, 1},
		{"all queued writes", 5, 256, false, 6},
		{"bounded by MaxBatch", 10, 4, false, 4},
		{"context ended", 0, 256, true, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := &Node{writes: make(chan *writeReq, 64), cfg: Config{MaxBatch: c.maxBatch}}
			for range c.queued {
				n.writes <- &writeReq{}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if c.cancel {
				cancel()
			}
			start := time.Now()
			batch := n.gather(ctx, []*writeReq{{}})
			if len(batch) != c.want {
				t.Fatalf("gathered %d writes, want %d", len(batch), c.want)
			}
			// gatherMax is 2 ms: a second leaves room for a loaded machine.
			if d := time.Since(start); d > time.Second {
				t.Fatalf("gather took %s", d)
			}
		})
	}
}

// TestWritePhaseMetrics: every group commit records its phases in
// cagnotte_write_phase_seconds.
func TestWritePhaseMetrics(t *testing.T) {
	v := newTestVenue(t)
	card := "04A1B2C3D4E5F6"
	if st, body := v.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 1000, "method": "cash", "idempotency_key": "phase-1"}); st != 200 {
		t.Fatalf("top-up: %d %v", st, body)
	}
	_, m := v.do("GET", "/metrics", "", nil)
	raw := m["raw"].(string)
	for _, phase := range []string{"queue", "apply", "store_wait", "fill", "durable", "after"} {
		want := `cagnotte_write_phase_seconds_count{phase="` + phase + `"} `
		i := strings.Index(raw, want)
		if i < 0 {
			t.Fatalf("metrics lack %q", want)
		}
		if rest := raw[i+len(want):]; strings.HasPrefix(rest, "0\n") {
			t.Fatalf("%s: no group recorded", want)
		}
	}
}
