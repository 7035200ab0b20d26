package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	ics "github.com/arran4/golang-ical"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/node/stripe/stripetest"
)

// More fuzz targets for what reaches a node over HTTP (issue 16): the
// Stripe webhook, the point of sale's forms and its session and CSRF
// cookies, the card holder's forms, and the agenda's query parameters.
// Each runs the node's whole handler in process, as fuzz_api_test.go's.
// Run one with
//
//	go test ./node -run '^$' -fuzz '^FuzzStripeWebhook$' -fuzztime 10m -parallel 1

// fuzzSite is a started node, its whole handler and a signed-in staff
// session on it.
type fuzzSite struct {
	n       *Node
	h       http.Handler
	token   string // the staff token
	session string // the staff session cookie's value
	csrf    string // the session's CSRF token
	holder  string // a card holder's token
}

// newFuzzSite starts a one-venue node (a Stripe gateway when stripe is
// set) and signs in at its point of sale through the sign-in form.
func newFuzzSite(f *testing.F, stripe bool) *fuzzSite {
	f.Helper()
	vs, err := PrepareDemo(f.TempDir(), 1)
	if err != nil {
		f.Fatal(err)
	}
	cfg := Config{DataDir: vs[0].Dir, HTTPAddr: "127.0.0.1:0", Logger: quietLogger(),
		// The fuzzer guesses tokens on every try: keep the limits out of its way.
		Security: SecurityConfig{AuthFailureBurst: 1 << 30, HolderFailureBurst: 1 << 30}}
	if stripe {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			f.Fatal(err)
		}
		dead := "http://" + ln.Addr().String() // nothing listens there: Stripe is unreachable
		ln.Close()
		cfg.Stripe = StripeConfig{SecretKey: testStripeKey, WebhookSecret: testStripeWebhook, PublicURL: "https://gateway.example",
			BackendURL: dead, RetryInterval: time.Hour, StaggerWindow: -1}
	}
	n, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { n.Close() })
	s := &fuzzSite{n: n, h: n.secure(n.withBackup(n.Handler())), token: vs[0].Token}
	card := "04A1B2C3D4E5F6"
	if rec := s.do(f, "POST", "/api/v1/topups", http.Header{"Authorization": {"Bearer " + s.token}, "Content-Type": {"application/json"}},
		[]byte(`{"card":"`+card+`","amount_cents":10000,"method":"cash","idempotency_key":"fuzz-seed"}`)); rec.Code != http.StatusOK {
		f.Fatalf("top-up: %d %s", rec.Code, rec.Body)
	}
	if s.holder, err = n.HolderToken(crdt.CardID(card)); err != nil {
		f.Fatal(err)
	}
	// Sign in as a browser does: the form's token, its cookie, the staff token.
	rec := s.do(f, "GET", "/pos", nil, nil)
	login := cookieOf(rec, loginCSRFCookie)
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(rec.Body.String())
	if login == "" || m == nil {
		f.Fatalf("no sign-in form: %d", rec.Code)
	}
	rec = s.do(f, "POST", "/pos/login", http.Header{"Cookie": {loginCSRFCookie + "=" + login}, "Origin": {"http://node"},
		"Content-Type": {"application/x-www-form-urlencoded"}}, []byte(url.Values{"csrf": {m[1]}, "token": {s.token}}.Encode()))
	if s.session = cookieOf(rec, sessionCookie); rec.Code != http.StatusSeeOther || s.session == "" {
		f.Fatalf("sign in: %d", rec.Code)
	}
	rec = s.do(f, "GET", "/pos", http.Header{"Cookie": {sessionCookie + "=" + s.session}}, nil)
	if m = regexp.MustCompile(`data-csrf="([^"]+)"`).FindStringSubmatch(rec.Body.String()); m == nil {
		f.Fatalf("no point of sale after sign-in: %d", rec.Code)
	}
	s.csrf = m[1]
	return s
}

func cookieOf(rec *httptest.ResponseRecorder, name string) string {
	for _, c := range rec.Result().Cookies() {
		if c.Name == name && c.MaxAge >= 0 {
			return c.Value
		}
	}
	return ""
}

// do sends one request to the site's handler and checks what every answer
// must be: no panic, no 500 (503 is the node asking to retry), the
// security headers. It returns nil for a request no client could send.
func (s *fuzzSite) do(t testing.TB, method, target string, hdr http.Header, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	req, err := http.NewRequest(method, "http://node"+target, bytes.NewReader(body))
	if err != nil || req.URL.Path == "" || req.URL.Path[0] != '/' {
		return nil
	}
	req.RemoteAddr = "192.0.2.1:1234"
	req.RequestURI = target
	for k, v := range hdr {
		req.Header[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rec := httptest.NewRecorder()
	s.h.ServeHTTP(rec, req.WithContext(ctx))
	if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("%s %q: %d %s", method, target, rec.Code, rec.Body.Bytes())
	}
	if rec.Header().Get("Content-Security-Policy") == "" {
		t.Fatalf("%s %q: no security headers", method, target)
	}
	return rec
}

// apiError returns the error code of an API error answer ("" if none).
func apiError(rec *httptest.ResponseRecorder) string {
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &e)
	return e.Error
}

