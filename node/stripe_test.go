package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/node/stripe/stripetest"
	"github.com/cagnotte/cagnotte/p2p"
)

// Secrets of the tests: they must never show in logs, ops or pages.
const (
	testStripeKey     = "sk_test_cagnotteSECRETkey0123456789"
	testStripeWebhook = "whsec_cagnotteSECRETwebhook0123456789"
)

// stripeCfg is a gateway's config against the given Stripe API URL.
func stripeCfg(api string) StripeConfig {
	return StripeConfig{SecretKey: testStripeKey, WebhookSecret: testStripeWebhook, PublicURL: "https://gateway.example",
		BackendURL: api, RetryInterval: 200 * time.Millisecond, StaggerWindow: -1}
}

// deadURL is an address where nothing listens.
func deadURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

// startStripeNode starts the node of dir with sc (and p2p, if not nil),
// logging at debug level into logs (if not nil).
func startStripeNode(t *testing.T, dir, token string, sc StripeConfig, net *p2p.Config, logs io.Writer) *testVenue {
	t.Helper()
	lg := quietLogger()
	if logs != nil {
		lg = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	n, err := New(Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", Logger: lg, Stripe: sc, P2P: net})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	v := &testVenue{t: t, dir: dir, token: token, node: n, api: "http://" + n.Addr()}
	t.Cleanup(v.stop)
	return v
}

// newStripeVenue is a one-venue federation whose node is a gateway.
func newStripeVenue(t *testing.T, sc StripeConfig, logs io.Writer) *testVenue {
	t.Helper()
	vs, err := PrepareDemo(t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	return startStripeNode(t, vs[0].Dir, vs[0].Token, sc, nil, logs)
}

// webhook delivers a signed payload (signed now unless header is given).
func (v *testVenue) webhook(payload []byte, header string) (int, map[string]any) {
	v.t.Helper()
	if header == "" {
		header = stripetest.Sign(payload, testStripeWebhook, time.Now())
	}
	return v.postStripe(payload, header)
}

func (v *testVenue) postStripe(payload []byte, header string) (int, map[string]any) {
	req, _ := http.NewRequest("POST", v.api+"/api/v1/stripe/webhook", bytes.NewReader(payload))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Stripe-Signature", header)
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		return 0, map[string]any{"transport_error": err.Error()} // the caller checks the status
	}
	defer resp.Body.Close()
	out := map[string]any{}
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// knownCard tops card up in cash and returns its holder token.
func (v *testVenue) knownCard(card string, cents int64) string {
	v.t.Helper()
	if st, r := v.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": cents, "method": "cash", "idempotency_key": "cash-" + card}); st != 200 {
		v.t.Fatalf("cash top-up: %d %v", st, r)
	}
	st, r := v.post("/api/v1/cards/"+card+"/holder-token", nil)
	if st != 200 {
		v.t.Fatalf("holder token: %d %v", st, r)
	}
	return r["token"].(string)
}

// cardState reads a card's balance and its counted online top-ups.
func (v *testVenue) cardState(card string) (balance int64, online int, blocked bool) {
	v.t.Helper()
	st, r := v.do("GET", "/api/v1/cards/"+card+"?limit=500", v.token, nil)
	if st != 200 {
		v.t.Fatalf("card %s: %d %v", card, st, r)
	}
	for _, e := range r["history"].([]any) {
		e := e.(map[string]any)
		if e["kind"] == "topup" && e["label"] == crdt.MethodOnline && e["counted"] == true {
			online++
		}
	}
	return int64(r["balance_cents"].(float64)), online, r["blocked"] == true
}

func TestStripeCheckoutSession(t *testing.T) {
	v := newStripeVenue(t, stripeCfg(stripetest.Start(t)), nil)
	card := "04AABBCCDD1001"
	tok := v.knownCard(card, 6000)
	st, r := v.do("GET", "/api/v1/stripe", "", nil)
	if st != 200 || r["gateway"] != true || r["currency"] != "EUR" || r["min_cents"] != 500.0 || r["max_cents"] != 10000.0 {
		t.Fatalf("status: %d %v", st, r)
	}
	cases := []struct {
		name   string
		token  string
		body   any
		status int
		code   string
	}{
		{"ok", tok, map[string]any{"amount_cents": 2000, "idempotency_key": "k1"}, 200, ""},
		{"below the minimum", tok, map[string]any{"amount_cents": 100, "idempotency_key": "k2"}, 400, "invalid_request"},
		{"above the maximum", tok, map[string]any{"amount_cents": 20000, "idempotency_key": "k3"}, 400, "invalid_request"},
		{"beyond the balance ceiling", tok, map[string]any{"amount_cents": 10000, "idempotency_key": "k4"}, 422, "balance_ceiling"},
		{"no idempotency key", tok, map[string]any{"amount_cents": 2000}, 400, "invalid_request"},
		{"unknown field", tok, map[string]any{"amount_cents": 2000, "idempotency_key": "k5", "card": card}, 400, "invalid_request"},
		{"bad token", "AAAA", map[string]any{"amount_cents": 2000, "idempotency_key": "k6"}, 404, "not_found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, r := v.do("POST", "/api/v1/holder/"+c.token+"/topups", "", c.body)
			if st != c.status || (c.code != "" && r["error"] != c.code) {
				t.Fatalf("%d %v", st, r)
			}
			if st == 200 {
				if !strings.HasPrefix(r["session_id"].(string), "cs_") || r["url"] == "" || !strings.HasSuffix(r["poll"].(string), r["session_id"].(string)) {
					t.Fatalf("checkout: %v", r)
				}
				// Not paid yet: the poll (which asks Stripe) says pending.
				if st, p := v.do("GET", r["poll"].(string), "", nil); st != 200 || p["status"] != "pending" || p["balance_cents"] != 6000.0 {
					t.Fatalf("poll: %d %v", st, p)
				}
			}
		})
	}
	// A blocked card cannot be topped up online.
	if st, r := v.post("/api/v1/cards/"+card+"/block", map[string]any{"reason": "lost", "idempotency_key": "b"}); st != 200 {
		t.Fatal(st, r)
	}
	if st, r := v.do("POST", "/api/v1/holder/"+tok+"/topups", "", map[string]any{"amount_cents": 2000, "idempotency_key": "k7"}); st != 403 || r["error"] != "card_blocked" {
		t.Fatalf("blocked: %d %v", st, r)
	}
}

func TestStripeWebhookValidEvent(t *testing.T) {
	v := newStripeVenue(t, stripeCfg(deadURL(t)), nil)
	card := "04AABBCCDD1002"
	tok := v.knownCard(card, 1000)
	st, r := v.webhook(stripetest.CheckoutCompleted("evt_valid", "cs_valid", "pi_valid", card, 2000, "EUR", true), "")
	if st != 200 || r["outcome"] != "credited" || r["op_id"] == nil {
		t.Fatalf("webhook: %d %v", st, r)
	}
	if b, online, _ := v.cardState(card); b != 3000 || online != 1 {
		t.Fatalf("balance %d, online top-ups %d", b, online)
	}
	// The holder's page polls until the credit shows.
	st, r = v.do("GET", "/api/v1/holder/"+tok+"/topups/cs_valid", "", nil)
	if st != 200 || r["status"] != "credited" || r["balance_cents"] != 3000.0 || r["amount_cents"] != 2000.0 {
		t.Fatalf("poll: %d %v", st, r)
	}
	// payment_intent.succeeded for the same payment: counted once.
	st, r = v.webhook(stripetest.PaymentIntentSucceeded("evt_valid_pi", "pi_valid", card, 2000, "EUR"), "")
	if st != 200 || r["outcome"] != "duplicate" {
		t.Fatalf("second event of the payment: %d %v", st, r)
	}
	if b, online, _ := v.cardState(card); b != 3000 || online != 1 {
		t.Fatalf("balance %d, online top-ups %d", b, online)
	}
	// Another card's token does not see this top-up.
	other := v.knownCard("04AABBCCDD1003", 100)
	if st, _ := v.do("GET", "/api/v1/holder/"+other+"/topups/cs_valid", "", nil); st != 404 {
		t.Fatalf("other card polls: %d", st)
	}
	st, list := v.do("GET", "/api/v1/stripe/topups", v.token, nil)
	if st != 200 || !strings.Contains(list["raw"].(string), `"payment_intent":"pi_valid"`) {
		t.Fatalf("staff list of top-ups: %d %v", st, list)
	}
}

func TestStripeWebhookBadSignature(t *testing.T) {
	v := newStripeVenue(t, stripeCfg(deadURL(t)), nil)
	card := "04AABBCCDD1004"
	v.knownCard(card, 1000)
	before := v.digest()
	p := stripetest.CheckoutCompleted("evt_bad", "cs_bad", "pi_bad", card, 2000, "EUR", true)
	for _, h := range []string{stripetest.Sign(p, "whsec_someone_else", time.Now()), "", "t=123", "garbage"} {
		if st, r := v.postStripe(p, h); st != 400 || r["error"] != "bad_signature" {
			t.Fatalf("header %q: %d %v", h, st, r)
		}
	}
	if v.digest() != before {
		t.Fatal("a refused webhook changed the state")
	}
}

func TestStripeWebhookStaleTimestamp(t *testing.T) {
	v := newStripeVenue(t, stripeCfg(deadURL(t)), nil)
	card := "04AABBCCDD1005"
	v.knownCard(card, 1000)
	before := v.digest()
	p := stripetest.CheckoutCompleted("evt_stale", "cs_stale", "pi_stale", card, 2000, "EUR", true)
	if st, r := v.webhook(p, stripetest.Sign(p, testStripeWebhook, time.Now().Add(-6*time.Minute))); st != 400 || r["error"] != "stale_signature" {
		t.Fatalf("stale: %d %v", st, r)
	}
	if v.digest() != before {
		t.Fatal("a refused webhook changed the state")
	}
	// Within the tolerance it counts.
	if st, r := v.webhook(p, stripetest.Sign(p, testStripeWebhook, time.Now().Add(-4*time.Minute))); st != 200 || r["outcome"] != "credited" {
		t.Fatalf("fresh enough: %d %v", st, r)
	}
}

func TestStripeWebhookSameEventFiveTimes(t *testing.T) {
	v := newStripeVenue(t, stripeCfg(deadURL(t)), nil)
	card := "04AABBCCDD1006"
	v.knownCard(card, 1000)
	p := stripetest.CheckoutCompleted("evt_5x", "cs_5x", "pi_5x", card, 2500, "EUR", true)
	var wg sync.WaitGroup
	var credited, dup atomic.Int32
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, r := v.webhook(p, "")
			if st != 200 {
				t.Errorf("delivery: %d %v", st, r)
			}
			switch r["outcome"] {
			case "credited":
				credited.Add(1)
			case "duplicate":
				dup.Add(1)
			}
		}()
	}
	wg.Wait()
	if credited.Load() != 1 || dup.Load() != 4 {
		t.Fatalf("credited %d, duplicate %d", credited.Load(), dup.Load())
	}
	if b, online, _ := v.cardState(card); b != 3500 || online != 1 {
		t.Fatalf("balance %d, online top-ups %d", b, online)
	}
	_, list := v.do("GET", "/api/v1/conflicts", "", nil)
	if strings.Contains(list["raw"].(string), "duplicate_ref") {
		t.Fatalf("redeliveries made duplicate ops: %s", list["raw"])
	}
}

