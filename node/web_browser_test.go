package node

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/node/web"
	"github.com/chromedp/chromedp"
)

// The pages tested in real headless Chromium (Debian's chromium package,
// which .ci/run installs), driven with chromedp. One browser serves every
// test of the package; each test opens its own browser context (its own
// cookies). Screenshots of the pages go to node/web/screenshots (ignored
// by git; CAGNOTTE_SCREENSHOTS names another directory).

// sharedBrowser is the package's one Chromium, started by the first
// browser test and stopped by TestMain.
var sharedBrowser struct {
	once   sync.Once
	ctx    context.Context
	cancel []context.CancelFunc
	dir    string
	err    error
}

func TestMain(m *testing.M) {
	code := m.Run()
	for i := len(sharedBrowser.cancel) - 1; i >= 0; i-- {
		sharedBrowser.cancel[i]()
	}
	if sharedBrowser.dir != "" {
		os.RemoveAll(sharedBrowser.dir)
	}
	os.Exit(code)
}

// chromiumPath finds Debian's chromium; without it the test is skipped,
// except in CI (CI=true), where .ci/run installs it.
func chromiumPath(tb testing.TB) string {
	tb.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		tb.Fatal("chromium is not installed: .ci/run installs the Debian package chromium")
	}
	tb.Skip("chromium is not installed (apt-get install -y chromium); skipping the browser tests")
	return ""
}

// newTab opens a tab in a fresh browser context of the shared browser.
// Actions on the returned context time out after the given duration.
func newTab(tb testing.TB, timeout time.Duration) context.Context {
	tb.Helper()
	path := chromiumPath(tb)
	sharedBrowser.once.Do(func() {
		dir, err := os.MkdirTemp("", "cagnotte-chromium-")
		if err != nil {
			sharedBrowser.err = err
			return
		}
		sharedBrowser.dir = dir
		opts := []chromedp.ExecAllocatorOption{
			chromedp.ExecPath(path),
			chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
			chromedp.UserDataDir(dir),
			chromedp.WindowSize(1280, 900),
			chromedp.Flag("disable-quic", true),
			chromedp.Flag("disable-background-networking", true),
			chromedp.Flag("disable-component-update", true),
			chromedp.Flag("disable-sync", true),
			chromedp.Flag("disable-dev-shm-usage", true),
			chromedp.Flag("disable-extensions", true),
			chromedp.Flag("disable-default-apps", true),
			chromedp.Flag("disable-features", "Translate,MediaRouter,OptimizationHints"),
			chromedp.Flag("metrics-recording-only", true),
			chromedp.Flag("password-store", "basic"),
			chromedp.Flag("lang", "en-GB"),
		}
		actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
		bctx, cancelB := chromedp.NewContext(actx)
		sharedBrowser.cancel = append(sharedBrowser.cancel, cancelA, cancelB)
		sharedBrowser.ctx = bctx
		sharedBrowser.err = chromedp.Do(bctx)
	})
	if sharedBrowser.err != nil {
		tb.Fatalf("starting chromium: %v", sharedBrowser.err)
	}
	tab, cancel := chromedp.NewContext(sharedBrowser.ctx, chromedp.WithNewBrowserContext())
	tb.Cleanup(cancel)
	if err := chromedp.Do(tab); err != nil {
		tb.Fatalf("opening a tab: %v", err)
	}
	ctx, cancelT := context.WithTimeout(tab, timeout)
	tb.Cleanup(cancelT)
	return ctx
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// pageText is the visible text of the element sel ("" if absent).
func pageText(tb testing.TB, ctx context.Context, sel string) string {
	tb.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(function(){var e=document.querySelector(%q);return e?e.innerText:""})()`, sel)))
	must(tb, err)
	return s
}

// waitText polls the text of sel until it holds want.
func waitText(t *testing.T, ctx context.Context, sel, want string) string {
	t.Helper()
	var got string
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if got = pageText(t, ctx, sel); strings.Contains(got, want) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %q in %s, which shows %q", want, sel, got)
		}
		<-tick.C
	}
}

// reloadUntil loads url until the text of sel holds want (for state that
// replicates from another node).
func reloadUntil(t *testing.T, ctx context.Context, url, sel, want string) {
	t.Helper()
	waitUntil(t, 15*time.Second, fmt.Sprintf("%q in %s of %s", want, sel, url), func() bool {
		must(t, chromedp.Do(ctx, chromedp.Navigate(url)))
		return strings.Contains(pageText(t, ctx, sel), want)
	})
}

func screenshot(tb testing.TB, ctx context.Context, name string) {
	tb.Helper()
	dir := os.Getenv("CAGNOTTE_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join("web", "screenshots")
	}
	must(tb, os.MkdirAll(dir, 0o755))
	// JPEG: much cheaper to encode than PNG on the shared machine.
	img, err := chromedp.Run(ctx, chromedp.FullScreenshot(85))
	must(tb, err)
	must(tb, os.WriteFile(filepath.Join(dir, name+".jpg"), img, 0o644))
}

// setProducts replaces the venue's product list through the API.
func setProducts(t testing.TB, v *testVenue, items ...ProductView) {
	t.Helper()
	if st, r := v.post("/api/v1/products", map[string]any{"items": items, "idempotency_key": fmt.Sprint("products-", time.Now().UnixNano())}); st != 200 {
		t.Fatalf("products: %d %v", st, r)
	}
}

func topUp(t testing.TB, v *testVenue, card string, cents int) {
	t.Helper()
	if st, r := v.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": cents, "method": "cash", "idempotency_key": fmt.Sprint("top-", card, "-", time.Now().UnixNano())}); st != 200 {
		t.Fatalf("top-up: %d %v", st, r)
	}
}

// signIn opens the point of sale and signs in with the venue's token,
// then waits for the page's tap stream to be open.
func signIn(t testing.TB, ctx context.Context, v *testVenue, lang string) {
	t.Helper()
	must(t, chromedp.Do(ctx,
		chromedp.Navigate(v.api+"/pos?lang="+lang),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), v.token),
		chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitVisible(chromedp.CSS("#charge")),
		chromedp.WaitReady(chromedp.CSS(`#pos[data-stream="open"]`)),
	))
}

