package node

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The fuzz targets send what a hostile client could to a running node's
// whole HTTP handler (security wrapper, backup route, API, pages), in
// process: no answer may be a panic or a 500, an API error must be the
// API's JSON error shape, and the node must keep serving. Run one with
//
//	go test ./node -run '^$' -fuzz '^FuzzAPIPayments$' -fuzztime 10m
//
// Crashers the fuzzer finds land in testdata/fuzz/<target>/ and are kept
// there as seeds (go test runs them as regression tests).

// fuzzNode starts a node for a fuzz target (one per fuzzing process) and
// returns its handler and a staff token.
func fuzzNode(f *testing.F) (http.Handler, string) {
	f.Helper()
	vs, err := PrepareDemo(f.TempDir(), 1)
	if err != nil {
		f.Fatal(err)
	}
	n, err := New(Config{DataDir: vs[0].Dir, HTTPAddr: "127.0.0.1:0", Logger: quietLogger(),
		// The fuzzer guesses tokens on every try: keep the limits out of its way.
		Security: SecurityConfig{AuthFailureBurst: 1 << 30, HolderFailureBurst: 1 << 30}})
	if err != nil {
		f.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { n.Close() })
	// A known card with money, so that payments reach the money rules.
	h := n.secure(n.withBackup(n.Handler()))
	serve(f, h, "POST", "/api/v1/topups", "Bearer "+vs[0].Token,
		[]byte(`{"card":"04A1B2C3D4E5F6","amount_cents":10000,"method":"cash","idempotency_key":"fuzz-seed"}`))
	return h, vs[0].Token
}

// serve sends one request to h and checks the answer's invariants.
func serve(t testing.TB, h http.Handler, method, target, auth string, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	req, err := http.NewRequest(method, "http://node"+target, bytes.NewReader(body))
	if err != nil || req.URL.Path == "" || req.URL.Path[0] != '/' {
		return nil // not a request a client could send
	}
	req.RemoteAddr = "192.0.2.1:1234"
	req.RequestURI = target
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req.WithContext(ctx))
	if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("%s %q: %d %s", method, target, rec.Code, rec.Body.Bytes())
	}
	if rec.Code >= 400 && strings.HasPrefix(req.URL.Path, "/api/") &&
		strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		var e struct {
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
			t.Fatalf("%s %q: %d answer is not the API's error shape: %q", method, target, rec.Code, rec.Body.Bytes())
		}
	}
	if rec.Header().Get("Content-Security-Policy") == "" {
		t.Fatalf("%s %q: no security headers", method, target)
	}
	return rec
}

func fuzzBody(f *testing.F, target string, seeds ...string) {
	h, tok := fuzzNode(f)
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		serve(t, h, "POST", target, "Bearer "+tok, body)
	})
}

// FuzzAPIPayments fuzzes POST /api/v1/payments' request decoding (JSON,
// card ids, amounts, idempotency keys, labels, base64 card stamps).
func FuzzAPIPayments(f *testing.F) {
	fuzzBody(f, "/api/v1/payments",
		`{"card":"04A1B2C3D4E5F6","amount_cents":350,"idempotency_key":"k1"}`,
		`{"card":"04A1B2C3D4E5F6","amount_cents":350,"idempotency_key":"k2","label":"bière","stamp":"AAAA"}`,
		`{"card":"04a1b2c3d4e5f6","amount_cents":-1,"idempotency_key":""}`,
		`{"card":"zz","amount_cents":1e30,"idempotency_key":"k"}`,
		`{"card":"04A1B2C3D4E5F6","amount_cents":1,"idempotency_key":"k3"}{"x":1}`,
		`[1,2,3]`, `null`, ``, `{"card":null}`, "\xff\xfe",
	)
}

// FuzzAPITopUps fuzzes POST /api/v1/topups.
func FuzzAPITopUps(f *testing.F) {
	fuzzBody(f, "/api/v1/topups",
		`{"card":"04A1B2C3D4E5F6","amount_cents":1000,"method":"cash","idempotency_key":"t1"}`,
		`{"card":"04A1B2C3D4E5F6","amount_cents":1000,"method":"card","reference":"r","idempotency_key":"t2"}`,
		`{"card":"04A1B2C3D4E5F6","amount_cents":99999999999,"method":"cash","idempotency_key":"t3"}`,
		`{"method":"bitcoin"}`, `{}`,
	)
}

