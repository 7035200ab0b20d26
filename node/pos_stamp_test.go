package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/nfc"
)

// A sale charged from the point of sale page to a card lying on the node's
// reader writes the payment's new stamp on the card before the till shows
// "approved", and says so in the answer.
func TestPOSSaleWritesStampOnTheCardBeforeApproved(t *testing.T) {
	r := nfc.NewSimReader("bar")
	v := newTapVenue(t, r)
	v.topUp(tapCard, 2000)
	tag, _ := nfc.NewSimTag(tapCard, nfc.NTAG215)
	r.Present(tag)
	v.waitTap(true)
	c := newWebClient(t, v)
	csrf := c.signIn()
	resp, body := c.do("POST", "/pos/api/payments", map[string]string{"X-CSRF-Token": csrf, "Content-Type": "application/json"},
		fmt.Sprintf(`{"card":%q,"amount_cents":350,"idempotency_key":"pos-stamp"}`, tapCard))
	var ans map[string]any
	if err := json.Unmarshal([]byte(body), &ans); err != nil || resp.StatusCode != 200 || ans["stamp_written"] != true {
		t.Fatalf("sale: %s %s", resp.Status, body)
	}
	rd := nfc.NewSimReader("check")
	rd.Present(tag)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	card, err := rd.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	onCard, err := nfc.ReadStamp(ctx, card)
	if err != nil || !bytes.Equal(onCard, b64(t, ans["stamp"])) {
		t.Fatalf("the card does not hold the sale's stamp: %v", err)
	}
}
