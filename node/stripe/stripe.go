// Package stripe is Cagnotte's link to Stripe (github.com/stripe/stripe-go):
// Checkout Sessions for online top-ups, refunds to the original
// PaymentIntents, the signed webhook's parsing, and a small durable journal
// for what a gateway must remember outside the op set (webhook failures
// for staff, refund requests). It knows nothing of the node: the node
// (node/stripe*.go) decides what to credit or debit.
//
// Secrets (the API key and the webhook signing secret) live in Config only:
// nothing here logs them, and errors never carry them.
package stripe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"

	sg "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
)

// Metadata keys Cagnotte sets on Stripe objects.
const (
	// MetaCard is the card id (its NFC UID in hex) a top-up credits.
	MetaCard = "cagnotte_card"
	// MetaTopUp is Cagnotte's id of a top-up attempt (one per Checkout
	// Session), on the session and its PaymentIntent.
	MetaTopUp = "cagnotte_topup"
	// MetaRef is the ledger reference of a refund Cagnotte made: the card
	// was debited under this reference before the refund was asked for.
	MetaRef = "cagnotte_ref"
)

// Errors.
var (
	// ErrUnavailable: Stripe could not be reached or failed on its side
	// (network, 5xx, 429). Retrying later with the same idempotency key is
	// safe.
	ErrUnavailable = errors.New("stripe: unavailable")
	// ErrRefused: Stripe refused the request (4xx): retrying the same
	// request will not help.
	ErrRefused = errors.New("stripe: request refused")
	// ErrNoSecret: a gateway needs its API key and webhook secret.
	ErrNoSecret = errors.New("stripe: API key and webhook secret are required")
)

