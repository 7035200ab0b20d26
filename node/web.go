package node

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/node/web"
)

// The web pages (issue 12): point of sale (/pos), card holder (/c/{token}),
// agenda (/agenda, /events/{id}), dashboard (/dashboard). Templates and
// static files are embedded (node/web). Staff sign in to the point of sale
// with a staff token once; the session is a server-side record behind an
// HttpOnly, SameSite=Strict cookie, and every write carries the session's
// CSRF token (header X-CSRF-Token or form field csrf) and, from a browser,
// a same-origin Origin. The pages read the node through its exported
// methods and the JSON API's handlers (called in-process), never through
// the op set's maps.

// Web session settings.
const (
	// webSessionIdle ends a staff session unused for this long.
	webSessionIdle = 12 * time.Hour
	// webMaxSessions bounds the open sessions (the oldest is dropped).
	webMaxSessions = 256
	// webMaxSales bounds the sales a session lists.
	webMaxSales = 200
	// webUndoWindow is how long after a sale the till may undo it.
	webUndoWindow = 2 * time.Minute
	// sseKeepAlive is how often a stream writes, to notice a gone client.
	sseKeepAlive = 2 * time.Second
)

const (
	sessionCookie   = "cagnotte_session"
	loginCSRFCookie = "cagnotte_login"
	langCookie      = "cagnotte_lang"
)

// webServer is the pages' side of one Handler: templates, staff sessions
// and the secret that derives form tokens.
type webServer struct {
	n        *Node
	secret   [32]byte
	mu       sync.Mutex
	sessions map[[32]byte]*webSession

	shutdownOnce sync.Once
	shutdown     chan struct{}
}

// webSession is one signed-in till.
type webSession struct {
	csrf    string
	created time.Time
	seen    time.Time
	sales   []webSale
}

// webSale is a payment a till took in its session.
type webSale struct {
	OpID   crdt.OpID   `json:"op_id"`
	Card   crdt.CardID `json:"card"`
	Amount int64       `json:"amount_cents"`
	Label  string      `json:"label,omitempty"`
	At     time.Time   `json:"at"`
	Undone bool        `json:"undone,omitempty"`
}

func newWebServer(n *Node) *webServer {
	ws := &webServer{n: n, sessions: map[[32]byte]*webSession{}, shutdown: make(chan struct{})}
	if _, err := web.ParseTemplates(); err != nil {
		n.log.Error("web pages disabled", "err", err)
	}
	rand.Read(ws.secret[:])
	return ws
}

// registerWebRoutes adds the web pages and their endpoints to mux.
func (n *Node) registerWebRoutes(mux *http.ServeMux) {
	ws := newWebServer(n)
	mux.Handle("GET /static/", web.Static())
	// Point of sale.
	mux.HandleFunc("GET /pos", ws.handlePOS)
	mux.HandleFunc("POST /pos/login", ws.handleLogin)
	mux.HandleFunc("POST /pos/logout", ws.handleLogout)
	mux.HandleFunc("GET /pos/stream", ws.staffRead(ws.handlePOSStream))
	mux.HandleFunc("POST /pos/api/payments", ws.staffWrite(ws.handlePOSPayment))
	mux.HandleFunc("POST /pos/api/topups", ws.staffWrite(n.handleTopUp))
	mux.HandleFunc("POST /pos/api/refunds", ws.staffWrite(n.handleRefund))
	mux.HandleFunc("POST /pos/api/undo/{op}", ws.staffWrite(ws.handleUndo))
	mux.HandleFunc("POST /pos/api/cards/{card}/block", ws.staffWrite(n.handleBlock(true)))
	mux.HandleFunc("POST /pos/api/cards/{card}/holder-token", ws.staffWrite(n.handleHolderToken))
	mux.HandleFunc("GET /pos/api/cards/{card}", ws.staffRead(ws.handlePOSCard))
	mux.HandleFunc("GET /pos/api/resolve", ws.staffRead(ws.handleResolve))
	mux.HandleFunc("GET /pos/api/sales", ws.staffRead(ws.handleSales))
	mux.HandleFunc("GET /pos/products", ws.staffPage(ws.handleProductsPage))
	mux.HandleFunc("POST /pos/products", ws.staffForm(ws.handleProductsForm))
	mux.HandleFunc("GET /pos/events", ws.staffPage(ws.handleStaffEvents))
	mux.HandleFunc("GET /pos/events/{id}", ws.staffPage(ws.handleStaffEvents))
	mux.HandleFunc("POST /pos/events", ws.staffForm(ws.handleStaffEventForm))
	// Products (JSON API).
	mux.HandleFunc("GET /api/v1/products", n.handleProducts)
	mux.HandleFunc("POST /api/v1/products", n.staff(n.handleProductsPut))
	// Card holder.
	mux.HandleFunc("GET /c/{token}", ws.handleHolderPage)
	mux.HandleFunc("POST /c/{token}/lost", ws.handleLost)
	mux.HandleFunc("POST /c/{token}/topup", ws.handleHolderTopUp)
	mux.HandleFunc("GET /c/{token}/qr.png", ws.handleHolderQR)
	// Agenda.
	mux.HandleFunc("GET /agenda", ws.handleAgenda)
	mux.HandleFunc("GET /events/{id}", ws.handleEventPage)
	mux.HandleFunc("GET /venues/{venue}/agenda.ics", n.handleVenueICS)
	// Dashboard.
	mux.HandleFunc("GET /dashboard", ws.handleDashboard)
	mux.HandleFunc("GET /dashboard/live", ws.handleDashboardLive)
}

