package node

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/node/web"
	qrcode "github.com/skip2/go-qrcode"
)

// Agenda bounds.
const (
	// agendaPageSize is how many events an agenda page lists by default;
	// ?limit= asks for up to agendaMaxShown.
	agendaPageSize = 500
	agendaMaxShown = 5000
	// maxAgendaQuery bounds the text filter.
	maxAgendaQuery = 100
	// holderPageSize is the history entries the card holder page shows.
	holderPageSize = 20
	// holderSummarySize is how many recent entries "where it was spent" sums.
	holderSummarySize = 500
)

// webEvent is an event with what its pages need.
type webEvent struct {
	EventView
	URL       string
	StartsISO string
	EndsISO   string
}

func newWebEvent(e EventView) webEvent {
	return webEvent{EventView: e, URL: "/events/" + url.PathEscape(e.ID) + "?venue=" + e.VenueID,
		StartsISO: e.StartsAt.Format(time.RFC3339), EndsISO: e.EndsAt.Format(time.RFC3339)}
}

// pageURL is the absolute address of the request's page (for Open Graph
// tags and QR codes).
func pageURL(r *http.Request, path string) string {
	scheme := "http"
	if secureRequest(r) {
		scheme = "https"
	}
	return scheme + "://" + r.Host + path
}

// VenueList returns the federation's venues (not the federation key), by
// name, as the sync status lists them.
func (n *Node) VenueList() []AuthorStatus {
	var m Membership
	n.View(func(set *crdt.OpSet) { m = n.membership(set) })
	out := make([]AuthorStatus, 0, len(m.Authors))
	for _, a := range m.Authors {
		if a.Role == "venue" {
			out = append(out, a)
		}
	}
	return out
}

// ---- card holder ----

type venueSpent struct {
	Name  string
	Spent int64
}

type holderData struct {
	web.Base
	Card       CardPage
	CardMasked string
	Token      string
	Venues     []venueSpent
	Newer      bool
	Lost       bool
	Error      string
	// Online top-up (Stripe, docs/stripe.md): Gateway when this node takes
	// them (a form posting to /c/{token}/topup), else GatewayURL, the
	// holder page at a gateway that does; neither: hidden.
	Gateway          bool
	GatewayURL       string
	TopUpMin         int64
	TopUpMax         int64
	TopUpCSRF        string
	TopUpKey         string
	TopUpMsg         string
	PayURL           string
	TopUpAmountValue string
}

// IsCredit reports whether a history entry of this kind adds money.
func (holderData) IsCredit(kind string) bool { return kind == "topup" || kind == "correction" }

// LabelText is a history entry's label; a top-up's label is its method,
// named in the page's language.
func (d holderData) LabelText(kind, label string) string {
	if kind == "topup" && web.Translated("method."+label) {
		return d.T("method." + label)
	}
	return label
}

// KindText names a history entry's kind in the page's language.
func (d holderData) KindText(kind string) string { return d.T("kind." + kind) }

func maskCard(c crdt.CardID) string {
	s := string(c)
	if len(s) <= 4 {
		return s
	}
	return strings.Repeat("•", len(s)-4) + s[len(s)-4:]
}

func (ws *webServer) handleHolderPage(w http.ResponseWriter, r *http.Request) {
	ws.holderPageWith(w, r, "", "")
}

