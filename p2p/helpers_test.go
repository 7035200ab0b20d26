package p2p_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/node"
	"github.com/cagnotte/cagnotte/p2p"
	"github.com/libp2p/go-libp2p/core/peer"
)

// waitFor polls cond every 20 ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

func testLogger(t testing.TB, name string) *slog.Logger {
	if os.Getenv("P2P_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name(), "name", name)
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testNetConfig is a fast network on loopback TCP: no mDNS, no NAT
// traversal, heartbeats every 100 ms, periodic sync every second.
func testNetConfig() p2p.Config {
	cfg := p2p.DefaultConfig()
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.MDNS, cfg.NATPortMap, cfg.HolePunching = false, false, false
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.SyncInterval = time.Second
	cfg.GapSyncDelay = 100 * time.Millisecond
	cfg.StreamTimeout = 5 * time.Second
	return cfg
}

// cluster is a demo federation of venues with real nodes (Badger in a temp
// dir) on real libp2p hosts on loopback.
type cluster struct {
	t      *testing.T
	root   string
	venues []node.DemoVenue
	nodes  []*node.Node
	// listen overrides a venue's listen addresses.
	listen map[int][]string
}

func newCluster(t *testing.T, venues int) *cluster {
	t.Helper()
	root := t.TempDir()
	vs, err := node.PrepareDemo(root, venues)
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, root: root, venues: vs, nodes: make([]*node.Node, venues), listen: map[int][]string{}}
	t.Cleanup(func() {
		for i := range c.nodes {
			c.stop(i)
		}
	})
	return c
}

// start starts venue i, bootstrapping from the venues in boot (running).
func (c *cluster) start(i int, boot ...int) *node.Node {
	c.t.Helper()
	cfg := testNetConfig()
	if l := c.listen[i]; l != nil {
		cfg.ListenAddrs = l
	}
	for _, b := range boot {
		cfg.Bootstrap = append(cfg.Bootstrap, c.nodes[b].Network().P2PAddrs()...)
	}
	n, err := node.New(node.Config{DataDir: c.venues[i].Dir, HTTPAddr: "127.0.0.1:0", Logger: testLogger(c.t, c.venues[i].Name), P2P: &cfg})
	if err != nil {
		c.t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		n.Close()
		c.t.Fatal(err)
	}
	c.nodes[i] = n
	return n
}

func (c *cluster) stop(i int) {
	if c.nodes[i] != nil {
		if err := c.nodes[i].Close(); err != nil {
			c.t.Errorf("close %s: %v", c.venues[i].Name, err)
		}
		c.nodes[i] = nil
	}
}

func (c *cluster) id(i int) peer.ID {
	id, err := p2p.PeerID(c.venues[i].Key)
	if err != nil {
		c.t.Fatal(err)
	}
	return id
}

func (c *cluster) digest(i int) string { return c.nodes[i].Status().Digest }

// converged reports whether the running nodes in idx all hold the same ops.
func (c *cluster) converged(idx ...int) bool {
	d := c.digest(idx[0])
	for _, i := range idx[1:] {
		if c.digest(i) != d {
			return false
		}
	}
	return true
}

// connected reports whether venue i has an open connection to venue j.
func (c *cluster) connected(i, j int) bool {
	for _, p := range c.nodes[i].Network().Connected() {
		if p == c.id(j) {
			return true
		}
	}
	return false
}

// do sends a request to venue i's API and decodes the JSON answer.
func (c *cluster) do(i int, method, path string, body any) (int, map[string]any) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		p, _ := json.Marshal(body)
		rd = bytes.NewReader(p)
	}
	req, err := http.NewRequest(method, "http://"+c.nodes[i].Addr()+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.venues[i].Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	raw, _ := io.ReadAll(resp.Body)
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &out); err != nil {
			c.t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	return resp.StatusCode, out
}

// must posts and fails the test unless the answer is 200.
func (c *cluster) must(i int, path string, body map[string]any) map[string]any {
	c.t.Helper()
	st, out := c.do(i, "POST", path, body)
	if st != 200 {
		c.t.Fatalf("%s POST %s %v: %d %v", c.venues[i].Name, path, body, st, out)
	}
	return out
}

func (c *cluster) topUp(i int, card string, cents int, key string) {
	c.must(i, "/api/v1/topups", map[string]any{"card": card, "amount_cents": cents, "method": "cash", "idempotency_key": key})
}

func (c *cluster) pay(i int, card string, cents int, key string) string {
	out := c.must(i, "/api/v1/payments", map[string]any{"card": card, "amount_cents": cents, "idempotency_key": key})
	return out["op_id"].(string)
}

func (c *cluster) event(i int, id, title string) {
	start := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Hour)
	c.must(i, "/api/v1/events", map[string]any{"id": id, "title": title, "starts_at": start, "ends_at": start.Add(2 * time.Hour), "idempotency_key": "ev-" + id})
}

// history returns the sorted op ids of a card's history at venue i.
func (c *cluster) history(i int, card string) []string {
	c.t.Helper()
	st, out := c.do(i, "GET", "/api/v1/cards/"+card, nil)
	if st != 200 {
		c.t.Fatalf("card %s at %s: %d %v", card, c.venues[i].Name, st, out)
	}
	var ids []string
	for _, e := range out["history"].([]any) {
		ids = append(ids, e.(map[string]any)["op_id"].(string))
	}
	sort.Strings(ids)
	return ids
}

func (c *cluster) events(i int) int {
	c.t.Helper()
	resp, err := http.Get("http://" + c.nodes[i].Addr() + "/api/v1/events")
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var evs []any
	if err := json.NewDecoder(resp.Body).Decode(&evs); err != nil {
		c.t.Fatal(err)
	}
	return len(evs)
}

func card(n int) string { return fmt.Sprintf("04A1B2C3D4E5%02X", n) }