// ---- sessions and CSRF ----

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func sessionKey(cookie string) [32]byte {
	return sha256.Sum256([]byte("cagnotte/session\x00" + cookie))
}

// session returns the request's staff session, if any and still valid.
func (ws *webServer) session(r *http.Request) *webSession {
	c, err := r.Cookie(sessionCookie)
	if err != nil || len(c.Value) > 64 {
		return nil
	}
	k := sessionKey(c.Value)
	now := time.Now()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	s := ws.sessions[k]
	if s == nil {
		return nil
	}
	if now.Sub(s.seen) > webSessionIdle {
		delete(ws.sessions, k)
		return nil
	}
	s.seen = now
	return s
}

// newSession opens a session and sets its cookie.
func (ws *webServer) newSession(w http.ResponseWriter, r *http.Request) *webSession {
	val := randomToken()
	now := time.Now()
	s := &webSession{csrf: randomToken(), created: now, seen: now}
	ws.mu.Lock()
	if len(ws.sessions) >= webMaxSessions {
		var oldest [32]byte
		var at time.Time
		for k, v := range ws.sessions {
			if at.IsZero() || v.seen.Before(at) {
				oldest, at = k, v.seen
			}
		}
		delete(ws.sessions, oldest)
	}
	ws.sessions[sessionKey(val)] = s
	ws.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: val, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: secureRequest(r), MaxAge: int(webSessionIdle / time.Second)})
	return s
}

func (ws *webServer) endSession(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		ws.mu.Lock()
		delete(ws.sessions, sessionKey(c.Value))
		ws.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: secureRequest(r), MaxAge: -1})
}

// secureRequest reports whether the browser reached the node over HTTPS
// (directly or through a proxy that says so): cookies are then Secure.
func secureRequest(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// sameOrigin refuses a browser request sent from another site: its
// Origin (or, without one, its Referer) must be this node.
func sameOrigin(r *http.Request) bool {
	src := r.Header.Get("Origin")
	if src == "" || src == "null" {
		if src == "null" {
			return false
		}
		src = r.Header.Get("Referer")
		if src == "" {
			return true // not a browser's cross-site request
		}
	}
	u, err := url.Parse(src)
	return err == nil && u.Host == r.Host
}

func tokensEqual(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// formToken derives a token for an anonymous form (the card holder's
// "lost card" form) from the node's secret.
func (ws *webServer) formToken(purpose, subject string) string {
	m := hmac.New(sha256.New, ws.secret[:])
	m.Write([]byte(purpose + "\x00" + subject))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:24])
}

// staffWrite wraps a JSON write of the point of sale: a session, its CSRF
// token in X-CSRF-Token and a same-origin request.
func (ws *webServer) staffWrite(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := ws.session(r)
		if s == nil {
			writeError(w, apiErr(http.StatusUnauthorized, "unauthorized", "sign in to the point of sale again"))
			return
		}
		if !sameOrigin(r) || !tokensEqual(r.Header.Get("X-CSRF-Token"), s.csrf) {
			writeError(w, apiErr(http.StatusForbidden, "csrf", "this request did not come from the point of sale page; reload it"))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), webSessionKey{}, s)))
	}
}

// staffRead wraps a JSON read of the point of sale (a session is enough).
func (ws *webServer) staffRead(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := ws.session(r)
		if s == nil {
			writeError(w, apiErr(http.StatusUnauthorized, "unauthorized", "sign in to the point of sale again"))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), webSessionKey{}, s)))
	}
}