func cardBalance(t testing.TB, v *testVenue, card string) (int64, int) {
	t.Helper()
	st, r := v.do("GET", "/api/v1/cards/"+card+"?limit=500", v.token, nil)
	if st != 200 {
		t.Fatalf("card %s: %d %v", card, st, r)
	}
	payments := 0
	for _, e := range r["history"].([]any) {
		if e.(map[string]any)["kind"] == "payment" {
			payments++
		}
	}
	return int64(r["balance_cents"].(float64)), payments
}

func TestPOSCashierSignsInBuildsCartTapsCardSeesNewBalance(t *testing.T) {
	v := newTestVenue(t)
	setProducts(t, v, ProductView{Name: "Bière", PriceCents: 350}, ProductView{Name: "Café", PriceCents: 150})
	card := "04A1B2C3D4E5F6"
	topUp(t, v, card, 2000)
	ctx := newTab(t, 60*time.Second)
	signIn(t, ctx, v, "en")
	must(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#product-0")),
		chromedp.Click(chromedp.CSS("#product-0")),
		chromedp.Click(chromedp.CSS("#product-1")),
	))
	waitText(t, ctx, "#total", "€8.50")
	screenshot(t, ctx, "pos-cart")
	v.node.Taps().Publish(Tap{Card: crdt.CardID(card), Reader: "test"})
	must(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS("#result.approved"))))
	if got := waitText(t, ctx, "#result-balance", "€11.50"); !strings.Contains(got, "New balance") {
		t.Fatalf("approved screen: %q", got)
	}
	screenshot(t, ctx, "pos-approved")
	if bal, n := cardBalance(t, v, card); bal != 1150 || n != 1 {
		t.Fatalf("after the sale: balance %d, %d payments", bal, n)
	}
	// The session lists the sale; undo refunds it.
	waitText(t, ctx, "#sales", "2× Bière, Café")
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#undo"))))
	waitText(t, ctx, "#result-title", "Sale undone")
	waitText(t, ctx, "#result-balance", "€20.00")
	// A keyboard-wedge reader typing the UID as a decimal number (its 7
	// bytes in reverse order, read as one integer) is understood.
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#next")), chromedp.Click(chromedp.CSS("#product-1"))))
	waitText(t, ctx, "#total", "€1.50")
	must(t, chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#card-input"), "69495546249912580\r")))
	must(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS("#result.approved"))))
	waitText(t, ctx, "#result-balance", "€18.50")
	// Signing out ends the session.
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#next")), chromedp.Click(chromedp.CSS("#signout")), chromedp.WaitVisible(chromedp.CSS("#token"))))
}

