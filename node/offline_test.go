package node

import (
	"context"
	"encoding/base64"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
)

// fakeClock is a settable wall clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// heard is a PeerView whose answers the test sets.
type heard struct {
	mu sync.Mutex
	m  map[crdt.PublicKey]time.Time
}

func (h *heard) LastHeard() map[crdt.PublicKey]time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[crdt.PublicKey]time.Time{}
	for k, v := range h.m {
		out[k] = v
	}
	return out
}

func (h *heard) set(k crdt.PublicKey, t time.Time) {
	h.mu.Lock()
	if h.m == nil {
		h.m = map[crdt.PublicKey]time.Time{}
	}
	h.m[k] = t
	h.mu.Unlock()
}

type fedNode struct {
	*testVenue
	key   crdt.PublicKey
	heard *heard
}

// newFederation starts n venue nodes of one federation sharing a fake clock.
// They are not connected: tests move ops between them with exchange.
func newFederation(t *testing.T, n int, clock *fakeClock) []*fedNode {
	t.Helper()
	settings := crdt.DefaultSettings()
	settings.BalanceMax = 0 // these tests are about the offline caps, with large balances
	vs, err := PrepareFederation(t.TempDir(), n, settings)
	if err != nil {
		t.Fatal(err)
	}
	var out []*fedNode
	for _, v := range vs {
		h := &heard{}
		node, err := New(Config{DataDir: v.Dir, HTTPAddr: "127.0.0.1:0", Logger: quietLogger(), Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		node.SetPeerView(h)
		if err := node.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		tv := &testVenue{t: t, dir: v.Dir, token: v.Token, node: node, api: "http://" + node.Addr(), now: clock.Now}
		t.Cleanup(tv.stop)
		out = append(out, &fedNode{testVenue: tv, key: v.Key, heard: h})
	}
	return out
}

// hearAll makes every node hear every other one now.
func hearAll(nodes []*fedNode, now time.Time) {
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				a.heard.set(b.key, now)
			}
		}
	}
}

// exchange gives b every op a holds that b lacks, through b's catch-up
// path, as anti-entropy does.
func exchange(t *testing.T, a, b *Node) {
	t.Helper()
	var missing []crdt.Range
	vv := b.VersionVector()
	a.View(func(set *crdt.OpSet) { missing = set.Missing(vv) })
	for _, r := range missing {
		var ops []crdt.Op
		if err := a.ReadRange(r.Author, r.From, r.To, func(op crdt.Op) error { ops = append(ops, op); return nil }); err != nil {
			t.Fatal(err)
		}
		if err := b.IngestRange(context.Background(), ops); err != nil {
			t.Fatalf("ingest range: %v", err)
		}
	}
}

func heal(t *testing.T, nodes []*fedNode) {
	for round := 0; round < 2; round++ {
		for _, a := range nodes {
			for _, b := range nodes {
				if a != b {
					exchange(t, a.node, b.node)
				}
			}
		}
	}
}

func TestIsolationDetectedAndCleared(t *testing.T) {
	clock := &fakeClock{t: time.Now().UTC()} // after the demo federation's ops: older would be refused
	nodes := newFederation(t, 3, clock)
	a := nodes[0]
	hearAll(nodes, clock.Now())
	if iso := a.node.Isolation(); iso.Isolated {
		t.Fatalf("isolated while hearing everyone: %+v", iso)
	}
	clock.Advance(31 * time.Second) // past IsolationAfter (30 s by default)
	_, s := a.do("GET", "/api/v1/sync/status", "", nil)
	if s["isolated"] != true || !strings.Contains(s["isolation_reason"].(string), "heard 0 of 2") {
		t.Fatalf("not isolated: %v", s)
	}
	_, m := a.do("GET", "/metrics", "", nil)
	if !strings.Contains(m["raw"].(string), "cagnotte_isolated 1") {
		t.Fatal("metrics do not show isolation")
	}
	a.heard.set(nodes[1].key, clock.Now()) // one of two: 50 %, enough by default
	if iso := a.node.Isolation(); iso.Isolated {
		t.Fatalf("still isolated after hearing half the venues: %+v", iso)
	}
}

