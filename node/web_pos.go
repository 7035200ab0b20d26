package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/node/web"
)

// ---- home ----

type homeData struct {
	web.Base
	Next []webEvent
}

// handleIndex is the node's home page: the venue, links to the pages and
// the next events of the agenda.
func (n *Node) handleIndex(w http.ResponseWriter, r *http.Request) {
	b := n.pageBase(w, r, "home.title")
	b.Title = b.Venue
	d := homeData{Base: b}
	now := n.cfg.Now()
	_, _ = n.EachEvent(r.Context(), now, "", func(e EventView) bool {
		if e.EndsAt.After(now) && !e.Cancelled {
			d.Next = append(d.Next, newWebEvent(e))
		}
		return len(d.Next) < 5
	})
	n.renderPage(w, http.StatusOK, "home", d)
}

// ---- point of sale ----

type loginData struct {
	web.Base
	Error string
}

type posData struct {
	web.Base
	Products     []crdt.Product
	Texts        map[string]string
	Isolated     bool
	IsolatedText string
}

func (ws *webServer) handlePOS(w http.ResponseWriter, r *http.Request) {
	s := ws.session(r)
	if s == nil {
		ws.loginPage(w, r, http.StatusOK, "")
		return
	}
	b := ws.base(w, r, "pos.title")
	d := posData{Base: b, Products: ws.n.Products(ws.n.Key()), Texts: web.ScriptTexts(b.Lang)}
	d.Isolated, d.IsolatedText = ws.isolationText(b)
	ws.render(w, r, http.StatusOK, "pos", d)
}

func (ws *webServer) loginPage(w http.ResponseWriter, r *http.Request, status int, errKey string) {
	b := ws.base(w, r, "pos.title")
	tok := randomToken()
	http.SetCookie(w, &http.Cookie{Name: loginCSRFCookie, Value: tok, Path: "/pos", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: secureRequest(r)})
	b.CSRF = tok
	d := loginData{Base: b}
	if errKey != "" {
		d.Error = b.T(errKey)
	}
	ws.render(w, r, status, "pos_login", d)
}

// handleLogin opens a staff session for a valid staff token (a
// double-submitted login token and a same-origin request guard the form).
func (ws *webServer) handleLogin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if err := r.ParseForm(); err != nil {
		ws.loginPage(w, r, http.StatusBadRequest, "login.bad")
		return
	}
	c, err := r.Cookie(loginCSRFCookie)
	if err != nil || !sameOrigin(r) || !tokensEqual(c.Value, r.PostForm.Get("csrf")) {
		ws.loginPage(w, r, http.StatusForbidden, "error.csrf")
		return
	}
	if !ws.n.checkToken(strings.TrimSpace(r.PostForm.Get("token"))) {
		ws.n.log.Warn("point of sale: sign-in refused", "remote", r.RemoteAddr)
		ws.loginPage(w, r, http.StatusUnauthorized, "login.bad")
		return
	}
	ws.endSession(w, r)
	ws.newSession(w, r)
	http.SetCookie(w, &http.Cookie{Name: loginCSRFCookie, Value: "", Path: "/pos", MaxAge: -1})
	http.Redirect(w, r, "/pos", http.StatusSeeOther)
}

func (ws *webServer) handleLogout(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	s := ws.session(r)
	if s != nil && (r.ParseForm() != nil || !sameOrigin(r) || !tokensEqual(r.PostForm.Get("csrf"), s.csrf)) {
		ws.errorPage(w, r, http.StatusForbidden, "error.csrf")
		return
	}
	ws.endSession(w, r)
	http.Redirect(w, r, "/pos", http.StatusSeeOther)
}

// isolationText says what the offline caps mean for the cashier now.
func (ws *webServer) isolationText(b web.Base) (bool, string) {
	iso := ws.n.Isolation()
	if !iso.Isolated {
		return false, ""
	}
	st := ws.n.Settings()
	left := uint64(0)
	if st.OfflineVenueBudget > iso.Offline {
		left = st.OfflineVenueBudget - iso.Offline
	}
	return true, b.Tf("pos.isolated", b.Clock(iso.Since), b.MoneyU(st.OfflinePaymentMax), b.MoneyU(st.OfflineCardMax), st.OfflineCardCount, b.MoneyU(left))
}

