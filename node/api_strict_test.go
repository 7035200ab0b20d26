package node

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/p2p"
)

// TestStrictJSON: each malformed or ambiguous body is refused with 400
// invalid_request, a message naming the problem, and no change of state.
func TestStrictJSON(t *testing.T) {
	v := newTestVenue(t)
	if st, _ := v.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 500, "method": "cash", "idempotency_key": "t1"}); st != 200 {
		t.Fatal(st)
	}
	pay := func(extra string) string {
		return `{"card":"` + card + `","amount_cents":1,"idempotency_key":"s"` + extra + `}`
	}
	ev := `{"title":"x","starts_at":"2026-12-01T20:00:00Z","ends_at":"2026-12-01T21:00:00Z","idempotency_key":"e"`
	cases := []struct {
		name, path, ct, body string
		want                 string // in the message
	}{
		{"duplicate key", "/api/v1/payments", "application/json", pay(`,"amount_cents":2`), `duplicate key "amount_cents"`},
		{"case-variant duplicate", "/api/v1/payments", "application/json", pay(`,"Amount_Cents":2`), `differ only by case`},
		{"case-variant key", "/api/v1/payments", "application/json", `{"card":"` + card + `","Amount_Cents":1,"idempotency_key":"s"}`, `did you mean "amount_cents"`},
		{"kelvin sign variant", "/api/v1/topups", "application/json", `{"card":"` + card + `","amount_cents":1,"method":"cash","idempotency_key":"s","idempotency_\u212Aey":"t"}`, `differ only by case`},
		{"unknown field", "/api/v1/payments", "application/json", pay(`,"tip":5`), `unknown field "tip"`},
		{"not an object", "/api/v1/payments", "application/json", `[1,2]`, `JSON object`},
		{"empty body", "/api/v1/payments", "application/json", ``, `empty`},
		{"deep nesting", "/api/v1/payments", "application/json", pay(`,"stamp":` + strings.Repeat("[", 40) + strings.Repeat("]", 40)), `nested deeper`},
		{"invalid UTF-8 in label", "/api/v1/payments", "application/json", pay(`,"label":"caf` + "\xe9" + `"`), `field "label" is not valid UTF-8`},
		{"lone surrogate in label", "/api/v1/payments", "application/json", pay(`,"label":"a\ud800b"`), `field "label" is not valid UTF-8`},
		{"control character in label", "/api/v1/payments", "application/json", pay(`,"label":"beer\u0007"`), `field "label" holds the control character U+0007`},
		{"newline in label", "/api/v1/payments", "application/json", pay(`,"label":"two\nlines"`), `field "label"`},
		{"unknown field in an event", "/api/v1/events", "application/json", ev + `,"title2":1}`, `unknown field "title2"`},
		{"control character in title", "/api/v1/events", "application/json", strings.Replace(ev, `"title":"x"`, `"title":"x\u001b[31m"`, 1) + `}`, `field "title" holds the control character U+001B`},
		{"bell in description", "/api/v1/events", "application/json", ev + `,"description":"a\u0007"}`, `only newlines and tabs`},
		{"C1 control in location", "/api/v1/events", "application/json", ev + `,"location":"a\u0085"}`, `field "location" holds the control character U+0085`},
		{"control character in reference", "/api/v1/topups", "application/json", `{"card":"` + card + `","amount_cents":1,"method":"cash","idempotency_key":"s","reference":"a\tb"}`, `field "reference"`},
		{"control character in reason", "/api/v1/refunds", "application/json", `{"card":"` + card + `","amount_cents":1,"idempotency_key":"s","reason":"x\u0000"}`, `field "reason"`},
		{"refund without reason", "/api/v1/refunds", "application/json", `{"card":"` + card + `","amount_cents":1,"idempotency_key":"s"}`, `reason is required`},
		{"refund with a blank reason", "/api/v1/refunds", "application/json", `{"card":"` + card + `","amount_cents":1,"idempotency_key":"s","reason":"  "}`, `reason is required`},
		{"block without reason", "/api/v1/cards/" + card + "/block", "application/json", `{"idempotency_key":"s"}`, `reason is required`},
		{"unblock without reason", "/api/v1/cards/" + card + "/unblock", "application/json", `{"idempotency_key":"s","reason":""}`, `reason is required`},
		{"multipart content type", "/api/v1/payments", "multipart/form-data; boundary=x", pay(""), `Content-Type`},
		{"form body that is not JSON", "/api/v1/payments", "application/x-www-form-urlencoded", `card=` + card + `&amount_cents=1`, `malformed JSON`},
		{"bad event id", "/api/v1/events", "application/json", ev + `,"id":"a b"}`, `an event id is`},
		{"empty title", "/api/v1/events", "application/json", strings.Replace(ev, `"title":"x"`, `"title":" "`, 1) + `}`, `title may not be empty`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := v.digest()
			st, _, body := v.doRaw("POST", tc.path, v.token, tc.ct, []byte(tc.body))
			msg, _ := body["message"].(string)
			if st != 400 || body["error"] != "invalid_request" || !strings.Contains(msg, tc.want) {
				t.Fatalf("got %d %v, want 400 invalid_request with %q", st, body, tc.want)
			}
			if v.digest() != before {
				t.Fatal("digest changed by a refused request")
			}
		})
	}
}

