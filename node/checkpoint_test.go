package node

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/p2p"
)

// lines returns the log lines holding every one of the words.
func (l *lockedLog) lines(words ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.b.String(), "\n") {
		ok := true
		for _, w := range words {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// checkpointSettings beat fast so that nodes agree on their states quickly.
func checkpointSettings() crdt.Settings {
	s := crdt.DefaultSettings()
	s.HeartbeatInterval = 100
	s.IsolationAfter = 2000
	return s
}

// startCheckpointVenue starts a networked venue with quick checkpoints.
func startCheckpointVenue(t *testing.T, v DemoVenue, bootstrap []string, cp CheckpointConfig, log *slog.Logger) *testVenue {
	t.Helper()
	cfg := p2p.DefaultConfig()
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.MDNS, cfg.NATPortMap, cfg.HolePunching = false, false, false
	cfg.SyncInterval = 500 * time.Millisecond
	cfg.Bootstrap = bootstrap
	if log == nil {
		log = quietLogger()
	}
	n, err := New(Config{DataDir: v.Dir, HTTPAddr: "127.0.0.1:0", Logger: log, P2P: &cfg, Checkpoints: cp})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	tv := &testVenue{t: t, dir: v.Dir, token: v.Token, node: n, api: "http://" + n.Addr()}
	t.Cleanup(tv.stop)
	return tv
}

// checkpointedFederation starts the first running venues of a federation
// of venues (the others are admitted but never run), makes a history of
// top-ups and payments, and waits until every running venue keeps a
// checkpoint attested by all of them. It returns the venues, the running
// nodes and the number of ops of the history.
func checkpointedFederation(t *testing.T, root string, venues, running, cards int, cp CheckpointConfig) ([]DemoVenue, []*testVenue, uint64) {
	t.Helper()
	vs, err := PrepareFederation(root, venues, checkpointSettings())
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*testVenue
	startAll := func(cp CheckpointConfig) {
		nodes = nodes[:0]
		for i := range running {
			var boot []string
			if i > 0 {
				boot = nodes[0].node.Network().P2PAddrs()
			}
			nodes = append(nodes, startCheckpointVenue(t, vs[i], boot, cp, nil))
		}
		waitUntil(t, 10*time.Second, "the venues in sync", func() bool {
			for _, v := range nodes {
				if v.node.Isolation().Isolated {
					return false
				}
			}
			return true
		})
	}
	// The history is made without checkpoints, then the venues restart
	// with them: they attest the history's last state, whatever pauses a
	// busy machine made in the middle of it.
	startAll(CheckpointConfig{Disabled: true})
	for c := range cards {
		v := nodes[c%len(nodes)]
		card := fmt.Sprintf("04CC00%08X", c)
		if st, r := v.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 5000, "method": "cash", "idempotency_key": "t" + card}); st != 200 {
			t.Fatalf("top-up: %d %v", st, r)
		}
		w := nodes[(c+1)%len(nodes)]
		waitUntil(t, 10*time.Second, "the top-up to spread", func() bool { return w.digest() == v.digest() })
		if st, r := w.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 100, "idempotency_key": "p" + card}); st != 200 {
			t.Fatalf("payment: %d %v", st, r)
		}
	}
	waitUntil(t, 15*time.Second, "the history everywhere", func() bool {
		for _, v := range nodes {
			if v.digest() != nodes[0].digest() {
				return false
			}
		}
		return true
	})
	for _, v := range nodes {
		v.stop()
	}
	startAll(cp)
	defer func() {
		if t.Failed() {
			for i, v := range nodes {
				if v.node != nil {
					t.Logf("venue %d: digest %s, checkpoint %+v", i, v.digest(), v.node.CheckpointStatus())
				}
			}
		}
	}()
	waitUntil(t, 30*time.Second, "every venue to keep a checkpoint attested by all", func() bool {
		for _, v := range nodes {
			if v.digest() != nodes[0].digest() {
				return false
			}
			if st := v.node.CheckpointStatus(); !st.Saved || st.Attestations < len(nodes) {
				return false
			}
		}
		return true
	})
	var ops uint64
	nodes[0].node.View(func(set *crdt.OpSet) { ops = set.Len() })
	return vs, nodes, ops
}

