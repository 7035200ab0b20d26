package stripe_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/node/stripe"
	"github.com/cagnotte/cagnotte/node/stripe/stripetest"
)

const secret = "whsec_test_secret"

func TestParseWebhook(t *testing.T) {
	now := time.Now()
	card := "04AABBCCDD0001"
	cases := []struct {
		name    string
		payload []byte
		header  func(p []byte) string
		err     error
		kind    stripe.Kind
		check   func(t *testing.T, ev stripe.Event)
	}{
		{name: "checkout paid", payload: stripetest.CheckoutCompleted("evt_1", "cs_1", "pi_1", card, 2000, "EUR", true), kind: stripe.Paid,
			check: func(t *testing.T, ev stripe.Event) {
				if ev.PaymentIntent != "pi_1" || ev.Session != "cs_1" || ev.Card != card || ev.Amount != 2000 || ev.Currency != "EUR" || ev.TopUp != "t-cs_1" {
					t.Fatalf("%+v", ev)
				}
			}},
		{name: "checkout unpaid (async method)", payload: stripetest.CheckoutCompleted("evt_2", "cs_2", "pi_2", card, 2000, "EUR", false), kind: stripe.Pending},
		{name: "async succeeded", payload: stripetest.CheckoutAsync("evt_3", "cs_3", "pi_3", card, 2000, "EUR", true), kind: stripe.Paid},
		{name: "async failed", payload: stripetest.CheckoutAsync("evt_4", "cs_4", "pi_4", card, 2000, "EUR", false), kind: stripe.Failed},
		{name: "payment intent succeeded", payload: stripetest.PaymentIntentSucceeded("evt_5", "pi_5", card, 1500, "eur"), kind: stripe.Paid,
			check: func(t *testing.T, ev stripe.Event) {
				if ev.PaymentIntent != "pi_5" || ev.Amount != 1500 || ev.Card != card {
					t.Fatalf("%+v", ev)
				}
			}},
		{name: "charge refunded", payload: stripetest.ChargeRefunded("evt_6", "ch_6", "pi_6", 2000, stripetest.RefundObject("re_1", "pi_6", 500, ""), stripetest.RefundObject("re_2", "pi_6", 300, "cagnotte-refund-x-0")), kind: stripe.Refunded,
			check: func(t *testing.T, ev stripe.Event) {
				if len(ev.Refunds) != 2 || ev.Refunds[0].ID != "re_1" || ev.Refunds[0].Amount != 500 || ev.Refunds[1].Ref != "cagnotte-refund-x-0" {
					t.Fatalf("%+v", ev.Refunds)
				}
			}},
		{name: "dispute", payload: stripetest.DisputeCreated("evt_7", "dp_7", "ch_7", "pi_7", 2000), kind: stripe.Disputed,
			check: func(t *testing.T, ev stripe.Event) {
				if ev.Dispute != "dp_7" || ev.Amount != 2000 || ev.PaymentIntent != "pi_7" {
					t.Fatalf("%+v", ev)
				}
			}},
		{name: "ignored type", payload: stripetest.Event("evt_8", "customer.created", map[string]any{"id": "cus_1", "object": "customer"}), kind: stripe.Ignored},
		{name: "bad signature", payload: stripetest.PaymentIntentSucceeded("evt_9", "pi_9", card, 100, "eur"),
			header: func(p []byte) string { return stripetest.Sign(p, "whsec_other", now) }, err: stripe.ErrBadSignature},
		{name: "no signature", payload: stripetest.PaymentIntentSucceeded("evt_10", "pi_10", card, 100, "eur"),
			header: func([]byte) string { return "" }, err: stripe.ErrBadSignature},
		{name: "stale timestamp", payload: stripetest.PaymentIntentSucceeded("evt_11", "pi_11", card, 100, "eur"),
			header: func(p []byte) string { return stripetest.Sign(p, secret, now.Add(-10*time.Minute)) }, err: stripe.ErrStale},
		{name: "tampered body", payload: stripetest.PaymentIntentSucceeded("evt_12", "pi_12", card, 100, "eur"),
			header: func(p []byte) string {
				return stripetest.Sign([]byte(strings.Replace(string(p), "100", "900", 1)), secret, now)
			}, err: stripe.ErrBadSignature},
		{name: "paid event without payment intent", payload: stripetest.Event("evt_13", "payment_intent.succeeded", map[string]any{"object": "payment_intent"}), err: stripe.ErrBadEvent},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := stripetest.Sign(c.payload, secret, now)
			if c.header != nil {
				h = c.header(c.payload)
			}
			ev, err := stripe.ParseWebhook(c.payload, h, secret, 5*time.Minute)
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("err = %v, want %v", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev.Kind != c.kind {
				t.Fatalf("kind %v, want %v", ev.Kind, c.kind)
			}
			if c.check != nil {
				c.check(t, ev)
			}
		})
	}
}

func TestJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j, err := stripe.OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	type rec struct{ N int }
	for i := 0; i < 3; i++ {
		if err := j.Put("a", "x", rec{i}); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Put("a", "y", rec{7}); err != nil {
		t.Fatal(err)
	}
	if err := j.Put("b", "x", rec{9}); err != nil {
		t.Fatal(err)
	}
	j.Close()
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("journal mode %v", st.Mode().Perm())
	}
	// A crash in the middle of a line: the torn line is dropped.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"k":"a","id":"z","v":{"N":`)
	f.Close()
	j, err = stripe.OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	var r rec
	if ok, err := j.Get("a", "x", &r); !ok || err != nil || r.N != 2 {
		t.Fatalf("a/x = %v %v %v", r, ok, err)
	}
	if ok, _ := j.Get("a", "z", &r); ok {
		t.Fatal("torn record read")
	}
	if l := j.List("a"); len(l) != 2 || string(l[0]) != `{"N":7}` {
		t.Fatalf("list %s", l)
	}
	if err := j.Put("a", "w", rec{1}); err != nil {
		t.Fatal(err)
	}
	j.Close()
	j, err = stripe.OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := j.Get("a", "w", &r); !ok || r.N != 1 {
		t.Fatal("record after a torn line lost")
	}
	// Compaction keeps the last versions.
	for i := 0; i < 200; i++ {
		j.Put("c", "k", rec{i})
	}
	j.Close()
	j, err = stripe.OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if ok, _ := j.Get("c", "k", &r); !ok || r.N != 199 {
		t.Fatalf("after compaction %v", r)
	}
	b, _ := os.ReadFile(path)
	if n := strings.Count(string(b), "\n"); n != 5 {
		t.Fatalf("compacted journal has %d lines", n)
	}
}

func TestClientAgainstStripeMock(t *testing.T) {
	url := stripetest.Start(t)
	c, err := stripe.New(stripe.Config{SecretKey: "sk_test_123", WebhookSecret: secret, BackendURL: url, Currency: "EUR"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	co, err := c.CreateCheckout(ctx, stripe.CheckoutRequest{Card: "04AABBCCDD0001", Amount: 2000, TopUp: "t1",
		SuccessURL: "https://gw.example/c/tok?topup={CHECKOUT_SESSION_ID}", CancelURL: "https://gw.example/c/tok", Label: "Top-up", IdempotencyKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(co.ID, "cs_") || co.URL == "" {
		t.Fatalf("checkout %+v", co)
	}
	if _, err := c.GetSession(ctx, co.ID); err != nil {
		t.Fatal(err)
	}
	r, err := c.Refund(ctx, stripe.RefundRequest{PaymentIntent: "pi_123", Amount: 700, Ref: "cagnotte-refund-a-0", Card: "04AABBCCDD0001"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.ID, "re_") || r.Amount != 700 {
		t.Fatalf("refund %+v", r)
	}
	// stripe-mock's listed refunds carry no Cagnotte metadata.
	if _, found, err := c.FindRefund(ctx, "pi_123", "cagnotte-refund-a-0"); err != nil || found {
		t.Fatalf("find refund: %v %v", found, err)
	}
	pays, err := c.CardPayments(ctx, "04AABBCCDD0001")
	if err != nil {
		t.Fatal(err)
	}
	if len(pays) == 0 || !strings.HasPrefix(pays[0].PaymentIntent, "pi_") {
		t.Fatalf("payments %+v", pays)
	}
	// Stripe refuses a request it finds invalid: not worth retrying.
	bad, _ := stripe.New(stripe.Config{SecretKey: "sk_test_123", WebhookSecret: secret, BackendURL: url, Currency: "EUR", PaymentMethods: []string{"no_such_method"}})
	if _, err := bad.CreateCheckout(ctx, stripe.CheckoutRequest{Card: "04AABBCCDD0001", Amount: 2000, SuccessURL: "https://x/", CancelURL: "https://x/", Label: "x"}); !errors.Is(err, stripe.ErrRefused) {
		t.Fatalf("invalid checkout: %v", err)
	}
	// Stripe unreachable: worth retrying.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String()
	ln.Close()
	c2, _ := stripe.New(stripe.Config{SecretKey: "sk_test_123", WebhookSecret: secret, BackendURL: dead, Currency: "EUR", MaxNetworkRetries: 1, Timeout: 2 * time.Second})
	if _, err := c2.CreateCheckout(ctx, stripe.CheckoutRequest{Card: "04AABBCCDD0001", Amount: 2000, SuccessURL: "https://x/", CancelURL: "https://x/", Label: "x"}); !errors.Is(err, stripe.ErrUnavailable) {
		t.Fatalf("unreachable: %v", err)
	}
}

func TestConfigNeedsSecrets(t *testing.T) {
	if _, err := stripe.New(stripe.Config{Currency: "EUR"}); !errors.Is(err, stripe.ErrNoSecret) {
		t.Fatal(err)
	}
}
