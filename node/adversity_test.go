package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/node/store"
	"github.com/cagnotte/cagnotte/p2p"
)

// Issue 9 at the level of a node: what a node does (or must never do) with
// its own chain, its clock, its disk and its writer.

// startNetworkedAt starts (or restarts) a networked node on a data dir.
func startNetworkedAt(t *testing.T, dir, token string, bootstrap []string) *testVenue {
	t.Helper()
	cfg := p2p.DefaultConfig()
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.MDNS, cfg.NATPortMap, cfg.HolePunching = false, false, false
	cfg.SyncInterval = 500 * time.Millisecond
	cfg.Bootstrap = bootstrap
	n, err := New(Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", Logger: quietLogger(), P2P: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	tv := &testVenue{t: t, dir: dir, token: token, node: n, api: "http://" + n.Addr()}
	t.Cleanup(tv.stop)
	return tv
}

func equivocations(v *testVenue) int {
	_, list := v.do("GET", "/api/v1/conflicts", "", nil)
	return strings.Count(fmt.Sprint(list), "equivocation")
}

// A venue restarted from an older copy of its data dir (a backup, a VM
// snapshot) must not sign at seqs it already used: it learns from its
// peers that its own chain is ahead, catches up, and only then signs.
func TestRestoredDataDirDoesNotForkItsOwnChain(t *testing.T) {
	settings := crdt.DefaultSettings()
	settings.HeartbeatInterval = 100
	settings.IsolationAfter = 2000
	nodes := startNetworked(t, 2, settings)
	a, b := nodes[0], nodes[1]
	card := "04AABBCCDD0900"
	if st, r := a.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 1000, "method": "cash", "idempotency_key": "t1"}); st != 200 {
		t.Fatal(st, r)
	}
	waitUntil(t, 10*time.Second, "the top-up to reach b", func() bool { return a.digest() == b.digest() })
	bAddrs := b.node.Network().P2PAddrs()
	dir, token := a.dir, a.token
	a.stop()
	backup := t.TempDir() + "/backup"
	if out, err := exec.Command("cp", "-a", dir, backup).CombinedOutput(); err != nil {
		t.Fatalf("copy: %v %s", err, out)
	}
	a = startNetworkedAt(t, dir, token, bAddrs)
	for i := range 3 {
		if st, r := a.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 100, "method": "cash", "idempotency_key": fmt.Sprintf("t%d", i+2)}); st != 200 {
			t.Fatal(st, r)
		}
	}
	waitUntil(t, 10*time.Second, "the newer top-ups to reach b", func() bool { return a.digest() == b.digest() })
	seq, _ := b.node.VersionVector()[a.node.Key()], 0
	a.stop()

	// The till comes back from the backup: its disk is 3 ops behind.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(backup, dir); err != nil {
		t.Fatal(err)
	}
	a = startNetworkedAt(t, dir, token, bAddrs)
	restoredNodeContinues(t, a, b, seq, "/api/v1/topups", map[string]any{"card": card, "amount_cents": 1, "method": "cash", "idempotency_key": "after-restore"})
}

// restoredNodeContinues posts a write to a restored node a, retrying while
// it answers 503 catching_up (as a client does), then checks that a's chain
// continues at seq+1 on its peer b and that nobody saw it fork.
func restoredNodeContinues(t *testing.T, a, b *testVenue, seq uint64, path string, body map[string]any) {
	t.Helper()
	waitUntil(t, 15*time.Second, "the restored node to sign again", func() bool {
		st, r := a.post(path, body)
		if st == 503 && r["error"] == "catching_up" {
			return false
		}
		if st != 200 {
			t.Fatalf("%s after the restore: %d %v", path, st, r)
		}
		return true
	})
	waitUntil(t, 10*time.Second, "convergence", func() bool { return a.digest() == b.digest() })
	if got := b.node.VersionVector()[a.node.Key()]; got != seq+1 {
		t.Fatalf("a's chain at %d on b, want %d: the restored node signed at a seq it had used", got, seq+1)
	}
	if e := equivocations(a) + equivocations(b); e != 0 {
		t.Fatalf("%d equivocations: the restored node forked its own chain", e)
	}
}