// staffPage wraps a staff page: without a session, the sign-in page.
func (ws *webServer) staffPage(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := ws.session(r)
		if s == nil {
			http.Redirect(w, r, "/pos", http.StatusSeeOther)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), webSessionKey{}, s)))
	}
}

// staffForm wraps a staff form post: a session, the csrf field, same origin.
func (ws *webServer) staffForm(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := ws.session(r)
		if s == nil {
			http.Redirect(w, r, "/pos", http.StatusSeeOther)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, ws.n.cfg.MaxBodyBytes)
		if err := r.ParseForm(); err != nil || !sameOrigin(r) || !tokensEqual(r.PostForm.Get("csrf"), s.csrf) {
			ws.errorPage(w, r, http.StatusForbidden, "error.csrf")
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), webSessionKey{}, s)))
	}
}

type webSessionKey struct{}

func sessionOf(r *http.Request) *webSession {
	s, _ := r.Context().Value(webSessionKey{}).(*webSession)
	return s
}

// ---- language, rendering ----

// pageLang picks the page's language and remembers an explicit choice.
func pageLang(w http.ResponseWriter, r *http.Request) web.Lang {
	choice := r.URL.Query().Get("lang")
	cookie := ""
	if c, err := r.Cookie(langCookie); err == nil {
		cookie = c.Value
	}
	l := web.Negotiate(choice, cookie, r.Header.Get("Accept-Language"))
	if _, ok := web.ParseLang(choice); ok && w != nil {
		http.SetCookie(w, &http.Cookie{Name: langCookie, Value: string(l), Path: "/", MaxAge: 365 * 24 * 3600, SameSite: http.SameSiteLaxMode, Secure: secureRequest(r)})
	}
	return l
}

// WebInfo is what every page shows of the node: its venue, the
// federation and its currency.
type WebInfo struct {
	Venue      string
	VenueID    string
	Federation string
	Currency   string
}

// WebInfo returns the node's venue name, federation name and currency.
func (n *Node) WebInfo() WebInfo {
	var i WebInfo
	me := n.cfg.Key.Public()
	n.View(func(set *crdt.OpSet) {
		i = WebInfo{Venue: venueName(set, me), VenueID: me.String(), Federation: set.State.Name, Currency: set.State.Currency}
	})
	if i.Currency == "" {
		i.Currency = "EUR"
	}
	return i
}

func (ws *webServer) base(w http.ResponseWriter, r *http.Request, titleKey string) web.Base {
	b := ws.n.pageBase(w, r, titleKey)
	if s := ws.session(r); s != nil {
		b.Staff, b.CSRF = true, s.csrf
	}
	return b
}

// pageBase is what every page shows, without a staff session.
func (n *Node) pageBase(w http.ResponseWriter, r *http.Request, titleKey string) web.Base {
	l := pageLang(w, r)
	info := n.WebInfo()
	q := r.URL.Query()
	other := web.French
	if l == web.French {
		other = web.English
	}
	q.Set("lang", string(other))
	b := web.Base{Lang: l, Currency: info.Currency, Venue: info.Venue, Federation: info.Federation,
		SwitchURL: r.URL.Path + "?" + q.Encode(), Loc: time.Local}
	if titleKey != "" {
		b.Title = b.T(titleKey)
	}
	return b
}

// render executes a page into a buffer, then sends it with the pages'
// security headers.
func (ws *webServer) render(w http.ResponseWriter, r *http.Request, status int, page string, data any) {
	ws.n.renderPage(w, status, page, data)
}