// holderPageWith renders the holder page, with an online top-up's error
// or the link to pay it.
func (ws *webServer) holderPageWith(w http.ResponseWriter, r *http.Request, topUpErr, payURL string) {
	tok := r.PathValue("token")
	card, err := ws.n.VerifyHolderToken(tok)
	if err != nil {
		ws.errorPage(w, r, http.StatusNotFound, "error.badlink")
		return
	}
	before := r.URL.Query().Get("before")
	if r.Method != "GET" {
		before = ""
	}
	if len(before) > 200 {
		before = ""
	}
	page, ok, err := ws.n.CardHistoryPage(r.Context(), card, holderPageSize, before)
	if err != nil && before != "" {
		page, ok, err = ws.n.CardHistoryPage(r.Context(), card, holderPageSize, "")
		before = ""
	}
	if err != nil || !ok {
		ws.errorPage(w, r, http.StatusNotFound, "error.badlink")
		return
	}
	b := ws.n.pageBase(w, r, "holder.title")
	b.CSRF = ws.formToken("lost", tok)
	d := holderData{Base: b, Card: page, CardMasked: maskCard(card), Token: tok, Newer: before != "", Lost: r.URL.Query().Get("lost") == "1"}
	if r.URL.Query().Get("error") == "1" {
		d.Error = b.T("holder.lost.error")
	}
	ws.holderTopUp(r, tok, &d)
	if topUpErr != "" {
		d.Error = topUpErr
	}
	d.PayURL = payURL
	if recent, ok, err := ws.n.CardHistoryPage(r.Context(), card, holderSummarySize, ""); err == nil && ok {
		byVenue := map[string]int64{}
		var order []string
		for _, e := range recent.History {
			if e.Kind != "payment" || !e.Counted {
				continue
			}
			if _, seen := byVenue[e.Venue]; !seen {
				order = append(order, e.Venue)
			}
			byVenue[e.Venue] += e.Amount
		}
		for _, v := range order {
			d.Venues = append(d.Venues, venueSpent{Name: v, Spent: byVenue[v]})
		}
	}
	ws.render(w, r, http.StatusOK, "holder", d)
}

// holderTopUp fills the online top-up part of the holder page from the
// node's Stripe status, and the outcome of a return from Checkout
// (?topup=<session id> or ?topup=cancelled).
func (ws *webServer) holderTopUp(r *http.Request, tok string, d *holderData) {
	a := callAPI(r.Context(), ws.n.handleStripeStatus, "GET", "/", nil, nil)
	var st StripeStatus
	if !a.ok() || json.Unmarshal(a.Raw, &st) != nil {
		return
	}
	d.Gateway, d.TopUpMin, d.TopUpMax = st.Gateway, st.MinCents, st.MaxCents
	if !st.Gateway && st.GatewayURL != "" {
		d.GatewayURL = strings.TrimRight(st.GatewayURL, "/") + "/c/" + url.PathEscape(tok)
	}
	d.TopUpCSRF, d.TopUpKey = ws.formToken("topup", tok), randomToken()
	switch session := r.URL.Query().Get("topup"); {
	case session == "":
	case session == "cancelled":
		d.TopUpMsg = d.T("holder.topup.cancelled")
	case len(session) <= 255:
		p := callAPI(r.Context(), ws.n.handleStripePoll, "GET", "/", nil, map[string]string{"token": tok, "session": session})
		var ts TopUpState
		if !p.ok() || json.Unmarshal(p.Raw, &ts) != nil {
			return
		}
		switch ts.Status {
		case "credited":
			d.TopUpMsg = d.Tf("holder.topup.credited", d.Money(ts.Amount))
		case "failed":
			d.TopUpMsg = d.T("holder.topup.failed")
		case "recorded_for_staff":
			d.TopUpMsg = d.T("holder.topup.staff")
		default:
			d.TopUpMsg = d.T("holder.topup.pending")
		}
	}
}

