package stripe

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	sg "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"
)

// Webhook errors.
var (
	// ErrBadSignature: the Stripe-Signature header is missing, malformed
	// or does not sign this payload with the endpoint's secret.
	ErrBadSignature = errors.New("stripe: webhook signature not valid")
	// ErrStale: the signed timestamp is older than the tolerance (a
	// replayed request).
	ErrStale = errors.New("stripe: webhook timestamp outside the tolerance")
	// ErrBadEvent: the signed payload is not an event this code reads.
	ErrBadEvent = errors.New("stripe: webhook event not readable")
)

// Kind is what an event asks of the ledger.
type Kind int

// Event kinds.
const (
	// Ignored: nothing to do (an event type Cagnotte does not use).
	Ignored Kind = iota
	// Paid: a payment succeeded; credit Event.Amount to Event.Card under
	// the reference Event.PaymentIntent.
	Paid
	// Pending: a Checkout Session completed with an asynchronous method
	// (SEPA debit…) not yet paid: wait for async_payment_succeeded.
	Pending
	// Failed: an asynchronous payment failed: nothing to credit.
	Failed
	// Refunded: money went back to the payer (Event.Refunds), maybe from
	// Stripe's dashboard.
	Refunded
	// Disputed: the payer disputed the payment (a chargeback).
	Disputed
)

func (k Kind) String() string {
	return [...]string{"ignored", "paid", "pending", "failed", "refunded", "disputed"}[k]
}

// Event is a webhook event, reduced to what the ledger needs.
type Event struct {
	ID   string
	Type string
	Kind Kind
	// PaymentIntent is the payment's id: the top-up's external reference.
	PaymentIntent string
	// Session is the Checkout Session's id, for checkout.session.* events.
	Session string
	// Card and TopUp are Cagnotte's metadata (empty if absent).
	Card  string
	TopUp string
	// Amount in cents: paid, or disputed.
	Amount int64
	// Currency, upper case.
	Currency string
	// Refunds of a Refunded event.
	Refunds []Refund
	// Dispute is the dispute's id of a Disputed event.
	Dispute string
	// Livemode is false in test mode.
	Livemode bool
	Created  time.Time
}

// Refund is one refund of a Refunded event.
type Refund struct {
	ID     string
	Amount int64
	Status string
	// Ref is Cagnotte's ledger reference (metadata) when Cagnotte made it.
	Ref string
}

// ParseWebhook checks the Stripe-Signature header of payload against
// secret with the given timestamp tolerance (stripe-go's webhook package),
// then reads the event.
func ParseWebhook(payload []byte, header, secret string, tolerance time.Duration) (Event, error) {
	ev, err := webhook.ConstructEventWithOptions(payload, header, secret, webhook.ConstructEventOptions{
		Tolerance: tolerance,
		// Only a few stable fields are read; an endpoint pinned to
		// another API version still parses.
		IgnoreAPIVersionMismatch: true,
	})
	switch {
	case errors.Is(err, webhook.ErrTooOld):
		return Event{}, ErrStale
	case errors.Is(err, webhook.ErrNotSigned), errors.Is(err, webhook.ErrInvalidHeader), errors.Is(err, webhook.ErrNoValidSignature):
		return Event{}, fmt.Errorf("%w: %v", ErrBadSignature, err)
	case err != nil:
		return Event{}, fmt.Errorf("%w: %v", ErrBadEvent, err)
	}
	return readEvent(ev)
}

func readEvent(ev sg.Event) (Event, error) {
	out := Event{ID: ev.ID, Type: string(ev.Type), Livemode: ev.Livemode, Created: time.Unix(ev.Created, 0).UTC()}
	if ev.Data == nil {
		return out, fmt.Errorf("%w: no data", ErrBadEvent)
	}
	raw := ev.Data.Raw
	bad := func(err error) (Event, error) { return out, fmt.Errorf("%w: %s: %v", ErrBadEvent, ev.Type, err) }
	switch ev.Type {
	case sg.EventTypeCheckoutSessionCompleted, sg.EventTypeCheckoutSessionAsyncPaymentSucceeded, sg.EventTypeCheckoutSessionAsyncPaymentFailed:
		var s sg.CheckoutSession
		if err := json.Unmarshal(raw, &s); err != nil {
			return bad(err)
		}
		out.Session, out.Card, out.TopUp = s.ID, s.Metadata[MetaCard], s.Metadata[MetaTopUp]
		out.Amount, out.Currency = s.AmountTotal, strings.ToUpper(string(s.Currency))
		if s.PaymentIntent != nil {
			out.PaymentIntent = s.PaymentIntent.ID
		}
		switch {
		case ev.Type == sg.EventTypeCheckoutSessionAsyncPaymentFailed:
			out.Kind = Failed
		case s.PaymentStatus == sg.CheckoutSessionPaymentStatusPaid:
			out.Kind = Paid
		default:
			out.Kind = Pending
		}
	case sg.EventTypePaymentIntentSucceeded:
		var pi sg.PaymentIntent
		if err := json.Unmarshal(raw, &pi); err != nil {
			return bad(err)
		}
		out.Kind, out.PaymentIntent = Paid, pi.ID
		out.Card, out.TopUp = pi.Metadata[MetaCard], pi.Metadata[MetaTopUp]
		out.Amount, out.Currency = pi.AmountReceived, strings.ToUpper(string(pi.Currency))
	case sg.EventTypeChargeRefunded:
		var ch sg.Charge
		if err := json.Unmarshal(raw, &ch); err != nil {
			return bad(err)
		}
		out.Kind, out.Currency = Refunded, strings.ToUpper(string(ch.Currency))
		if ch.PaymentIntent != nil {
			out.PaymentIntent = ch.PaymentIntent.ID
		}
		if ch.Refunds != nil {
			for _, r := range ch.Refunds.Data {
				out.Refunds = append(out.Refunds, refundOf(r))
			}
		}
	case sg.EventTypeRefundCreated:
		var r sg.Refund
		if err := json.Unmarshal(raw, &r); err != nil {
			return bad(err)
		}
		out.Kind, out.Currency = Refunded, strings.ToUpper(string(r.Currency))
		if r.PaymentIntent != nil {
			out.PaymentIntent = r.PaymentIntent.ID
		}
		out.Refunds = []Refund{refundOf(&r)}
	case sg.EventTypeChargeDisputeCreated:
		var d sg.Dispute
		if err := json.Unmarshal(raw, &d); err != nil {
			return bad(err)
		}
		out.Kind, out.Dispute, out.Amount, out.Currency = Disputed, d.ID, d.Amount, strings.ToUpper(string(d.Currency))
		if d.PaymentIntent != nil {
			out.PaymentIntent = d.PaymentIntent.ID
		}
	default:
		return out, nil
	}
	if out.PaymentIntent == "" && out.Kind != Pending && out.Kind != Failed {
		return out, fmt.Errorf("%w: %s without a payment intent", ErrBadEvent, ev.Type)
	}
	return out, nil
}

func refundOf(r *sg.Refund) Refund {
	if r == nil {
		return Refund{}
	}
	return Refund{ID: r.ID, Amount: r.Amount, Status: string(r.Status), Ref: r.Metadata[MetaRef]}
}

// SignedPayload signs payload for secret at t as Stripe does (stripe-go's
// webhook.GenerateTestSignedPayload), and returns the Stripe-Signature
// header value. For tests and the Stripe docs' examples.
func SignedPayload(payload []byte, secret string, t time.Time) string {
	return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: secret, Timestamp: t}).Header
}