// TestContentTypes: what curl -d, HTML forms and fetch() send is read as
// JSON when the body is a JSON object.
func TestContentTypes(t *testing.T) {
	v := newTestVenue(t)
	for i, ct := range []string{"", "application/json", "application/json; charset=utf-8", "application/x-www-form-urlencoded", "text/plain;charset=UTF-8", "application/merge-patch+json"} {
		t.Run(fmt.Sprintf("%q", ct), func(t *testing.T) {
			body := fmt.Sprintf(`{"card":%q,"amount_cents":100,"method":"cash","idempotency_key":"ct-%d","reference":"caf\u00e9 \ud83c\udf7a %d"}`, card, i, i)
			st, _, out := v.doRaw("POST", "/api/v1/topups", v.token, ct, []byte(body))
			if st != 200 || out["balance_cents"] != float64(100*(i+1)) {
				t.Fatalf("%d %v", st, out)
			}
		})
	}
	// A description keeps its newlines and tabs.
	st, ev := v.post("/api/v1/events", map[string]any{"title": "Quiz", "starts_at": "2026-12-01T20:00:00Z", "ends_at": "2026-12-01T21:00:00Z",
		"description": "Round 1\n\tRound 2\r\n", "idempotency_key": "e1"})
	if st != 200 || ev["description"] != "Round 1\n\tRound 2\r\n" {
		t.Fatalf("%d %v", st, ev)
	}
}

// TestMethodNotAllowed: a known path with another method answers 405 with
// Allow and the API's error shape; an unknown path stays 404.
func TestMethodNotAllowed(t *testing.T) {
	v := newTestVenue(t)
	cases := []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/api/v1/payments", 405, "POST"},
		{"PUT", "/api/v1/topups", 405, "POST"},
		{"DELETE", "/api/v1/events", 405, "GET, HEAD, POST"},
		{"POST", "/api/v1/cards/" + card, 405, "GET, HEAD"},
		{"GET", "/api/v1/cards/" + card + "/block", 405, "POST"},
		{"GET", "/api/v1/cards/" + card + "/holder-token", 405, "POST"},
		{"POST", "/api/v1/sync/status", 405, "GET, HEAD"},
		{"POST", "/metrics", 405, "GET, HEAD"},
		{"POST", "/healthz", 405, "GET, HEAD"},
		{"PATCH", "/agenda.ics", 405, "GET, HEAD"},
		{"GET", "/api/v1/nothing", 404, ""},
		{"POST", "/nothing", 404, ""},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			st, h, body := v.doRaw(tc.method, tc.path, v.token, "application/json", nil)
			code := map[int]string{405: "method_not_allowed", 404: "not_found"}[tc.status]
			if st != tc.status || body["error"] != code || body["message"] == "" || h.Get("Allow") != tc.allow {
				t.Fatalf("got %d Allow %q %v, want %d Allow %q", st, h.Get("Allow"), body, tc.status, tc.allow)
			}
			if ct := h.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
		})
	}
}

