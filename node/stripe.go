package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	pstripe "github.com/cagnotte/cagnotte/node/stripe"
	"github.com/prometheus/client_golang/prometheus"
)

// Online top-ups and refunds through Stripe (issue 14, docs/stripe.md). A
// node holding the account's key is a gateway: it creates Checkout
// Sessions, receives the signed webhook and credits the card with a top-up
// op whose external reference is the PaymentIntent id, so the ledger
// counts a payment once across the federation whichever gateway records it
// (crdt's duplicate_ref rule). What the op set does not hold (webhook
// failures for staff, refund requests) is in the gateway's journal,
// DataDir/stripe.journal.

// StripeJournalFile is the gateway's journal in the data directory.
const StripeJournalFile = "stripe.journal"

// Journal record kinds.
const (
	jFailure = "failure"
	jSession = "session"
	jCredit  = "credit"
	jRefund  = "refund"
)

// stripeGateway is the node's Stripe state; client and journal are nil on
// a node that is not a gateway.
type stripeGateway struct {
	cfg     StripeConfig
	client  *pstripe.Client
	journal *pstripe.Journal
	// calls bounds the Stripe calls public endpoints make at once.
	calls chan struct{}
	// refundMu serialises refund processing.
	refundMu sync.Mutex
	wake     chan struct{}

	// webhooks counts webhook answers by outcome (or refusal).
	webhooks *prometheus.CounterVec

	mu       sync.Mutex
	sessions map[string]sessionInfo // made here, for polls
	perCard  map[crdt.CardID][]time.Time
	// looked records when a poll last asked Stripe about a session.
	looked map[string]time.Time
}

type sessionInfo struct {
	Card   crdt.CardID `json:"card"`
	Amount int64       `json:"amount_cents"`
	TopUp  string      `json:"topup,omitempty"`
	PI     string      `json:"payment_intent,omitempty"`
	State  string      `json:"state,omitempty"` // created, pending, failed, paid
}

// Bounds of what public endpoints may make a gateway do.
const (
	maxSessions        = 10000
	sessionsPerCardHr  = 20
	maxWebhookBody     = 256 << 10
	stripeCallsAtOnce  = 8
	stripeRefundPrefix = "cagnotte-refund-"
)

// openStripe sets up the node's gateway from its config (New calls it).
func (n *Node) openStripe() error {
	cfg := n.cfg.Stripe
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	g := &stripeGateway{cfg: cfg, calls: make(chan struct{}, stripeCallsAtOnce), wake: make(chan struct{}, 1),
		sessions: map[string]sessionInfo{}, perCard: map[crdt.CardID][]time.Time{}, looked: map[string]time.Time{}}
	n.stripe = g
	if !cfg.Gateway() {
		return nil
	}
	g.webhooks = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cagnotte_stripe_webhooks_total",
		Help: "Stripe webhook deliveries by outcome (credited, duplicate, recorded, …, bad_signature, stale_signature, error)."}, []string{"outcome"})
	openFailures := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cagnotte_stripe_failures_open",
		Help: "Paid Stripe payments this gateway could not credit, waiting for staff."}, func() float64 {
		var open float64
		for _, f := range journalList[StripeFailure](g.journal, jFailure) {
			if f.Status == "open" {
				open++
			}
		}
		return open
	})
	if err := n.metrics.reg.Register(g.webhooks); err != nil {
		return fmt.Errorf("node: stripe metrics: %w", err)
	}
	if err := n.metrics.reg.Register(openFailures); err != nil {
		return fmt.Errorf("node: stripe metrics: %w", err)
	}
	c, err := pstripe.New(pstripe.Config{SecretKey: cfg.SecretKey, WebhookSecret: cfg.WebhookSecret, Tolerance: cfg.Tolerance,
		BackendURL: cfg.BackendURL, Currency: n.set.State.Currency, PaymentMethods: cfg.PaymentMethods, Logger: n.log})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	j, err := pstripe.OpenJournal(filepath.Join(n.cfg.DataDir, StripeJournalFile))
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	g.client, g.journal = c, j
	n.log.Info("stripe gateway", "public_url", cfg.PublicURL, "currency", c.Currency(), "test_mode", strings.HasPrefix(cfg.SecretKey, "sk_test_") || strings.HasPrefix(cfg.SecretKey, "rk_test_"))
	return nil
}