// posState is the stream's "state" event.
type posState struct {
	Isolated bool   `json:"isolated"`
	Text     string `json:"text,omitempty"`
}

// handlePOSStream pushes the node's taps and its sync state to the point
// of sale page (server-sent events).
func (ws *webServer) handlePOSStream(w http.ResponseWriter, r *http.Request) {
	taps, stop := ws.n.Taps().Subscribe()
	defer stop()
	b := ws.n.pageBase(nil, r, "")
	sse, err := ws.startSSE(w, r)
	if err != nil {
		return
	}
	state := func() error {
		iso, text := ws.isolationText(b)
		return sse.send("state", posState{Isolated: iso, Text: text})
	}
	if state() != nil {
		return
	}
	tick := time.NewTicker(sseKeepAlive)
	defer tick.Stop()
	gone := r.Context().Done()
	for {
		select {
		case <-sse.done:
			return
		case <-gone:
			if sse.ended() {
				return
			}
			gone = nil
		case t, ok := <-taps:
			if !ok || sse.send("tap", t) != nil {
				return
			}
		case <-tick.C:
			if state() != nil {
				return
			}
		}
	}
}

// sseStream is one server-sent events answer.
type sseStream struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	r    *http.Request
	done <-chan struct{}
}

// startSSE starts an event stream. A stream outlives the API's request
// timeout and write deadline: it ends when the client goes (a write
// fails, or the connection's context ends) or the server shuts down.
func (ws *webServer) startSSE(w http.ResponseWriter, r *http.Request) (*sseStream, error) {
	ws.shutdownOnce.Do(func() {
		if srv := ws.n.httpSrv; srv != nil {
			srv.RegisterOnShutdown(func() { close(ws.shutdown) })
		}
	})
	if sw, ok := w.(*statusWriter); ok {
		w = sw.ResponseWriter // the API's metrics wrapper does not flush
	}
	rc := http.NewResponseController(w)
	if err := rc.SetWriteDeadline(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return nil, err
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	s := &sseStream{w: w, rc: rc, r: r, done: ws.shutdown}
	if _, err := io.WriteString(w, "retry: 1000\n\n"); err != nil {
		return nil, err
	}
	return s, rc.Flush()
}

// ended reports whether the request's context ending means the client
// has gone. The API's request timeout also ends it: the stream goes on
// then (its writes notice a gone client), so the caller stops watching it.
func (s *sseStream) ended() bool {
	return !errors.Is(s.r.Context().Err(), context.DeadlineExceeded)
}

func (s *sseStream) send(event string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", event, b); err != nil {
		return err
	}
	return s.rc.Flush()
}