// TestEventOwnership: event ids are unique per venue; a venue cannot
// update or cancel another venue's event (403 not_your_event), and may
// publish its own event with the same id.
func TestEventOwnership(t *testing.T) {
	vs, err := PrepareDemo(t.TempDir(), 2)
	if err != nil {
		t.Fatal(err)
	}
	a := &testVenue{t: t, dir: vs[0].Dir, token: vs[0].Token}
	b := &testVenue{t: t, dir: vs[1].Dir, token: vs[1].Token}
	for _, x := range []*testVenue{a, b} {
		x.start()
		t.Cleanup(x.stop)
	}
	ev := map[string]any{"id": "gig", "title": "B's gig", "starts_at": "2026-12-01T20:00:00Z", "ends_at": "2026-12-01T22:00:00Z", "idempotency_key": "b1"}
	if st, out := b.post("/api/v1/events", ev); st != 200 {
		t.Fatal(st, out)
	}
	// B's ops reach A (as replication would bring them).
	bk := b.node.Key()
	var ops []crdt.Op
	if err := b.node.ReadRange(bk, 1, b.node.VersionVector()[bk], func(op crdt.Op) error { ops = append(ops, op); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := a.node.Ingest(context.Background(), ops); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		body map[string]any
	}{
		{"update another venue's event", map[string]any{"id": "gig", "title": "Mine now", "idempotency_key": "a1"}},
		{"cancel another venue's event", map[string]any{"id": "gig", "cancelled": true, "reason": "no", "idempotency_key": "a2"}},
		{"name another venue", map[string]any{"id": "gig", "venue_id": bk.String(), "title": "x", "starts_at": "2026-12-01T20:00:00Z", "ends_at": "2026-12-01T22:00:00Z", "idempotency_key": "a3"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := a.digest()
			st, out := a.post("/api/v1/events", tc.body)
			if st != 403 || out["error"] != "not_your_event" || out["message"] == "" {
				t.Fatalf("got %d %v, want 403 not_your_event", st, out)
			}
			if a.digest() != before {
				t.Fatal("digest changed by a refused request")
			}
		})
	}
	// A's own event with the same id is another event.
	mine := map[string]any{"id": "gig", "venue_id": a.node.Key().String(), "title": "A's gig", "starts_at": "2026-12-02T20:00:00Z", "ends_at": "2026-12-02T22:00:00Z", "idempotency_key": "a4"}
	if st, out := a.post("/api/v1/events", mine); st != 200 || out["venue_id"] != a.node.Key().String() {
		t.Fatal(st, out)
	}
	if st, out := a.post("/api/v1/events", map[string]any{"id": "gig", "title": "A's gig, updated", "idempotency_key": "a5"}); st != 200 || out["title"] != "A's gig, updated" {
		t.Fatal(st, out)
	}
	_, list := a.do("GET", "/api/v1/events", "", nil)
	if raw := list["raw"].(string); !strings.Contains(raw, `"title":"B's gig"`) || !strings.Contains(raw, `"title":"A's gig, updated"`) {
		t.Fatalf("events: %s", raw)
	}
}

// TestCardHistoryPrivate: without a staff or holder token, a card's view
// is 401 with the same body whether the card exists or not.
func TestCardHistoryPrivate(t *testing.T) {
	v := newTestVenue(t)
	v.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 500, "method": "cash", "idempotency_key": "t1"})
	var first map[string]any
	for _, c := range []struct{ name, card, token string }{
		{"known card, no token", card, ""},
		{"unknown card, no token", "04FFFFFFFFFFFF", ""},
		{"known card, wrong token", card, "nope"},
		{"unknown card, wrong token", "04FFFFFFFFFFFF", "nope"},
		{"bad card id, no token", "zz", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, h, body := v.doRaw("GET", "/api/v1/cards/"+c.card, c.token, "", nil)
			if st != 401 || body["error"] != "unauthorized" || h.Get("WWW-Authenticate") == "" {
				t.Fatalf("%d %v", st, body)
			}
			if first == nil {
				first = body
			} else if fmt.Sprint(body) != fmt.Sprint(first) {
				t.Fatalf("answers differ: %v vs %v", body, first)
			}
		})
	}
}