// An op of the node's own key arriving beyond its head (peers hold newer
// ops of it) closes signing until the chain has caught up.
func TestOwnOpAheadClosesSigning(t *testing.T) {
	clock := &fakeClock{t: time.Now().UTC()}
	nodes := newFederation(t, 2, clock)
	a, b := nodes[0], nodes[1]
	hearAll(nodes, clock.Now())
	// A second machine with a's key made ops 1 and 2 (a copied data dir).
	var seq uint64
	var head crdt.OpID
	a.node.View(func(set *crdt.OpSet) { seq, head = set.Head(a.node.Key()) })
	twin := crdt.NewAuthor(a.node.Signer(), crdt.NewClock(func() int64 { return time.Now().UnixMilli() }), seq, head)
	o1 := twin.Make(&crdt.VenueInfo{Name: "twin 1"})
	o2 := twin.Make(&crdt.VenueInfo{Name: "twin 2"})
	// Only the second arrives (gossip before catch-up): a gap of a's own.
	if err := a.node.Ingest(context.Background(), []crdt.Op{o2}); err != nil {
		t.Fatal(err)
	}
	if st, r := a.post("/api/v1/topups", map[string]any{"card": "04AABBCCDD0901", "amount_cents": 100, "method": "cash", "idempotency_key": "k"}); st != 503 || r["error"] != "catching_up" {
		t.Fatalf("signing with newer own ops held by peers: %d %v", st, r)
	}
	if err := a.node.Ingest(context.Background(), []crdt.Op{o1}); err != nil {
		t.Fatal(err)
	}
	if st, r := a.post("/api/v1/topups", map[string]any{"card": "04AABBCCDD0901", "amount_cents": 100, "method": "cash", "idempotency_key": "k"}); st != 200 {
		t.Fatalf("after catching up: %d %v", st, r)
	}
	exchange(t, a.node, b.node)
	if e := equivocations(a.testVenue) + equivocations(b.testVenue); e != 0 {
		t.Fatalf("%d equivocations", e)
	}
}

// Nothing a reader can see (the version vector sync and heartbeats
// announce, the digest) is ahead of the disk: a crash loses nothing a peer
// was told about.
func TestNothingLeavesBeforeItIsDurable(t *testing.T) {
	v := newTestVenue(t)
	card := "04AABBCCDD0902"
	if st, r := v.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 10000, "method": "cash", "idempotency_key": "t"}); st != 200 {
		t.Fatal(st, r)
	}
	self := v.node.Key()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				v.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 1, "idempotency_key": fmt.Sprintf("w%d-%d", w, i)})
			}
		}()
	}
	deadline := time.Now().Add(2 * time.Second)
	checks := 0
	for time.Now().Before(deadline) {
		seq := v.node.VersionVector()[self]
		found := false
		if err := v.node.Store().ReadRange(self, seq, seq, func(crdt.Op) error { found = true; return nil }); err != nil {
			t.Fatal(err)
		}
		if !found {
			close(stop)
			wg.Wait()
			t.Fatalf("the version vector announces seq %d, not on disk yet", seq)
		}
		checks++
	}
	close(stop)
	wg.Wait()
	if checks < 100 {
		t.Fatalf("only %d checks", checks)
	}
}

// An op stamped beyond the federation's clock skew bound is held, not
// applied, until it is no longer in the future: a forged clock cannot win
// a last-writer-wins field for good.
func TestFutureStampedOpHeldUntilDue(t *testing.T) {
	clock := &fakeClock{t: time.Now().UTC()}
	nodes := newFederation(t, 2, clock)
	a, b := nodes[0], nodes[1]
	card := crdt.CardID("04AABBCCDD0903")
	ahead := time.Duration(crdt.DefaultMaxClockSkew)*time.Millisecond + time.Hour
	forger := crdt.NewAuthor(b.node.Signer(), crdt.NewClock(func() int64 { return clock.Now().Add(ahead).UnixMilli() }), 0, crdt.OpID{})
	forged := forger.Make(&crdt.CardLink{Card: card, Holder: "mallory"})
	if err := a.node.Ingest(context.Background(), []crdt.Op{forged}); err != nil {
		t.Fatal(err)
	}
	var holder string
	a.node.View(func(set *crdt.OpSet) {
		if c := set.State.Card(card); c != nil {
			holder = c.Holder
		}
	})
	if holder != "" {
		t.Fatalf("an op an hour and more ahead was applied: holder %q", holder)
	}
	clock.Advance(ahead)
	a.node.retryFuture(context.Background())
	a.node.View(func(set *crdt.OpSet) {
		if c := set.State.Card(card); c != nil {
			holder = c.Holder
		}
	})
	if holder != "mallory" {
		t.Fatalf("the held op was not applied once due: holder %q", holder)
	}
}