// startStripe runs the gateway's refund retries until ctx ends (Start
// calls it).
func (n *Node) startStripe(ctx context.Context) {
	g := n.stripe
	if g == nil || g.client == nil {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		t := time.NewTicker(g.cfg.RetryInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-g.wake:
			}
			n.processRefunds(ctx)
		}
	}()
}

// closeStripe closes the journal (Close calls it).
func (n *Node) closeStripe() error {
	if n.stripe == nil || n.stripe.journal == nil {
		return nil
	}
	return n.stripe.journal.Close()
}

// registerStripeRoutes adds the Stripe endpoints (docs/api.md, "Stripe").
func (n *Node) registerStripeRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/stripe", n.handleStripeStatus)
	mux.HandleFunc("POST /api/v1/stripe/webhook", n.handleStripeWebhook)
	mux.HandleFunc("POST /api/v1/holder/{token}/topups", n.handleStripeCheckout)
	mux.HandleFunc("GET /api/v1/holder/{token}/topups/{session}", n.handleStripePoll)
	mux.HandleFunc("POST /api/v1/holder/{token}/refunds", n.handleStripeRefundRequest)
	mux.HandleFunc("GET /api/v1/holder/{token}/refunds", n.handleStripeHolderRefunds)
	mux.HandleFunc("GET /api/v1/stripe/topups", n.staff(n.handleStripeTopUps))
	mux.HandleFunc("GET /api/v1/stripe/refunds", n.staff(n.handleStripeRefunds))
	mux.HandleFunc("POST /api/v1/stripe/refunds/{id}/approve", n.staff(n.handleStripeRefundAction("approve")))
	mux.HandleFunc("POST /api/v1/stripe/refunds/{id}/retry", n.staff(n.handleStripeRefundAction("retry")))
	mux.HandleFunc("POST /api/v1/stripe/refunds/{id}/reject", n.staff(n.handleStripeRefundAction("reject")))
	mux.HandleFunc("GET /api/v1/stripe/failures", n.staff(n.handleStripeFailures))
	mux.HandleFunc("POST /api/v1/stripe/failures/{pi}/refund", n.staff(n.handleStripeFailureAction("refund")))
	mux.HandleFunc("POST /api/v1/stripe/failures/{pi}/credit", n.staff(n.handleStripeFailureAction("credit")))
}

// API errors of the Stripe endpoints.
var (
	errNotGateway = apiErr(http.StatusNotFound, "not_found", "this node is not a Stripe gateway")
	errBadHolder  = apiErr(http.StatusNotFound, "not_found", "no card for this link: the holder token is not valid")
)

func stripeUnavailable(err error) *APIError {
	return apiErr(http.StatusServiceUnavailable, "stripe_unavailable", "online payment is not reachable right now (cash top-ups at a venue still work): "+err.Error())
}

// stripeError maps a pstripe error to the API's.
func stripeError(err error) error {
	switch {
	case errors.Is(err, pstripe.ErrUnavailable):
		return stripeUnavailable(err)
	case errors.Is(err, pstripe.ErrRefused):
		return apiErr(http.StatusBadGateway, "stripe_error", err.Error())
	}
	return err
}