// TestStripeSameEventTwoGatewaysOneCredit delivers one event to two
// gateways of a 3-node network at once: one credit, on every node.
func TestStripeSameEventTwoGatewaysOneCredit(t *testing.T) {
	settings := crdt.DefaultSettings()
	settings.HeartbeatInterval = 100
	settings.IsolationAfter = 600
	vs, err := PrepareFederation(t.TempDir(), 3, settings)
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*testVenue
	for i, dv := range vs {
		cfg := p2p.DefaultConfig()
		cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
		cfg.MDNS, cfg.NATPortMap, cfg.HolePunching = false, false, false
		cfg.SyncInterval = 500 * time.Millisecond
		if i > 0 {
			cfg.Bootstrap = nodes[0].node.Network().P2PAddrs()
		}
		var sc StripeConfig
		if i < 2 {
			sc = stripeCfg(deadURL(t))
			sc.StaggerWindow = 0 // the default: the gateways stagger their credits
		}
		nodes = append(nodes, startStripeNode(t, dv.Dir, dv.Token, sc, &cfg, nil))
	}
	a, b, c := nodes[0], nodes[1], nodes[2]
	card := "04AABBCCDD1007"
	c.knownCard(card, 1000)
	waitUntil(t, 20*time.Second, "the card to reach both gateways", func() bool { return a.digest() == c.digest() && b.digest() == c.digest() })
	p := stripetest.CheckoutCompleted("evt_two", "cs_two", "pi_two", card, 4000, "EUR", true)
	start := time.Now()
	var wg sync.WaitGroup
	outcomes := make([]string, 2)
	for i, gw := range []*testVenue{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, r := gw.webhook(p, "")
			if st != 200 {
				t.Errorf("gateway %d: %d %v", i, st, r)
			}
			outcomes[i], _ = r["outcome"].(string)
		}()
	}
	wg.Wait()
	answered := time.Since(start)
	waitUntil(t, 20*time.Second, "convergence", func() bool { return a.digest() == b.digest() && b.digest() == c.digest() })
	t.Logf("both gateways answered in %v; the credit was on all 3 nodes %v after the deliveries", answered, time.Since(start))
	for i, v := range nodes {
		if bal, online, _ := v.cardState(card); bal != 5000 || online != 1 {
			t.Fatalf("node %d: balance %d, counted online top-ups %d", i, bal, online)
		}
	}
	t.Logf("outcomes at the two gateways: %v", outcomes)
}

