package node

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

const card = "04A1B2C3D4E5F6"

func TestMoneyFlow(t *testing.T) {
	v := newTestVenue(t)
	st, top := v.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 1000, "method": "cash", "idempotency_key": "t1"})
	if st != 200 || top["balance_cents"] != 1000.0 {
		t.Fatalf("top-up: %d %v", st, top)
	}
	st, pay := v.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 300, "idempotency_key": "p1", "label": "beer"})
	if st != 200 || pay["balance_cents"] != 700.0 || pay["counter"] != 1.0 || pay["op_id"] == "" {
		t.Fatalf("payment: %d %v", st, pay)
	}
	st, ref := v.post("/api/v1/refunds", map[string]any{"card": card, "amount_cents": 200, "idempotency_key": "r1", "reason": "leaving"})
	if st != 200 || ref["balance_cents"] != 500.0 {
		t.Fatalf("refund: %d %v", st, ref)
	}
	st, c := v.do("GET", "/api/v1/cards/"+strings.ToLower(card), v.token, nil)
	if st != 200 || c["balance_cents"] != 500.0 || c["counter"] != 1.0 || c["blocked"] != false {
		t.Fatalf("card: %d %v", st, c)
	}
	h := c["history"].([]any)
	if len(h) != 3 {
		t.Fatalf("history: %v", h)
	}
	kinds := []string{}
	for _, e := range h {
		kinds = append(kinds, e.(map[string]any)["kind"].(string))
	}
	if got := strings.Join(kinds, ","); got != "refund,payment,topup" {
		t.Fatalf("history kinds (newest first) %s", got)
	}
	if h[1].(map[string]any)["op_id"] != pay["op_id"] || h[1].(map[string]any)["venue"] != DemoVenueName(0) {
		t.Fatalf("history entry %v", h[1])
	}
}