func TestOfflineCaps(t *testing.T) {
	clock := &fakeClock{t: time.Now().UTC()} // after the demo federation's ops: older would be refused
	nodes := newFederation(t, 2, clock)
	a := nodes[0]
	hearAll(nodes, clock.Now())
	cards := []string{"04000000000001", "04000000000002", "04000000000003"}
	for i, c := range cards {
		if st, b := a.post("/api/v1/topups", map[string]any{"card": c, "amount_cents": 200_000, "method": "cash", "idempotency_key": "top" + c}); st != 200 {
			t.Fatal(i, st, b)
		}
	}
	clock.Advance(time.Minute) // isolated now
	pay := func(card string, amount int, key string) (int, map[string]any) {
		return a.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": amount, "idempotency_key": key})
	}
	// Defaults: 25.00 per payment, 50.00 and 20 payments per card, 1000.00 per venue.
	if st, b := pay(cards[0], 2501, "p-floor"); st != 402 || b["error"] != "offline_cap_exceeded" {
		t.Fatalf("floor limit: %d %v", st, b)
	}
	if st, b := pay(cards[0], 2500, "p1"); st != 200 || b["offline"] != true {
		t.Fatalf("offline payment: %d %v", st, b)
	}
	if st, b := pay(cards[0], 2500, "p2"); st != 200 {
		t.Fatalf("second offline payment: %d %v", st, b)
	}
	if st, b := pay(cards[0], 1, "p3"); st != 402 || b["error"] != "offline_cap_exceeded" || !strings.Contains(b["message"].(string), "this card may spend at most 5000") {
		t.Fatalf("card amount cap: %d %v", st, b)
	}
	for i := 0; i < 20; i++ {
		if st, b := pay(cards[1], 1, "c"+string(rune('a'+i))); st != 200 {
			t.Fatalf("count %d: %d %v", i, st, b)
		}
	}
	if st, b := pay(cards[1], 1, "c-over"); st != 402 || b["error"] != "offline_cap_exceeded" {
		t.Fatalf("card count cap: %d %v", st, b)
	}
	// The caps survive a restart while isolated.
	a.restart()
	a.node.SetPeerView(a.heard)
	if st, b := pay(cards[0], 1, "after-restart"); st != 402 || b["error"] != "offline_cap_exceeded" {
		t.Fatalf("cap after restart: %d %v", st, b)
	}
	// Back in sync: the same payments go through.
	nodes[1].heard.set(a.key, clock.Now())
	a.heard.set(nodes[1].key, clock.Now())
	if st, b := pay(cards[0], 1, "p3"); st != 200 || b["offline"] == true {
		t.Fatalf("in sync again: %d %v", st, b)
	}
	if st, b := pay(cards[0], 5000, "p-big"); st != 200 {
		t.Fatalf("big payment in sync: %d %v", st, b)
	}
	// Validity: after 24 h isolated, no more offline sales at all.
	clock.Advance(time.Minute)
	if st, _ := pay(cards[2], 100, "v1"); st != 200 {
		t.Fatal("offline payment refused too early")
	}
	clock.Advance(25 * time.Hour)
	if st, b := pay(cards[2], 100, "v2"); st != 402 || !strings.Contains(b["message"].(string), "too long") {
		t.Fatalf("validity: %d %v", st, b)
	}
}

func TestDoubleSpendDetectedOnHealAndAutoBlocked(t *testing.T) {
	clock := &fakeClock{t: time.Now().UTC()} // after the demo federation's ops: older would be refused
	nodes := newFederation(t, 3, clock)
	a, b, c := nodes[0], nodes[1], nodes[2]
	hearAll(nodes, clock.Now())
	card := "04AABBCCDD0001"
	if st, r := a.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 3000, "method": "cash", "idempotency_key": "t"}); st != 200 {
		t.Fatal(st, r)
	}
	heal(t, nodes)
	clock.Advance(time.Minute) // partition: everyone isolated
	// The card and its clone pay at a and b with the same counter.
	st1, p1 := a.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 2000, "idempotency_key": "x"})
	st2, p2 := b.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 2000, "idempotency_key": "y"})
	if st1 != 200 || st2 != 200 || p1["counter"] != p2["counter"] {
		t.Fatalf("partitioned payments: %d %v / %d %v", st1, p1, st2, p2)
	}
	heal(t, nodes)
	heal(t, nodes) // the auto-block ops made on heal spread too
	var digest string
	for i, n := range nodes {
		_, list := n.do("GET", "/api/v1/conflicts", "", nil)
		raw := list["raw"].(string)
		if strings.Count(raw, `"kind":"double_spend"`) != 1 {
			t.Fatalf("node %d: want exactly one double spend: %s", i, raw)
		}
		_, cv := n.do("GET", "/api/v1/cards/"+card, n.token, nil)
		if cv["blocked"] != true || cv["balance_cents"] != -1000.0 {
			t.Fatalf("node %d: card %v", i, cv)
		}
		d := n.digest()
		if i > 0 && d != digest {
			t.Fatalf("node %d digest differs", i)
		}
		digest = d
		_, m := n.do("GET", "/metrics", "", nil)
		if !strings.Contains(m["raw"].(string), `cagnotte_conflicts{kind="double_spend"} 1`) {
			t.Fatalf("node %d metrics lack the conflict", i)
		}
	}
	_ = c
}