func TestStripeWebhookCardNotCreditableRecordedAndRefundable(t *testing.T) {
	api := stripetest.Start(t)
	v := newStripeVenue(t, stripeCfg(api), nil)
	blocked, full := "04AABBCCDD1008", "04AABBCCDD1009"
	tokBlocked := v.knownCard(blocked, 1000)
	v.knownCard(full, 14000)
	if st, r := v.post("/api/v1/cards/"+blocked+"/block", map[string]any{"reason": "lost", "idempotency_key": "b"}); st != 200 {
		t.Fatal(st, r)
	}
	events := []struct {
		pi, card, reason string
		currency         string
	}{
		{"pi_unknown", "04AABBCCDD10FF", "unknown_card", "EUR"},
		{"pi_blocked", blocked, "card_blocked", "EUR"},
		{"pi_ceiling", full, "balance_ceiling", "EUR"},
		{"pi_usd", full, "currency_mismatch", "USD"},
		{"pi_nocard", "", "unknown_card", "EUR"},
	}
	before := v.digest()
	for _, e := range events {
		p := stripetest.CheckoutCompleted("evt_"+e.pi, "cs_"+e.pi, e.pi, e.card, 2000, e.currency, true)
		for i := 0; i < 2; i++ { // the redelivery finds it recorded
			if st, r := v.webhook(p, ""); st != 200 || r["outcome"] != "recorded" || r["reason"] != e.reason {
				t.Fatalf("%s delivery %d: %d %v", e.pi, i, st, r)
			}
		}
	}
	if v.digest() != before {
		t.Fatal("a payment that cannot be credited changed the ledger")
	}
	st, r := v.do("GET", "/api/v1/holder/"+tokBlocked+"/topups/cs_pi_blocked", "", nil)
	if st != 200 || r["status"] != "recorded_for_staff" {
		t.Fatalf("poll: %d %v", st, r)
	}
	if st, _ := v.do("GET", "/api/v1/stripe/failures", "", nil); st != 401 {
		t.Fatalf("failures without a staff token: %d", st)
	}
	var list []StripeFailure
	getFailures := func() {
		st, r := v.do("GET", "/api/v1/stripe/failures", v.token, nil)
		if st != 200 {
			t.Fatal(st, r)
		}
		if err := json.Unmarshal([]byte(r["raw"].(string)), &list); err != nil {
			t.Fatal(err)
		}
	}
	getFailures()
	if len(list) != len(events) {
		t.Fatalf("%d failures listed: %+v", len(list), list)
	}
	// Kept across a restart.
	v.stop()
	v2 := startStripeNode(t, v.dir, v.token, stripeCfg(api), nil, nil)
	v = v2
	getFailures()
	if len(list) != len(events) {
		t.Fatalf("after restart, %d failures listed", len(list))
	}
	// Staff refund the unknown card's payment through Stripe.
	st, r = v.post("/api/v1/stripe/failures/pi_unknown/refund", map[string]any{})
	if st != 200 || r["status"] != "refunded" || !strings.HasPrefix(r["refund"].(string), "re_") {
		t.Fatalf("refund of a failure: %d %v", st, r)
	}
	if st, r := v.post("/api/v1/stripe/failures/pi_unknown/refund", map[string]any{}); st != 409 {
		t.Fatalf("second refund of a failure: %d %v", st, r)
	}
	// The blocked card, unblocked, takes its payment.
	if st, r := v.post("/api/v1/stripe/failures/pi_blocked/credit", map[string]any{}); st != 409 || r["error"] != "card_blocked" {
		t.Fatalf("credit on a blocked card: %d %v", st, r)
	}
	if st, r := v.post("/api/v1/cards/"+blocked+"/unblock", map[string]any{"reason": "found", "idempotency_key": "u"}); st != 200 {
		t.Fatal(st, r)
	}
	if st, r := v.post("/api/v1/stripe/failures/pi_blocked/credit", map[string]any{}); st != 200 || r["status"] != "credited" {
		t.Fatalf("credit after unblock: %d %v", st, r)
	}
	if b, online, _ := v.cardState(blocked); b != 3000 || online != 1 {
		t.Fatalf("balance %d, online %d", b, online)
	}
	// A redelivery after that credits nothing more.
	v.webhook(stripetest.CheckoutCompleted("evt_pi_blocked", "cs_pi_blocked", "pi_blocked", blocked, 2000, "EUR", true), "")
	if b, online, _ := v.cardState(blocked); b != 3000 || online != 1 {
		t.Fatalf("after redelivery: balance %d, online %d", b, online)
	}
	// Another currency cannot be credited: refund it.
	if st, r := v.post("/api/v1/stripe/failures/pi_usd/credit", map[string]any{}); st != 409 {
		t.Fatalf("credit in another currency: %d %v", st, r)
	}
	_, m := v.do("GET", "/metrics", "", nil)
	if !strings.Contains(m["raw"].(string), "cagnotte_stripe_failures_open 3") {
		t.Fatalf("metrics: open failures not 3:\n%s", m["raw"])
	}
}

