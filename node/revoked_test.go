package node

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/p2p"
)

// startLogged starts the node of dir with its logs in buf.
func startLogged(t *testing.T, dir string, buf *lockedLog) *testVenue {
	t.Helper()
	toks, err := ReadTokens(filepath.Join(dir, TokensFile))
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	v := &testVenue{t: t, dir: dir, token: toks[0], node: n, api: "http://" + n.Addr()}
	t.Cleanup(v.stop)
	return v
}

// TestRevokedNodeKnowsIt: when its venue's revocation reaches a running
// node, the node logs it, its sync status says revoked with the cut-off
// seq, every write is refused with 403 venue_revoked while reads still
// work, and after a restart it says so again at start.
func TestRevokedNodeKnowsIt(t *testing.T) {
	root := t.TempDir()
	vs, err := PrepareDemo(root, 2)
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedLog
	v := startLogged(t, vs[0].Dir, &logs)
	if st, out := v.post("/api/v1/topups", map[string]any{"card": "04A1B2C3D4E5F6", "amount_cents": 1000, "method": "cash", "idempotency_key": "before"}); st != 200 {
		t.Fatalf("top-up before the revocation: %d %v", st, out)
	}
	if s := v.node.Status(); s.Revoked {
		t.Fatalf("revoked before the revocation: %+v", s.Membership)
	}
	f, err := OpenFederation(filepath.Join(root, "federation"), nil)
	if err != nil {
		t.Fatal(err)
	}
	seq := v.node.VersionVector()[vs[0].Key]
	rev, err := f.Revoke(vs[0].Key, seq, "node stolen")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.node.Ingest(context.Background(), []crdt.Op{rev}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "the federation revoked this venue") {
		t.Fatalf("no log when the revocation arrived:\n%s", logs.String())
	}
	st, out := v.do("GET", "/api/v1/sync/status", "", nil)
	if st != 200 || out["revoked"] != true || out["revoked_after_seq"] != float64(seq) || out["revoke_reason"] != "node stolen" {
		t.Fatalf("sync status of a revoked node: %d revoked=%v after=%v reason=%v", st, out["revoked"], out["revoked_after_seq"], out["revoke_reason"])
	}
	start := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Hour)
	writes := []struct {
		name, path string
		body       map[string]any
	}{
		{"payment", "/api/v1/payments", map[string]any{"card": "04A1B2C3D4E5F6", "amount_cents": 100, "idempotency_key": "p"}},
		{"top-up", "/api/v1/topups", map[string]any{"card": "04A1B2C3D4E5F6", "amount_cents": 100, "method": "cash", "idempotency_key": "t"}},
		{"refund", "/api/v1/refunds", map[string]any{"card": "04A1B2C3D4E5F6", "amount_cents": 100, "idempotency_key": "r", "reason": "test"}},
		{"block", "/api/v1/cards/04A1B2C3D4E5F6/block", map[string]any{"idempotency_key": "b", "reason": "test"}},
		{"event", "/api/v1/events", map[string]any{"title": "Bal", "starts_at": start, "ends_at": start.Add(time.Hour), "idempotency_key": "e"}},
	}
	for _, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			st, out := v.post(w.path, w.body)
			if st != 403 || out["error"] != "venue_revoked" {
				t.Fatalf("%s on a revoked node: %d %v", w.name, st, out)
			}
			if msg, _ := out["message"].(string); !strings.Contains(msg, "after its op") {
				t.Fatalf("the refusal does not give the cut-off: %q", msg)
			}
		})
	}
	if st, _ := v.do("GET", "/api/v1/events", "", nil); st != 200 {
		t.Fatalf("reads on a revoked node: %d", st)
	}
	if got := v.node.VersionVector()[vs[0].Key]; got != seq {
		t.Fatalf("the revoked node made ops: seq %d, was %d", got, seq)
	}

	v.stop()
	var again lockedLog
	v = startLogged(t, vs[0].Dir, &again)
	if !strings.Contains(again.String(), "this venue is revoked by the federation") {
		t.Fatalf("no log at start:\n%s", again.String())
	}
	if s := v.node.Status(); !s.Revoked || s.RevokedAfter != seq {
		t.Fatalf("status after restart: %+v", s.Membership)
	}
}

// TestSyncStatusAuthorsNamed: the sync status lists every author of the
// version vector with its venue name, role and peer id, so an operator
// can match keys, venues and peers.
func TestSyncStatusAuthorsNamed(t *testing.T) {
	root := t.TempDir()
	vs, err := PrepareDemo(root, 2)
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedLog
	v := startLogged(t, vs[0].Dir, &logs)
	if st, out := v.post("/api/v1/topups", map[string]any{"card": "04A1B2C3D4E5F6", "amount_cents": 1000, "method": "cash", "idempotency_key": "x"}); st != 200 {
		t.Fatalf("top-up: %d %v", st, out)
	}
	s := v.node.Status()
	byKey := map[string]AuthorStatus{}
	for _, a := range s.Authors {
		byKey[a.Key] = a
	}
	for k, seq := range s.VersionVector {
		a, ok := byKey[k]
		if !ok || a.Seq != seq {
			t.Fatalf("author %s (seq %d) missing or wrong in %+v", k, seq, s.Authors)
		}
	}
	for _, dv := range vs {
		a := byKey[dv.Key.String()]
		id, _ := p2p.PeerID(dv.Key)
		if a.Venue != dv.Name || a.PeerID != id.String() || a.Role != "venue" {
			t.Fatalf("venue %s shown as %+v, want name %q peer %s", dv.Name, a, dv.Name, id)
		}
	}
	if a := byKey[v.node.Federation().String()]; a.Role != "federation" || a.Venue != s.Federation || a.Seq == 0 || a.Head == nil {
		t.Fatalf("federation author: %+v", a)
	}
}

// TestFederationRevokeTwiceRefused: revoking a venue that is already
// revoked is refused, and the venue list shows the revocation.
func TestFederationRevokeTwiceRefused(t *testing.T) {
	root := t.TempDir()
	vs, err := PrepareDemo(root, 2)
	if err != nil {
		t.Fatal(err)
	}
	f, err := OpenFederation(filepath.Join(root, "federation"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Revoke(vs[1].Key, 3, "lost"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Revoke(vs[1].Key, 5, "again"); !errors.Is(err, ErrAlreadyRevoked) {
		t.Fatalf("second revocation: %v", err)
	}
	got := f.Venues(nil)
	if len(got) != 2 || got[0].Name != vs[0].Name || got[0].Revoked || !got[1].Revoked || got[1].RevokedAfter != 3 || got[1].RevokeReason != "lost" {
		t.Fatalf("venues: %+v", got)
	}
}