// handleHolderTopUp starts an online top-up from the holder page's form:
// a Checkout Session (POST /api/v1/holder/{token}/topups), then a page
// with the link to pay (the page's policy lets forms post to this node
// only, so the browser follows a link to Checkout, not a redirect).
func (ws *webServer) handleHolderTopUp(w http.ResponseWriter, r *http.Request) {
	tok := r.PathValue("token")
	if _, err := ws.n.VerifyHolderToken(tok); err != nil {
		ws.errorPage(w, r, http.StatusNotFound, "error.badlink")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if err := r.ParseForm(); err != nil || !sameOrigin(r) || !tokensEqual(r.PostForm.Get("csrf"), ws.formToken("topup", tok)) {
		ws.errorPage(w, r, http.StatusForbidden, "error.csrf")
		return
	}
	key := r.PostForm.Get("key")
	if len(key) > 64 {
		key = key[:64]
	}
	cents, ok := parseDecimal(r.PostForm.Get("amount"))
	msg := ""
	var co CheckoutAnswer
	if !ok {
		msg = pageLangBase(ws, w, r).T("js.badamount")
	} else {
		a := callAPI(r.Context(), ws.n.handleStripeCheckout, "POST", "/", checkoutRequest{AmountCents: cents, IdempotencyKey: "holder-page-" + key},
			map[string]string{"token": tok})
		if !a.ok() || json.Unmarshal(a.Raw, &co) != nil || co.URL == "" {
			msg = pageLangBase(ws, w, r).T("error.api") + " " + a.Message
		}
	}
	// The holder page again, with the link to pay (or the error).
	r2 := r.Clone(r.Context())
	r2.Method, r2.URL.Path, r2.URL.RawQuery = "GET", "/c/"+tok, ""
	ws.holderPageWith(w, r2, msg, co.URL)
}

func pageLangBase(ws *webServer, w http.ResponseWriter, r *http.Request) web.Base {
	return ws.n.pageBase(w, r, "")
}

// handleLost blocks the card of a holder link: the card holder reports it
// lost. The form carries a token derived from the link, and the request
// must come from this node's page.
func (ws *webServer) handleLost(w http.ResponseWriter, r *http.Request) {
	tok := r.PathValue("token")
	card, err := ws.n.VerifyHolderToken(tok)
	if err != nil {
		ws.errorPage(w, r, http.StatusNotFound, "error.badlink")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if err := r.ParseForm(); err != nil || !sameOrigin(r) || !tokensEqual(r.PostForm.Get("csrf"), ws.formToken("lost", tok)) {
		ws.errorPage(w, r, http.StatusForbidden, "error.csrf")
		return
	}
	back := "/c/" + url.PathEscape(tok)
	if r.PostForm.Get("confirm") != "1" {
		http.Redirect(w, r, back+"?error=1", http.StatusSeeOther)
		return
	}
	a := callAPI(r.Context(), ws.n.handleBlock(true), "POST", "/", blockRequest{
		Reason: "reported lost by the card holder", IdempotencyKey: "lost-" + string(card) + "-" + time.Now().UTC().Format("20060102T1504"),
	}, map[string]string{"card": string(card)})
	if !a.ok() {
		ws.n.log.Warn("holder page: lost card not blocked", "err", a.Code)
		http.Redirect(w, r, back+"?error=1", http.StatusSeeOther)
		return
	}
	ws.n.log.Info("card reported lost by its holder", "card", card)
	http.Redirect(w, r, back+"?lost=1", http.StatusSeeOther)
}

// handleHolderQR answers a QR code of the holder page's address, for
// staff to show or print.
func (ws *webServer) handleHolderQR(w http.ResponseWriter, r *http.Request) {
	tok := r.PathValue("token")
	if _, err := ws.n.VerifyHolderToken(tok); err != nil {
		ws.errorPage(w, r, http.StatusNotFound, "error.badlink")
		return
	}
	png, err := qrcode.Encode(pageURL(r, "/c/"+url.PathEscape(tok)), qrcode.Medium, 256)
	if err != nil {
		http.Error(w, "no QR code", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Cache-Control", "private, max-age=3600")
	w.Write(png)
}

// ---- agenda ----

type venueOption struct {
	ID, Name string
	Selected bool
}

type agendaDay struct {
	Day    time.Time
	Events []webEvent
}

type agendaData struct {
	web.Base
	Q, From, To  string
	Past         bool
	VenueOptions []venueOption
	Days         []agendaDay
	Count, Shown int
	// More: the page read as many events as one read may
	// (agendaMaxScan) before the end: Count is a lower bound.
	More bool
	// First is the rank of the page's first event (from 1); PrevURL and
	// NextURL lead to the pages around it.
	First, Last      int
	PrevURL, NextURL string
	PageURL          string
}

func (ws *webServer) handleAgenda(w http.ResponseWriter, r *http.Request) {
	b := ws.base(w, r, "agenda.title")
	q := r.URL.Query()
	d := agendaData{Base: b, Q: q.Get("q"), From: q.Get("from"), To: q.Get("to"), Past: q.Get("past") == "1", PageURL: pageURL(r, "/agenda")}
	if len(d.Q) > maxAgendaQuery {
		d.Q = d.Q[:maxAgendaQuery]
	}
	venue := q.Get("venue")
	for _, v := range ws.n.VenueList() {
		d.VenueOptions = append(d.VenueOptions, venueOption{ID: v.Key, Name: v.Venue, Selected: v.Key == venue})
	}
	var from, to time.Time
	if t, err := time.ParseInLocation("2006-01-02", d.From, b.Loc); err == nil {
		from = t
	} else {
		d.From = ""
	}
	if t, err := time.ParseInLocation("2006-01-02", d.To, b.Loc); err == nil {
		to = t.AddDate(0, 0, 1)
	} else {
		d.To = ""
	}
	now := ws.n.cfg.Now()
	needle := strings.ToLower(strings.TrimSpace(d.Q))
	limit := agendaPageSize
	if l, err := strconv.Atoi(q.Get("limit")); err == nil && l >= 1 {
		limit = min(l, agendaMaxShown)
	}
	page := 1
	if p, err := strconv.Atoi(q.Get("page")); err == nil && p >= 1 && p <= 1_000_000 {
		page = p
	}
	skip := (page - 1) * limit
	// The scan starts where the page's events can be (the events running
	// at from, or now, or every event for the past) and stops at to.
	scanFrom := from
	switch {
	case !from.IsZero():
	case d.Past:
	default:
		scanFrom = now
	}
	var dayKey string
	atTo := false
	complete, err := ws.n.EachEvent(r.Context(), scanFrom, "", func(e EventView) bool {
		if !to.IsZero() && !e.StartsAt.Before(to) {
			atTo = true
			return false
		}
		switch {
		case venue != "" && e.VenueID != venue,
			!d.Past && from.IsZero() && e.EndsAt.Before(now),
			!from.IsZero() && e.EndsAt.Before(from):
			return true
		}
		if needle != "" && !strings.Contains(strings.ToLower(e.Title+"\n"+e.Description+"\n"+e.Location+"\n"+e.Venue), needle) {
			return true
		}
		d.Count++
		if d.Count <= skip || d.Shown >= limit {
			return true
		}
		d.Shown++
		local := e.StartsAt.In(b.Loc)
		if k := local.Format("2006-01-02"); k != dayKey {
			dayKey = k
			d.Days = append(d.Days, agendaDay{Day: local})
		}
		last := &d.Days[len(d.Days)-1]
		last.Events = append(last.Events, newWebEvent(e))
		return true
	})
	if err != nil {
		ws.errorPage(w, r, http.StatusInternalServerError, "error.internal")
		return
	}
	// When the scan stopped at its bound, Count is a lower bound.
	d.More = !complete && !atTo
	if d.Shown > 0 {
		d.First, d.Last = skip+1, skip+d.Shown
	}
	link := func(p int) string {
		lq := r.URL.Query()
		lq.Del("lang")
		lq.Set("page", strconv.Itoa(p))
		return "/agenda?" + lq.Encode()
	}
	if page > 1 {
		d.PrevURL = link(page - 1)
	}
	if skip+d.Shown < d.Count || d.More {
		d.NextURL = link(page + 1)
	}
	w.Header().Set("Cache-Control", "no-cache")
	ws.render(w, r, http.StatusOK, "agenda", d)
}

type eventData struct {
	web.Base
	Event         webEvent
	JSONLD        any
	OGDescription string
	PageURL       string
	SameDay       bool
	CanEdit       bool
}

func (ws *webServer) handleEventPage(w http.ResponseWriter, r *http.Request) {
	id, venue := r.PathValue("id"), r.URL.Query().Get("venue")
	ev, ok, err := ws.n.Event(r.Context(), venue, id)
	if err != nil {
		ws.errorPage(w, r, http.StatusInternalServerError, "error.internal")
		return
	}
	if !ok {
		ws.errorPage(w, r, http.StatusNotFound, "error.noevent")
		return
	}
	e := newWebEvent(ev)
	b := ws.base(w, r, "")
	b.Title = e.Title
	self := pageURL(r, e.URL)
	status := "https://schema.org/EventScheduled"
	if e.Cancelled {
		status = "https://schema.org/EventCancelled"
	}
	place := e.Venue
	if e.Location != "" {
		place = e.Location
	}
	ld := map[string]any{
		"@context": "https://schema.org", "@type": "Event", "name": e.Title,
		"startDate": e.StartsISO, "endDate": e.EndsISO, "eventStatus": status,
		"eventAttendanceMode": "https://schema.org/OfflineEventAttendanceMode",
		"location":            map[string]any{"@type": "Place", "name": place, "address": e.Venue},
		"organizer":           map[string]any{"@type": "Organization", "name": e.Venue},
		"url":                 self,
	}
	if e.Description != "" {
		ld["description"] = e.Description
	}
	desc := b.DateTime(e.StartsAt) + " · " + e.Venue
	if e.Description != "" {
		desc += " · " + truncateRunes(e.Description, 160)
	}
	sy, sm, sd := e.StartsAt.In(b.Loc).Date()
	ey, em, ed := e.EndsAt.In(b.Loc).Date()
	d := eventData{Base: b, Event: e, JSONLD: ld, OGDescription: desc, PageURL: self,
		SameDay: sy == ey && sm == em && sd == ed, CanEdit: b.Staff && e.VenueID == ws.n.Key().String()}
	w.Header().Set("Cache-Control", "no-cache")
	ws.render(w, r, http.StatusOK, "event", d)
}

func truncateRunes(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// handleVenueICS serves one venue's events as an iCalendar feed: the
// federated feed (handleICS) with only that venue's events.
func (n *Node) handleVenueICS(w http.ResponseWriter, r *http.Request) {
	venue, err := crdt.ParsePublicKey(r.PathValue("venue"))
	if err != nil {
		writeError(w, apiErr(http.StatusNotFound, "not_found", "no such venue"))
		return
	}
	known := false
	for _, v := range n.VenueList() {
		known = known || v.Key == venue.String()
	}
	if !known {
		writeError(w, apiErr(http.StatusNotFound, "not_found", "no such venue"))
		return
	}
	n.serveICS(w, r, &venue)
}

// ---- dashboard ----

// DashboardVenue is one venue's row of the dashboard and of `cagnotte
// status`, as this node sees it.
type DashboardVenue struct {
	Venue  string `json:"venue"`
	PeerID string `json:"peer_id"`
	// Self marks this node's own venue.
	Self bool `json:"self,omitempty"`
	// State is in_sync or isolated (this node), connected, disconnected,
	// isolated (a peer's last heartbeat says so) or never_heard.
	State    string    `json:"state"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	// Ops is the venue's op count (from its heartbeat for a peer) and Lag
	// how many ops it is behind the most advanced node known; both are
	// absent when unknown.
	Ops *uint64 `json:"ops,omitempty"`
	Lag *uint64 `json:"lag,omitempty"`
	// IsolatedSince and OfflineCents are known for this node only.
	IsolatedSince time.Time `json:"isolated_since,omitzero"`
	OfflineCents  *uint64   `json:"offline_cents,omitempty"`
	Revoked       bool      `json:"revoked,omitempty"`
	RevokedAfter  uint64    `json:"revoked_after_seq,omitempty"`
}

// StateKey is the state's string key in the pages.
func (d DashboardVenue) StateKey() string {
	return map[string]string{"in_sync": "dash.st.insync", "isolated": "dash.st.isolated", "connected": "dash.st.connected",
		"disconnected": "dash.st.disconnected", "never_heard": "dash.st.never"}[d.State]
}

// StateClass is the state's look: good, bad or neutral.
func (d DashboardVenue) StateClass() string {
	switch d.State {
	case "in_sync", "connected":
		return "good"
	case "isolated", "disconnected":
		return "bad"
	}
	return ""
}

// Class marks the row of a venue not reachable now.
func (d DashboardVenue) Class() string {
	if d.State == "disconnected" || d.State == "never_heard" {
		return "down"
	}
	return ""
}

// ShortID is the peer id, shortened.
func (d DashboardVenue) ShortID() string { return shortPeer(d.PeerID) }

type dashConflict struct {
	ConflictView
	KindKey     string
	CardBlocked bool
}

type dashboardData struct {
	web.Base
	Status    SyncStatus
	Rows      []DashboardVenue
	Conflicts []dashConflict
	Texts     map[string]string
}

// maxConflictCardLookups bounds the cards whose blocked state the
// dashboard looks up.
const maxConflictCardLookups = 100

func (ws *webServer) handleDashboard(w http.ResponseWriter, r *http.Request) {
	b := ws.base(w, r, "dash.title")
	s := ws.n.Status()
	d := dashboardData{Base: b, Status: s, Texts: web.ScriptTexts(b.Lang)}
	d.Rows = DashboardVenues(s)
	if cs, err := ws.n.Conflicts(r.Context()); err == nil {
		for i, c := range cs {
			dc := dashConflict{ConflictView: c, KindKey: "dash.k." + c.Kind}
			if c.Card != "" && i < maxConflictCardLookups {
				if p, ok, err := ws.n.CardHistoryPage(r.Context(), c.Card, 1, ""); err == nil && ok {
					dc.CardBlocked = p.Blocked
				}
			}
			d.Conflicts = append(d.Conflicts, dc)
		}
	}
	ws.render(w, r, http.StatusOK, "dashboard", d)
}

// DashboardVenues builds the dashboard's rows, one per venue, from a
// sync status (GET /api/v1/sync/status).
func DashboardVenues(s SyncStatus) []DashboardVenue {
	peers := map[string]PeerStatus{}
	maxOps := s.Ops
	for _, p := range s.Peers {
		peers[p.ID] = p
		maxOps = max(maxOps, p.Ops)
	}
	rows := []DashboardVenue{}
	for _, a := range s.Authors {
		if a.Role != "venue" {
			continue
		}
		row := DashboardVenue{Venue: a.Venue, PeerID: a.PeerID, Revoked: a.Revoked, RevokedAfter: a.RevokedAfter}
		var ops uint64
		switch p, ok := peers[a.PeerID]; {
		case a.PeerID == s.Node:
			off := s.OfflineCents
			row.Self, ops, row.Ops = true, s.Ops, &ops
			row.IsolatedSince, row.OfflineCents = s.IsolatedSince, &off
			row.State = "in_sync"
			if s.Isolated {
				row.State = "isolated"
			}
		case ok:
			row.LastSeen = p.LastSeen
			if p.Ops > 0 {
				ops = p.Ops
				row.Ops = &ops
			}
			switch {
			case !p.Connected:
				row.State = "disconnected"
			case p.Isolated:
				row.State = "isolated"
			default:
				row.State = "connected"
			}
		default:
			row.State = "never_heard"
		}
		if row.Ops != nil {
			lag := maxOps - ops
			row.Lag = &lag
		}
		rows = append(rows, row)
	}
	return rows
}

func shortPeer(id string) string {
	if len(id) > 14 {
		return id[:6] + "…" + id[len(id)-6:]
	}
	return id
}

// liveStatus is the dashboard stream's "status" event.
type liveStatus struct {
	Ops   uint64     `json:"ops"`
	Rate  float64    `json:"rate"`
	Peers []livePeer `json:"peers"`
}

type livePeer struct {
	ID        string `json:"id"`
	Connected bool   `json:"connected"`
}

// handleDashboardLive streams the node's ops per second and its peers'
// connection states every second (server-sent events).
func (ws *webServer) handleDashboardLive(w http.ResponseWriter, r *http.Request) {
	sse, err := ws.startSSE(w, r)
	if err != nil {
		return
	}
	opsNow := func() uint64 {
		var o uint64
		ws.n.View(func(set *crdt.OpSet) { o = set.Len() })
		return o
	}
	prev, prevAt := opsNow(), time.Now()
	tick := time.NewTicker(time.Second)
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
		case now := <-tick.C:
			ops := opsNow()
			st := liveStatus{Ops: ops, Peers: []livePeer{}}
			if dt := now.Sub(prevAt).Seconds(); dt > 0 && ops >= prev {
				st.Rate = float64(ops-prev) / dt
			}
			prev, prevAt = ops, now
			if nw := ws.n.net; nw != nil {
				for _, p := range nw.Peers() {
					st.Peers = append(st.Peers, livePeer{ID: p.ID.String(), Connected: p.Connected})
				}
			}
			if sse.send("status", st) != nil {
				return
			}
		}
	}
}