// handlePOSPayment is POST /api/v1/payments for the till's session: it
// records the sale in the session and, for a payment beyond the offline
// caps, adds what the card may still pay (allowed_cents).
func (ws *webServer) handlePOSPayment(w http.ResponseWriter, r *http.Request) {
	body, err := ws.n.readBody(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	var rec recorder
	ws.n.handlePayment(&rec, r)
	out := rec.body.Bytes()
	var req paymentRequest
	_ = json.Unmarshal(body, &req)
	switch {
	case rec.status == http.StatusOK:
		var ans MoneyAnswer
		if json.Unmarshal(out, &ans) == nil {
			ws.recordSale(sessionOf(r), webSale{OpID: ans.OpID, Card: ans.Card, Amount: req.AmountCents, Label: req.Label, At: time.Now().UTC()})
			out = ws.writeStampBack(r.Context(), ans, out)
		}
	case rec.status == http.StatusPaymentRequired:
		var e map[string]any
		if json.Unmarshal(out, &e) == nil && e["error"] == "offline_cap_exceeded" {
			if card, err := crdt.ParseCardID(req.Card); err == nil {
				if allowed, ok := ws.n.OfflineAllowance(card); ok {
					e["allowed_cents"] = allowed
					if b, err := json.Marshal(e); err == nil {
						out = b
					}
				}
			}
		}
	}
	for k, v := range rec.h {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.status)
	w.Write(out)
}

// writeStampBack writes the payment's new stamp on the card when it is on
// one of the node's readers, before the till shows "approved", and says so
// in the answer (stamp_written, or stamp_write_error: the sale stands and
// the card keeps its previous stamp, docs/nfc.md).
func (ws *webServer) writeStampBack(ctx context.Context, ans MoneyAnswer, out []byte) []byte {
	if len(ans.Stamp) == 0 || ws.n.findPresent(ans.Card) == nil {
		return out
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var m map[string]any
	if json.Unmarshal(out, &m) != nil {
		return out
	}
	if _, err := ws.n.WriteStamp(ctx, ans.Card, ans.Stamp); err != nil {
		m["stamp_write_error"] = err.Error()
	} else {
		m["stamp_written"] = true
	}
	if b, err := json.Marshal(m); err == nil {
		return b
	}
	return out
}

func (ws *webServer) recordSale(s *webSession, sale webSale) {
	if s == nil {
		return
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, x := range s.sales {
		if x.OpID == sale.OpID {
			return // a retry answered from the idempotency record
		}
	}
	s.sales = append(s.sales, sale)
	if len(s.sales) > webMaxSales {
		s.sales = s.sales[len(s.sales)-webMaxSales:]
	}
}

// handleUndo gives a sale of this session, made less than webUndoWindow
// ago, back to the card (once: the idempotency key is the sale's op id).
func (ws *webServer) handleUndo(w http.ResponseWriter, r *http.Request) {
	s := sessionOf(r)
	op := r.PathValue("op")
	ws.mu.Lock()
	var sale *webSale
	for i := range s.sales {
		if s.sales[i].OpID.String() == op {
			sale = &s.sales[i]
		}
	}
	var found webSale
	if sale != nil {
		found = *sale
	}
	ws.mu.Unlock()
	if sale == nil {
		writeError(w, apiErr(http.StatusNotFound, "not_found", "no sale of this session has this id"))
		return
	}
	if time.Since(found.At) > webUndoWindow {
		writeError(w, apiErr(http.StatusConflict, "undo_expired", "this sale is too old to undo here: make a refund"))
		return
	}
	ik, err := idempotency("undo", "undo-"+op, found)
	if err != nil {
		writeError(w, err)
		return
	}
	// The sale's amount goes back onto the card: a signed correction
	// (credit) naming the sale. It moves no cash, so it is allowed while
	// the venue is isolated too.
	var rec recorder
	ws.n.write(&rec, r, ik, func(tx *writeTx) (any, error) {
		o, err := tx.make(&crdt.Correction{Card: found.Card, Delta: found.Amount, Reason: "undo of sale " + op})
		if err != nil {
			return nil, err
		}
		ans := MoneyAnswer{OpID: o.ID(), Card: found.Card}
		if c := tx.n.set.State.Card(found.Card); c != nil {
			ans.Balance = c.Balance
		}
		return ans, nil
	})
	if rec.status == http.StatusOK {
		ws.mu.Lock()
		for i := range s.sales {
			if s.sales[i].OpID == found.OpID {
				s.sales[i].Undone = true
			}
		}
		ws.mu.Unlock()
	}
	for k, v := range rec.h {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.status)
	w.Write(rec.body.Bytes())
}

func (ws *webServer) handleSales(w http.ResponseWriter, r *http.Request) {
	s := sessionOf(r)
	ws.mu.Lock()
	out := slices.Clone(s.sales)
	ws.mu.Unlock()
	slices.Reverse(out)
	if out == nil {
		out = []webSale{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"sales": out})
}

func (ws *webServer) handlePOSCard(w http.ResponseWriter, r *http.Request) {
	card, err := parseCard(r.PathValue("card"))
	if err != nil {
		writeError(w, err)
		return
	}
	ws.n.serveCardPage(w, r, card)
}

// handleResolve turns what a reader or a cashier typed into a card id
// (web.UIDCandidates: hex in either byte order, or decimal), preferring a
// card the federation knows.
func (ws *webServer) handleResolve(w http.ResponseWriter, r *http.Request) {
	cands := web.UIDCandidates(r.URL.Query().Get("input"))
	if len(cands) == 0 {
		writeError(w, badRequest("not a card id: type the card's UID in hex or as its reader prints it"))
		return
	}
	pick := cands[0]
	for _, c := range cands {
		if ws.n.CardKnown(c) {
			pick = c
			break
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"card": pick, "candidates": cands})
}

// ---- products ----

// ProductView is a product as the API shows it.
type ProductView struct {
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
}

// ProductsAnswer is the answer of GET and POST /api/v1/products.
type ProductsAnswer struct {
	VenueID string        `json:"venue_id"`
	Venue   string        `json:"venue"`
	Items   []ProductView `json:"items"`
}

type productsRequest struct {
	Items          []ProductView `json:"items"`
	IdempotencyKey string        `json:"idempotency_key"`
}

// Products returns a venue's point-of-sale product list.
func (n *Node) Products(venue crdt.PublicKey) []crdt.Product {
	var out []crdt.Product
	n.View(func(set *crdt.OpSet) {
		if v := set.State.Venues[venue]; v != nil {
			out = slices.Clone(v.Products)
		}
	})
	return out
}

func (n *Node) productsAnswer(venue crdt.PublicKey, items []crdt.Product) ProductsAnswer {
	a := ProductsAnswer{VenueID: venue.String(), Items: []ProductView{}}
	n.View(func(set *crdt.OpSet) { a.Venue = venueName(set, venue) })
	for _, it := range items {
		a.Items = append(a.Items, ProductView{Name: it.Name, PriceCents: int64(it.Price)})
	}
	return a
}

// handleProducts answers GET /api/v1/products[?venue=<venue key>]: this
// venue's (or the named venue's) product list.
func (n *Node) handleProducts(w http.ResponseWriter, r *http.Request) {
	venue := n.Key()
	if s := r.URL.Query().Get("venue"); s != "" {
		k, err := crdt.ParsePublicKey(s)
		if err != nil {
			writeError(w, badRequest("venue must be a venue's key in hex"))
			return
		}
		venue = k
	}
	writeJSON(w, http.StatusOK, n.productsAnswer(venue, n.Products(venue)))
}

// handleProductsPut answers POST /api/v1/products (staff): the venue's
// whole new product list, signed as one products op.
func (n *Node) handleProductsPut(w http.ResponseWriter, r *http.Request) {
	var req productsRequest
	if err := n.decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if len(req.Items) > crdt.MaxProducts {
		writeError(w, badRequest("at most %d products", crdt.MaxProducts))
		return
	}
	body := crdt.Products{Items: []crdt.Product{}}
	for _, it := range req.Items {
		if it.PriceCents <= 0 || it.PriceCents > crdt.MaxAmount {
			writeError(w, badRequest("product %q: price_cents must be between 1 and %d", it.Name, crdt.MaxAmount))
			return
		}
		body.Items = append(body.Items, crdt.Product{Name: it.Name, Price: uint64(it.PriceCents)})
	}
	if _, err := crdt.DecodeBody(crdt.KindProducts, crdt.EncodeBody(&body)); err != nil {
		writeError(w, badRequest("%v", err))
		return
	}
	ik, err := idempotency("products", req.IdempotencyKey, req)
	if err != nil {
		writeError(w, err)
		return
	}
	me := n.Key()
	n.write(w, r, ik, func(tx *writeTx) (any, error) {
		if _, err := tx.make(&body); err != nil {
			return nil, err
		}
		return n.productsAnswerLocked(me, body.Items), nil
	})
}

// productsAnswerLocked is productsAnswer for the writer (the op set is
// already locked there).
func (n *Node) productsAnswerLocked(venue crdt.PublicKey, items []crdt.Product) ProductsAnswer {
	a := ProductsAnswer{VenueID: venue.String(), Venue: venueName(n.set, venue), Items: []ProductView{}}
	for _, it := range items {
		a.Items = append(a.Items, ProductView{Name: it.Name, PriceCents: int64(it.Price)})
	}
	return a
}

type productRow struct{ Name, Price string }

type productsData struct {
	web.Base
	Rows  []productRow
	Key   string
	Error string
	Saved bool
}

func (ws *webServer) handleProductsPage(w http.ResponseWriter, r *http.Request) {
	b := ws.base(w, r, "products.title")
	d := productsData{Base: b, Key: randomToken(), Saved: r.URL.Query().Get("saved") == "1"}
	for _, p := range ws.n.Products(ws.n.Key()) {
		d.Rows = append(d.Rows, productRow{Name: p.Name, Price: formatDecimal(b.Lang, int64(p.Price))})
	}
	for i := 0; i < 6 && len(d.Rows) < crdt.MaxProducts; i++ {
		d.Rows = append(d.Rows, productRow{})
	}
	ws.render(w, r, http.StatusOK, "products", d)
}

func (ws *webServer) handleProductsForm(w http.ResponseWriter, r *http.Request) {
	b := ws.base(w, r, "products.title")
	names, prices := r.PostForm["name"], r.PostForm["price"]
	req := productsRequest{IdempotencyKey: "products-form-" + r.PostForm.Get("key"), Items: []ProductView{}}
	var rows []productRow
	var bad string
	for i, name := range names {
		name = strings.TrimSpace(name)
		price := ""
		if i < len(prices) {
			price = strings.TrimSpace(prices[i])
		}
		if name == "" && price == "" {
			continue
		}
		rows = append(rows, productRow{Name: name, Price: price})
		cents, ok := parseDecimal(price)
		if !ok || name == "" {
			bad = fmt.Sprintf(b.T("products.bad"), name, price)
			continue
		}
		req.Items = append(req.Items, ProductView{Name: name, PriceCents: cents})
	}
	errMsg := bad
	if errMsg == "" {
		a := callAPI(r.Context(), ws.n.handleProductsPut, "POST", "/", req, nil)
		if a.ok() {
			http.Redirect(w, r, "/pos/products?saved=1", http.StatusSeeOther)
			return
		}
		errMsg = b.T("error.api") + " " + a.Message
	}
	d := productsData{Base: b, Rows: rows, Key: randomToken(), Error: errMsg}
	for i := 0; i < 6 && len(d.Rows) < crdt.MaxProducts; i++ {
		d.Rows = append(d.Rows, productRow{})
	}
	ws.render(w, r, http.StatusBadRequest, "products", d)
}

// parseDecimal reads a price typed as "2.50", "2,50" or "2".
func parseDecimal(s string) (int64, bool) {
	s = strings.NewReplacer(",", ".", " ", "", "\u00a0", "", "€", "").Replace(strings.TrimSpace(s))
	units, frac, hasFrac := strings.Cut(s, ".")
	if units == "" || len(units) > 7 || (hasFrac && (len(frac) == 0 || len(frac) > 2)) {
		return 0, false
	}
	u, err := strconv.ParseUint(units, 10, 64)
	if err != nil {
		return 0, false
	}
	var f uint64
	if hasFrac {
		if len(frac) == 1 {
			frac += "0"
		}
		if f, err = strconv.ParseUint(frac, 10, 64); err != nil {
			return 0, false
		}
	}
	v := int64(u*100 + f)
	return v, v > 0
}

func formatDecimal(l web.Lang, cents int64) string {
	s := fmt.Sprintf("%d.%02d", cents/100, cents%100)
	if l == web.French {
		s = strings.Replace(s, ".", ",", 1)
	}
	return s
}

// ---- the venue's events (staff) ----

type eventFormValues struct {
	ID, Title, Start, End, Location, Description string
	Cancelled                                    bool
}

type staffEventsData struct {
	web.Base
	Events []webEvent
	Edit   eventFormValues
	Key    string
	Error  string
	Saved  bool
}

const datetimeLocal = "2006-01-02T15:04"

func (ws *webServer) handleStaffEvents(w http.ResponseWriter, r *http.Request) {
	ws.staffEventsPage(w, r, http.StatusOK, eventFormValues{ID: r.PathValue("id")}, "")
}

func (ws *webServer) staffEventsPage(w http.ResponseWriter, r *http.Request, status int, edit eventFormValues, errMsg string) {
	b := ws.base(w, r, "sevents.title")
	d := staffEventsData{Base: b, Key: randomToken(), Error: errMsg, Saved: r.URL.Query().Get("saved") == "1"}
	me := ws.n.Key().String()
	// This venue's events from staffEventsPast on, a page of them; the one
	// being edited is read by its key.
	_, err := ws.n.EachEvent(r.Context(), ws.n.cfg.Now().Add(-staffEventsPast), "", func(e EventView) bool {
		if e.VenueID == me {
			d.Events = append(d.Events, newWebEvent(e))
		}
		return len(d.Events) < agendaPageSize
	})
	if err != nil {
		ws.errorPage(w, r, http.StatusInternalServerError, "error.internal")
		return
	}
	if edit.ID != "" && errMsg == "" {
		e, ok, err := ws.n.Event(r.Context(), me, edit.ID)
		if err != nil {
			ws.errorPage(w, r, http.StatusInternalServerError, "error.internal")
			return
		}
		if ok {
			loc := b.Loc
			edit = eventFormValues{ID: e.ID, Title: e.Title, Start: e.StartsAt.In(loc).Format(datetimeLocal), End: e.EndsAt.In(loc).Format(datetimeLocal),
				Location: e.Location, Description: e.Description, Cancelled: e.Cancelled}
		}
	}
	if edit.ID != "" && edit.Title == "" && errMsg == "" {
		ws.errorPage(w, r, http.StatusNotFound, "error.noevent")
		return
	}
	d.Edit = edit
	ws.render(w, r, status, "staff_events", d)
}

func (ws *webServer) handleStaffEventForm(w http.ResponseWriter, r *http.Request) {
	f := r.PostForm
	vals := eventFormValues{ID: f.Get("id"), Title: f.Get("title"), Start: f.Get("starts_at"), End: f.Get("ends_at"),
		Location: f.Get("location"), Description: strings.ReplaceAll(f.Get("description"), "\r\n", "\n")}
	req := eventRequest{ID: vals.ID, IdempotencyKey: "event-form-" + f.Get("key")}
	b := ws.base(w, r, "sevents.title")
	if f.Get("cancel") == "1" {
		req.Cancelled, req.Reason = true, f.Get("reason")
	} else {
		start, err1 := time.ParseInLocation(datetimeLocal, vals.Start, b.Loc)
		end, err2 := time.ParseInLocation(datetimeLocal, vals.End, b.Loc)
		if err1 != nil || err2 != nil {
			ws.staffEventsPage(w, r, http.StatusBadRequest, vals, b.T("sevents.baddate"))
			return
		}
		req.Title, req.StartsAt, req.EndsAt = &vals.Title, &start, &end
		req.Description, req.Location = &vals.Description, &vals.Location
	}
	a := callAPI(r.Context(), ws.n.handleEventUpsert, "POST", "/", req, nil)
	if !a.ok() {
		ws.staffEventsPage(w, r, http.StatusBadRequest, vals, b.T("error.api")+" "+a.Message)
		return
	}
	var ev EventView
	_ = json.Unmarshal(a.Raw, &ev)
	http.Redirect(w, r, "/pos/events/"+url.PathEscape(ev.ID)+"?saved=1", http.StatusSeeOther)
}