func TestStripeAsyncPaymentPendingThenCredited(t *testing.T) {
	v := newStripeVenue(t, stripeCfg(deadURL(t)), nil)
	card := "04AABBCCDD100A"
	tok := v.knownCard(card, 1000)
	if st, r := v.webhook(stripetest.CheckoutCompleted("evt_a1", "cs_async", "pi_async", card, 2000, "EUR", false), ""); st != 200 || r["outcome"] != "pending" {
		t.Fatalf("unpaid completion: %d %v", st, r)
	}
	if st, r := v.do("GET", "/api/v1/holder/"+tok+"/topups/cs_async", "", nil); st != 200 || r["status"] != "pending" || r["balance_cents"] != 1000.0 {
		t.Fatalf("poll while pending: %d %v", st, r)
	}
	if st, r := v.webhook(stripetest.CheckoutAsync("evt_a2", "cs_async", "pi_async", card, 2000, "EUR", true), ""); st != 200 || r["outcome"] != "credited" {
		t.Fatalf("async success: %d %v", st, r)
	}
	if st, r := v.do("GET", "/api/v1/holder/"+tok+"/topups/cs_async", "", nil); st != 200 || r["status"] != "credited" || r["balance_cents"] != 3000.0 {
		t.Fatalf("poll after: %d %v", st, r)
	}
	// A failed async payment credits nothing, and the poll says so.
	if st, r := v.webhook(stripetest.CheckoutAsync("evt_a3", "cs_async2", "pi_async2", card, 2000, "EUR", false), ""); st != 200 || r["outcome"] != "payment_failed" {
		t.Fatalf("async failure: %d %v", st, r)
	}
	if st, r := v.do("GET", "/api/v1/holder/"+tok+"/topups/cs_async2", "", nil); st != 200 || r["status"] != "failed" {
		t.Fatalf("poll after failure: %d %v", st, r)
	}
}