func TestPOSRefusedPaymentShowsReason(t *testing.T) {
	v := newTestVenue(t)
	setProducts(t, v, ProductView{Name: "Menu", PriceCents: 1200})
	poor, blocked := "04000000000001", "04000000000002"
	topUp(t, v, poor, 500)
	topUp(t, v, blocked, 5000)
	if st, r := v.post("/api/v1/cards/"+blocked+"/block", map[string]any{"reason": "test", "idempotency_key": "b"}); st != 200 {
		t.Fatalf("block: %d %v", st, r)
	}
	ctx := newTab(t, 60*time.Second)
	signIn(t, ctx, v, "en")
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#product-0"))))
	waitText(t, ctx, "#total", "€12.00")
	v.node.Taps().Publish(Tap{Card: crdt.CardID(poor)})
	must(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS("#result.refused"))))
	waitText(t, ctx, "#result-reason", "Not enough money on the card")
	waitText(t, ctx, "#result-balance", "Balance: €5.00")
	screenshot(t, ctx, "pos-refused")
	// The cart stays: the next card is a blocked one.
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#next"))))
	v.node.Taps().Publish(Tap{Card: crdt.CardID(blocked)})
	must(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS("#result.refused"))))
	waitText(t, ctx, "#result-reason", "Blocked card")
	if bal, n := cardBalance(t, v, poor); bal != 500 || n != 0 {
		t.Fatalf("refused payment changed the card: %d, %d payments", bal, n)
	}
}

func TestPOSDoubleTapChargesOnce(t *testing.T) {
	v := newTestVenue(t)
	setProducts(t, v, ProductView{Name: "Bière", PriceCents: 350})
	card := "04D0D0D0D0D0D0"
	topUp(t, v, card, 2000)
	ctx := newTab(t, 60*time.Second)
	signIn(t, ctx, v, "en")
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#product-0"))))
	waitText(t, ctx, "#total", "€3.50")
	// The card bounces on the reader: two taps a few milliseconds apart.
	v.node.Taps().Publish(Tap{Card: crdt.CardID(card)})
	v.node.Taps().Publish(Tap{Card: crdt.CardID(card)})
	must(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS("#result.approved"))))
	// The second tap was handled too: it shows the card, it charges nothing.
	waitText(t, ctx, "#card-info", card)
	if bal, n := cardBalance(t, v, card); bal != 1650 || n != 1 {
		t.Fatalf("double tap: balance %d, %d payments", bal, n)
	}
	// A retry after a network glitch sends the same idempotency key: the
	// page's request, sent twice, charges once and answers the same op.
	ans, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`(async function(){
		var csrf = document.getElementById('pos').dataset.csrf;
		var body = JSON.stringify({card: '`+card+`', amount_cents: 350, idempotency_key: 'glitch-1', label: 'Bière'});
		var out = [];
		for (var i = 0; i < 2; i++) {
			var r = await fetch('/pos/api/payments', {method: 'POST', credentials: 'same-origin', headers: {'X-CSRF-Token': csrf, 'Content-Type': 'application/json'}, body: body});
			out.push(r.status + ' ' + (await r.json()).op_id);
		}
		return out;
	})()`, chromedp.EvalAwaitPromise))
	must(t, err)
	if len(ans) != 2 || ans[0] != ans[1] || !strings.HasPrefix(ans[0], "200 ") {
		t.Fatalf("retried payment: %v", ans)
	}
	if bal, n := cardBalance(t, v, card); bal != 1300 || n != 2 {
		t.Fatalf("after the retried payment: balance %d, %d payments", bal, n)
	}
}