// TestHolderToken: staff issue a holder token; it opens that card's view
// (on /api/v1/holder/{token} and as a bearer token), and nothing else.
func TestHolderToken(t *testing.T) {
	v := newTestVenue(t)
	other := "04000000000B10"
	for i, c := range []string{card, other} {
		if st, _ := v.post("/api/v1/topups", map[string]any{"card": c, "amount_cents": 500, "method": "cash", "idempotency_key": fmt.Sprint("t", i)}); st != 200 {
			t.Fatal(st)
		}
	}
	st, _, issued := v.doRaw("POST", "/api/v1/cards/"+strings.ToLower(card)+"/holder-token", v.token, "", nil)
	tok, _ := issued["token"].(string)
	if st != 200 || tok == "" || issued["url"] != "/c/"+tok || issued["card"] != card {
		t.Fatalf("issue: %d %v", st, issued)
	}
	// Deterministic: issuing again gives the same token.
	if _, again := v.post("/api/v1/cards/"+card+"/holder-token", map[string]any{}); again["token"] != tok {
		t.Fatalf("second token differs: %v", again)
	}

	// Forgeries.
	raw, _ := base64.RawURLEncoding.DecodeString(tok)
	flip := func(i int) string {
		b := append([]byte(nil), raw...)
		b[i] ^= 1
		return base64.RawURLEncoding.EncodeToString(b)
	}
	// A token of another card made by splicing the card id.
	otherUID, _ := hex.DecodeString(other)
	spliced := append(append([]byte{raw[0], byte(len(otherUID))}, otherUID...), raw[2+raw[1]:]...)
	// A token signed by a key that is not a venue of the federation.
	_, stranger, _ := ed25519.GenerateKey(nil)
	uid, _ := hex.DecodeString(card)
	foreign := append(append([]byte{1, byte(len(uid))}, uid...), stranger.Public().(ed25519.PublicKey)...)
	foreign = append(foreign, ed25519.Sign(stranger, []byte(holderDomain+card))...)
	// A signature without the domain separator.
	k := v.node.cfg.Key
	pub := k.Public()
	noDomain := append(append([]byte{1, byte(len(uid))}, uid...), pub[:]...)
	noDomain = append(noDomain, ed25519.Sign(k.PrivateKey(), []byte(card))...)

	t.Run("valid", func(t *testing.T) {
		st, h := v.do("GET", "/api/v1/holder/"+tok, "", nil)
		if st != 200 || h["card"] != card || h["balance_cents"] != 500.0 || len(h["history"].([]any)) != 1 {
			t.Fatalf("%d %v", st, h)
		}
		st, c := v.do("GET", "/api/v1/cards/"+card, tok, nil)
		if st != 200 || c["balance_cents"] != 500.0 {
			t.Fatalf("as bearer: %d %v", st, c)
		}
	})
	t.Run("other card", func(t *testing.T) {
		if st, body := v.do("GET", "/api/v1/cards/"+other, tok, nil); st != 401 || body["error"] != "unauthorized" {
			t.Fatalf("%d %v", st, body)
		}
	})
	t.Run("holder token is not a staff token", func(t *testing.T) {
		if st, body := v.do("POST", "/api/v1/payments", tok, map[string]any{"card": card, "amount_cents": 1, "idempotency_key": "h"}); st != 401 {
			t.Fatalf("%d %v", st, body)
		}
	})
	bad := []struct{ name, tok string }{
		{"flipped signature bit", flip(len(raw) - 1)},
		{"flipped card bit", flip(3)},
		{"flipped key bit", flip(2 + int(raw[1]) + 5)},
		{"spliced card id", base64.RawURLEncoding.EncodeToString(spliced)},
		{"unknown venue", base64.RawURLEncoding.EncodeToString(foreign)},
		{"no domain separation", base64.RawURLEncoding.EncodeToString(noDomain)},
		{"truncated", tok[:len(tok)-4]},
		{"garbage", "not-a-token"},
		{"too long", strings.Repeat("A", 400)},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			if st, body := v.do("GET", "/api/v1/holder/"+b.tok, "", nil); st != 404 || body["error"] != "not_found" {
				t.Fatalf("holder page: %d %v", st, body)
			}
			if st, body := v.do("GET", "/api/v1/cards/"+card, b.tok, nil); st != 401 || body["error"] != "unauthorized" {
				t.Fatalf("as bearer: %d %v", st, body)
			}
		})
	}
	t.Run("issuing needs staff", func(t *testing.T) {
		if st, body := v.do("POST", "/api/v1/cards/"+card+"/holder-token", tok, nil); st != 401 {
			t.Fatalf("%d %v", st, body)
		}
	})
	t.Run("issuing for an unknown card", func(t *testing.T) {
		if st, body := v.do("POST", "/api/v1/cards/04FFFFFFFFFFFF/holder-token", v.token, nil); st != 404 || body["error"] != "unknown_card" {
			t.Fatalf("%d %v", st, body)
		}
	})
	t.Run("issuing with a body field", func(t *testing.T) {
		if st, body := v.do("POST", "/api/v1/cards/"+card+"/holder-token", v.token, map[string]any{"ttl": 5}); st != 400 {
			t.Fatalf("%d %v", st, body)
		}
	})
}