// A crash after the commit that overdrew a card and before the block that
// answers it: the node blocks the card when it starts again.
func TestCrashBetweenOverdraftAndAutoBlock(t *testing.T) {
	clock := &fakeClock{t: time.Now().UTC()}
	nodes := newFederation(t, 2, clock)
	a, b := nodes[0], nodes[1]
	card := crdt.CardID("04AABBCCDD0904")
	mk := func(v *fedNode, body crdt.Body) crdt.Op {
		var op crdt.Op
		v.node.View(func(set *crdt.OpSet) {
			seq, head := set.Head(v.node.Key())
			op = crdt.NewAuthor(v.node.Signer(), crdt.NewClock(func() int64 { return time.Now().UnixMilli() }), seq, head).Make(body)
		})
		return op
	}
	top := mk(b, &crdt.TopUp{Card: card, Amount: 1000, Method: crdt.MethodCash})
	spend := []crdt.Op{top}
	author := crdt.NewAuthor(b.node.Signer(), crdt.NewClock(func() int64 { return time.Now().UnixMilli() }), top.Seq, top.ID())
	spend = append(spend, author.Make(&crdt.Payment{Card: card, Amount: 800, Counter: 1}), author.Make(&crdt.Payment{Card: card, Amount: 800, Counter: 2}))
	// Commit the ops to a's store as the commit before the crash did (ops
	// and state in one transaction), with no block after them.
	dir := a.dir
	fed := a.node.Federation()
	a.stop()
	st, err := store.Open(store.Config{Dir: dir + "/" + StoreDir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	set, err := st.Load(fed)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range spend {
		if out, err := set.Add(op); err != nil || out != crdt.Added {
			t.Fatalf("add %d: %v %v", op.Seq, out, err)
		}
	}
	if err := st.Commit(store.Batch{Ops: spend, State: set}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	a.testVenue.now = clock.Now
	a.start()
	_, cv := a.do("GET", "/api/v1/cards/"+string(card), a.token, nil)
	if cv["blocked"] != true || cv["balance_cents"] != -600.0 {
		t.Fatalf("card after restart: %v", cv)
	}
}

// An honest card pays at an isolated venue, then at another venue through
// a reader that cannot write its stamp: one counter twice. The collision
// is reported, the card is not blocked: no money is missing.
func TestHonestCardCounterCollisionNotBlocked(t *testing.T) {
	clock := &fakeClock{t: time.Now().UTC()}
	nodes := newFederation(t, 2, clock)
	a, b := nodes[0], nodes[1]
	hearAll(nodes, clock.Now())
	card := "04AABBCCDD0905"
	if st, r := a.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 5000, "method": "cash", "idempotency_key": "t"}); st != 200 {
		t.Fatal(st, r)
	}
	heal(t, nodes)
	clock.Advance(time.Minute) // both isolated: nobody heard anyone since
	if st, r := a.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 500, "idempotency_key": "at-a"}); st != 200 {
		t.Fatal(st, r)
	}
	hearAll(nodes, clock.Now())
	if st, r := b.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 500, "idempotency_key": "at-b"}); st != 200 {
		t.Fatal(st, r)
	}
	heal(t, nodes)
	for _, v := range nodes {
		_, cv := v.do("GET", "/api/v1/cards/"+card, v.token, nil)
		if cv["blocked"] == true || cv["balance_cents"] != 4000.0 {
			t.Fatalf("honest card after the collision: %v", cv)
		}
		_, list := v.do("GET", "/api/v1/conflicts", "", nil)
		if !strings.Contains(fmt.Sprint(list), "double_spend") {
			t.Fatalf("collision not reported: %v", list)
		}
	}
}