func (n *Node) renderPage(w http.ResponseWriter, status int, page string, data any) {
	tpl, err := web.ParseTemplates()
	if err != nil {
		http.Error(w, "web pages unavailable: "+err.Error(), http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := tpl[page].Execute(&buf, data); err != nil {
		n.log.Error("web page", "page", page, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Vary", "Accept-Language, Cookie")
	if h.Get("Cache-Control") == "" {
		h.Set("Cache-Control", "no-store")
	}
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

type errorPageData struct {
	web.Base
	Heading string
	Message string
}

func (ws *webServer) errorPage(w http.ResponseWriter, r *http.Request, status int, key string) {
	b := ws.base(w, r, "error.title")
	ws.render(w, r, status, "error", errorPageData{Base: b, Heading: b.T("error.title"), Message: b.T(key)})
}

// ---- in-process calls of the JSON API's handlers ----

// recorder is a ResponseWriter that keeps the answer of an in-process call.
type recorder struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

func (rc *recorder) Header() http.Header {
	if rc.h == nil {
		rc.h = http.Header{}
	}
	return rc.h
}
func (rc *recorder) Write(b []byte) (int, error) {
	if rc.status == 0 {
		rc.status = http.StatusOK
	}
	return rc.body.Write(b)
}
func (rc *recorder) WriteHeader(s int) {
	if rc.status == 0 {
		rc.status = s
	}
}

// apiAnswer is the decoded answer of an in-process API call.
type apiAnswer struct {
	Status  int
	Code    string
	Message string
	Raw     []byte
}

func (a apiAnswer) ok() bool { return a.Status == http.StatusOK }

// callAPI runs an API handler in-process with a JSON body (nil for none)
// and the given path values and query.
func callAPI(ctx context.Context, h http.HandlerFunc, method, target string, body any, pathValues map[string]string) apiAnswer {
	var rd io.Reader = http.NoBody
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return apiAnswer{Status: 500, Code: "internal", Message: err.Error()}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return apiAnswer{Status: 500, Code: "internal", Message: err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range pathValues {
		req.SetPathValue(k, v)
	}
	var rc recorder
	h(&rc, req)
	a := apiAnswer{Status: rc.status, Raw: rc.body.Bytes()}
	if a.Status != http.StatusOK {
		var e struct{ Error, Message string }
		if json.Unmarshal(a.Raw, &e) == nil {
			a.Code, a.Message = e.Error, e.Message
		}
	}
	return a
}

// CardHistoryPage returns a card's view with one page of its history, as
// GET /api/v1/cards/{card} answers it (limit 0 is the default; before is
// a cursor from a previous page's Next). ok is false for an unknown card.
func (n *Node) CardHistoryPage(ctx context.Context, card crdt.CardID, limit int, before string) (CardPage, bool, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", itoa(limit))
	}
	if before != "" {
		q.Set("before", before)
	}
	a := callAPI(ctx, func(w http.ResponseWriter, r *http.Request) { n.serveCardPage(w, r, card) }, "GET", "/?"+q.Encode(), nil, nil)
	switch {
	case a.Code == "unknown_card":
		return CardPage{}, false, nil
	case !a.ok():
		return CardPage{}, false, errors.New(a.Code + ": " + a.Message)
	}
	var p CardPage
	if err := json.Unmarshal(a.Raw, &p); err != nil {
		return CardPage{}, false, err
	}
	return p, true, nil
}

// Conflicts returns the conflicts the node knows (what GET
// /api/v1/conflicts answers).
func (n *Node) Conflicts(ctx context.Context) ([]ConflictView, error) {
	a := callAPI(ctx, n.handleConflicts, "GET", "/", nil, nil)
	if !a.ok() {
		return nil, errors.New(a.Code + ": " + a.Message)
	}
	var out []ConflictView
	err := json.Unmarshal(a.Raw, &out)
	return out, err
}

// CardKnown reports whether an op mentions card.
func (n *Node) CardKnown(card crdt.CardID) bool {
	known := false
	n.View(func(set *crdt.OpSet) { known = set.State.Card(card) != nil })
	return known
}

// Settings returns the federation's settings (offline caps and others).
func (n *Node) Settings() crdt.Settings {
	var s crdt.Settings
	n.View(func(set *crdt.OpSet) { s = set.State.Settings })
	return s
}

// OfflineAllowance returns what card may still pay at this venue now, as
// far as the offline caps go (its balance aside), and whether the venue is
// isolated (when it is not, the caps do not apply and ok is false).
func (n *Node) OfflineAllowance(card crdt.CardID) (cents uint64, ok bool) {
	st := n.Settings()
	n.iso.mu.Lock()
	defer n.iso.mu.Unlock()
	if !n.iso.isolated {
		return 0, false
	}
	l := &n.iso.ledger
	if l.Count[card] >= st.OfflineCardCount && st.OfflineCardCount > 0 {
		return 0, true
	}
	allowed := st.OfflinePaymentMax
	sub := func(limit, used uint64) uint64 {
		if used >= limit {
			return 0
		}
		return limit - used
	}
	allowed = min(allowed, sub(st.OfflineCardMax, l.Amount[card]), sub(st.OfflineVenueBudget, l.Total))
	return allowed, true
}

func itoa(v int) string {
	b, _ := json.Marshal(v)
	return string(b)
}