// TestRefusals checks each bad request's error code and that it changes
// nothing: the digest before and after is equal.
func TestRefusals(t *testing.T) {
	v := newTestVenue(t)
	if st, _ := v.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 500, "method": "cash", "idempotency_key": "t1"}); st != 200 {
		t.Fatal(st)
	}
	if st, _ := v.post("/api/v1/topups", map[string]any{"card": "04000000000B10", "amount_cents": 500, "method": "cash", "idempotency_key": "t2"}); st != 200 {
		t.Fatal(st)
	}
	if st, _ := v.post("/api/v1/cards/04000000000B10/block", map[string]any{"reason": "lost", "idempotency_key": "b1"}); st != 200 {
		t.Fatal(st)
	}
	big := fmt.Sprintf(`{"card":%q,"amount_cents":100,"idempotency_key":"x","label":%q}`, card, strings.Repeat("a", 20000))
	cases := []struct {
		name   string
		method string
		path   string
		token  string
		body   any
		status int
		code   string
	}{
		{"insufficient funds", "POST", "/api/v1/payments", v.token, map[string]any{"card": card, "amount_cents": 501, "idempotency_key": "k1"}, 402, "insufficient_funds"},
		{"blocked card", "POST", "/api/v1/payments", v.token, map[string]any{"card": "04000000000B10", "amount_cents": 1, "idempotency_key": "k2"}, 403, "card_blocked"},
		{"unknown card pay", "POST", "/api/v1/payments", v.token, map[string]any{"card": "04FFFFFFFFFFFF", "amount_cents": 1, "idempotency_key": "k3"}, 404, "unknown_card"},
		{"unknown card get", "GET", "/api/v1/cards/04FFFFFFFFFFFF", v.token, nil, 404, "unknown_card"},
		{"unknown card refund", "POST", "/api/v1/refunds", v.token, map[string]any{"card": "04FFFFFFFFFFFF", "amount_cents": 1, "idempotency_key": "k3b", "reason": "x"}, 404, "unknown_card"},
		{"refund above balance", "POST", "/api/v1/refunds", v.token, map[string]any{"card": card, "amount_cents": 501, "idempotency_key": "k3c", "reason": "x"}, 402, "insufficient_funds"},
		{"bad json", "POST", "/api/v1/payments", v.token, `{"card": "04A1`, 400, "invalid_request"},
		{"trailing json", "POST", "/api/v1/payments", v.token, `{"card":"04A1B2C3D4E5F6","amount_cents":1,"idempotency_key":"k"} {}`, 400, "invalid_request"},
		{"unknown field", "POST", "/api/v1/payments", v.token, map[string]any{"card": card, "amount_cents": 1, "idempotency_key": "k4", "amount": 5}, 400, "invalid_request"},
		{"oversized body", "POST", "/api/v1/payments", v.token, big, 400, "invalid_request"},
		{"zero amount", "POST", "/api/v1/payments", v.token, map[string]any{"card": card, "amount_cents": 0, "idempotency_key": "k5"}, 400, "invalid_request"},
		{"negative amount", "POST", "/api/v1/topups", v.token, map[string]any{"card": card, "amount_cents": -5, "method": "cash", "idempotency_key": "k6"}, 400, "invalid_request"},
		{"bad card id", "POST", "/api/v1/payments", v.token, map[string]any{"card": "not-hex", "amount_cents": 1, "idempotency_key": "k7"}, 400, "invalid_request"},
		{"bad method", "POST", "/api/v1/topups", v.token, map[string]any{"card": card, "amount_cents": 5, "method": "gold", "idempotency_key": "k8"}, 400, "invalid_request"},
		{"missing idempotency key", "POST", "/api/v1/payments", v.token, map[string]any{"card": card, "amount_cents": 1}, 400, "invalid_request"},
		{"missing token", "POST", "/api/v1/payments", "", map[string]any{"card": card, "amount_cents": 1, "idempotency_key": "k9"}, 401, "unauthorized"},
		{"wrong token", "POST", "/api/v1/topups", "nope", map[string]any{"card": card, "amount_cents": 1, "method": "cash", "idempotency_key": "k10"}, 401, "unauthorized"},
		{"wrong token block", "POST", "/api/v1/cards/" + card + "/block", "nope", map[string]any{"reason": "x", "idempotency_key": "k11"}, 401, "unauthorized"},
		{"wrong token event", "POST", "/api/v1/events", "nope", map[string]any{"title": "x", "idempotency_key": "k12"}, 401, "unauthorized"},
		{"event without times", "POST", "/api/v1/events", v.token, map[string]any{"title": "x", "idempotency_key": "k13"}, 400, "invalid_request"},
		{"event ends before start", "POST", "/api/v1/events", v.token, map[string]any{"title": "x", "starts_at": "2026-12-01T20:00:00Z", "ends_at": "2026-12-01T19:00:00Z", "idempotency_key": "k14"}, 400, "invalid_request"},
		{"cancel unknown event", "POST", "/api/v1/events", v.token, map[string]any{"id": "nope", "cancelled": true, "idempotency_key": "k15"}, 404, "not_found"},
		{"unknown endpoint", "GET", "/api/v1/nothing", "", nil, 404, "not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := v.digest()
			st, body := v.do(tc.method, tc.path, tc.token, tc.body)
			if st != tc.status || body["error"] != tc.code {
				t.Fatalf("got %d %v, want %d %s", st, body, tc.status, tc.code)
			}
			if msg, _ := body["message"].(string); msg == "" {
				t.Fatalf("no message in %v", body)
			}
			if after := v.digest(); after != before {
				t.Fatalf("digest changed by a refused request")
			}
		})
	}
}

func TestIdempotencySurvivesRestart(t *testing.T) {
	v := newTestVenue(t)
	v.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 1000, "method": "cash", "idempotency_key": "t1"})
	req := map[string]any{"card": card, "amount_cents": 250, "idempotency_key": "pay-42"}
	st, first := v.post("/api/v1/payments", req)
	if st != 200 {
		t.Fatal(st, first)
	}
	st, again := v.post("/api/v1/payments", req)
	if st != 200 || again["op_id"] != first["op_id"] {
		t.Fatalf("retry: %d %v vs %v", st, again, first)
	}
	v.restart()
	st, afterRestart := v.post("/api/v1/payments", req)
	if st != 200 || afterRestart["op_id"] != first["op_id"] || afterRestart["balance_cents"] != 750.0 {
		t.Fatalf("retry after restart: %d %v vs %v", st, afterRestart, first)
	}
	before := v.digest()
	st, other := v.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 999, "idempotency_key": "pay-42"})
	if st != http.StatusConflict || other["error"] != "conflict" {
		t.Fatalf("same key, other body: %d %v", st, other)
	}
	if v.digest() != before {
		t.Fatal("409 changed the state")
	}
	_, c := v.do("GET", "/api/v1/cards/"+card, v.token, nil)
	if c["balance_cents"] != 750.0 || len(c["history"].([]any)) != 2 {
		t.Fatalf("charged twice: %v", c)
	}
}