// A venue that becomes isolated counts, in its offline ledger, every
// payment it acknowledged since the quorum was last heard, including those
// acknowledged while the ledger was being rebuilt.
func TestIsolationLedgerCountsEveryAcknowledgedPayment(t *testing.T) {
	clock := &fakeClock{t: time.Now().UTC()}
	nodes := newFederation(t, 2, clock)
	a := nodes[0]
	hearAll(nodes, clock.Now())
	card := "04AABBCCDD0906"
	if st, r := a.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 100000, "method": "cash", "idempotency_key": "t"}); st != 200 {
		t.Fatal(st, r)
	}
	quorumAt := clock.Now()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				a.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 10, "idempotency_key": fmt.Sprintf("w%d-%d", w, i)})
			}
		}()
	}
	// Isolation is noticed while the payments go on.
	clock.Advance(time.Minute)
	for range 20 {
		a.node.evaluateIsolation()
	}
	wg.Wait()
	a.node.evaluateIsolation()
	var want crdt.OfflineLedger
	a.node.View(func(set *crdt.OpSet) {
		want = crdt.RebuildOfflineLedger(set.State, a.node.Key(), quorumAt.UnixMilli())
	})
	a.node.iso.mu.Lock()
	got := a.node.iso.ledger
	a.node.iso.mu.Unlock()
	if got.Total != want.Total {
		t.Fatalf("offline ledger counts %d, the node acknowledged %d since the quorum was last heard", got.Total, want.Total)
	}
}

// A venue's data dir copied to a second till: both sign at the same seq
// on two sides of a partition. After the heal every node holds both
// branches, reaches the same digest, lists the equivocation, and counts
// the money of both branches.
func TestCopiedDataDirForkConvergesAndKeepsMoney(t *testing.T) {
	settings := crdt.DefaultSettings()
	settings.HeartbeatInterval = 100
	settings.IsolationAfter = 1500
	nodes := startNetworked(t, 3, settings)
	a, b, c := nodes[0], nodes[1], nodes[2]
	card := "04AABBCCDD0910"
	if st, r := b.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 10000, "method": "cash", "idempotency_key": "t"}); st != 200 {
		t.Fatal(st, r)
	}
	waitUntil(t, 10*time.Second, "the top-up everywhere", func() bool { return a.digest() == b.digest() && b.digest() == c.digest() })
	aDir, aTok, bDir, bTok, cDir, cTok := a.dir, a.token, b.dir, b.token, c.dir, c.token
	c.stop()
	a.stop()
	copyDir := t.TempDir() + "/till2"
	if out, err := exec.Command("cp", "-a", aDir, copyDir).CombinedOutput(); err != nil {
		t.Fatalf("copy: %v %s", err, out)
	}
	// Side 1: the first till sells with B.
	a = startNetworkedAt(t, aDir, aTok, b.node.Network().P2PAddrs())
	st, r := a.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 1000, "idempotency_key": "till1"})
	if st != 200 {
		t.Fatal(st, r)
	}
	op1 := r["op_id"].(string)
	waitUntil(t, 10*time.Second, "side 1 converges", func() bool { return a.digest() == b.digest() })
	a.stop()
	b.stop()
	// Side 2: the copied till sells with C, which never heard of side 1.
	c = startNetworkedAt(t, cDir, cTok, nil)
	till2 := startNetworkedAt(t, copyDir, aTok, c.node.Network().P2PAddrs())
	st, r = till2.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 2000, "idempotency_key": "till2"})
	if st != 200 {
		t.Fatal(st, r)
	}
	op2 := r["op_id"].(string)
	waitUntil(t, 10*time.Second, "side 2 converges", func() bool { return till2.digest() == c.digest() })
	till2.stop()
	// Heal: the first till and B come back and meet C.
	a = startNetworkedAt(t, aDir, aTok, c.node.Network().P2PAddrs())
	b = startNetworkedAt(t, bDir, bTok, c.node.Network().P2PAddrs())
	all := []*testVenue{a, b, c}
	waitUntil(t, 20*time.Second, "one digest after the heal", func() bool {
		return a.digest() == b.digest() && b.digest() == c.digest() && equivocations(a) > 0 && equivocations(b) > 0 && equivocations(c) > 0
	})
	for _, v := range all {
		_, cv := v.do("GET", "/api/v1/cards/"+card, v.token, nil)
		if cv["balance_cents"] != 7000.0 {
			t.Fatalf("card on %s: %v, want 70.00: both tills' payments count", v.dir, cv)
		}
		_, list := v.do("GET", "/api/v1/conflicts", "", nil)
		if l := fmt.Sprint(list); !strings.Contains(l, "equivocation") || !strings.Contains(l, op1) || !strings.Contains(l, op2) {
			t.Fatalf("conflicts on %s: %v, want the equivocation with both tills' ops %s and %s", v.dir, list, op1, op2)
		}
	}
}