// StripeStatus is the answer of GET /api/v1/stripe: what a card holder
// page needs to show (or hide) the online top-up.
type StripeStatus struct {
	// Gateway is true when this node takes online top-ups.
	Gateway bool `json:"gateway"`
	// GatewayURL, on a node that is not a gateway, is where online top-ups
	// are available ("online top-up available at …"); absent: hide it.
	GatewayURL string `json:"gateway_url,omitempty"`
	Currency   string `json:"currency"`
	MinCents   int64  `json:"min_cents"`
	MaxCents   int64  `json:"max_cents"`
	// BalanceMaxCents is the federation's balance ceiling (0: none).
	BalanceMaxCents uint64 `json:"balance_max_cents"`
	AutoRefunds     bool   `json:"auto_refunds"`
}

func (n *Node) handleStripeStatus(w http.ResponseWriter, r *http.Request) {
	g := n.stripe
	st := StripeStatus{Gateway: g.client != nil, MinCents: g.cfg.MinTopUp, MaxCents: g.cfg.MaxTopUp, AutoRefunds: g.cfg.AutoApproveRefunds}
	if !st.Gateway {
		st.GatewayURL = g.cfg.GatewayURL
	}
	n.View(func(set *crdt.OpSet) {
		st.Currency = set.State.Currency
		st.BalanceMaxCents = set.State.Settings.BalanceMax
	})
	writeJSON(w, http.StatusOK, st)
}

// holderCard verifies the path's holder token.
func (n *Node) holderCard(r *http.Request) (crdt.CardID, error) {
	card, err := n.VerifyHolderToken(r.PathValue("token"))
	if err != nil {
		return "", errBadHolder
	}
	return card, nil
}

type checkoutRequest struct {
	AmountCents    int64  `json:"amount_cents"`
	IdempotencyKey string `json:"idempotency_key"`
}

// CheckoutAnswer is the answer of POST /api/v1/holder/{token}/topups.
type CheckoutAnswer struct {
	pstripe.Checkout
	Card   crdt.CardID `json:"card"`
	Amount int64       `json:"amount_cents"`
	// Poll is the path the holder's page polls until the credit shows.
	Poll string `json:"poll"`
}