func TestAgendaAndExports(t *testing.T) {
	v := newTestVenue(t)
	st, ev := v.post("/api/v1/events", map[string]any{
		"id": "concert", "title": "Concert, jazz; late", "starts_at": "2026-12-01T20:00:00Z", "ends_at": "2026-12-01T23:00:00Z",
		"description": "Line one\nline two", "idempotency_key": "e1",
	})
	if st != 200 || ev["id"] != "concert" || ev["title"] != "Concert, jazz; late" {
		t.Fatalf("create: %d %v", st, ev)
	}
	st, ev = v.post("/api/v1/events", map[string]any{"id": "concert", "title": "Jazz night", "idempotency_key": "e2"})
	if st != 200 || ev["title"] != "Jazz night" || ev["starts_at"] != "2026-12-01T20:00:00Z" {
		t.Fatalf("update: %d %v", st, ev)
	}
	st, ev = v.post("/api/v1/events", map[string]any{"title": "Quiz", "starts_at": "2026-12-02T19:00:00Z", "ends_at": "2026-12-02T21:00:00Z", "idempotency_key": "e3"})
	if st != 200 || ev["id"] == "" {
		t.Fatalf("create without id: %d %v", st, ev)
	}
	st, ev = v.post("/api/v1/events", map[string]any{"id": "concert", "cancelled": true, "reason": "rain", "idempotency_key": "e4"})
	if st != 200 || ev["cancelled"] != true {
		t.Fatalf("cancel: %d %v", st, ev)
	}
	_, list := v.do("GET", "/api/v1/events", "", nil)
	raw := list["raw"].(string)
	if !strings.Contains(raw, `"title":"Jazz night"`) || !strings.Contains(raw, `"title":"Quiz"`) || !strings.Contains(raw, `"cancelled":true`) {
		t.Fatalf("events: %s", raw)
	}
	_, ics := v.do("GET", "/agenda.ics", "", nil)
	cal := ics["raw"].(string)
	for _, want := range []string{"BEGIN:VCALENDAR\r\n", "SUMMARY:Jazz night\r\n", "STATUS:CANCELLED\r\n", `DESCRIPTION:Line one\nline two`, "DTSTART:20261201T200000Z", "END:VCALENDAR\r\n"} {
		if !strings.Contains(cal, want) {
			t.Fatalf("agenda.ics lacks %q:\n%s", want, cal)
		}
	}
	v.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 100, "method": "cash", "idempotency_key": "t1"})
	_, m := v.do("GET", "/metrics", "", nil)
	for _, want := range []string{"cagnotte_topups_total 1", "cagnotte_ops ", `cagnotte_http_requests_total{code="200"}`} {
		if !strings.Contains(m["raw"].(string), want) {
			t.Fatalf("metrics lack %q", want)
		}
	}
	st, s := v.do("GET", "/api/v1/sync/status", "", nil)
	if st != 200 || s["venue"] != DemoVenueName(0) || s["digest"] == "" || s["isolated"] != false || len(s["version_vector"].(map[string]any)) != 2 {
		t.Fatalf("status: %v", s)
	}
	st, _ = v.do("GET", "/api/v1/conflicts", "", nil)
	if st != 200 {
		t.Fatal(st)
	}
	st, home := v.do("GET", "/", "", nil)
	if st != 200 || !strings.Contains(home["raw"].(string), DemoVenueName(0)) {
		t.Fatalf("home page: %d %v", st, home)
	}
}