func TestStaleStampDetected(t *testing.T) {
	clock := &fakeClock{t: time.Now().UTC()} // after the demo federation's ops: older would be refused
	nodes := newFederation(t, 2, clock)
	a, b := nodes[0], nodes[1]
	hearAll(nodes, clock.Now())
	card := "04AABBCCDD0002"
	a.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 10000, "method": "cash", "idempotency_key": "t"})
	_, p1 := a.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 100, "idempotency_key": "p1"})
	old := p1["stamp"].(string)
	raw, _ := base64.StdEncoding.DecodeString(old)
	if len(raw) != crdt.StampSize || crdt.StampSize > 144 {
		t.Fatalf("stamp of %d bytes", len(raw))
	}
	// The genuine card pays again and gets a newer stamp...
	if st, p2 := a.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 100, "idempotency_key": "p2", "stamp": old}); st != 200 || p2["counter"] != 2.0 {
		t.Fatalf("p2: %d %v", st, p2)
	}
	heal(t, nodes)
	// ...and a clone replays the old stamp at b.
	st, p3 := b.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 100, "idempotency_key": "p3", "stamp": old})
	if st != 200 || p3["counter"] != 3.0 {
		t.Fatalf("p3: %d %v", st, p3)
	}
	heal(t, nodes)
	for i, n := range nodes {
		_, list := n.do("GET", "/api/v1/conflicts", "", nil)
		if strings.Count(list["raw"].(string), `"kind":"stale_stamp"`) != 1 {
			t.Fatalf("node %d: %s", i, list["raw"])
		}
	}
	// A forged stamp is refused and changes nothing.
	raw[len(raw)-1] ^= 1
	before := a.digest()
	if st, r := a.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 1, "idempotency_key": "p4", "stamp": base64.StdEncoding.EncodeToString(raw)}); st != 400 {
		t.Fatalf("forged stamp: %d %v", st, r)
	}
	if a.digest() != before {
		t.Fatal("forged stamp changed the state")
	}
}

// A stamp from an isolated venue teaches another isolated venue the card's
// counter and balance, so the card cannot spend its old balance twice.
func TestStampCarriesStateOffline(t *testing.T) {
	clock := &fakeClock{t: time.Now().UTC()} // after the demo federation's ops: older would be refused
	nodes := newFederation(t, 2, clock)
	a, b := nodes[0], nodes[1]
	hearAll(nodes, clock.Now())
	card := "04AABBCCDD0003"
	a.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 3000, "method": "cash", "idempotency_key": "t"})
	heal(t, nodes)
	clock.Advance(time.Minute)
	_, p1 := a.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 2000, "idempotency_key": "p1"})
	st, p2 := b.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 2000, "idempotency_key": "p2", "stamp": p1["stamp"]})
	if st != 402 || p2["error"] != "insufficient_funds" {
		t.Fatalf("stamp ignored: %d %v", st, p2)
	}
	st, p3 := b.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 1000, "idempotency_key": "p3", "stamp": p1["stamp"]})
	if st != 200 || p3["counter"] != 2.0 || p3["balance_cents"] != 0.0 {
		t.Fatalf("payment with stamp: %d %v", st, p3)
	}
	heal(t, nodes)
	_, list := a.do("GET", "/api/v1/conflicts", "", nil)
	if list["raw"] != "[]\n" {
		t.Fatalf("an honest offline card raised a conflict: %v", list["raw"])
	}
}

// Offline, a stale stamp is refused and refunds wait for the network.
func TestOfflineRefusesStaleStampsAndRefunds(t *testing.T) {
	clock := &fakeClock{t: time.Now().UTC()} // after the demo federation's ops: older would be refused
	nodes := newFederation(t, 2, clock)
	a := nodes[0]
	hearAll(nodes, clock.Now())
	card := "04AABBCCDD0004"
	a.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 5000, "method": "cash", "idempotency_key": "t"})
	_, p1 := a.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 100, "idempotency_key": "p1"})
	if st, _ := a.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 100, "idempotency_key": "p2", "stamp": p1["stamp"]}); st != 200 {
		t.Fatal(st)
	}
	clock.Advance(time.Minute)
	if st, r := a.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 100, "idempotency_key": "clone", "stamp": p1["stamp"]}); st != 409 || r["error"] != "stale_stamp" {
		t.Fatalf("stale stamp offline: %d %v", st, r)
	}
	// A stale stamp while isolated is a clone this venue cannot check: the
	// card is blocked (the refusal's only effect on the state).
	if _, cv := a.do("GET", "/api/v1/cards/"+card, a.token, nil); cv["blocked"] != true {
		t.Fatalf("card after a stale stamp offline: %v", cv)
	}
	before := a.digest()
	if st, r := a.post("/api/v1/refunds", map[string]any{"card": card, "amount_cents": 100, "idempotency_key": "r", "reason": "x"}); st != 503 || r["error"] != "offline" {
		t.Fatalf("refund offline: %d %v", st, r)
	}
	if a.digest() != before {
		t.Fatal("a refused request changed the state")
	}
}
