package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/cagnotte/cagnotte/node"
)

// TestStatusTableAndJSON: `cagnotte status` prints the dashboard's table
// of venues, and --json the sync status with the venues' rows.
func TestStatusTableAndJSON(t *testing.T) {
	vs, err := node.PrepareDemo(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.New(node.Config{DataDir: vs[0].Dir, HTTPAddr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	var out, errb bytes.Buffer
	if code := Main(context.Background(), []string{"status", "--api", n.Addr()}, &out, &errb); code != 0 {
		t.Fatalf("status: %d %s", code, errb.String())
	}
	for _, want := range []string{"venue La Guinguette", "VENUE", "LAG", "La Guinguette (this node)", "Le Local", "never heard", "Café des Arts"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("status lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := Main(context.Background(), []string{"status", "--api", n.Addr(), "--json"}, &out, &errb); code != 0 {
		t.Fatalf("status --json: %d %s", code, errb.String())
	}
	var s struct {
		node.SyncStatus
		Venues       []node.DashboardVenue `json:"venues"`
		ConflictList []node.ConflictView   `json:"conflict_list"`
	}
	if err := json.Unmarshal(out.Bytes(), &s); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out.String())
	}
	if s.Venue != "La Guinguette" || len(s.Venues) != 3 || !s.Venues[0].Self && !s.Venues[1].Self && !s.Venues[2].Self || s.ConflictList == nil {
		t.Fatalf("status --json: %+v", s)
	}
}