// FuzzAPIRefunds fuzzes POST /api/v1/refunds.
func FuzzAPIRefunds(f *testing.F) {
	fuzzBody(f, "/api/v1/refunds",
		`{"card":"04A1B2C3D4E5F6","amount_cents":100,"method":"cash","idempotency_key":"r1"}`,
		`{"card":"04A1B2C3D4E5F6","all":true,"idempotency_key":"r2"}`,
		`{"card":"04A1B2C3D4E5F6","amount_cents":0,"idempotency_key":"r3"}`,
	)
}

// FuzzAPIEvents fuzzes POST /api/v1/events (agenda: times, text fields).
func FuzzAPIEvents(f *testing.F) {
	fuzzBody(f, "/api/v1/events",
		`{"title":"Concert","start":"2026-12-01T20:00:00Z","end":"2026-12-01T23:00:00Z","idempotency_key":"e1"}`,
		`{"id":"x","title":"","start":"yesterday","idempotency_key":"e2"}`,
		`{"title":"a","start":"2026-12-01T20:00:00Z","end":"2026-11-01T20:00:00Z","description":"<script>","idempotency_key":"e3"}`,
	)
}

// FuzzAPIRoutes fuzzes any method, path and query on the whole handler,
// with or without a token: path values (card ids, holder tokens, op ids,
// venue keys), the pages, the backup route, unknown routes.
func FuzzAPIRoutes(f *testing.F) {
	h, tok := fuzzNode(f)
	for _, s := range []struct {
		method, path string
		staff        bool
		body         string
	}{
		{"GET", "/api/v1/cards/04A1B2C3D4E5F6", true, ""},
		{"GET", "/api/v1/cards/04A1B2C3D4E5F6?limit=5&before=3", false, ""},
		{"POST", "/api/v1/cards/04A1B2C3D4E5F6/holder-token", true, ""},
		{"POST", "/api/v1/cards/04A1B2C3D4E5F6/block", true, `{"reason":"lost","idempotency_key":"b"}`},
		{"GET", "/api/v1/holder/AQdhYmNkZWZn", false, ""},
		{"GET", "/c/AQdhYmNkZWZn", false, ""},
		{"GET", "/c/AQdhYmNkZWZn/qr.png", false, ""},
		{"GET", "/api/v1/events?from=2026-01-01&to=x", false, ""},
		{"GET", "/venues/00/agenda.ics", false, ""},
		{"GET", "/events/%ff", false, ""},
		{"GET", "/agenda?lang=fr&venue=zz", false, ""},
		{"GET", "/api/v1/conflicts", false, ""},
		{"GET", "/api/v1/sync/status", false, ""},
		{"GET", "/api/v1/taps?after=-1", true, ""},
		{"POST", "/api/v1/taps/simulate", true, `{"reader":"x","card":"04"}`},
		{"GET", "/api/v1/backup", false, ""},
		{"DELETE", "/api/v1/payments", true, ""},
		{"GET", "/../../etc/passwd", false, ""},
		{"GET", "/static/../node.key", false, ""},
	} {
		f.Add(s.method, s.path, s.staff, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, method, path string, staff bool, body []byte) {
		if len(path) > 4096 || len(method) > 16 {
			return // the server's header limit refuses these before any handler
		}
		if path == "/api/v1/backup" && staff {
			return // a whole backup per try: not what this target is for
		}
		auth := ""
		if staff {
			auth = "Bearer " + tok
		}
		if strings.HasPrefix(path, "/pos/stream") || strings.HasPrefix(path, "/api/v1/taps/stream") || strings.HasPrefix(path, "/dashboard/live") {
			return // streams last until the request times out
		}
		serve(t, h, method, path, auth, body)
	})
}

// FuzzHolderToken fuzzes the card holder token decoder (the token comes
// from a URL anyone can type).
func FuzzHolderToken(f *testing.F) {
	vs, err := PrepareDemo(f.TempDir(), 1)
	if err != nil {
		f.Fatal(err)
	}
	n, err := New(Config{DataDir: vs[0].Dir, HTTPAddr: "127.0.0.1:0", Logger: quietLogger()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { n.Close() })
	good, err := n.HolderToken("04A1B2C3D4E5F6")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{good, good[:len(good)-1], "", "AQ", "AQcA", strings.Repeat("A", 200), "%%%", good + "=="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		card, err := n.VerifyHolderToken(tok)
		// Only a signature of this node opens a card: the one card it signed.
		if err == nil && card != "04A1B2C3D4E5F6" {
			t.Fatalf("token %q opens card %s, which this node never signed", tok, card)
		}
	})
}
