package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/nfc"
)

const tapCard = "04A1B2C3D4E5F6"

// A tap on a simulated reader, through the API: the next-tap wait answers
// it with the card's UID and type, and the card list shows it.
func TestTapWaitAnswersTheNextTap(t *testing.T) {
	r := nfc.NewSimReader("bar")
	v := newTapVenue(t, r)
	// Nothing tapped: 204 after the timeout.
	if st, _ := v.post("/api/v1/taps/wait", map[string]any{"timeout_ms": 50}); st != http.StatusNoContent {
		t.Fatalf("no tap: %d", st)
	}
	got := make(chan map[string]any, 1)
	go func() {
		st, body := v.post("/api/v1/taps/wait", map[string]any{"timeout_ms": 5000})
		if st != http.StatusOK {
			body = map[string]any{"status": st}
		}
		got <- body
	}()
	// The tap comes once the wait listens: the simulate call races it, so
	// tap until the wait answers.
	var tap map[string]any
	for tap == nil {
		if st, b := v.post("/api/v1/taps/simulate", map[string]any{"card": tapCard}); st != http.StatusOK {
			t.Fatalf("simulate: %d %v", st, b)
		}
		select {
		case tap = <-got:
		case <-time.After(100 * time.Millisecond):
			v.post("/api/v1/taps/simulate", map[string]any{"remove": true})
		}
	}
	if tap["card"] != tapCard || tap["card_type"] != "NTAG215" || tap["reader"] != "bar" {
		t.Fatalf("tap %v", tap)
	}
	// current: the card on the reader answers at once.
	if cur := v.waitTap(true); cur["card"] != tapCard {
		t.Fatalf("current %v", cur)
	}
	st, body := v.do("GET", "/api/v1/taps/readers", v.token, nil)
	if st != http.StatusOK || !strings.Contains(body["raw"].(string), tapCard) {
		t.Fatalf("readers: %d %v", st, body)
	}
}

// The point of sale's path: tap, pay with the card's stamp, write the new
// stamp back, read it back from the card; the next tap shows it.
func TestTapPaymentWritesStampBack(t *testing.T) {
	r := nfc.NewSimReader("bar")
	v := newTapVenue(t, r)
	v.topUp(tapCard, 2000)
	tag, _ := nfc.NewSimTag(tapCard, nfc.NTAG215)
	r.Present(tag)
	tap := v.waitTap(true)
	if tap["stamp"] != nil {
		t.Fatalf("a blank card shows a stamp: %v", tap)
	}
	pay, st, wb := v.payTap(tap, 350, "tap-1")
	if st != http.StatusOK || wb["written"] != true {
		t.Fatalf("stamp write: %d %v", st, wb)
	}
	// The card itself now holds the payment's stamp.
	rd := nfc.NewSimReader("check")
	rd.Present(tag)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := rd.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	onCard, err := nfc.ReadStamp(ctx, c)
	if err != nil || !bytes.Equal(onCard, b64(t, pay["stamp"])) {
		t.Fatalf("card stamp: %v", err)
	}
	stp, _ := crdt.DecodeStamp(onCard)
	if stp.Balance != 1650 || stp.Venue != v.node.Key() {
		t.Fatalf("stamp %+v", stp)
	}
	// The next tap carries it, and the next payment relies on it.
	r.Remove()
	r.Present(tag)
	tap2 := v.waitTap(true)
	if tap2["stamp"] != pay["stamp"] {
		t.Fatalf("second tap stamp %v, want %v", tap2["stamp"], pay["stamp"])
	}
	pay2, st, _ := v.payTap(tap2, 100, "tap-2")
	if st != http.StatusOK || pay2["balance_cents"] != float64(1550) {
		t.Fatalf("second payment %v, write %d", pay2, st)
	}
}

// The card leaves before its stamp is written: the sale stands, the
// cashier is told (409 card_not_present or card_removed), and the card
// keeps its previous stamp.
func TestTapStampWriteFailsSaleStands(t *testing.T) {
	r := nfc.NewSimReader("bar")
	v := newTapVenue(t, r)
	v.topUp(tapCard, 2000)
	tag, _ := nfc.NewSimTag(tapCard, nfc.NTAG215)
	r.Present(tag)
	pay1, st, _ := v.payTap(v.waitTap(true), 100, "a")
	if st != http.StatusOK {
		t.Fatalf("first write %d", st)
	}
	// Removed before the write.
	r.Remove()
	eventually(t, "the card gone from the node", func() bool { return len(v.node.PresentCards()) == 0 })
	st, pay := v.post("/api/v1/payments", map[string]any{"card": tapCard, "amount_cents": 100, "idempotency_key": "b", "stamp": pay1["stamp"]})
	if st != http.StatusOK {
		t.Fatalf("payment %d %v", st, pay)
	}
	wst, wb := v.post("/api/v1/taps/stamp", map[string]any{"card": tapCard, "stamp": pay["stamp"]})
	if wst != http.StatusConflict || wb["error"] != "card_not_present" {
		t.Fatalf("write without the card: %d %v", wst, wb)
	}
	// Pulled mid-write.
	r.Present(tag)
	tap := v.waitTap(true)
	tag.PullAfterWrites(7)
	_, wst, wb = v.payTap(tap, 100, "c")
	if wst != http.StatusConflict || wb["error"] != "card_removed" {
		t.Fatalf("write while pulled: %d %v", wst, wb)
	}
	r.Remove()
	tag.PutBack()
	r.Present(tag)
	tap = v.waitTap(true)
	if tap["stamp"] != pay1["stamp"] {
		t.Fatalf("after the pulled write the card shows %v, want its previous stamp", tap["stamp"])
	}
	// The ledger counted all three sales.
	_, card := v.do("GET", "/api/v1/cards/"+tapCard, v.token, nil)
	if card["balance_cents"] != float64(1700) {
		t.Fatalf("balance %v", card["balance_cents"])
	}
	// A stamp this node did not sign is refused.
	other, _ := crdt.SignerFromSeed(bytes.Repeat([]byte{9}, 32))
	fs := crdt.CardStamp{Card: tapCard, Counter: 99, Balance: 5, Time: 1}
	other.SignStamp(&fs)
	if st, b := v.post("/api/v1/taps/stamp", map[string]any{"card": tapCard, "stamp": fs.Encode()}); st != http.StatusBadRequest {
		t.Fatalf("foreign stamp: %d %v", st, b)
	}
}