// TestHolderTokenOtherVenue: a token issued at one venue opens the card at
// another venue of the federation, also after the issuing venue is revoked.
func TestHolderTokenOtherVenue(t *testing.T) {
	vs, err := PrepareDemo(t.TempDir(), 2)
	if err != nil {
		t.Fatal(err)
	}
	a := &testVenue{t: t, dir: vs[0].Dir, token: vs[0].Token}
	b := &testVenue{t: t, dir: vs[1].Dir, token: vs[1].Token}
	for _, x := range []*testVenue{a, b} {
		x.start()
		t.Cleanup(x.stop)
	}
	for _, x := range []*testVenue{a, b} {
		if st, _ := x.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 100, "method": "cash", "idempotency_key": "t"}); st != 200 {
			t.Fatal(st)
		}
	}
	_, issued := a.post("/api/v1/cards/"+card+"/holder-token", map[string]any{})
	if st, h := b.do("GET", "/api/v1/holder/"+issued["token"].(string), "", nil); st != 200 || h["card"] != card {
		t.Fatalf("%d %v", st, h)
	}
	// Revoking the issuing venue does not cut its card holders off
	// (docs/api.md: tokens of a venue that is or was a member are valid).
	f, err := OpenFederation(filepath.Join(filepath.Dir(vs[0].Dir), "federation"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ak := a.node.Key()
	rev, err := f.Revoke(ak, a.node.VersionVector()[ak], "lost")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.node.Ingest(context.Background(), []crdt.Op{rev}); err != nil {
		t.Fatal(err)
	}
	revoked := false
	b.node.View(func(set *crdt.OpSet) { revoked = set.State.Venues[ak].Revoked })
	if !revoked {
		t.Fatal("the revocation did not reach venue b")
	}
	if st, h := b.do("GET", "/api/v1/holder/"+issued["token"].(string), "", nil); st != 200 || h["card"] != card {
		t.Fatalf("token of a revoked venue: %d %v", st, h)
	}
}

// TestHistoryPagination: newest first, ?limit= and ?before= walk the whole
// history once; bad parameters are refused.
func TestHistoryPagination(t *testing.T) {
	v := newTestVenue(t)
	v.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 1000, "method": "cash", "idempotency_key": "t"})
	for i := range 6 {
		if st, out := v.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 1, "idempotency_key": fmt.Sprint("p", i)}); st != 200 {
			t.Fatal(st, out)
		}
	}
	_, all := v.do("GET", "/api/v1/cards/"+card, v.token, nil)
	full := all["history"].([]any)
	if len(full) != 7 || all["next"] != nil || full[6].(map[string]any)["kind"] != "topup" || full[0].(map[string]any)["counter"] != 6.0 {
		t.Fatalf("default page: %v", all)
	}
	_, issued := v.post("/api/v1/cards/"+card+"/holder-token", map[string]any{})
	for _, base := range []struct{ path, token string }{
		{"/api/v1/cards/" + card, v.token},
		{"/api/v1/holder/" + issued["token"].(string), ""},
	} {
		var got []any
		pages := 0
		next := ""
		for {
			path := base.path + "?limit=3"
			if next != "" {
				path += "&before=" + next
			}
			st, page := v.do("GET", path, base.token, nil)
			if st != 200 || page["balance_cents"] != 994.0 {
				t.Fatalf("%s: %d %v", path, st, page)
			}
			got = append(got, page["history"].([]any)...)
			pages++
			n, _ := page["next"].(string)
			if n == "" {
				break
			}
			next = n
		}
		if pages != 3 || fmt.Sprint(got) != fmt.Sprint(full) {
			t.Fatalf("%s: %d pages, %v, want %v", base.path, pages, got, full)
		}
	}
	for _, q := range []string{"limit=0", "limit=501", "limit=x", "before=zz", "before=AAAA"} {
		t.Run(q, func(t *testing.T) {
			if st, body := v.do("GET", "/api/v1/cards/"+card+"?"+q, v.token, nil); st != 400 || body["error"] != "invalid_request" {
				t.Fatalf("%d %v", st, body)
			}
		})
	}
	if st, page := v.do("GET", "/api/v1/cards/"+card+"?limit=500", v.token, nil); st != 200 || len(page["history"].([]any)) != 7 {
		t.Fatalf("limit=500: %d %v", st, page)
	}
}