// handleStripeCheckout creates a Checkout Session for the holder's card.
func (n *Node) handleStripeCheckout(w http.ResponseWriter, r *http.Request) {
	g := n.stripe
	card, err := n.holderCard(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req checkoutRequest
	if err := n.decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.IdempotencyKey == "" || len(req.IdempotencyKey) > 128 {
		writeError(w, badRequest("idempotency_key is required (at most 128 bytes)"))
		return
	}
	if g.client == nil {
		msg := "this node takes no online top-ups"
		if g.cfg.GatewayURL != "" {
			msg += "; online top-up available at " + g.cfg.GatewayURL
		}
		writeError(w, apiErr(http.StatusServiceUnavailable, "stripe_unavailable", msg))
		return
	}
	if err := n.revokedErr(); err != nil {
		writeError(w, err) // its webhook could not credit the payment
		return
	}
	if req.AmountCents < g.cfg.MinTopUp || req.AmountCents > g.cfg.MaxTopUp {
		writeError(w, badRequest("amount_cents must be between %d and %d", g.cfg.MinTopUp, g.cfg.MaxTopUp))
		return
	}
	var cerr error
	n.View(func(set *crdt.OpSet) {
		if set.State.Card(card) == nil {
			cerr = ErrUnknownCard
			return
		}
		_, err := set.State.DecideTopUp(card, uint64(req.AmountCents))
		switch {
		case errors.Is(err, crdt.ErrCardBlocked):
			cerr = ErrCardBlocked
		case errors.Is(err, crdt.ErrBalanceCeiling):
			cerr = apiErr(http.StatusUnprocessableEntity, "balance_ceiling", "this top-up would take the card beyond the federation's balance ceiling: "+err.Error())
		case err != nil:
			cerr = err
		}
	})
	if cerr != nil {
		writeError(w, cerr)
		return
	}
	if !g.allowSession(card, n.cfg.Now()) {
		writeError(w, apiErr(http.StatusTooManyRequests, "too_many_requests", fmt.Sprintf("at most %d online top-ups started per card and hour", sessionsPerCardHr)))
		return
	}
	// The token (not only the card) is hashed: it is in the return URLs,
	// and Stripe replays a key only with the same parameters.
	tok := r.PathValue("token")
	h := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%d\x00%s", tok, req.AmountCents, req.IdempotencyKey)))
	topup := hex.EncodeToString(h[:8])
	select {
	case g.calls <- struct{}{}:
		defer func() { <-g.calls }()
	case <-r.Context().Done():
		writeError(w, r.Context().Err())
		return
	}
	co, err := g.client.CreateCheckout(r.Context(), pstripe.CheckoutRequest{
		Card: string(card), Amount: req.AmountCents, TopUp: topup,
		SuccessURL:     g.cfg.PublicURL + "/c/" + tok + "?topup={CHECKOUT_SESSION_ID}",
		CancelURL:      g.cfg.PublicURL + "/c/" + tok + "?topup=cancelled",
		Label:          "Cagnotte top-up, card " + string(card),
		IdempotencyKey: "cagnotte-checkout-" + hex.EncodeToString(h[:16]),
	})
	if err != nil {
		n.log.Warn("stripe checkout session not created", "card", card, "err", err)
		writeError(w, stripeError(err))
		return
	}
	g.remember(co.ID, sessionInfo{Card: card, Amount: req.AmountCents, TopUp: topup, State: "created"})
	n.log.Info("stripe checkout session created", "card", card, "amount_cents", req.AmountCents, "session", co.ID)
	writeJSON(w, http.StatusOK, CheckoutAnswer{Checkout: co, Card: card, Amount: req.AmountCents, Poll: "/api/v1/holder/" + tok + "/topups/" + co.ID})
}

// allowSession counts a new session of card, at most sessionsPerCardHr an
// hour.
func (g *stripeGateway) allowSession(card crdt.CardID, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	recent := g.perCard[card][:0]
	for _, t := range g.perCard[card] {
		if now.Sub(t) < time.Hour {
			recent = append(recent, t)
		}
	}
	if len(recent) >= sessionsPerCardHr {
		g.perCard[card] = recent
		return false
	}
	g.perCard[card] = append(recent, now)
	if len(g.perCard) > maxSessions {
		for k := range g.perCard {
			if k != card {
				delete(g.perCard, k)
				break
			}
		}
	}
	return true
}

// pollLookUpEvery bounds how often polls of one session ask Stripe.
const pollLookUpEvery = 3 * time.Second

// mayLookUp reports whether a poll of session id may ask Stripe now.
func (g *stripeGateway) mayLookUp(id string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if t, ok := g.looked[id]; ok && now.Sub(t) < pollLookUpEvery {
		return false
	}
	if len(g.looked) >= maxSessions {
		for k, t := range g.looked {
			if now.Sub(t) >= pollLookUpEvery {
				delete(g.looked, k)
			}
		}
		if len(g.looked) >= maxSessions {
			return false
		}
	}
	g.looked[id] = now
	return true
}

func (g *stripeGateway) remember(id string, s sessionInfo) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.sessions) >= maxSessions {
		for k := range g.sessions {
			delete(g.sessions, k)
			break
		}
	}
	g.sessions[id] = s
}

