package node

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/p2p"
)

// TestSecurityHeadersOnEveryAnswer: pages, API answers, errors, static
// files and metrics all carry the security headers.
func TestSecurityHeadersOnEveryAnswer(t *testing.T) {
	v := newTestVenue(t)
	for i, tc := range []struct{ method, path, token string }{
		{"GET", "/", ""},
		{"GET", "/agenda", ""},
		{"GET", "/pos", ""},
		{"GET", "/dashboard", ""},
		{"GET", "/static/style.css", ""},
		{"GET", "/static/pos.js", ""},
		{"GET", "/api/v1/sync/status", ""},
		{"GET", "/api/v1/events", ""},
		{"GET", "/agenda.ics", ""},
		{"GET", "/metrics", ""},
		{"GET", "/healthz", ""},
		{"GET", "/no/such/page", ""},
		{"POST", "/api/v1/payments", ""},
		{"POST", "/api/v1/payments", v.token},
		{"GET", "/api/v1/holder/nope", ""},
		{"GET", "/c/nope", ""},
		{"GET", "/api/v1/backup", ""},
	} {
		t.Run(fmt.Sprint(i, tc.method, tc.path), func(t *testing.T) {
			st, h, _ := v.doRaw(tc.method, tc.path, tc.token, "application/json", []byte("{}"))
			csp := h.Get("Content-Security-Policy")
			for _, want := range []string{"frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'", "default-src 'self'"} {
				if !strings.Contains(csp, want) {
					t.Errorf("%d: CSP %q lacks %s", st, csp, want)
				}
			}
			for k, want := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY"} {
				if got := h.Get(k); got != want {
					t.Errorf("%d: %s = %q, want %q", st, k, got, want)
				}
			}
		})
	}
}

// TestStaffTokenGuessesAreRateLimited: wrong staff tokens from one address
// (API bearer tokens and point of sale sign-ins) are refused with 429 and
// Retry-After once the burst is spent; requests without a token and other
// addresses' requests are not; the bucket refills.
func TestStaffTokenGuessesAreRateLimited(t *testing.T) {
	v := newTestVenue(t)
	burst := 20 // SecurityConfig's default
	c := newWebClient(t, v)
	csrf := func() string {
		_, page := c.do("GET", "/pos", nil, "")
		m := csrfField.FindStringSubmatch(page)
		if m == nil {
			t.Fatal("no sign-in form")
		}
		return m[1]
	}
	for i := range burst {
		if i%2 == 0 {
			if st, _ := v.do("POST", "/api/v1/payments", fmt.Sprintf("guess-%d", i), map[string]any{}); st != 401 {
				t.Fatalf("guess %d: %d, want 401", i, st)
			}
		} else if resp, _ := c.form("/pos/login", url.Values{"csrf": {csrf()}, "token": {fmt.Sprintf("guess-%d", i)}}); resp.StatusCode != 401 {
			t.Fatalf("sign-in guess %d: %s, want 401", i, resp.Status)
		}
	}
	st, h, r := v.doRaw("POST", "/api/v1/payments", "one-more", "application/json", []byte("{}"))
	ra, _ := strconv.Atoi(h.Get("Retry-After"))
	if st != 429 || r["error"] != "too_many_failures" || ra < 1 || ra > 3 {
		t.Fatalf("after %d guesses: %d %v Retry-After %q", burst, st, r, h.Get("Retry-After"))
	}
	if resp, _ := c.form("/pos/login", url.Values{"csrf": {csrf()}, "token": {v.token}}); resp.StatusCode != 429 {
		t.Fatalf("sign-in after the guesses: %s, want 429 (right or wrong, the answer must not tell)", resp.Status)
	}
	if st, _ := v.do("GET", "/api/v1/sync/status", "", nil); st != 200 {
		t.Fatalf("a request without a token: %d", st)
	}
	// The bucket refills: one try every 3 s.
	waitUntil(t, 5*time.Second, "the bucket to refill", func() bool {
		st, _ := v.do("GET", "/api/v1/cards/04AABBCCDD1602", v.token, nil)
		return st != 429
	})
}