// TestHealthz: alive while the process serves.
func TestHealthz(t *testing.T) {
	v := newTestVenue(t)
	if st, body := v.do("GET", "/healthz", "", nil); st != 200 || body["status"] != "alive" {
		t.Fatalf("%d %v", st, body)
	}
}

// TestReadyz: ready without networking; 503 with the failing check when
// the store fails or, networked, when no other venue is known yet; ready
// once a peer is.
func TestReadyz(t *testing.T) {
	t.Run("no network", func(t *testing.T) {
		v := newTestVenue(t)
		if st, body := v.do("GET", "/readyz", "", nil); st != 200 || body["status"] != "ready" || len(body["checks"].([]any)) != 3 {
			t.Fatalf("%d %v", st, body)
		}
		v.node.failed.Store(true)
		defer v.node.failed.Store(false)
		st, body := v.do("GET", "/readyz", "", nil)
		if st != 503 || body["error"] != "not_ready" || !strings.Contains(body["message"].(string), "store:") {
			t.Fatalf("%d %v", st, body)
		}
	})
	t.Run("network", func(t *testing.T) {
		vs, err := PrepareDemo(t.TempDir(), 2)
		if err != nil {
			t.Fatal(err)
		}
		var nodes []*testVenue
		for i, d := range vs {
			cfg := p2p.DefaultConfig()
			cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
			cfg.MDNS, cfg.NATPortMap, cfg.HolePunching = false, false, false
			if i > 0 {
				cfg.Bootstrap = nodes[0].node.Network().P2PAddrs()
			}
			n, err := New(Config{DataDir: d.Dir, HTTPAddr: "127.0.0.1:0", Logger: quietLogger(), P2P: &cfg})
			if err != nil {
				t.Fatal(err)
			}
			if err := n.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			tv := &testVenue{t: t, dir: d.Dir, token: d.Token, node: n, api: "http://" + n.Addr()}
			t.Cleanup(tv.stop)
			nodes = append(nodes, tv)
			if i == 0 {
				// Alone on the network: not ready, and it says why.
				st, body := tv.do("GET", "/readyz", "", nil)
				if st != 503 || body["error"] != "not_ready" || !strings.Contains(body["message"].(string), "peers: no other venue known") {
					t.Fatalf("%d %v", st, body)
				}
			}
		}
		waitUntil(t, 15*time.Second, "both venues ready", func() bool {
			for _, n := range nodes {
				if st, _ := n.do("GET", "/readyz", "", nil); st != 200 {
					return false
				}
			}
			return true
		})
	})
}