// Config configures a Client. Zero fields take the documented defaults.
type Config struct {
	// SecretKey is the account's secret API key (sk_test_… or sk_live_…,
	// or a restricted key rk_… with Checkout Sessions, PaymentIntents read
	// and Refunds write). Required.
	SecretKey string
	// WebhookSecret is the webhook endpoint's signing secret (whsec_…).
	// Required.
	WebhookSecret string
	// Tolerance is how old a webhook's signed timestamp may be. Default
	// 5 minutes (webhook.DefaultTolerance), as Stripe recommends.
	Tolerance time.Duration
	// BackendURL is the API's base URL. Default Stripe's
	// (https://api.stripe.com); tests point it at stripe-mock.
	BackendURL string
	// Currency is the ISO 4217 code of the federation's money (any case).
	// Required.
	Currency string
	// PaymentMethods lists Checkout's payment method types (e.g. card,
	// bancontact, ideal, sepa_debit). Default none: Stripe's dynamic
	// payment methods, chosen in the account's dashboard.
	PaymentMethods []string
	// Timeout bounds one API call. Default 20 s.
	Timeout time.Duration
	// MaxNetworkRetries is stripe-go's retry count for network errors and
	// 409/5xx answers (with the same idempotency key). Default 2.
	MaxNetworkRetries int64
	// Logger receives stripe-go's own messages at debug and warn levels.
	// Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.SecretKey == "" || c.WebhookSecret == "" {
		return ErrNoSecret
	}
	if len(c.Currency) != 3 {
		return fmt.Errorf("stripe: currency must be a 3-letter code, got %q", c.Currency)
	}
	if c.Tolerance <= 0 {
		c.Tolerance = 5 * time.Minute
	}
	if c.Timeout <= 0 {
		c.Timeout = 20 * time.Second
	}
	if c.MaxNetworkRetries <= 0 {
		c.MaxNetworkRetries = 2
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Client talks to Stripe's API for one account.
type Client struct {
	cfg Config
	api *client.API
}

// New returns a Client. It makes no request.
func New(cfg Config) (*Client, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	bc := &sg.BackendConfig{
		HTTPClient:        &http.Client{Timeout: cfg.Timeout},
		LeveledLogger:     leveled{cfg.Logger},
		MaxNetworkRetries: sg.Int64(cfg.MaxNetworkRetries),
	}
	if cfg.BackendURL != "" {
		bc.URL = sg.String(cfg.BackendURL)
	}
	api := sg.GetBackendWithConfig(sg.APIBackend, bc)
	c := &Client{cfg: cfg, api: client.New(cfg.SecretKey, &sg.Backends{API: api, Connect: api, Uploads: api})}
	return c, nil
}

// Currency returns the upper-case currency the client charges in.
func (c *Client) Currency() string { return strings.ToUpper(c.cfg.Currency) }

// CheckoutRequest is a top-up to sell through a Checkout Session.
type CheckoutRequest struct {
	// Card is the card id credited once paid.
	Card string
	// Amount in cents.
	Amount int64
	// TopUp is Cagnotte's id of this attempt (metadata on the session and
	// its PaymentIntent).
	TopUp string
	// SuccessURL and CancelURL are where Checkout sends the holder back.
	// SuccessURL may hold {CHECKOUT_SESSION_ID}.
	SuccessURL, CancelURL string
	// Label names the line item ("Top-up of card …").
	Label string
	// IdempotencyKey makes a retried creation return the same session.
	IdempotencyKey string
}

// Checkout is a created Checkout Session.
type Checkout struct {
	ID  string `json:"session_id"`
	URL string `json:"url"`
	// ExpiresAt is when the session stops accepting a payment.
	ExpiresAt time.Time `json:"expires_at"`
}

// CreateCheckout creates a Checkout Session in payment mode for one line
// item of req.Amount.
func (c *Client) CreateCheckout(ctx context.Context, req CheckoutRequest) (Checkout, error) {
	md := map[string]string{MetaCard: req.Card, MetaTopUp: req.TopUp}
	p := &sg.CheckoutSessionParams{
		Mode:              sg.String(string(sg.CheckoutSessionModePayment)),
		SuccessURL:        sg.String(req.SuccessURL),
		CancelURL:         sg.String(req.CancelURL),
		ClientReferenceID: sg.String(req.TopUp),
		LineItems: []*sg.CheckoutSessionLineItemParams{{
			Quantity: sg.Int64(1),
			PriceData: &sg.CheckoutSessionLineItemPriceDataParams{
				Currency:    sg.String(strings.ToLower(c.cfg.Currency)),
				UnitAmount:  sg.Int64(req.Amount),
				ProductData: &sg.CheckoutSessionLineItemPriceDataProductDataParams{Name: sg.String(req.Label)},
			},
		}},
		PaymentIntentData: &sg.CheckoutSessionPaymentIntentDataParams{Metadata: md},
	}
	for _, m := range c.cfg.PaymentMethods {
		p.PaymentMethodTypes = append(p.PaymentMethodTypes, sg.String(m))
	}
	for k, v := range md {
		p.AddMetadata(k, v)
	}
	p.Context = ctx
	if req.IdempotencyKey != "" {
		p.SetIdempotencyKey(req.IdempotencyKey)
	}
	s, err := c.api.CheckoutSessions.New(p)
	if err != nil {
		return Checkout{}, classify("create checkout session", err)
	}
	return Checkout{ID: s.ID, URL: s.URL, ExpiresAt: time.Unix(s.ExpiresAt, 0).UTC()}, nil
}

// Session is what a gateway needs of a Checkout Session it polls.
type Session struct {
	ID            string
	PaymentIntent string
	Card          string
	PaymentStatus string
	Status        string
}

// GetSession retrieves a Checkout Session.
func (c *Client) GetSession(ctx context.Context, id string) (Session, error) {
	p := &sg.CheckoutSessionParams{}
	p.Context = ctx
	s, err := c.api.CheckoutSessions.Get(id, p)
	if err != nil {
		return Session{}, classify("get checkout session", err)
	}
	out := Session{ID: s.ID, Card: s.Metadata[MetaCard], PaymentStatus: string(s.PaymentStatus), Status: string(s.Status)}
	if s.PaymentIntent != nil {
		out.PaymentIntent = s.PaymentIntent.ID
	}
	return out, nil
}

// Payment is a succeeded PaymentIntent of a card, as Stripe knows it.
type Payment struct {
	PaymentIntent string
	Created       time.Time
	// Refunded is what Stripe already refunded of it, in cents.
	Refunded int64
}

// maxPayments bounds the PaymentIntents looked at for one card.
const maxPayments = 100

// CardPayments lists the card's succeeded PaymentIntents (by the card's
// metadata), newest first. Stripe's search is eventually consistent (a
// payment shows within about a minute): the caller checks each against its
// ledger, which is the authority on what was credited.
func (c *Client) CardPayments(ctx context.Context, card string) ([]Payment, error) {
	p := &sg.PaymentIntentSearchParams{}
	p.Query = fmt.Sprintf("metadata['%s']:'%s' AND status:'succeeded'", MetaCard, card)
	p.AddExpand("data.latest_charge")
	p.Context = ctx
	it := c.api.PaymentIntents.Search(p)
	var out []Payment
	for it.Next() && len(out) < maxPayments {
		pi := it.PaymentIntent()
		py := Payment{PaymentIntent: pi.ID, Created: time.Unix(pi.Created, 0).UTC()}
		if pi.LatestCharge != nil {
			py.Refunded = pi.LatestCharge.AmountRefunded
		}
		out = append(out, py)
	}
	if err := it.Err(); err != nil {
		return nil, classify("search payment intents", err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// RefundRequest is a refund of part of a PaymentIntent.
type RefundRequest struct {
	PaymentIntent string
	Amount        int64
	// Ref is the ledger reference the card was debited under; it is the
	// refund's idempotency key and metadata.
	Ref  string
	Card string
}

// RefundResult is Stripe's refund.
type RefundResult struct {
	ID     string `json:"id"`
	Amount int64  `json:"amount_cents"`
	Status string `json:"status"`
}

// Refund refunds req.Amount of req.PaymentIntent, idempotently by req.Ref.
func (c *Client) Refund(ctx context.Context, req RefundRequest) (RefundResult, error) {
	p := &sg.RefundParams{PaymentIntent: sg.String(req.PaymentIntent), Amount: sg.Int64(req.Amount)}
	p.AddMetadata(MetaRef, req.Ref)
	if req.Card != "" {
		p.AddMetadata(MetaCard, req.Card)
	}
	p.SetIdempotencyKey(req.Ref)
	p.Context = ctx
	r, err := c.api.Refunds.New(p)
	if err != nil {
		return RefundResult{}, classify("refund", err)
	}
	if r.Status == sg.RefundStatusFailed || r.Status == sg.RefundStatusCanceled {
		return RefundResult{ID: r.ID, Amount: r.Amount, Status: string(r.Status)}, fmt.Errorf("%w: refund %s is %s", ErrRefused, r.ID, r.Status)
	}
	return RefundResult{ID: r.ID, Amount: r.Amount, Status: string(r.Status)}, nil
}

// maxRefundsListed bounds the refunds of one PaymentIntent looked at.
const maxRefundsListed = 100

// FindRefund looks among pi's refunds for the one Cagnotte made under ref
// (its metadata): a retry after Stripe's idempotency keys expired (24 h)
// must not refund twice.
func (c *Client) FindRefund(ctx context.Context, pi, ref string) (RefundResult, bool, error) {
	p := &sg.RefundListParams{PaymentIntent: sg.String(pi)}
	p.Context = ctx
	it := c.api.Refunds.List(p)
	for n := 0; it.Next() && n < maxRefundsListed; n++ {
		r := it.Refund()
		if r.Metadata[MetaRef] == ref && r.Status != sg.RefundStatusFailed && r.Status != sg.RefundStatusCanceled {
			return RefundResult{ID: r.ID, Amount: r.Amount, Status: string(r.Status)}, true, nil
		}
	}
	if err := it.Err(); err != nil {
		return RefundResult{}, false, classify("list refunds", err)
	}
	return RefundResult{}, false, nil
}

// classify wraps a stripe-go error as ErrUnavailable (worth retrying) or
// ErrRefused, keeping Stripe's message (which never holds the key).
func classify(what string, err error) error {
	var se *sg.Error
	if errors.As(err, &se) {
		msg := se.Msg
		if se.Code != "" {
			msg = string(se.Code) + ": " + msg
		}
		if se.HTTPStatusCode >= 500 || se.HTTPStatusCode == http.StatusTooManyRequests || se.HTTPStatusCode == 0 {
			return fmt.Errorf("%w: %s: %s", ErrUnavailable, what, msg)
		}
		return fmt.Errorf("%w: %s: %s", ErrRefused, what, msg)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
	}
	return fmt.Errorf("%w: %s: %v", ErrUnavailable, what, err)
}

// leveled routes stripe-go's messages to slog: its requests at debug, its
// errors at warn. They name endpoints and Stripe's messages, not the key.
type leveled struct{ log *slog.Logger }

func (l leveled) Debugf(f string, v ...any) { l.log.Debug("stripe: " + fmt.Sprintf(f, v...)) }
func (l leveled) Infof(f string, v ...any)  { l.log.Debug("stripe: " + fmt.Sprintf(f, v...)) }
func (l leveled) Warnf(f string, v ...any)  { l.log.Warn("stripe: " + fmt.Sprintf(f, v...)) }
func (l leveled) Errorf(f string, v ...any) { l.log.Warn("stripe: " + fmt.Sprintf(f, v...)) }