// fixturePI returns the PaymentIntent id stripe-mock's search answers with
// (its fixture), so that the ledger can credit it to a test card.
func fixturePI(t *testing.T, api string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", api+"/v1/payment_intents/search?query=x", nil)
	req.SetBasicAuth("sk_test_x", "")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || len(out.Data) == 0 {
		t.Fatalf("stripe-mock search: %v %+v", err, out)
	}
	return out.Data[0].ID
}

func TestStripeRefundRemainingBalance(t *testing.T) {
	api := stripetest.Start(t)
	v := newStripeVenue(t, stripeCfg(api), nil)
	card := "04AABBCCDD100B"
	tok := v.knownCard(card, 1000) // cash: stays for the cash desk
	pi := fixturePI(t, api)
	if st, r := v.webhook(stripetest.CheckoutCompleted("evt_r1", "cs_r1", pi, card, 3000, "EUR", true), ""); st != 200 || r["outcome"] != "credited" {
		t.Fatalf("credit: %d %v", st, r)
	}
	if st, r := v.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 500, "idempotency_key": "p1"}); st != 200 {
		t.Fatal(st, r)
	}
	st, r := v.do("POST", "/api/v1/holder/"+tok+"/refunds", "", map[string]any{"idempotency_key": "rq"})
	if st != 200 || r["status"] != "pending" || r["balance_cents"] != 3500.0 {
		t.Fatalf("request: %d %v", st, r)
	}
	id := r["id"].(string)
	// Asking again returns the open request.
	if st, r2 := v.do("POST", "/api/v1/holder/"+tok+"/refunds", "", map[string]any{}); st != 200 || r2["id"] != id {
		t.Fatalf("second request: %d %v", st, r2)
	}
	if st, _ := v.do("POST", "/api/v1/stripe/refunds/"+id+"/approve", "", map[string]any{}); st != 401 {
		t.Fatalf("approve without staff token: %d", st)
	}
	st, r = v.post("/api/v1/stripe/refunds/"+id+"/approve", map[string]any{})
	if st != 200 || r["status"] != "refunded" || r["amount_cents"] != 3000.0 || r["cash_cents"] != 500.0 {
		t.Fatalf("approve: %d %v", st, r)
	}
	items := r["items"].([]any)
	it := items[0].(map[string]any)
	if len(items) != 1 || it["payment_intent"] != pi || it["status"] != "refunded" || !strings.HasPrefix(it["refund"].(string), "re_") {
		t.Fatalf("items: %v", items)
	}
	if b, _, _ := v.cardState(card); b != 500 {
		t.Fatalf("balance after refund %d, want the cash part 500", b)
	}
	// Stripe's charge.refunded for Cagnotte's own refund debits nothing more.
	ref := it["ref"].(string)
	before := v.digest()
	if st, r := v.webhook(stripetest.ChargeRefunded("evt_r2", "ch_r", pi, 3000, stripetest.RefundObject(it["refund"].(string), pi, 3000, ref)), ""); st != 200 || r["outcome"] != "nothing" {
		t.Fatalf("own refund's webhook: %d %v", st, r)
	}
	if v.digest() != before {
		t.Fatal("own refund's webhook changed the ledger")
	}
	// The holder sees it; a new request finds nothing online to refund.
	if st, r := v.do("GET", "/api/v1/holder/"+tok+"/refunds", "", nil); st != 200 || !strings.Contains(r["raw"].(string), `"status":"refunded"`) {
		t.Fatalf("holder's refunds: %d %v", st, r)
	}
}

// flakyStripe is a real HTTP proxy to stripe-mock whose refund calls
// fail as told: the real Stripe API's failures, on a real connection.
type flakyStripe struct {
	fail   atomic.Int32 // refund calls left to fail
	status atomic.Int32 // with this status
	calls  atomic.Int32
	// lose: the first refund is made at stripe-mock but its answer is
	// lost (503), and later refund calls are lost before reaching it; the
	// refund made is listed (GET /v1/refunds) with its metadata, as
	// Stripe would.
	lose atomic.Bool
	mu   sync.Mutex
	made map[string]any
}

