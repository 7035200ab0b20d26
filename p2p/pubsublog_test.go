package p2p

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

// go-libp2p-pubsub logs a debug record for every message it validates and
// a warning for every message it delivers when the connection manager has
// no decaying tags: a node run at --log-level debug logged one line per
// payment of the federation (48,919 in four minutes at 200 payments/s).
// The logger it gets drops both, keeps the rest, and keeps its filter
// through With (the component attribute).
func TestPubSubLoggerDropsPerMessageRecords(t *testing.T) {
	var buf bytes.Buffer
	log := pubsubLogger(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx := context.Background()
	for _, tc := range []struct {
		level slog.Level
		msg   string
		kept  bool
	}{
		{slog.LevelDebug, "validation done", false},
		{slog.LevelDebug, "message validation throttled: queue full; dropping message from peer", false},
		{slog.LevelWarn, "error bumping delivery tag", false},
		{slog.LevelWarn, "unable to create decaying delivery tag", false},
		{slog.LevelInfo, "JOIN topic", true},
		{slog.LevelWarn, "peer declined subscription", true},
	} {
		buf.Reset()
		log.With("topic", "ops").Log(ctx, tc.level, tc.msg)
		got := buf.String()
		if kept := got != ""; kept != tc.kept {
			t.Errorf("%s %q: logged %q, want kept=%v", tc.level, tc.msg, got, tc.kept)
		}
		if tc.kept && (!strings.Contains(got, "component=pubsub") || !strings.Contains(got, "topic=ops")) {
			t.Errorf("%q lost its attributes: %q", tc.msg, got)
		}
	}
}