// session returns what the gateway knows of a session: from its journal
// (a webhook seen here) or its memory (made here).
func (g *stripeGateway) session(id string) (sessionInfo, bool) {
	var s sessionInfo
	if g.journal != nil {
		if ok, err := g.journal.Get(jSession, id, &s); ok && err == nil {
			return s, true
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	s, ok := g.sessions[id]
	return s, ok
}

// TopUpState is the answer of GET /api/v1/holder/{token}/topups/{session}.
type TopUpState struct {
	Session string      `json:"session_id"`
	Card    crdt.CardID `json:"card"`
	// Status: pending (not paid yet, or the webhook has not arrived),
	// credited, failed (the payment failed), recorded_for_staff (paid but
	// not credited: see message; staff refund or credit it).
	Status  string     `json:"status"`
	Amount  int64      `json:"amount_cents,omitempty"`
	Balance int64      `json:"balance_cents"`
	OpID    *crdt.OpID `json:"op_id,omitempty"`
	Message string     `json:"message,omitempty"`
}

// handleStripePoll answers the holder's page after Checkout: it polls
// until the webhook's credit shows (never credited on the browser's
// return).
func (n *Node) handleStripePoll(w http.ResponseWriter, r *http.Request) {
	g := n.stripe
	card, err := n.holderCard(r)
	if err != nil {
		writeError(w, err)
		return
	}
	id := r.PathValue("session")
	if len(id) == 0 || len(id) > 255 || strings.ContainsAny(id, "/?#") {
		writeError(w, badRequest("bad session id"))
		return
	}
	s, known := g.session(id)
	if known && s.Card != card {
		writeError(w, apiErr(http.StatusNotFound, "not_found", "no such top-up for this card"))
		return
	}
	if s.PI == "" && g.client != nil && g.mayLookUp(id, n.cfg.Now()) {
		// The webhook reached another gateway, or not yet: ask Stripe.
		select {
		case g.calls <- struct{}{}:
			ss, err := g.client.GetSession(r.Context(), id)
			<-g.calls
			if err == nil && (ss.Card == string(card) || (known && s.Card == card)) {
				known, s.PI, s.Card = true, ss.PaymentIntent, card
				if s.State == "" {
					s.State = ss.PaymentStatus
				}
			}
		case <-r.Context().Done():
		}
	}
	if !known {
		writeError(w, apiErr(http.StatusNotFound, "not_found", "no such top-up for this card"))
		return
	}
	st := TopUpState{Session: id, Card: card, Status: "pending", Amount: s.Amount}
	if s.State == "failed" {
		st.Status, st.Message = "failed", "the payment failed; nothing was charged"
	}
	n.View(func(set *crdt.OpSet) {
		if c := set.State.Card(card); c != nil {
			st.Balance = c.Balance
		}
		if s.PI == "" {
			return
		}
		if e, ok := ledgerRef(set, "topup/"+s.PI); ok {
			st.Status, st.Amount = "credited", e.Amount
			id := e.Winner.ID
			st.OpID = &id
		}
	})
	if st.Status == "pending" && s.PI != "" && g.journal != nil {
		var f StripeFailure
		if ok, _ := g.journal.Get(jFailure, s.PI, &f); ok {
			st.Status, st.Message = "recorded_for_staff", "paid but not credited ("+f.Message+"): the venue's staff will refund or credit it"
		}
	}
	writeJSON(w, http.StatusOK, st)
}

// ledgerRef returns the op the ledger counts for an external reference.
func ledgerRef(set *crdt.OpSet, ref string) (crdt.RefEntry, bool) {
	return set.State.Index().Ref(ref)
}

// stripeSubmit runs fn in the writer and returns once its ops are durable.
func (n *Node) stripeSubmit(ctx context.Context, fn func(tx *writeTx) (any, error)) (any, error) {
	if err := n.revokedErr(); err != nil {
		return nil, err
	}
	n.waitSignable(ctx, 3*time.Second)
	var v any
	res := n.submit(ctx, nil, func(tx *writeTx) result {
		var err error
		v, err = fn(tx)
		return result{err: err}
	})
	if res.err != nil {
		return nil, res.err
	}
	return v, nil
}

// journalList decodes the records of a kind.
func journalList[T any](j *pstripe.Journal, kind string) []T {
	out := []T{}
	if j == nil {
		return out
	}
	for _, raw := range j.List(kind) {
		var v T
		if json.Unmarshal(raw, &v) == nil {
			out = append(out, v)
		}
	}
	return out
}
