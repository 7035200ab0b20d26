package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

func TestMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name      string
		env       map[string]string
		wantLimit int64
		wantSet   bool
	}{
		{"no GOMEMLIMIT: the binary's default", nil, defaultMemoryLimit, true},
		{"GOMEMLIMIT set: the operator's", map[string]string{"GOMEMLIMIT": "1GiB"}, 0, false},
		{"GOGC alone: the default limit still", map[string]string{"GOGC": "50"}, defaultMemoryLimit, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limit, set := memoryLimit(func(k string) string { return tc.env[k] })
			if limit != tc.wantLimit || set != tc.wantSet {
				t.Errorf("memoryLimit = %d, %v; want %d, %v", limit, set, tc.wantLimit, tc.wantSet)
			}
		})
	}
}

func TestGCPercent(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		wantPct int
		wantSet bool
	}{
		{"no GOGC: the binary's default", nil, steadyGCPercent, true},
		{"GOGC set: the operator's", map[string]string{"GOGC": "200"}, 0, false},
		{"GOGC off: the operator's", map[string]string{"GOGC": "off"}, 0, false},
		{"GOMEMLIMIT alone: the default target still", map[string]string{"GOMEMLIMIT": "1GiB"}, steadyGCPercent, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pct, set := gcPercent(func(k string) string { return tc.env[k] })
			if pct != tc.wantPct || set != tc.wantSet {
				t.Errorf("gcPercent = %d, %v; want %d, %v", pct, set, tc.wantPct, tc.wantSet)
			}
		})
	}
}

// The collector's target follows the node: 25 % while it joins or fetches older
// history, 100 % otherwise, set again only when that changes, and the
// loop ends with its context.
func TestFollowGCTarget(t *testing.T) {
	var fetching atomic.Bool
	sets := make(chan int, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		followGCTarget(ctx, time.Millisecond, fetching.Load, func(p int) int { sets <- p; return 0 }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	next := func(want int) {
		t.Helper()
		select {
		case got := <-sets:
			if got != want {
				t.Fatalf("set the target to %d, want %d", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("the target was not set to %d", want)
		}
	}
	next(steadyGCPercent)
	fetching.Store(true)
	next(fetchGCPercent)
	fetching.Store(false)
	next(steadyGCPercent)
	// Unchanged: not set again.
	select {
	case got := <-sets:
		t.Fatalf("set again to %d while nothing changed", got)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("followGCTarget did not return when its context ended")
	}
}

func TestServePprof(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name    string
		addr    string
		wantErr error
	}{
		{"loopback v4", "127.0.0.1:0", nil},
		{"localhost", "localhost:0", nil},
		{"every interface", "0.0.0.0:0", errPprofNotLoopback},
		{"no host", ":0", errPprofNotLoopback},
		{"a LAN address", "192.168.1.10:6060", errPprofNotLoopback},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			addr, done, err := servePprof(ctx, tc.addr, log)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("servePprof(%q) = %v, want %v", tc.addr, err, tc.wantErr)
			}
			if err != nil {
				return
			}
			hc := &http.Client{Timeout: 10 * time.Second}
			resp, err := hc.Get("http://" + addr + "/debug/pprof/heap")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET /debug/pprof/heap: %s", resp.Status)
			}
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the pprof server did not stop with its context")
			}
		})
	}
}
