package node

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	ics "github.com/arran4/golang-ical"
	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/node/stripe/stripetest"
	"github.com/cagnotte/cagnotte/node/web"
)

// webClient is a browser-like HTTP client: cookies, and the Origin a
// browser sends with its posts.
type webClient struct {
	t   *testing.T
	v   *testVenue
	c   *http.Client
	org string
}

func newWebClient(t *testing.T, v *testVenue) *webClient {
	jar, err := cookiejar.New(nil)
	must(t, err)
	return &webClient{t: t, v: v, org: v.api, c: &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (c *webClient) do(method, path string, hdr map[string]string, body string) (*http.Response, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.v.api+path, strings.NewReader(body))
	must(c.t, err)
	if method == "POST" && c.org != "" {
		req.Header.Set("Origin", c.org)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.c.Do(req)
	must(c.t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (c *webClient) form(path string, vals url.Values) (*http.Response, string) {
	return c.do("POST", path, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, vals.Encode())
}

// signIn signs the client in and returns the session's CSRF token.
func (c *webClient) signIn() string {
	c.t.Helper()
	_, page := c.do("GET", "/pos", nil, "")
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		c.t.Fatalf("no sign-in form: %s", page)
	}
	resp, _ := c.form("/pos/login", url.Values{"csrf": {m[1]}, "token": {c.v.token}})
	if resp.StatusCode != http.StatusSeeOther {
		c.t.Fatalf("sign in: %s", resp.Status)
	}
	var sess *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == sessionCookie {
			sess = ck
		}
	}
	if sess == nil || !sess.HttpOnly || sess.SameSite != http.SameSiteStrictMode {
		c.t.Fatalf("session cookie: %+v", sess)
	}
	_, page = c.do("GET", "/pos", nil, "")
	m = regexp.MustCompile(`data-csrf="([^"]+)"`).FindStringSubmatch(page)
	if m == nil {
		c.t.Fatalf("no point of sale after sign-in: %s", page)
	}
	return m[1]
}

func TestEveryStringTranslated(t *testing.T) {
	used := map[string]bool{}
	srcs, err := web.TemplateSources()
	must(t, err)
	for _, s := range srcs {
		for _, m := range regexp.MustCompile(`\.Tf? "([a-z0-9_.]+)"`).FindAllStringSubmatch(s, -1) {
			used[m[1]] = true
		}
	}
	for _, f := range []string{"pos.js", "dashboard.js"} {
		s, err := web.StaticSource(f)
		must(t, err)
		for _, m := range regexp.MustCompile(`(?:^|[^\w.])t\('([a-z0-9_.]+)'\)`).FindAllStringSubmatch(s, -1) {
			used[m[1]] = true
		}
	}
	// Keys the handlers build from values.
	for _, k := range []string{"double_spend", "stale_stamp", "equivocation", "duplicate_ref"} {
		used["dash.k."+k] = true
	}
	for _, k := range []string{"topup", "payment", "refund", "correction"} {
		used["kind."+k] = true
	}
	for _, k := range []string{crdt.MethodCash, crdt.MethodCardTerminal, crdt.MethodOnline} {
		used["method."+k] = true
	}
	for _, k := range []string{"insufficient_funds", "card_blocked", "offline_cap_exceeded", "daily_cap_exceeded", "stale_stamp", "unknown_card",
		"card_busy", "catching_up", "offline", "timeout", "unavailable", "venue_revoked", "balance_ceiling"} {
		used["js.err."+k] = true
	}
	for _, k := range []string{"dash.st.insync", "dash.st.isolated", "dash.st.connected", "dash.st.disconnected", "dash.st.never",
		"error.badlink", "error.csrf", "error.internal", "error.noevent", "error.api", "login.bad", "pos.isolated", "products.bad", "sevents.baddate", "holder.lost.error"} {
		used[k] = true
	}
	if len(used) < 100 {
		t.Fatalf("found only %d keys in use: the extraction is broken", len(used))
	}
	for k := range used {
		if !web.Translated(k) {
			t.Errorf("string %q is missing in French or English", k)
		}
	}
	verbs := regexp.MustCompile(`%[sdqv]`)
	for _, k := range web.Keys() {
		fr, en := verbs.FindAllString(web.Text(web.French, k), -1), verbs.FindAllString(web.Text(web.English, k), -1)
		if len(fr) != len(en) {
			t.Errorf("string %q: French has %v, English %v", k, fr, en)
		}
		if !web.Translated(k) {
			t.Errorf("string %q is empty in a language", k)
		}
	}
}

func TestPOSSessionAndCSRF(t *testing.T) {
	v := newTestVenue(t)
	card := "04010203040506"
	topUp(t, v, card, 1000)
	c := newWebClient(t, v)
	// A wrong token is refused.
	_, page := c.do("GET", "/pos", nil, "")
	m := csrfField.FindStringSubmatch(page)
	if resp, _ := c.form("/pos/login", url.Values{"csrf": {m[1]}, "token": {"nope"}}); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad token: %s", resp.Status)
	}
	// A sign-in form posted from another site is refused.
	c.org = "http://evil.example"
	if resp, _ := c.form("/pos/login", url.Values{"csrf": {m[1]}, "token": {v.token}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site sign-in: %s", resp.Status)
	}
	c.org = v.api
	csrf := c.signIn()
	pay := func(hdr map[string]string, key string) (int, string) {
		h := map[string]string{"Content-Type": "application/json"}
		for k, v := range hdr {
			h[k] = v
		}
		resp, body := c.do("POST", "/pos/api/payments", h, fmt.Sprintf(`{"card":%q,"amount_cents":100,"idempotency_key":%q}`, card, key))
		return resp.StatusCode, body
	}
	for _, tc := range []struct {
		name   string
		hdr    map[string]string
		origin string
		want   int
	}{
		{"no csrf token", nil, v.api, http.StatusForbidden},
		{"wrong csrf token", map[string]string{"X-CSRF-Token": "x" + csrf}, v.api, http.StatusForbidden},
		{"other origin", map[string]string{"X-CSRF-Token": csrf}, "http://evil.example", http.StatusForbidden},
		{"same origin with token", map[string]string{"X-CSRF-Token": csrf}, v.api, http.StatusOK},
	} {
		c.org = tc.origin
		if st, body := pay(tc.hdr, tc.name); st != tc.want {
			t.Errorf("%s: %d %s", tc.name, st, body)
		}
	}
	c.org = v.api
	if bal, n := cardBalance(t, v, card); bal != 900 || n != 1 {
		t.Fatalf("only the good request pays: %d, %d payments", bal, n)
	}
	// The session lists its sale.
	if _, body := c.do("GET", "/pos/api/sales", nil, ""); !strings.Contains(body, card) {
		t.Fatalf("sales: %s", body)
	}
	// Signing out ends the session: the same cookie no longer works.
	resp, _ := c.form("/pos/logout", url.Values{"csrf": {csrf}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign out: %s", resp.Status)
	}
	if st, body := pay(map[string]string{"X-CSRF-Token": csrf}, "after"); st != http.StatusUnauthorized {
		t.Fatalf("after sign-out: %d %s", st, body)
	}
	// The staff pages lead to the sign-in page.
	if resp, _ := c.do("GET", "/pos/products", nil, ""); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("products page without a session: %s", resp.Status)
	}
}

func TestProductsAreVenueOpsKeptAcrossRestart(t *testing.T) {
	v := newTestVenue(t)
	if st, r := v.do("POST", "/api/v1/products", "", map[string]any{"items": []any{}, "idempotency_key": "x"}); st != 401 {
		t.Fatalf("products without a token: %d %v", st, r)
	}
	for _, tc := range []struct {
		name  string
		items []ProductView
	}{
		{"zero price", []ProductView{{Name: "A", PriceCents: 0}}},
		{"duplicate", []ProductView{{Name: "A", PriceCents: 1}, {Name: "A", PriceCents: 2}}},
		{"long name", []ProductView{{Name: strings.Repeat("x", crdt.MaxProductName+1), PriceCents: 1}}},
		{"blank name", []ProductView{{Name: " ", PriceCents: 1}}},
	} {
		if st, r := v.post("/api/v1/products", map[string]any{"items": tc.items, "idempotency_key": tc.name}); st != 400 {
			t.Errorf("%s: %d %v", tc.name, st, r)
		}
	}
	setProducts(t, v, ProductView{Name: "Bière", PriceCents: 350}, ProductView{Name: "Café", PriceCents: 150})
	// The products page edits the list too.
	c := newWebClient(t, v)
	c.signIn()
	_, page := c.do("GET", "/pos/products", nil, "")
	csrf := csrfField.FindStringSubmatch(page)[1]
	resp, body := c.form("/pos/products", url.Values{"csrf": {csrf}, "key": {"k1"}, "name": {"Bière", "Café", "Jus", ""}, "price": {"3,50", "1.5", "2", ""}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("products form: %s %s", resp.Status, body)
	}
	v.restart()
	st, r := v.do("GET", "/api/v1/products", "", nil)
	want := []any{map[string]any{"name": "Bière", "price_cents": 350.0}, map[string]any{"name": "Café", "price_cents": 150.0}, map[string]any{"name": "Jus", "price_cents": 200.0}}
	if st != 200 || fmt.Sprint(r["items"]) != fmt.Sprint(want) {
		t.Fatalf("products after restart: %d %v", st, r)
	}
}

func TestAgendaFeedsParseWithICalendarLibrary(t *testing.T) {
	v := newTestVenue(t)
	start := time.Date(2030, 6, 21, 19, 0, 0, 0, time.UTC)
	long := strings.Repeat("Très long titre, avec; des virgules ", 3)
	for i, title := range []string{"Fête de la musique", long} {
		if st, r := v.post("/api/v1/events", map[string]any{"id": fmt.Sprint("e", i), "title": title, "starts_at": start, "ends_at": start.Add(time.Hour),
			"description": "ligne 1\nligne 2", "idempotency_key": fmt.Sprint("e", i)}); st != 200 {
			t.Fatalf("event: %d %v", st, r)
		}
	}
	for _, path := range []string{"/agenda.ics", "/venues/" + v.node.Key().String() + "/agenda.ics"} {
		_, r := v.do("GET", path, "", nil)
		cal, err := ics.ParseCalendar(strings.NewReader(r["raw"].(string)))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		evs := cal.Events()
		if len(evs) != 2 {
			t.Fatalf("%s: %d events", path, len(evs))
		}
		var titles []string
		for _, e := range evs {
			titles = append(titles, e.GetProperty(ics.ComponentPropertySummary).Value)
			at, err := e.GetStartAt()
			if err != nil || !at.Equal(start) {
				t.Fatalf("%s: start %v %v", path, at, err)
			}
		}
		if !slices.Contains(titles, "Fête de la musique") || !slices.Contains(titles, strings.ReplaceAll(strings.ReplaceAll(long, ",", `\,`), ";", `\;`)) && !slices.Contains(titles, long) {
			t.Fatalf("%s: titles %q", path, titles)
		}
	}
	if st, _ := v.do("GET", "/venues/"+strings.Repeat("ab", 32)+"/agenda.ics", "", nil); st != 404 {
		t.Fatalf("unknown venue feed: %d", st)
	}
}

func TestHolderPageLinkAndLostCard(t *testing.T) {
	v := newTestVenue(t)
	card := "04BBBBBBBBBBBB"
	topUp(t, v, card, 1500)
	_, r := v.post("/api/v1/cards/"+card+"/holder-token", nil)
	link := r["url"].(string)
	c := newWebClient(t, v)
	for _, bad := range []string{"/c/nope", "/c/" + strings.Repeat("A", 140), link + "x"} {
		if resp, _ := c.do("GET", bad, nil, ""); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %s", bad, resp.Status)
		}
	}
	resp, page := c.do("GET", link+"?lang=en", nil, "")
	if resp.StatusCode != 200 || !strings.Contains(page, "€15.00") || strings.Contains(page, card) {
		t.Fatalf("holder page (the full UID must not show): %s %s", resp.Status, page)
	}
	if resp, _ := c.do("GET", link+"/qr.png", nil, ""); resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("QR code: %s", resp.Status)
	}
	csrf := csrfField.FindStringSubmatch(page)[1]
	// Without the form's token, or from another site: refused.
	if resp, _ := c.form(link+"/lost", url.Values{"confirm": {"1"}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("lost without token: %s", resp.Status)
	}
	c.org = "http://evil.example"
	if resp, _ := c.form(link+"/lost", url.Values{"confirm": {"1"}, "csrf": {csrf}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("lost from another site: %s", resp.Status)
	}
	c.org = v.api
	resp, body := c.form(link+"/lost", url.Values{"confirm": {"1"}, "csrf": {csrf}})
	if resp.StatusCode != http.StatusSeeOther || !strings.HasSuffix(resp.Header.Get("Location"), "?lost=1") {
		t.Fatalf("lost: %s %s %s", resp.Status, resp.Header.Get("Location"), body)
	}
	p, ok, err := v.node.CardHistoryPage(t.Context(), crdt.CardID(card), 1, "")
	if err != nil || !ok || !p.Blocked {
		t.Fatalf("card after lost report: %+v %v %v", p, ok, err)
	}
}

func TestAgendaPagesAndFilters(t *testing.T) {
	v := newTestVenue(t)
	start := time.Now().Add(24 * time.Hour).Truncate(time.Hour).UTC()
	for i, title := range []string{"Un", "Deux", "Trois"} {
		at := start.Add(time.Duration(i) * 48 * time.Hour)
		if st, r := v.post("/api/v1/events", map[string]any{"title": title, "starts_at": at, "ends_at": at.Add(time.Hour), "idempotency_key": title}); st != 200 {
			t.Fatalf("event: %d %v", st, r)
		}
	}
	past := start.Add(-72 * time.Hour)
	v.post("/api/v1/events", map[string]any{"title": "Passé", "starts_at": past, "ends_at": past.Add(time.Hour), "idempotency_key": "past"})
	c := newWebClient(t, v)
	for _, tc := range []struct {
		query       string
		want, avoid []string
	}{
		{"limit=2", []string{"Un", "Deux", `rel="next"`, "Showing 1 to 2"}, []string{"Trois", "Passé", `rel="prev"`}},
		{"limit=2&page=2", []string{"Trois", `rel="prev"`}, []string{">Un<", "Deux", `rel="next"`}},
		{"past=1", []string{"Passé", "Un", "Trois"}, nil},
		{"q=deu", []string{"Deux", "1 events"}, []string{">Un<", "Trois"}},
		{"from=" + start.Add(48*time.Hour).Local().Format("2006-01-02") + "&to=" + start.Add(48*time.Hour).Local().Format("2006-01-02"), []string{"Deux"}, []string{">Un<", "Trois"}},
		{"venue=" + strings.Repeat("0", 64), []string{"0 events"}, []string{"Deux"}},
	} {
		_, page := c.do("GET", "/agenda?lang=en&"+tc.query, nil, "")
		for _, w := range tc.want {
			if !strings.Contains(page, w) {
				t.Errorf("%s: %q missing", tc.query, w)
			}
		}
		for _, a := range tc.avoid {
			if strings.Contains(page, a) {
				t.Errorf("%s: %q shown", tc.query, a)
			}
		}
	}
}

func TestDashboardListsConflictsWithEvidence(t *testing.T) {
	v := newTestVenue(t)
	var ops []string
	for _, key := range []string{"a", "b"} {
		st, r := v.post("/api/v1/topups", map[string]any{"card": "04000000000009", "amount_cents": 100, "method": "card_terminal", "reference": "R1", "idempotency_key": key})
		if st != 200 {
			t.Fatalf("top-up: %d %v", st, r)
		}
		ops = append(ops, r["op_id"].(string))
	}
	c := newWebClient(t, v)
	for _, lang := range web.Langs {
		resp, page := c.do("GET", "/dashboard?lang="+string(lang), nil, "")
		if resp.StatusCode != 200 {
			t.Fatalf("dashboard: %s", resp.Status)
		}
		for _, want := range []string{web.Text(lang, "dash.k.duplicate_ref"), "topup/R1", ops[0], ops[1], web.Text(lang, "dash.st.insync"), "/metrics"} {
			if !strings.Contains(page, want) {
				t.Errorf("dashboard in %s lacks %q", lang, want)
			}
		}
	}
}

func TestHolderOnlineTopUpStartsCheckout(t *testing.T) {
	v := newStripeVenue(t, stripeCfg(stripetest.Start(t)), nil)
	card := "04570570570570"
	topUp(t, v, card, 1000)
	_, r := v.post("/api/v1/cards/"+card+"/holder-token", nil)
	link := r["url"].(string)
	c := newWebClient(t, v)
	_, page := c.do("GET", link+"?lang=en", nil, "")
	if !strings.Contains(page, `id="topup-online"`) || !strings.Contains(page, "Amount (€5.00 to €100.00)") {
		t.Fatalf("no online top-up form on a gateway's holder page:\n%s", page)
	}
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"><input type="hidden" name="key" value="([^"]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no top-up form fields")
	}
	if resp, _ := c.form(link+"/topup", url.Values{"csrf": {"x"}, "key": {m[2]}, "amount": {"20"}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("top-up without the form's token: %s", resp.Status)
	}
	resp, page := c.form(link+"/topup", url.Values{"csrf": {m[1]}, "key": {m[2]}, "amount": {"20,00"}})
	pay := regexp.MustCompile(`href="([^"]+)" id="pay-online"`).FindStringSubmatch(page)
	if resp.StatusCode != 200 || pay == nil || pay[1] == "" {
		t.Fatalf("top-up form: %s\n%s", resp.Status, page)
	}
	_, page = c.do("GET", link+"?lang=en&topup=cancelled", nil, "")
	if !strings.Contains(page, "Top-up cancelled") {
		t.Fatalf("return from a cancelled Checkout:\n%s", page)
	}
	// A node that is not a gateway but knows one links to the card's page there.
	plain := newTestVenue(t)
	topUp(t, plain, card, 1000)
	_, r = plain.post("/api/v1/cards/"+card+"/holder-token", nil)
	_, page = newWebClient(t, plain).do("GET", r["url"].(string), nil, "")
	if strings.Contains(page, "topup-online") || strings.Contains(page, "topup-elsewhere") {
		t.Fatal("a node without a gateway shows an online top-up")
	}
}
