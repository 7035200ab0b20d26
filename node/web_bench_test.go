package node

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/chromedp/chromedp"
)

// Benchmarks of the pages in headless Chromium on loopback (figures in
// docs/benchmarks.md). Each reports the median and the 99th percentile
// (or the worst for fewer than 100 runs) of its latencies:
//
//	go test ./node -run '^$' -bench 'BenchmarkAgenda5000Events|BenchmarkDashboard100Venues' -benchtime 20x
//	go test ./node -run '^$' -bench BenchmarkPOSTapToApproved -benchtime 500x

func reportLatencies(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	b.ReportMetric(float64(pct(0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}

// loadPage navigates to url and waits until the page is parsed, styled
// and laid out (the load event, then a forced layout), and returns how
// many elements match sel.
func loadPage(b *testing.B, ctx context.Context, url, sel string) int {
	must(b, chromedp.Do(ctx, chromedp.Navigate(url)))
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(`document.body.offsetHeight, document.querySelectorAll(%q).length`, sel)))
	must(b, err)
	return n
}

// BenchmarkAgenda5000Events serves and renders the agenda of 5,000
// upcoming events, from the request to the laid-out page: its first page
// (500 events, the default) and all 5,000 in one page (?limit=5000).
func BenchmarkAgenda5000Events(b *testing.B) {
	v := newTestVenue(b)
	const events = 5000
	start := time.Now().Add(time.Hour).Truncate(time.Hour)
	var wg sync.WaitGroup
	errs := make(chan error, events)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < events; i += 8 {
				at := start.Add(time.Duration(i) * time.Hour)
				a := callAPI(context.Background(), v.node.handleEventUpsert, "POST", "/", map[string]any{
					"id": fmt.Sprint("ev-", i), "title": fmt.Sprintf("Concert n°%d", i), "starts_at": at, "ends_at": at.Add(2 * time.Hour),
					"description": "Une soirée de musique", "location": "Grande salle", "idempotency_key": fmt.Sprint("ev-", i),
				}, nil)
				if !a.ok() {
					errs <- fmt.Errorf("%d: %s %s", i, a.Code, a.Message)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	ctx := newTab(b, 30*time.Minute)
	for _, bc := range []struct {
		name  string
		query string
		shown int
	}{
		{"first-page", "", agendaPageSize},
		{"all-in-one-page", "&limit=5000", events},
	} {
		b.Run(bc.name, func(b *testing.B) { benchAgendaPage(b, ctx, v.api+"/agenda?lang=fr"+bc.query, bc.shown) })
	}
}

func benchAgendaPage(b *testing.B, ctx context.Context, url string, shown int) {
	if n := loadPage(b, ctx, url, "ul.events li"); n != shown {
		b.Fatalf("the agenda shows %d events, want %d", n, shown)
	}
	var lat []time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		loadPage(b, ctx, url, "ul.events li")
		lat = append(lat, time.Since(t0))
		if testing.Verbose() {
			nav, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`(function(){var n=performance.getEntriesByType('navigation')[0];return 'ttfb '+Math.round(n.responseStart-n.requestStart)+' download '+Math.round(n.responseEnd-n.responseStart)+' dom '+Math.round(n.domContentLoadedEventEnd-n.responseEnd)+' load '+Math.round(n.loadEventEnd-n.domContentLoadedEventEnd)})()`))
			b.Log(nav)
		}
	}
	b.StopTimer()
	reportLatencies(b, lat)
}

// BenchmarkDashboard100Venues serves and renders the dashboard of a
// federation of 100 venues (this node and 99 others, not running).
func BenchmarkDashboard100Venues(b *testing.B) {
	vs, err := PrepareFederation(b.TempDir(), 100, crdt.DefaultSettings())
	must(b, err)
	v := &testVenue{t: b, dir: vs[0].Dir, token: vs[0].Token}
	v.start()
	b.Cleanup(v.stop)
	ctx := newTab(b, 30*time.Minute)
	url := v.api + "/dashboard?lang=en"
	if n := loadPage(b, ctx, url, "#venues tbody tr"); n != 100 {
		b.Fatalf("the dashboard shows %d venues", n)
	}
	var lat []time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		loadPage(b, ctx, url, "#venues tbody tr")
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportLatencies(b, lat)
}

// BenchmarkPOSTapToApproved times a sale on the point of sale page: from
// the tap the node publishes, through the page (server-sent event), the
// payment request, the durable commit and the answer, to the approved
// screen shown.
func BenchmarkPOSTapToApproved(b *testing.B) {
	v := newTestVenue(b)
	setProducts(b, v, ProductView{Name: "Bonbon", PriceCents: 1})
	card := "04BE4C4BE4C4BE"
	topUp(b, v, card, 15000)
	ctx := newTab(b, 30*time.Minute)
	signIn(b, ctx, v, "en")
	arm := `document.getElementById('next').click(); document.getElementById('product-0').click();
		window.__approved = new Promise(function (resolve) {
			var r = document.getElementById('result');
			new MutationObserver(function (m, o) {
				if (!r.hidden && r.classList.contains('approved')) { o.disconnect(); resolve(true); }
			}).observe(r, {attributes: true});
		}); true`
	var lat []time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		_, err := chromedp.Run(ctx, chromedp.Evaluate[bool](arm))
		must(b, err)
		b.StartTimer()
		t0 := time.Now()
		v.node.Taps().Publish(Tap{Card: crdt.CardID(card), Reader: "bench"})
		_, err = chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__approved`, chromedp.EvalAwaitPromise))
		must(b, err)
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportLatencies(b, lat)
	if bal, n := cardBalance(b, v, card); n != b.N+0 || bal != int64(15000-b.N) {
		b.Fatalf("after %d sales: balance %d, %d payments", b.N, bal, n)
	}
}