func TestHolderOpensLinkAndSeesSaleAtAnotherVenue(t *testing.T) {
	nodes := startNetworked(t, 2, crdt.DefaultSettings())
	a, b := nodes[0], nodes[1]
	card := "04CAFE0000BEEF"
	topUp(t, a, card, 3000)
	waitUntil(t, 15*time.Second, "the top-up to reach b", func() bool { return b.node.CardKnown(crdt.CardID(card)) })
	if st, r := b.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 420, "idempotency_key": "sale-b", "label": "Limonade"}); st != 200 {
		t.Fatalf("sale at b: %d %v", st, r)
	}
	st, r := a.post("/api/v1/cards/"+card+"/holder-token", nil)
	if st != 200 {
		t.Fatalf("holder token: %d %v", st, r)
	}
	url := a.api + r["url"].(string) + "?lang=en"
	ctx := newTab(t, 60*time.Second)
	venueB := b.node.WebInfo().Venue
	reloadUntil(t, ctx, url, "#history", "Limonade")
	hist := pageText(t, ctx, "#history")
	if !strings.Contains(hist, venueB) || !strings.Contains(hist, "€4.20") {
		t.Fatalf("history at a: %q", hist)
	}
	if got := pageText(t, ctx, "#balance"); got != "€25.80" {
		t.Fatalf("balance: %q", got)
	}
	if got := pageText(t, ctx, "main"); !strings.Contains(got, "Where it was spent") || !strings.Contains(got, venueB) {
		t.Fatalf("where it was spent: %q", got)
	}
	screenshot(t, ctx, "holder")
	// The card holder reports the card lost: it is blocked everywhere.
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#lost-confirm")), chromedp.Click(chromedp.CSS("#lost-submit")), chromedp.WaitVisible(chromedp.CSS("#blocked"))))
	waitUntil(t, 15*time.Second, "the block to reach b", func() bool {
		p, ok, err := b.node.CardHistoryPage(context.Background(), crdt.CardID(card), 1, "")
		return err == nil && ok && p.Blocked
	})
}

func TestAgendaListsEventFromAnotherVenueWithEventJSONLD(t *testing.T) {
	nodes := startNetworked(t, 2, crdt.DefaultSettings())
	a, b := nodes[0], nodes[1]
	start := time.Now().Add(48 * time.Hour).Truncate(time.Hour).UTC()
	if st, r := b.post("/api/v1/events", map[string]any{"id": "bal-folk", "title": "Bal folk", "starts_at": start, "ends_at": start.Add(3 * time.Hour),
		"description": "Un bal <b>folk</b> & \"trad\"", "location": "Grande salle", "idempotency_key": "ev"}); st != 200 {
		t.Fatalf("event at b: %d %v", st, r)
	}
	ctx := newTab(t, 60*time.Second)
	reloadUntil(t, ctx, a.api+"/agenda?lang=en", "main", "Bal folk")
	screenshot(t, ctx, "agenda")
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`ul.events a`)), chromedp.WaitVisible(chromedp.CSS("article.event-page"))))
	ld, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('script[type="application/ld+json"]').textContent`))
	must(t, err)
	var ev map[string]any
	if err := json.Unmarshal([]byte(ld), &ev); err != nil {
		t.Fatalf("JSON-LD %q: %v", ld, err)
	}
	venueB := b.node.WebInfo().Venue
	if ev["@type"] != "Event" || ev["@context"] != "https://schema.org" || ev["name"] != "Bal folk" ||
		ev["startDate"] != start.Format(time.RFC3339) || ev["description"] != `Un bal <b>folk</b> & "trad"` ||
		ev["organizer"].(map[string]any)["name"] != venueB || ev["eventStatus"] != "https://schema.org/EventScheduled" {
		t.Fatalf("JSON-LD: %v", ev)
	}
	og, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('meta[property="og:title"]').content`))
	must(t, err)
	if og != "Bal folk" {
		t.Fatalf("og:title %q", og)
	}
	screenshot(t, ctx, "event")
	// Filters: by venue and by text.
	must(t, chromedp.Do(ctx, chromedp.Navigate(a.api+"/agenda?lang=en&venue="+a.node.Key().String())))
	if got := pageText(t, ctx, "main"); strings.Contains(got, "Bal folk") {
		t.Fatal("the venue filter kept another venue's event")
	}
	must(t, chromedp.Do(ctx, chromedp.Navigate(a.api+"/agenda?lang=en&q=FOLK")))
	waitText(t, ctx, "main", "Bal folk")
}