func (f *flakyStripe) start(t *testing.T, api string) string {
	u, _ := url.Parse(api)
	proxy := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "GET" && r.URL.Path == "/v1/refunds" {
			f.mu.Lock()
			made := f.made
			f.mu.Unlock()
			if made != nil && r.URL.Query().Get("payment_intent") == made["payment_intent"] {
				w.Header().Set("Content-Type", "application/json")
				json.NewEncoder(w).Encode(map[string]any{"object": "list", "url": "/v1/refunds", "has_more": false, "data": []any{made}})
				return
			}
		}
		if r.Method == "POST" && r.URL.Path == "/v1/refunds" && f.lose.Load() {
			f.calls.Add(1)
			body, _ := io.ReadAll(r.Body)
			form, _ := url.ParseQuery(string(body))
			f.mu.Lock()
			first := f.made == nil
			f.mu.Unlock()
			if first {
				r.Body = io.NopCloser(bytes.NewReader(body))
				rec := httptest.NewRecorder()
				proxy.ServeHTTP(rec, r)
				var made map[string]any
				json.Unmarshal(rec.Body.Bytes(), &made)
				made["metadata"] = map[string]any{"cagnotte_ref": form.Get("metadata[cagnotte_ref]")}
				made["payment_intent"] = form.Get("payment_intent")
				f.mu.Lock()
				f.made = made
				f.mu.Unlock()
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error":{"type":"api_error","message":"answer lost"}}`)
			return
		}
		if r.Method == "POST" && r.URL.Path == "/v1/refunds" {
			f.calls.Add(1)
			if f.fail.Add(-1) >= 0 {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(int(f.status.Load()))
				fmt.Fprint(w, `{"error":{"type":"invalid_request_error","code":"charge_disputed","message":"This charge is disputed."}}`)
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestStripeRefundPartialFailureRetried(t *testing.T) {
	api := stripetest.Start(t)
	var flaky flakyStripe
	v := newStripeVenue(t, stripeCfg(flaky.start(t, api)), nil)
	card := "04AABBCCDD100C"
	tok := v.knownCard(card, 100)
	pi := fixturePI(t, api)
	if st, r := v.webhook(stripetest.CheckoutCompleted("evt_f1", "cs_f1", pi, card, 3000, "EUR", true), ""); st != 200 {
		t.Fatal(st, r)
	}
	// Stripe refuses the refund: the card is debited, the item failed,
	// the request partial, for staff to see.
	flaky.status.Store(400)
	flaky.fail.Store(1)
	_, r := v.do("POST", "/api/v1/holder/"+tok+"/refunds", "", map[string]any{})
	id := r["id"].(string)
	st, r := v.post("/api/v1/stripe/refunds/"+id+"/approve", map[string]any{})
	if st != 200 || r["status"] != "partial" {
		t.Fatalf("approve: %d %v", st, r)
	}
	it := r["items"].([]any)[0].(map[string]any)
	if it["status"] != "failed" || !strings.Contains(it["error"].(string), "charge_disputed") || it["op_id"] == nil {
		t.Fatalf("item: %v", it)
	}
	if b, _, _ := v.cardState(card); b != 100 {
		t.Fatalf("balance %d: the card is debited before Stripe is asked", b)
	}
	if st, r := v.do("GET", "/api/v1/stripe/refunds?status=partial", v.token, nil); st != 200 || !strings.Contains(r["raw"].(string), id) {
		t.Fatalf("staff list: %d %v", st, r)
	}
	// Stripe unreachable for a while (503s beyond stripe-go's own retries):
	// retrying, then the background loop finishes it.
	flaky.status.Store(503)
	flaky.fail.Store(3)
	st, r = v.post("/api/v1/stripe/refunds/"+id+"/retry", map[string]any{})
	if st != 200 || r["status"] != "refunding" {
		t.Fatalf("retry: %d %v", st, r)
	}
	waitUntil(t, 30*time.Second, "the background retry", func() bool {
		_, r := v.do("GET", "/api/v1/stripe/refunds", v.token, nil)
		return strings.Contains(r["raw"].(string), `"status":"refunded"`)
	})
	if b, _, _ := v.cardState(card); b != 100 {
		t.Fatalf("balance %d after the retries: debited once", b)
	}
	if _, r := v.do("GET", "/api/v1/conflicts", "", nil); strings.Contains(r["raw"].(string), "duplicate_ref") {
		t.Fatalf("retries made duplicate debits: %v", r)
	}
}

// TestStripeRefundAnswerLostNotRefundedTwice: Stripe made the refund but
// its answer was lost; the retry finds it (by its metadata) instead of
// asking again, which after Stripe's 24 h of idempotency would refund
// twice.
func TestStripeRefundAnswerLostNotRefundedTwice(t *testing.T) {
	api := stripetest.Start(t)
	var flaky flakyStripe
	flaky.lose.Store(true)
	v := newStripeVenue(t, stripeCfg(flaky.start(t, api)), nil)
	card := "04AABBCCDD1012"
	tok := v.knownCard(card, 100)
	pi := fixturePI(t, api)
	if st, r := v.webhook(stripetest.CheckoutCompleted("evt_l1", "cs_l1", pi, card, 2000, "EUR", true), ""); st != 200 {
		t.Fatal(st, r)
	}
	_, r := v.do("POST", "/api/v1/holder/"+tok+"/refunds", "", map[string]any{})
	st, r := v.post("/api/v1/stripe/refunds/"+r["id"].(string)+"/approve", map[string]any{})
	if st != 200 || r["status"] != "refunding" {
		t.Fatalf("approve with the answer lost: %d %v", st, r)
	}
	calls := flaky.calls.Load()
	flaky.mu.Lock()
	made := flaky.made["id"]
	flaky.mu.Unlock()
	if made == nil {
		t.Fatal("the refund was not made at stripe-mock")
	}
	flaky.lose.Store(false)
	var got map[string]any
	waitUntil(t, 30*time.Second, "the retry", func() bool {
		_, r := v.do("GET", "/api/v1/stripe/refunds", v.token, nil)
		var list []map[string]any
		json.Unmarshal([]byte(r["raw"].(string)), &list)
		if len(list) == 1 && list[0]["status"] == "refunded" {
			got = list[0]
			return true
		}
		return false
	})
	it := got["items"].([]any)[0].(map[string]any)
	if it["refund"] != made || flaky.calls.Load() != calls {
		t.Fatalf("refund %v (made %v); refund calls %d then %d", it["refund"], made, calls, flaky.calls.Load())
	}
	if b, _, _ := v.cardState(card); b != 100 {
		t.Fatalf("balance %d", b)
	}
}

func TestStripeDashboardRefundAndDisputeDebitAndFlag(t *testing.T) {
	v := newStripeVenue(t, stripeCfg(deadURL(t)), nil)
	card := "04AABBCCDD100D"
	v.knownCard(card, 1000)
	if st, r := v.webhook(stripetest.CheckoutCompleted("evt_d1", "cs_d1", "pi_d1", card, 4000, "EUR", true), ""); st != 200 {
		t.Fatal(st, r)
	}
	refund := stripetest.ChargeRefunded("evt_d2", "ch_d1", "pi_d1", 4000, stripetest.RefundObject("re_dash", "pi_d1", 1500, ""))
	for i := 0; i < 3; i++ {
		st, r := v.webhook(refund, "")
		want := "debited"
		if i > 0 {
			want = "nothing"
		}
		if st != 200 || r["outcome"] != want {
			t.Fatalf("dashboard refund delivery %d: %d %v", i, st, r)
		}
	}
	if b, _, blocked := v.cardState(card); b != 3500 || !blocked {
		t.Fatalf("after a dashboard refund: balance %d, blocked %v", b, blocked)
	}
	dispute := stripetest.DisputeCreated("evt_d3", "dp_1", "ch_d1", "pi_d1", 2500)
	for i := 0; i < 2; i++ {
		if st, r := v.webhook(dispute, ""); st != 200 {
			t.Fatalf("dispute: %d %v", st, r)
		}
	}
	if b, _, blocked := v.cardState(card); b != 1000 || !blocked {
		t.Fatalf("after a dispute: balance %d, blocked %v", b, blocked)
	}
}

func TestStripeUnreachableCashStillWorks(t *testing.T) {
	v := newStripeVenue(t, stripeCfg(deadURL(t)), nil)
	card := "04AABBCCDD100E"
	tok := v.knownCard(card, 1000)
	st, r := v.do("POST", "/api/v1/holder/"+tok+"/topups", "", map[string]any{"amount_cents": 2000, "idempotency_key": "k"})
	if st != 503 || r["error"] != "stripe_unavailable" || !strings.Contains(r["message"].(string), "cash") {
		t.Fatalf("checkout with Stripe unreachable: %d %v", st, r)
	}
	if st, r := v.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 2000, "method": "cash", "idempotency_key": "c2"}); st != 200 || r["balance_cents"] != 3000.0 {
		t.Fatalf("cash top-up: %d %v", st, r)
	}
}

func TestStripeNotGatewayPointsToGateway(t *testing.T) {
	v := newStripeVenue(t, StripeConfig{GatewayURL: "https://pay.example/"}, nil)
	card := "04AABBCCDD100F"
	tok := v.knownCard(card, 1000)
	st, r := v.do("GET", "/api/v1/stripe", "", nil)
	if st != 200 || r["gateway"] != false || r["gateway_url"] != "https://pay.example" {
		t.Fatalf("status: %d %v", st, r)
	}
	st, r = v.do("POST", "/api/v1/holder/"+tok+"/topups", "", map[string]any{"amount_cents": 2000, "idempotency_key": "k"})
	if st != 503 || !strings.Contains(r["message"].(string), "https://pay.example") {
		t.Fatalf("checkout: %d %v", st, r)
	}
	p := stripetest.CheckoutCompleted("evt_ng", "cs_ng", "pi_ng", card, 2000, "EUR", true)
	if st, _ := v.webhook(p, ""); st != 404 {
		t.Fatalf("webhook on a node without key: %d", st)
	}
	// Without a gateway URL, nothing points anywhere.
	v2 := newStripeVenue(t, StripeConfig{}, nil)
	if _, r := v2.do("GET", "/api/v1/stripe", "", nil); r["gateway"] != false || r["gateway_url"] != nil {
		t.Fatalf("status without gateway: %v", r)
	}
}

// TestStripeSecretsNeverInLogsOpsOrPages runs the whole flow with debug
// logs and looks for the key and the webhook secret everywhere.
func TestStripeSecretsNeverInLogsOpsOrPages(t *testing.T) {
	api := stripetest.Start(t)
	var logs lockedLog
	v := newStripeVenue(t, stripeCfg(api), &logs)
	card := "04AABBCCDD1010"
	tok := v.knownCard(card, 1000)
	pi := fixturePI(t, api)
	var pages []string
	_, r := v.do("POST", "/api/v1/holder/"+tok+"/topups", "", map[string]any{"amount_cents": 2000, "idempotency_key": "k"})
	pages = append(pages, fmt.Sprint(r))
	// A bad signature's log line must not carry the secret either.
	p := stripetest.CheckoutCompleted("evt_s1", "cs_s1", pi, card, 2000, "EUR", true)
	v.webhook(p, stripetest.Sign(p, "whsec_wrong", time.Now()))
	v.webhook(p, "")
	_, r = v.do("POST", "/api/v1/holder/"+tok+"/refunds", "", map[string]any{})
	_, r = v.post("/api/v1/stripe/refunds/"+r["id"].(string)+"/approve", map[string]any{})
	pages = append(pages, fmt.Sprint(r))
	for _, path := range []string{"/", "/api/v1/stripe", "/api/v1/sync/status", "/metrics", "/api/v1/stripe/refunds", "/api/v1/stripe/topups", "/api/v1/stripe/failures", "/api/v1/holder/" + tok, "/api/v1/holder/" + tok + "/topups/cs_s1", "/api/v1/cards/" + card} {
		_, r := v.do("GET", path, v.token, nil)
		pages = append(pages, fmt.Sprint(r))
	}
	var ops bytes.Buffer
	v.node.View(func(set *crdt.OpSet) {
		for author, seq := range set.VersionVector() {
			v.node.store.ReadRange(author, 1, seq, func(op crdt.Op) error {
				ops.Write(op.Body)
				return nil
			})
		}
	})
	journal, _ := os.ReadFile(filepath.Join(v.dir, StripeJournalFile))
	if ops.Len() == 0 || len(logs.String()) == 0 {
		t.Fatal("nothing to search")
	}
	for _, secret := range []string{testStripeKey, testStripeWebhook, strings.TrimPrefix(testStripeKey, "sk_test_"), strings.TrimPrefix(testStripeWebhook, "whsec_")} {
		for what, text := range map[string]string{"logs": logs.String(), "ops": ops.String(), "pages": strings.Join(pages, "\n"), "journal": string(journal)} {
			if strings.Contains(text, secret) {
				t.Errorf("the secret %q shows in the %s", secret[:8]+"…", what)
			}
		}
	}
	if !strings.Contains(logs.String(), "stripe webhook") {
		t.Fatal("the logs searched hold no Stripe line")
	}
}

func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		mode os.FileMode
		body string
		ok   bool
	}{
		{"owner only", 0o600, "sk_test_x\n", true},
		{"read only", 0o400, "sk_test_x", true},
		{"group readable", 0o640, "sk_test_x", false},
		{"world readable", 0o644, "sk_test_x", false},
		{"empty", 0o600, "  \n", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_"))
			if err := os.WriteFile(p, []byte(c.body), c.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(p, c.mode)
			s, err := ReadSecretFile(p)
			if c.ok != (err == nil) || (c.ok && s != "sk_test_x") {
				t.Fatalf("%q %v", s, err)
			}
			if err != nil && strings.Contains(err.Error(), "sk_test_x") {
				t.Fatal("the error shows the secret")
			}
		})
	}
}

