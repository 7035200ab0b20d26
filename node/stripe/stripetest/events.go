package stripetest

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"
)

// Event builds a webhook event's JSON payload as Stripe sends it.
func Event(id, typ string, object map[string]any) []byte {
	b, err := json.Marshal(map[string]any{
		"id": id, "object": "event", "type": typ, "api_version": "2023-10-16",
		"created": time.Now().Unix(), "livemode": false, "pending_webhooks": 1,
		"data": map[string]any{"object": object},
	})
	if err != nil {
		panic(err)
	}
	return b
}

// Sign returns the Stripe-Signature header of payload for secret at t,
// made by stripe-go's webhook.GenerateTestSignedPayload.
func Sign(payload []byte, secret string, t time.Time) string {
	return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: secret, Timestamp: t}).Header
}

// Metadata is Cagnotte's metadata for card (and an optional top-up id).
func Metadata(card, topup string) map[string]any {
	md := map[string]any{"cagnotte_card": card}
	if topup != "" {
		md["cagnotte_topup"] = topup
	}
	return md
}

// CheckoutCompleted is a checkout.session.completed event (paid, or
// unpaid for an asynchronous method).
func CheckoutCompleted(eventID, session, pi, card string, amount int64, currency string, paid bool) []byte {
	status := "paid"
	if !paid {
		status = "unpaid"
	}
	return Event(eventID, "checkout.session.completed", map[string]any{
		"id": session, "object": "checkout.session", "mode": "payment", "status": "complete",
		"payment_status": status, "payment_intent": pi, "amount_total": amount,
		"currency": strings.ToLower(currency), "metadata": Metadata(card, "t-"+session),
	})
}

// CheckoutAsync is a checkout.session.async_payment_succeeded (or
// _failed) event.
func CheckoutAsync(eventID, session, pi, card string, amount int64, currency string, succeeded bool) []byte {
	typ, status := "checkout.session.async_payment_succeeded", "paid"
	if !succeeded {
		typ, status = "checkout.session.async_payment_failed", "unpaid"
	}
	return Event(eventID, typ, map[string]any{
		"id": session, "object": "checkout.session", "mode": "payment", "status": "complete",
		"payment_status": status, "payment_intent": pi, "amount_total": amount,
		"currency": strings.ToLower(currency), "metadata": Metadata(card, "t-"+session),
	})
}

// PaymentIntentSucceeded is a payment_intent.succeeded event.
func PaymentIntentSucceeded(eventID, pi, card string, amount int64, currency string) []byte {
	return Event(eventID, "payment_intent.succeeded", map[string]any{
		"id": pi, "object": "payment_intent", "status": "succeeded", "amount": amount,
		"amount_received": amount, "currency": strings.ToLower(currency), "metadata": Metadata(card, ""),
	})
}

// RefundObject is a refund inside a charge.refunded event; ref is
// Cagnotte's metadata (empty for a refund made in Stripe's dashboard).
func RefundObject(id, pi string, amount int64, ref string) map[string]any {
	md := map[string]any{}
	if ref != "" {
		md["cagnotte_ref"] = ref
	}
	return map[string]any{"id": id, "object": "refund", "amount": amount, "payment_intent": pi, "status": "succeeded", "currency": "eur", "metadata": md}
}

// ChargeRefunded is a charge.refunded event listing refunds.
func ChargeRefunded(eventID, charge, pi string, amount int64, refunds ...map[string]any) []byte {
	var total int64
	data := []any{}
	for _, r := range refunds {
		total += r["amount"].(int64)
		data = append(data, r)
	}
	return Event(eventID, "charge.refunded", map[string]any{
		"id": charge, "object": "charge", "amount": amount, "amount_refunded": total, "refunded": total == amount,
		"payment_intent": pi, "currency": "eur",
		"refunds": map[string]any{"object": "list", "data": data, "has_more": false, "url": "/v1/charges/" + charge + "/refunds"},
	})
}

// DisputeCreated is a charge.dispute.created event.
func DisputeCreated(eventID, dispute, charge, pi string, amount int64) []byte {
	return Event(eventID, "charge.dispute.created", map[string]any{
		"id": dispute, "object": "dispute", "amount": amount, "charge": charge, "payment_intent": pi,
		"currency": "eur", "status": "needs_response", "reason": "fraudulent",
	})
}