// The stream of taps (server-sent events), with the replay of the taps a
// reconnecting client missed.
func TestTapStreamSendsTapsAndReplays(t *testing.T) {
	r := nfc.NewSimReader("bar")
	v := newTapVenue(t, r)
	req, _ := http.NewRequest("GET", v.api+"/api/v1/taps/stream", nil)
	req.Header.Set("Authorization", "Bearer "+v.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("stream: %d %s", resp.StatusCode, ct)
	}
	events := make(chan [2]string, 8) // id, data
	go func() {
		sc := bufio.NewScanner(resp.Body)
		var id string
		for sc.Scan() {
			line := sc.Text()
			if s, ok := strings.CutPrefix(line, "id: "); ok {
				id = s
			}
			if s, ok := strings.CutPrefix(line, "data: "); ok {
				events <- [2]string{id, s}
			}
		}
		close(events)
	}()
	var first [2]string
	for first[1] == "" {
		tag, _ := nfc.NewSimTag(tapCard, nfc.NTAG213)
		r.Present(tag)
		select {
		case first = <-events:
		case <-time.After(200 * time.Millisecond): // the stream may not listen yet: tap again
			r.Remove()
		}
	}
	var tp Tap
	if err := json.Unmarshal([]byte(first[1]), &tp); err != nil || tp.Card != tapCard || tp.CardType != "NTAG213" {
		t.Fatalf("event %v: %v", first, err)
	}
	// Two more taps while disconnected; a reconnection with the first id
	// gets them.
	resp.Body.Close()
	for _, id := range []string{"04000000000001", "04000000000002"} {
		r.Remove()
		tag, _ := nfc.NewSimTag(crdt.CardID(id), nfc.NTAG215)
		r.Present(tag)
		eventually(t, "tap "+id, func() bool {
			cs := v.node.PresentCards()
			return len(cs) == 1 && string(cs[0].Card) == id
		})
	}
	req2, _ := http.NewRequest("GET", v.api+"/api/v1/taps/stream", nil)
	req2.Header.Set("Authorization", "Bearer "+v.token)
	req2.Header.Set("Last-Event-ID", first[0])
	resp2, err := http.DefaultClient.Do(req2)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	sc := bufio.NewScanner(resp2.Body)
	var replayed []string
	for len(replayed) < 2 && sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			var tp Tap
			json.Unmarshal([]byte(s), &tp)
			replayed = append(replayed, string(tp.Card))
		}
	}
	if strings.Join(replayed, ",") != "04000000000001,04000000000002" {
		t.Fatalf("replayed %v", replayed)
	}
}

func TestTapAPIStaffOnly(t *testing.T) {
	v := newTapVenue(t, nfc.NewSimReader("bar"))
	for _, c := range []struct{ method, path string }{
		{"POST", "/api/v1/taps/wait"}, {"GET", "/api/v1/taps/stream"}, {"POST", "/api/v1/taps/stamp"},
		{"GET", "/api/v1/taps/readers"}, {"POST", "/api/v1/taps/simulate"},
	} {
		if st, _ := v.do(c.method, c.path, "", map[string]any{}); st != http.StatusUnauthorized {
			t.Errorf("%s %s without a token: %d", c.method, c.path, st)
		}
	}
	// Bounded inputs.
	for _, body := range []map[string]any{
		{"timeout_ms": 3_600_000}, {"timeout_ms": -1}, {"nope": 1},
	} {
		if st, _ := v.post("/api/v1/taps/wait", body); st != http.StatusBadRequest {
			t.Errorf("wait %v: %d", body, st)
		}
	}
	if st, _ := v.post("/api/v1/taps/stamp", map[string]any{"card": tapCard, "stamp": []byte{1, 2, 3}}); st != http.StatusBadRequest {
		t.Errorf("short stamp: %d", st)
	}
}