// TestHolderTokenGuessesAreRateLimited: wrong card holder tokens (the
// holder's page and its API) are refused with 429 once the burst is spent.
func TestHolderTokenGuessesAreRateLimited(t *testing.T) {
	v := newTestVenue(t)
	for i := range 30 {
		path := fmt.Sprintf("/api/v1/holder/guess%d", i)
		if i%2 == 1 {
			path = fmt.Sprintf("/c/guess%d", i)
		}
		if st, _, _ := v.doRaw("GET", path, "", "", nil); st != 404 {
			t.Fatalf("guess %d: %d, want 404", i, st)
		}
	}
	st, h, _ := v.doRaw("GET", "/c/guess-more", "", "", nil)
	if st != 429 || h.Get("Retry-After") == "" {
		t.Fatalf("after 30 guesses: %d Retry-After %q", st, h.Get("Retry-After"))
	}
	// Staff work goes on from the same address.
	if st, r := v.post("/api/v1/topups", map[string]any{"card": "04AABBCCDD1603", "amount_cents": 100, "method": "cash", "idempotency_key": "t"}); st != 200 {
		t.Fatalf("staff top-up: %d %v", st, r)
	}
}

// TestFailureLimiter checks the buckets on a fake clock.
func TestFailureLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newFailureLimiter(3, time.Second, 2, func() time.Time { return now })
	for i := range 3 {
		if d := l.wait("a"); d != 0 {
			t.Fatalf("try %d waits %v", i, d)
		}
		l.fail("a")
	}
	if d := l.wait("a"); d != time.Second {
		t.Fatalf("after the burst: wait %v, want 1s", d)
	}
	if d := l.wait("b"); d != 0 {
		t.Fatalf("another client waits %v", d)
	}
	now = now.Add(1500 * time.Millisecond)
	if d := l.wait("a"); d != 0 {
		t.Fatalf("after the refill: wait %v", d)
	}
	l.fail("a")
	if d := l.wait("a"); d != 500*time.Millisecond {
		t.Fatalf("half a token left: wait %v", d)
	}
	// Bounded: a third client evicts the fullest or the oldest.
	l.fail("b")
	l.fail("c")
	if len(l.buckets) > 2 {
		t.Fatalf("%d clients tracked, max 2", len(l.buckets))
	}
}