// FuzzStripeWebhook posts any body to the Stripe webhook, signed with the
// webhook secret (as Stripe would, so that the event reaches the ledger)
// or with any Stripe-Signature header. Unsigned bodies are refused as
// such and change nothing; signed ones never get a 500.
func FuzzStripeWebhook(f *testing.F) {
	s := newFuzzSite(f, true)
	card := "04A1B2C3D4E5F6"
	for _, b := range [][]byte{
		stripetest.CheckoutCompleted("evt_1", "cs_1", "pi_1", card, 2000, "EUR", true),
		stripetest.CheckoutCompleted("evt_2", "cs_2", "pi_2", "zz", -1, "usd", true),
		stripetest.CheckoutAsync("evt_3", "cs_3", "pi_3", card, 500, "EUR", false),
		stripetest.PaymentIntentSucceeded("evt_4", "pi_4", card, 99999999999, "EUR"),
		stripetest.ChargeRefunded("evt_5", "ch_5", "pi_1", 500, stripetest.RefundObject("re_5", "pi_1", 500, "")),
		stripetest.DisputeCreated("evt_6", "dp_6", "ch_5", "pi_1", 2000),
		stripetest.Event("evt_7", "customer.created", map[string]any{"id": "cus_1"}),
		[]byte(`{"id":"evt_8","type":"checkout.session.completed","data":{"object":null}}`),
		[]byte(`[]`),
	} {
		f.Add(b, true, "")
		f.Add(b, false, stripetest.Sign(b, "whsec_someone_else", time.Now()))
	}
	f.Add([]byte(`{}`), false, "t=1,v1=00")
	genuine := stripetest.CheckoutCompleted("evt_0", "cs_0", "pi_0", card, 1000, "EUR", true)
	rec := s.do(f, "POST", "/api/v1/stripe/webhook", http.Header{"Stripe-Signature": {stripetest.Sign(genuine, testStripeWebhook, time.Now())}}, genuine)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"credited"`) {
		f.Fatalf("a genuine webhook: %d %s", rec.Code, rec.Body)
	}
	f.Fuzz(func(t *testing.T, body []byte, signed bool, header string) {
		if signed {
			header = stripetest.Sign(body, testStripeWebhook, time.Now())
		}
		before := s.n.Status().Digest
		rec := s.do(t, "POST", "/api/v1/stripe/webhook", http.Header{"Stripe-Signature": {header}, "Content-Type": {"application/json"}}, body)
		if signed {
			return
		}
		if rec.Code == http.StatusOK {
			t.Fatalf("a body not signed with the webhook secret was taken (header %q)", header)
		}
		if after := s.n.Status().Digest; after != before {
			t.Fatal("an unsigned webhook changed the ledger")
		}
	})
}

// Point of sale and holder forms FuzzWebForms posts to. The fuzzer's body
// follows a valid CSRF field, so that it reaches the form's handler.
var fuzzForms = []struct {
	path string
	kind string // form: staff form; login; holder: a holder's form; json: a point of sale write
}{
	{"/pos/products", "form"},
	{"/pos/events", "form"},
	{"/pos/login", "login"},
	{"/pos/logout", "form"},
	{"/c/{tok}/lost", "holder:lost"},
	{"/c/{tok}/topup", "holder:topup"},
	{"/pos/api/payments", "json"},
	{"/pos/api/topups", "json"},
	{"/pos/api/refunds", "json"},
	{"/pos/api/cards/04A1B2C3D4E5F6/block", "json"},
	{"/pos/api/cards/04A1B2C3D4E5F6/holder-token", "json"},
	{"/pos/api/undo/0000", "json"},
}

// FuzzWebForms posts any form body to the point of sale's and the card
// holder's forms, past their CSRF checks. No answer is a 500, and the
// sign-in form opens a session only for the staff token.
func FuzzWebForms(f *testing.F) {
	s := newFuzzSite(f, false)
	for _, seed := range []struct {
		form int
		body string
	}{
		{0, "key=k1&name=Bi%C3%A8re&price=3.50&name=Vin&price=4"},
		{0, "key=k2&name=&price=-1"},
		{1, "key=e1&id=&title=Concert&starts_at=2026-12-01T20%3A00&ends_at=2026-12-01T23%3A00&description=x"},
		{1, "key=e2&id=e1&cancel=1&reason=rain"},
		{2, "token=wrong"},
		{3, ""},
		{4, "confirm=1"},
		{5, "key=t1&amount=12.50"},
		{6, `{"card":"04A1B2C3D4E5F6","amount_cents":350,"idempotency_key":"p1"}`},
		{7, `{"card":"04A1B2C3D4E5F6","amount_cents":100,"method":"cash","idempotency_key":"t1"}`},
		{8, `{"card":"04A1B2C3D4E5F6","amount_cents":50,"reason":"x","idempotency_key":"r1"}`},
		{9, `{"reason":"lost","idempotency_key":"b1"}`},
		{10, `{}`},
		{11, `{}`},
	} {
		f.Add(uint8(seed.form), seed.body)
	}
	// The holder's forms carry a token derived from the node's secret: take
	// it from the holder's page, as a browser does.
	formToken := map[string]string{}
	page := s.do(f, "GET", "/c/"+s.holder, nil, nil).Body.String()
	for _, m := range regexp.MustCompile(`action="/c/[^"]*/(lost|topup)"[^>]*>\s*<input type="hidden" name="csrf" value="([^"]+)"`).FindAllStringSubmatch(page, -1) {
		formToken[m[1]] = m[2]
	}
	if formToken["lost"] == "" {
		f.Fatal("no lost-card form on the holder's page")
	}
	f.Fuzz(func(t *testing.T, form uint8, body string) {
		ff := fuzzForms[int(form)%len(fuzzForms)]
		if len(body) > 1<<16 {
			return
		}
		path := strings.ReplaceAll(ff.path, "{tok}", s.holder)
		hdr := http.Header{"Origin": {"http://node"}, "Content-Type": {"application/x-www-form-urlencoded"},
			"Cookie": {sessionCookie + "=" + s.session}}
		var b string
		switch {
		case ff.kind == "form":
			b = "csrf=" + url.QueryEscape(s.csrf) + "&" + body
		case ff.kind == "login":
			hdr["Cookie"] = []string{loginCSRFCookie + "=fuzzlogin"}
			b = "csrf=fuzzlogin&" + body
		case strings.HasPrefix(ff.kind, "holder:"):
			tok := formToken[strings.TrimPrefix(ff.kind, "holder:")] // none for top-ups: not a gateway
			hdr["Cookie"] = nil
			b = "csrf=" + url.QueryEscape(tok) + "&" + body
		case ff.kind == "json":
			hdr["Content-Type"] = []string{"application/json"}
			hdr["X-CSRF-Token"] = []string{s.csrf}
			b = body
		}
		if ff.path == "/pos/logout" {
			return // would end the session the other inputs use
		}
		rec := s.do(t, "POST", path, hdr, []byte(b))
		if rec == nil {
			return
		}
		if ff.kind == "login" && cookieOf(rec, sessionCookie) != "" {
			v, err := url.ParseQuery(b)
			if err != nil || strings.TrimSpace(v.Get("token")) != s.token {
				t.Fatalf("sign-in without the staff token opened a session: %q", body)
			}
		}
	})
}

// FuzzStaffSession sends any Cookie, X-CSRF-Token and Origin headers to
// the point of sale's session-guarded routes: a read (a session is
// enough), a write (a session, its CSRF token, the same origin) and the
// sign-out. Only the signed-in session's cookie opens them, only with its
// token and origin for writes, and no sign-out ends that session without
// them.
func FuzzStaffSession(f *testing.F) {
	s := newFuzzSite(f, false)
	own := sessionCookie + "=" + s.session
	for _, seed := range []struct {
		mode                 uint8
		cookie, csrf, origin string
	}{
		{0, own, "", ""},
		{1, own, s.csrf, "http://node"},
		{1, own, s.csrf, "http://evil.example"},
		{1, own, s.csrf[1:], "http://node"},
		{2, own, "", "http://node"},
		{0, sessionCookie + "=" + s.session[:len(s.session)-1], "", ""},
		{1, sessionCookie + "=" + strings.Repeat("A", 65) + "; " + own, s.csrf, "null"},
		{0, `cagnotte_session="` + s.session + `"`, "", ""},
	} {
		f.Add(seed.mode, seed.cookie, seed.csrf, seed.origin)
	}
	key := 0
	f.Fuzz(func(t *testing.T, mode uint8, cookie, csrf, origin string) {
		hdr := http.Header{"Cookie": {cookie}, "X-Csrf-Token": {csrf}, "Origin": {origin}}
		probe, _ := http.NewRequest("GET", "http://node/", nil)
		probe.Header = hdr
		c, err := probe.Cookie(sessionCookie)
		isReal := err == nil && c.Value == s.session
		okOrigin := origin == "" || origin == "http://node"
		var rec *httptest.ResponseRecorder
		switch mode % 3 {
		case 0:
			rec = s.do(t, "GET", "/pos/api/sales", hdr, nil)
			if rec != nil && rec.Code == http.StatusOK && !isReal {
				t.Fatalf("cookie %q reads the till's sales", cookie)
			}
		case 1:
			key++
			hdr["Content-Type"] = []string{"application/json"}
			rec = s.do(t, "POST", "/pos/api/payments", hdr,
				[]byte(fmt.Sprintf(`{"card":"04A1B2C3D4E5F6","amount_cents":1,"idempotency_key":"fuzz-%d"}`, key)))
			if rec != nil && rec.Code == http.StatusOK && !(isReal && csrf == s.csrf && okOrigin) {
				t.Fatalf("cookie %q, token %q, origin %q took a payment", cookie, csrf, origin)
			}
		case 2:
			if isReal {
				return // the real session signing out: expected to work, and the others need it
			}
			hdr["Content-Type"] = []string{"application/x-www-form-urlencoded"}
			rec = s.do(t, "POST", "/pos/logout", hdr, []byte("csrf="+url.QueryEscape(csrf)))
		}
		if rec == nil {
			return
		}
		if got := s.do(t, "GET", "/pos/api/sales", http.Header{"Cookie": {sessionCookie + "=" + s.session}}, nil); got.Code != http.StatusOK {
			t.Fatalf("the signed-in session was ended by cookie %q (mode %d): %d", cookie, mode%3, got.Code)
		}
	})
}

// Pages and feeds FuzzAgendaQuery reads with any query string.
var fuzzQueryPaths = []string{
	"/agenda", "/agenda.ics", "/venues/{venue}/agenda.ics", "/api/v1/events", "/events/e1",
	"/dashboard", "/c/{tok}", "/pos/api/resolve", "/pos/products", "/pos/events", "/pos/events/e1",
}

// FuzzAgendaQuery reads the agenda's pages and feeds, the dashboard, the
// holder's page and the point of sale's pages with any query string (a
// signed-in till's cookie sent along). No answer is a 500; an iCalendar
// feed answered parses with an iCalendar library, and a JSON answer
// decodes.
func FuzzAgendaQuery(f *testing.F) {
	s := newFuzzSite(f, false)
	start := time.Date(2030, 6, 21, 19, 0, 0, 0, time.UTC)
	body, _ := json.Marshal(map[string]any{"id": "e1", "title": "Fête; de, la \\ musique", "starts_at": start, "ends_at": start.Add(time.Hour),
		"description": "ligne 1\nligne 2", "idempotency_key": "e1"})
	if rec := s.do(f, "POST", "/api/v1/events", http.Header{"Authorization": {"Bearer " + s.token}, "Content-Type": {"application/json"}}, body); rec.Code != http.StatusOK {
		f.Fatalf("event: %d %s", rec.Code, rec.Body)
	}
	for i, q := range []string{"q=f%C3%AAte&from=2030-06-01&to=2030-07-01&venue=x&past=1&lang=fr", "from=2030-13-45", "page=2&lang=zz",
		"before=AAAA&lost=1&error=1&topup=cs_1", "input=04%3AA1%3AB2%3AC3", "saved=1", "", "q=" + strings.Repeat("%C3%A9", 300)} {
		for p := range fuzzQueryPaths {
			if p%3 == i%3 {
				f.Add(uint8(p), q)
			}
		}
	}
	venue := s.n.Key().String()
	f.Fuzz(func(t *testing.T, p uint8, query string) {
		if len(query) > 8192 {
			return // over the server's header limit
		}
		path := strings.NewReplacer("{venue}", venue, "{tok}", s.holder).Replace(fuzzQueryPaths[int(p)%len(fuzzQueryPaths)])
		rec := s.do(t, "GET", path+"?"+query, http.Header{"Cookie": {sessionCookie + "=" + s.session}}, nil)
		if rec == nil || rec.Code != http.StatusOK {
			return
		}
		switch ct := rec.Header().Get("Content-Type"); {
		case strings.HasPrefix(ct, "text/calendar"):
			if _, err := ics.ParseCalendar(strings.NewReader(rec.Body.String())); err != nil {
				t.Fatalf("%s?%s: the feed does not parse: %v", path, query, err)
			}
		case strings.HasPrefix(ct, "application/json"):
			if !json.Valid(rec.Body.Bytes()) {
				t.Fatalf("%s?%s: invalid JSON", path, query)
			}
		}
	})
}