func TestDashboardShowsStoppedNodeDisconnected(t *testing.T) {
	nodes := startNetworked(t, 2, crdt.DefaultSettings())
	a, b := nodes[0], nodes[1]
	bID := b.node.Network().ID().String()
	row := "#v-" + bID
	ctx := newTab(t, 60*time.Second)
	reloadUntil(t, ctx, a.api+"/dashboard?lang=en", row, "connected")
	must(t, chromedp.Do(ctx, chromedp.WaitReady(chromedp.CSS(`body[data-live="open"]`))))
	screenshot(t, ctx, "dashboard")
	b.stop()
	// The live stream marks it within a second or so, without a reload.
	waitText(t, ctx, row+" td.state", "disconnected")
	// And a fresh load says so too.
	reloadUntil(t, ctx, a.api+"/dashboard?lang=en", row+" td.state", "disconnected")
}

// TestPagesInFrenchAndEnglish opens every page in both languages: each is
// in its language from top to bottom (no missing string), with the switch
// to the other.
func TestPagesInFrenchAndEnglish(t *testing.T) {
	v := newTestVenue(t)
	setProducts(t, v, ProductView{Name: "Bière", PriceCents: 350}, ProductView{Name: "Café", PriceCents: 150}, ProductView{Name: "Jus", PriceCents: 250})
	card := "04F00D00F00D00"
	topUp(t, v, card, 2500)
	if st, r := v.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 350, "idempotency_key": "p", "label": "Bière"}); st != 200 {
		t.Fatalf("payment: %d %v", st, r)
	}
	start := time.Now().Add(24 * time.Hour).Truncate(time.Hour)
	if st, r := v.post("/api/v1/events", map[string]any{"id": "concert", "title": "Concert", "starts_at": start, "ends_at": start.Add(2 * time.Hour), "description": "Jazz", "idempotency_key": "e"}); st != 200 {
		t.Fatalf("event: %d %v", st, r)
	}
	for i, title := range []string{"Atelier vélo", "Bal folk", "Ciné-club : Jour de fête"} {
		at := start.Add(time.Duration(24*(i+1)+i) * time.Hour)
		if st, r := v.post("/api/v1/events", map[string]any{"title": title, "starts_at": at, "ends_at": at.Add(2 * time.Hour), "location": "Salle " + fmt.Sprint(i+1), "idempotency_key": fmt.Sprint("e", i)}); st != 200 {
			t.Fatalf("event: %d %v", st, r)
		}
	}
	_, tok := v.post("/api/v1/cards/"+card+"/holder-token", nil)
	ctx := newTab(t, 80*time.Second)
	signIn(t, ctx, v, "en")
	pages := []struct {
		name, path string
		key        string // a string the page shows
	}{
		{"home", "/", "home.agenda"},
		{"pos", "/pos", "pos.charge"},
		{"products", "/pos/products", "products.help"},
		{"staff-events", "/pos/events", "sevents.new"},
		{"holder", tok["url"].(string), "holder.balance"},
		{"agenda", "/agenda", "agenda.title"},
		{"event", "/events/concert", "event.when"},
		{"dashboard", "/dashboard", "dash.venues"},
	}
	for _, lang := range web.Langs {
		for _, p := range pages {
			sep := "?"
			if strings.Contains(p.path, "?") {
				sep = "&"
			}
			must(t, chromedp.Do(ctx, chromedp.Navigate(v.api+p.path+sep+"lang="+string(lang))))
			htmlLang, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.lang`))
			must(t, err)
			body := pageText(t, ctx, "body")
			if htmlLang != string(lang) {
				t.Errorf("%s in %s: html lang %q", p.name, lang, htmlLang)
			}
			if want := web.Text(lang, p.key); !strings.Contains(body, want) {
				t.Errorf("%s in %s: %q missing", p.name, lang, want)
			}
			if strings.Contains(body, "⟦") {
				t.Errorf("%s in %s: untranslated string in %q", p.name, lang, body)
			}
			other := map[web.Lang]string{web.French: "English", web.English: "Français"}[lang]
			if got := pageText(t, ctx, "#lang-switch"); got != other {
				t.Errorf("%s in %s: switch %q", p.name, lang, got)
			}
			screenshot(t, ctx, p.name+"-"+string(lang))
		}
	}
	// The card holder's page is made for a phone.
	must(t, chromedp.Do(ctx, chromedp.EmulateViewport(390, 844), chromedp.Navigate(v.api+tok["url"].(string)+"?lang=fr")))
	if w, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); err != nil || w > 390 {
		t.Errorf("the holder page is %d px wide on a 390 px phone (%v)", w, err)
	}
	screenshot(t, ctx, "holder-phone-fr")
	must(t, chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)))
	// The language stays chosen (cookie) and follows the browser's
	// language when none was chosen.
	must(t, chromedp.Do(ctx, chromedp.Navigate(v.api+"/agenda?lang=fr"), chromedp.Navigate(v.api+"/agenda")))
	if got := pageText(t, ctx, "h1"); got != web.Text(web.French, "agenda.title") {
		t.Errorf("the chosen language was not kept: %q", got)
	}
	fresh := newTab(t, 20*time.Second)
	must(t, chromedp.Do(fresh, chromedp.Navigate(v.api+"/agenda")))
	if got := pageText(t, fresh, "h1"); got != web.Text(web.English, "agenda.title") {
		t.Errorf("browser language en-GB: %q", got)
	}
}

// TestPOSIsolatedBannerAndOfflineCap: when the venue loses the network,
// the point of sale says so and what the caps allow, and a payment beyond
// them is refused with what the card may still pay.
func TestPOSIsolatedBannerAndOfflineCap(t *testing.T) {
	settings := crdt.DefaultSettings()
	settings.HeartbeatInterval = 200
	settings.IsolationAfter = 1500
	nodes := startNetworked(t, 2, settings)
	a, b := nodes[0], nodes[1]
	setProducts(t, a, ProductView{Name: "Magnum", PriceCents: 3000}, ProductView{Name: "Verre", PriceCents: 500})
	card := "04150150150150"
	topUp(t, a, card, 10000)
	ctx := newTab(t, 60*time.Second)
	signIn(t, ctx, a, "en")
	b.stop()
	must(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS("#iso-banner"))))
	waitText(t, ctx, "#iso-banner", "at most €25.00 per payment, €50.00 and 20 payments per card")
	screenshot(t, ctx, "pos-isolated")
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#product-0"))))
	waitText(t, ctx, "#total", "€30.00")
	a.node.Taps().Publish(Tap{Card: crdt.CardID(card)})
	must(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS("#result.refused"))))
	waitText(t, ctx, "#result-reason", "Still allowed on this card: €25.00")
	waitText(t, ctx, "#result-balance", "Balance: €100.00")
	// A smaller sale goes through, offline.
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#next")), chromedp.Click(chromedp.CSS("#clear")), chromedp.Click(chromedp.CSS("#product-1"))))
	waitText(t, ctx, "#total", "€5.00")
	a.node.Taps().Publish(Tap{Card: crdt.CardID(card)})
	must(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS("#result.approved"))))
	waitText(t, ctx, "#result-balance", "€95.00")
}

// TestPOSCashDeskOnceOnDoubleClick: the cash desk's top-up, refund and
// block, each submitted twice in a row (a double click), happen once.
func TestPOSCashDeskOnceOnDoubleClick(t *testing.T) {
	v := newTestVenue(t)
	card := "04DE5CDE5CDE5C"
	topUp(t, v, card, 1000)
	ctx := newTab(t, 60*time.Second)
	signIn(t, ctx, v, "fr")
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#desk > summary")),
		chromedp.SendKeys(chromedp.CSS("#topup-card"), card), chromedp.SendKeys(chromedp.CSS("#topup-amount"), "12,50")))
	twice := func(form string) {
		_, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`var f = document.getElementById('`+form+`'); f.requestSubmit(); f.requestSubmit(); true`))
		must(t, err)
	}
	twice("topup-form")
	waitText(t, ctx, "#desk-msg", "Rechargé 12,50")
	if bal, _ := cardBalance(t, v, card); bal != 2250 {
		t.Fatalf("after a double top-up click: %d", bal)
	}
	must(t, chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#refund-card"), card), chromedp.SendKeys(chromedp.CSS("#refund-amount"), "2"),
		chromedp.SendKeys(chromedp.CSS("#refund-reason"), "rendu de monnaie")))
	twice("refund-form")
	waitText(t, ctx, "#desk-msg", "Remboursé 2,00")
	if bal, _ := cardBalance(t, v, card); bal != 2050 {
		t.Fatalf("after a double refund click: %d", bal)
	}
	must(t, chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#block-card"), card), chromedp.SendKeys(chromedp.CSS("#block-reason"), "perdue")))
	twice("block-form")
	waitText(t, ctx, "#desk-msg", "Carte bloquée")
	_, r := v.do("GET", "/api/v1/cards/"+card, v.token, nil)
	if r["blocked"] != true {
		t.Fatalf("card not blocked: %v", r)
	}
	must(t, chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#link-card"), card), chromedp.Click(chromedp.CSS("#link-form button"))))
	waitText(t, ctx, "#link-out", "/c/")
	screenshot(t, ctx, "pos-desk-fr")
}

// TestPOSTillFollowsItsOwnReader: with ?reader=, a till ignores the taps
// of the node's other readers.
func TestPOSTillFollowsItsOwnReader(t *testing.T) {
	v := newTestVenue(t)
	setProducts(t, v, ProductView{Name: "Bière", PriceCents: 350})
	other, mine := "04AAAA0000AAAA", "04BBBB0000BBBB"
	topUp(t, v, other, 2000)
	topUp(t, v, mine, 2000)
	ctx := newTab(t, 60*time.Second)
	signIn(t, ctx, v, "en")
	must(t, chromedp.Do(ctx, chromedp.Navigate(v.api+"/pos?lang=en&reader=bar-2"), chromedp.WaitReady(chromedp.CSS(`#pos[data-stream="open"]`)),
		chromedp.Click(chromedp.CSS("#product-0"))))
	waitText(t, ctx, "#total", "€3.50")
	// A card on the other till's reader first: this till must not charge it.
	v.node.Taps().Publish(Tap{Card: crdt.CardID(other), Reader: "bar-1"})
	v.node.Taps().Publish(Tap{Card: crdt.CardID(mine), Reader: "bar-2"})
	must(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS("#result.approved"))))
	waitText(t, ctx, "#result-reason", mine)
	if _, n := cardBalance(t, v, other); n != 0 {
		t.Fatalf("the other reader's card was charged %d times", n)
	}
	if bal, n := cardBalance(t, v, mine); bal != 1650 || n != 1 {
		t.Fatalf("this reader's card: balance %d, %d payments", bal, n)
	}
}