// TestSlowClientsLeavePaymentsServed: 200 clients that send their headers
// a byte at a time (slowloris), and a client sending headers beyond the
// limit, do not stop the tills: payments keep being answered quickly, and
// the slow connections are cut after the header timeout.
func TestSlowClientsLeavePaymentsServed(t *testing.T) {
	v := newTestVenue(t)
	card := "04AABBCCDD1604"
	if st, r := v.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 10000, "method": "cash", "idempotency_key": "t"}); st != 200 {
		t.Fatal(st, r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const slow = 200
	var wg sync.WaitGroup
	var mu sync.Mutex
	closedAfter := []time.Duration{}
	for i := range slow {
		conn, err := net.Dial("tcp", v.node.Addr())
		if err != nil {
			t.Fatalf("slow client %d: %v", i, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			start := time.Now()
			fmt.Fprintf(conn, "POST /api/v1/payments HTTP/1.1\r\nHost: x\r\n")
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if _, err := conn.Write([]byte("X")); err != nil {
					break
				}
				conn.SetReadDeadline(time.Now().Add(time.Millisecond))
				if _, err := conn.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
					break // the server closed the connection
				}
			}
			mu.Lock()
			closedAfter = append(closedAfter, time.Since(start))
			mu.Unlock()
		}()
	}
	// A header flood: 1 MiB of headers.
	conn, err := net.Dial("tcp", v.node.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() {
		fmt.Fprintf(conn, "GET /api/v1/sync/status HTTP/1.1\r\nHost: x\r\n")
		for i := range 1 << 10 {
			if _, err := fmt.Fprintf(conn, "X-Flood-%d: %s\r\n", i, strings.Repeat("a", 1000)); err != nil {
				return
			}
		}
		conn.Write([]byte("\r\n"))
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("header flood: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("header flood: %s, want 431", resp.Status)
	}

	// Payments meanwhile, each answered within a second.
	var worst time.Duration
	for i := range 40 {
		start := time.Now()
		if st, r := v.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 1, "idempotency_key": fmt.Sprintf("p%d", i)}); st != 200 {
			t.Fatalf("payment %d with %d slow clients: %d %v", i, slow, st, r)
		}
		worst = max(worst, time.Since(start))
	}
	if worst > time.Second {
		t.Fatalf("slowest payment with %d slow clients: %v", slow, worst)
	}
	t.Logf("40 payments with %d slow clients and a header flood: slowest %v", slow, worst)
	// The slow clients are cut by the header timeout (5 s), not left open.
	waitUntil(t, 15*time.Second, "the slow connections to be cut", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(closedAfter) == slow
	})
	cancel()
	wg.Wait()
	for _, d := range closedAfter {
		if d > 8*time.Second {
			t.Fatalf("a slow client held its connection %v", d)
		}
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestNoSecretInNodeLogs runs two networked nodes at debug level, uses
// them (payments, wrong tokens, a point of sale sign-in, holder tokens and
// pages, a backup, a restore and a restart from it) and looks for the
// staff tokens, holder token and node keys (hex, base64) in the logs.
func TestNoSecretInNodeLogs(t *testing.T) {
	var logs lockedLog
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	settings := crdt.DefaultSettings()
	settings.HeartbeatInterval = 100
	vs, err := PrepareFederation(t.TempDir(), 2, settings)
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*testVenue
	for i, dv := range vs {
		cfg := p2p.DefaultConfig()
		cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
		cfg.MDNS, cfg.NATPortMap, cfg.HolePunching = false, false, false
		if i > 0 {
			cfg.Bootstrap = nodes[0].node.Network().P2PAddrs()
		}
		n, err := New(Config{DataDir: dv.Dir, HTTPAddr: "127.0.0.1:0", Logger: logger, P2P: &cfg})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		tv := &testVenue{t: t, dir: dv.Dir, token: dv.Token, node: n, api: "http://" + n.Addr()}
		t.Cleanup(tv.stop)
		nodes = append(nodes, tv)
	}
	a, b := nodes[0], nodes[1]
	card := "04AABBCCDD1605"
	waitUntil(t, 10*time.Second, "a top-up", func() bool {
		st, _ := a.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 1000, "method": "cash", "idempotency_key": "t"})
		return st == 200
	})
	a.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 100, "idempotency_key": "p"})
	a.do("POST", "/api/v1/payments", a.token+"x", map[string]any{"card": card, "amount_cents": 100, "idempotency_key": "p2"})
	c := newWebClient(t, a)
	c.signIn()
	_, r := a.do("POST", "/api/v1/cards/"+card+"/holder-token", a.token, nil)
	holder, _ := r["token"].(string)
	if holder == "" {
		t.Fatalf("holder token: %v", r)
	}
	a.do("GET", "/api/v1/holder/"+holder, "", nil)
	a.do("GET", "/c/"+holder, "", nil)
	a.do("GET", "/api/v1/cards/"+card, holder, nil)
	for range 31 {
		a.do("GET", "/c/"+holder+"x", "", nil) // up to the limit's warning
	}
	waitUntil(t, 10*time.Second, "sync", func() bool { return a.digest() == b.digest() })
	file := filepath.Join(t.TempDir(), "a.backup")
	downloadBackupFile(t, a, file)
	bAddrs := b.node.Network().P2PAddrs()
	a.stop()
	dir := filepath.Join(t.TempDir(), "restored")
	if _, err := Restore(context.Background(), RestoreConfig{Backup: file, DataDir: dir, Logger: logger,
		KeyFile: filepath.Join(a.dir, KeyFile), TokensFile: filepath.Join(a.dir, TokensFile)}); err != nil {
		t.Fatal(err)
	}
	cfg := p2p.DefaultConfig()
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.MDNS, cfg.NATPortMap, cfg.HolePunching = false, false, false
	cfg.Bootstrap = bAddrs
	n, err := New(Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", Logger: logger, P2P: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	a2 := &testVenue{t: t, dir: dir, token: a.token, node: n, api: "http://" + n.Addr()}
	t.Cleanup(a2.stop)
	waitUntil(t, 10*time.Second, "the restored node to sign", func() bool {
		st, _ := a2.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 1, "idempotency_key": "p3"})
		return st == 200
	})
	a2.stop()
	b.stop()

	text := logs.String()
	if !strings.Contains(text, "level=DEBUG") || !strings.Contains(text, "backup served") ||
		!strings.Contains(text, "client refused after repeated token failures") {
		t.Fatalf("the logs were not captured: %.500s", text)
	}
	secrets := map[string]string{"holder token": holder}
	for i, v := range nodes {
		secrets[fmt.Sprintf("venue %d staff token", i)] = v.token
		k, _, err := LoadOrCreateKey(filepath.Join(v.dir, KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		priv := k.PrivateKey()
		for j, enc := range []func([]byte) string{hex.EncodeToString, base64.StdEncoding.EncodeToString, base64.RawStdEncoding.EncodeToString, base64.RawURLEncoding.EncodeToString} {
			secrets[fmt.Sprintf("venue %d seed form %d", i, j)] = enc(priv.Seed())
			secrets[fmt.Sprintf("venue %d private key form %d", i, j)] = enc(priv)
		}
		secrets[fmt.Sprintf("venue %d seed upper hex", i)] = strings.ToUpper(hex.EncodeToString(priv.Seed()))
	}
	for what, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("the logs hold the %s", what)
		}
	}
}

// lockedLog is a log sink safe for concurrent writes.
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