// A venue admitted into a federation with a history starts from the
// checkpoint its venues attested: it reads none of the history's ops,
// sells at once on a card topped up before it joined, and reaches the
// others' digest.
func TestNewVenueJoinsFromAnAttestedCheckpoint(t *testing.T) {
	root := t.TempDir()
	cp := CheckpointConfig{Every: 300 * time.Millisecond, QuietFor: 400 * time.Millisecond, JoinDeadline: 15 * time.Second}
	_, nodes, history := checkpointedFederation(t, root, 3, 3, 40, cp)
	vs, err := PrepareFederation(root, 4, checkpointSettings()) // admits the new venue
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// This test counts the ops stored: no older history in the background
	// (TestJoinerFetchesOlderHistoryInBackground).
	noHistory := cp
	noHistory.NoHistory = true
	d := startCheckpointVenue(t, vs[3], nodes[0].node.Network().P2PAddrs(), noHistory, nil)
	waitUntil(t, 15*time.Second, "the new venue to install a checkpoint", func() bool { return d.node.CheckpointStatus().Installed })
	installed := time.Since(start)
	card := fmt.Sprintf("04CC00%08X", 0)
	var st int
	var r map[string]any
	waitUntil(t, 15*time.Second, "the new venue to sell", func() bool {
		st, r = d.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 250, "idempotency_key": "d1"})
		return st == 200
	})
	sold := time.Since(start)
	if bal, ok := r["balance_cents"].(float64); ok && bal != 5000-100-250 {
		t.Fatalf("balance after the new venue's payment: %v", r)
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
	stored := d.node.Store().Stats().OpsStored
	var fedOps uint64
	d.node.View(func(set *crdt.OpSet) { fedOps, _ = set.Head(set.Federation()) })
	t.Logf("history %d ops; the new venue installed a checkpoint in %v, sold in %v, stores %d ops (%d of the federation), received %d by sync",
		history, installed.Round(time.Millisecond), sold.Round(time.Millisecond), stored, fedOps, d.node.Network().Stats().SyncOpsIn)
	if st := d.node.CheckpointStatus(); st.Ops < history {
		t.Fatalf("the checkpoint stood for %d ops, the history has %d", st.Ops, history)
	}
	if stored > fedOps+10 || stored*4 > history {
		t.Fatalf("the new venue stored %d ops of a history of %d: it did not start from the checkpoint", stored, history)
	}
}