// A new venue catches up one venue's history after another: for a while it
// holds a card's payments without the top-ups that paid for them. It must
// not take that for money missing and block honest cards (found by the
// season benchmark: a joining venue blocked most cards of the federation).
func TestNewVenueCatchingUpBlocksNoHonestCard(t *testing.T) {
	settings := crdt.DefaultSettings()
	settings.HeartbeatInterval = 100
	settings.IsolationAfter = 1500
	vs, err := PrepareFederation(t.TempDir(), 3, settings)
	if err != nil {
		t.Fatal(err)
	}
	a := startNetworkedAt(t, vs[0].Dir, vs[0].Token, nil)
	b := startNetworkedAt(t, vs[1].Dir, vs[1].Token, a.node.Network().P2PAddrs())
	waitUntil(t, 10*time.Second, "a and b in sync", func() bool {
		return !a.node.Isolation().Isolated && !b.node.Isolation().Isolated
	})
	// Cards topped up at one venue and spent at the other, both ways, so
	// that whichever venue's history arrives first, some cards look
	// overdrawn until the other's arrives.
	for i := range 20 {
		card := fmt.Sprintf("04AABBCCDD%04X", i)
		top, pay := a, b
		if i%2 == 1 {
			top, pay = b, a
		}
		if st, r := top.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 4000, "method": "cash", "idempotency_key": "t" + card}); st != 200 {
			t.Fatal(st, r)
		}
		waitUntil(t, 10*time.Second, "the top-up at the other venue", func() bool { return a.digest() == b.digest() })
		if st, r := pay.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 3000, "idempotency_key": "p" + card}); st != 200 {
			t.Fatal(st, r)
		}
	}
	waitUntil(t, 10*time.Second, "a and b converge", func() bool { return a.digest() == b.digest() })
	// The new venue starts unconnected and receives a's history first, then
	// b's, as a catch-up over several sessions does.
	c := startNetworkedAt(t, vs[2].Dir, vs[2].Token, nil)
	waitUntil(t, 10*time.Second, "the new venue's sign gate to open", func() bool {
		c.node.mu.RLock()
		seq, _ := c.node.set.Head(c.node.Key())
		c.node.mu.RUnlock()
		return c.node.gate.check(seq) == nil
	})
	only := func(from *testVenue, author crdt.PublicKey) {
		var ops []crdt.Op
		if err := from.node.ReadRange(author, 1, ^uint64(0), func(op crdt.Op) error { ops = append(ops, op); return nil }); err != nil {
			t.Fatal(err)
		}
		if err := c.node.IngestRange(context.Background(), ops); err != nil {
			t.Fatalf("ingest range: %v", err)
		}
	}
	only(a, a.node.Key())
	blocked := func() int {
		n := 0
		c.node.View(func(set *crdt.OpSet) {
			for _, card := range set.State.Cards {
				if card.Blocked {
					n++
				}
			}
		})
		return n
	}
	if n := blocked(); n != 0 {
		t.Fatalf("%d honest cards blocked on a partial history", n)
	}
	only(b, b.node.Key())
	c.stop()
	c = startNetworkedAt(t, vs[2].Dir, vs[2].Token, a.node.Network().P2PAddrs())
	waitUntil(t, 20*time.Second, "one digest", func() bool { return c.digest() == a.digest() && a.digest() == b.digest() })
	for _, v := range []*testVenue{a, b, c} {
		for i := range 20 {
			card := fmt.Sprintf("04AABBCCDD%04X", i)
			if _, cv := v.do("GET", "/api/v1/cards/"+card+"?limit=1", v.token, nil); cv["blocked"] == true {
				t.Fatalf("honest card %s blocked on %s: %v", card, v.dir, cv)
			}
		}
	}
}