// BenchmarkStripeWebhookCredit delivers distinct signed paid events over
// HTTP to one gateway (each answered once its credit is fsync'd), from
// GOMAXPROCS×4 concurrent senders: the webhook's throughput with group
// commit.
func BenchmarkStripeWebhookCredit(b *testing.B) {
	vs, err := PrepareDemo(b.TempDir(), 1)
	if err != nil {
		b.Fatal(err)
	}
	n, err := New(Config{DataDir: vs[0].Dir, HTTPAddr: "127.0.0.1:0", Logger: quietLogger(), Stripe: StripeConfig{
		SecretKey: testStripeKey, WebhookSecret: testStripeWebhook, PublicURL: "https://gateway.example", BackendURL: "http://127.0.0.1:9",
		StaggerWindow: -1}}) // the gateway's capacity: the stagger adds latency (0 to 1 s by default), not work
	if err != nil {
		b.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	v := &testVenue{t: b, dir: vs[0].Dir, token: vs[0].Token, node: n, api: "http://" + n.Addr()}
	const cards = 64
	for i := 0; i < cards; i++ {
		card := fmt.Sprintf("04AABBCC%06X", i)
		if st, r := v.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 1, "method": "cash", "idempotency_key": "c" + card}); st != 200 {
			b.Fatal(st, r)
		}
	}
	var seq atomic.Int64
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := seq.Add(1)
			card := fmt.Sprintf("04AABBCC%06X", i%cards)
			pi := fmt.Sprintf("pi_bench_%d", i)
			p := stripetest.PaymentIntentSucceeded("evt_"+pi, pi, card, 1, "EUR")
			if st, r := v.postStripe(p, stripetest.Sign(p, testStripeWebhook, time.Now())); st != 200 || r["outcome"] != "credited" {
				b.Errorf("%d %v", st, r)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "webhooks/s")
}