// A joiner refuses a forged checkpoint (attested by fewer venues than the
// quorum, by a revoked venue, or changed after it was attested), names the
// peer that served it, and takes another peer's valid one; when every
// peer serves a forged one, it falls back to the full catch-up.
func TestForgedCheckpointRefusedByJoiner(t *testing.T) {
	root := t.TempDir()
	// Every is long: each venue attests once, so that what a test puts in
	// a store stays there.
	cp := CheckpointConfig{Every: time.Hour, QuietFor: 400 * time.Millisecond, JoinDeadline: 4 * time.Second}
	// Venue 4 is admitted but never runs; it is revoked before the
	// joiners of the revoked case arrive.
	vs, nodes, history := checkpointedFederation(t, root, 4, 3, 12, cp)
	a, b, c := nodes[0], nodes[1], nodes[2]
	good, atts, err := a.node.Store().LatestCheckpoint()
	if err != nil {
		t.Fatal(err)
	}
	var own, byB crdt.Attestation
	for _, at := range atts {
		switch at.Venue {
		case vs[0].Key:
			own = at
		case vs[1].Key:
			byB = at
		}
	}
	revokedKey, _, err := LoadOrCreateKey(filepath.Join(vs[3].Dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	var byRevoked crdt.Attestation
	a.node.View(func(set *crdt.OpSet) {
		// The revoked venue signs what A holds (A's state is the
		// checkpoint's: nothing happened since).
		byRevoked = set.Attest(revokedKey, good)
	})
	tampered := bytes.Clone(good)
	tampered[len(tampered)/2] ^= 1
	joiners := 4
	admit := func() DemoVenue {
		joiners++
		vs, err := PrepareFederation(root, joiners, checkpointSettings())
		if err != nil {
			t.Fatal(err)
		}
		return vs[joiners-1]
	}
	digestsMeet := func(t *testing.T, d *testVenue) {
		waitUntil(t, 20*time.Second, "the joiner to reach the others' digest", func() bool {
			return d.digest() == a.digest() && d.digest() == b.digest() && d.digest() == c.digest()
		})
	}
	for _, tc := range []struct {
		name   string
		cp     []byte
		atts   []crdt.Attestation
		revoke bool
		why    string
	}{
		// The joiner's members: A, B, C, the revoked venue, the joiner.
		{"fewer attestations than the quorum", good, []crdt.Attestation{own}, false, "1 valid attestations of current venues, need 3"},
		// A, B, C, the joiners: 5 current venues, quorum 3. Were the
		// revoked venue counted, its attestation would make the third.
		{"attested by a revoked venue", good, []crdt.Attestation{own, byB, byRevoked}, true, "2 valid attestations of current venues, need 3"},
		{"bytes changed after they were attested", tampered, atts, false, "0 valid attestations"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.revoke {
				f, err := OpenFederation(filepath.Join(root, "federation"), nil)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.Revoke(vs[3].Key, 0, "test: a revoked venue's attestation"); err != nil {
					t.Fatal(err)
				}
			}
			if err := a.node.Store().SaveCheckpoint(tc.cp, tc.atts); err != nil {
				t.Fatal(err)
			}
			dv := admit()
			dp, err := p2p.PeerID(dv.Key)
			if err != nil {
				t.Fatal(err)
			}
			// B and C refuse the joiner until it has refused A's.
			b.node.Network().Block(dp)
			c.node.Network().Block(dp)
			logs := &lockedLog{}
			noHistory := cp // the test counts the ops stored
			noHistory.NoHistory = true
			d := startCheckpointVenue(t, dv, a.node.Network().P2PAddrs(), noHistory, slog.New(slog.NewTextHandler(logs, nil)))
			waitUntil(t, 10*time.Second, "the joiner to refuse A's checkpoint", func() bool {
				return len(logs.lines("checkpoint refused", a.node.Network().ID().String())) > 0
			})
			if len(logs.lines("checkpoint refused", tc.why)) == 0 {
				t.Fatalf("refused for another reason than %q: %v", tc.why, logs.lines("checkpoint refused"))
			}
			t.Log(logs.lines("checkpoint refused")[0])
			b.node.Network().Unblock(dp)
			c.node.Network().Unblock(dp)
			if err := d.node.Network().Connect(context.Background(), b.node.Network().AddrInfo()); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, 10*time.Second, "the joiner to install B's or C's checkpoint", func() bool { return d.node.CheckpointStatus().Installed })
			digestsMeet(t, d)
			if stored := d.node.Store().Stats().OpsStored; stored*2 > history {
				t.Fatalf("the joiner stored %d ops of a history of %d", stored, history)
			}
			d.stop()
		})
	}
	t.Run("every peer serves a forged one: full catch-up", func(t *testing.T) {
		for _, v := range nodes {
			if err := v.node.Store().SaveCheckpoint(tampered, atts); err != nil {
				t.Fatal(err)
			}
		}
		logs := &lockedLog{}
		d := startCheckpointVenue(t, admit(), a.node.Network().P2PAddrs(), cp, slog.New(slog.NewTextHandler(logs, nil)))
		digestsMeet(t, d)
		if d.node.CheckpointStatus().Installed {
			t.Fatal("a forged checkpoint was installed")
		}
		if len(logs.lines("checkpoint refused")) == 0 || len(logs.lines("full catch-up")) == 0 {
			t.Fatal("the joiner did not say it refused the checkpoints and fell back")
		}
		if stored := d.node.Store().Stats().OpsStored; stored < history {
			t.Fatalf("full catch-up: the joiner stored %d ops of a history of %d", stored, history)
		}
	})
}
