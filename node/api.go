package node

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/p2p"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler returns the node's HTTP API (see docs/api.md).
func (n *Node) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/payments", n.staff(n.handlePayment))
	mux.HandleFunc("POST /api/v1/topups", n.staff(n.handleTopUp))
	mux.HandleFunc("POST /api/v1/refunds", n.staff(n.handleRefund))
	mux.HandleFunc("GET /api/v1/cards/{card}", n.handleCard)
	mux.HandleFunc("POST /api/v1/cards/{card}/holder-token", n.staff(n.handleHolderToken))
	mux.HandleFunc("GET /api/v1/holder/{token}", n.handleHolder)
	mux.HandleFunc("POST /api/v1/cards/{card}/block", n.staff(n.handleBlock(true)))
	mux.HandleFunc("POST /api/v1/cards/{card}/unblock", n.staff(n.handleBlock(false)))
	mux.HandleFunc("GET /api/v1/events", n.handleEvents)
	mux.HandleFunc("POST /api/v1/events", n.staff(n.handleEventUpsert))
	mux.HandleFunc("GET /api/v1/sync/status", n.handleSyncStatus)
	mux.HandleFunc("GET /api/v1/conflicts", n.handleConflicts)
	mux.HandleFunc("GET /agenda.ics", n.handleICS)
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", n.handleHealthz)
	mux.HandleFunc("GET /readyz", n.handleReadyz)
	mux.HandleFunc("GET /{$}", n.handleIndex)
	n.registerWebRoutes(mux)
	n.registerStripeRoutes(mux)
	n.registerTapRoutes(mux)
	// Anything else: 405 with Allow when the path exists for another
	// method, else 404, in the API's error shape.
	mux.HandleFunc("/", methodNotAllowed(mux, "/"))
	return n.instrument(mux)
}

func (n *Node) instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), n.cfg.RequestTimeout)
		defer cancel()
		sw := &statusWriter{ResponseWriter: w, status: 200}
		h.ServeHTTP(sw, r.WithContext(ctx))
		n.metrics.requests.WithLabelValues(fmt.Sprint(sw.status)).Inc()
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// staff refuses requests without a valid venue staff token.
func (n *Node) staff(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !n.checkToken(strings.TrimSpace(tok)) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="cagnotte"`)
			writeError(w, apiErr(http.StatusUnauthorized, "unauthorized", "a valid staff token is required (Authorization: Bearer <token>)"))
			return
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = 500, errorBody("internal", err.Error())
	}
	writeRaw(w, status, b)
}

func writeRaw(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
	w.Write([]byte("\n"))
}

func writeError(w http.ResponseWriter, err error) {
	var ae *APIError
	switch {
	case errors.As(err, &ae):
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		ae = apiErr(http.StatusServiceUnavailable, "timeout", "the request took too long; retry with the same idempotency key")
	case errors.Is(err, errStorageFailed):
		ae = apiErr(http.StatusServiceUnavailable, "unavailable", err.Error())
	case errors.Is(err, errStopping):
		ae = apiErr(http.StatusServiceUnavailable, "unavailable", "the node is stopping; retry with the same idempotency key")
	default:
		ae = apiErr(http.StatusInternalServerError, "internal", err.Error())
	}
	writeRaw(w, ae.Status, errorBody(ae.Code, ae.Message))
}

func badRequest(format string, a ...any) *APIError {
	return apiErr(http.StatusBadRequest, "invalid_request", fmt.Sprintf(format, a...))
}

// idempotency derives the key and request hash of a write.
func idempotency(route, key string, req any) (*idemKey, error) {
	if key == "" {
		return nil, badRequest("idempotency_key is required")
	}
	if len(key) > 128 {
		return nil, badRequest("idempotency_key longer than 128 bytes")
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write([]byte(route))
	h.Write([]byte{0})
	h.Write(b)
	var ik idemKey
	ik.key = key
	h.Sum(ik.hash[:0])
	return &ik, nil
}

func parseCard(s string) (crdt.CardID, error) {
	c, err := crdt.ParseCardID(s)
	if err != nil {
		return "", badRequest("card must be the card's NFC UID in hex (4 to 10 bytes), got %q", s)
	}
	return c, nil
}

func parseAmount(v int64) (uint64, error) {
	if v <= 0 || v > crdt.MaxAmount {
		return 0, badRequest("amount_cents must be between 1 and %d", crdt.MaxAmount)
	}
	return uint64(v), nil
}

// write runs fn in the writer under idempotency and sends its answer.
func (n *Node) write(w http.ResponseWriter, r *http.Request, ik *idemKey, fn func(tx *writeTx) (any, error)) {
	if n.refuseRevoked(w) {
		return
	}
	n.waitSignable(r.Context(), 3*time.Second)
	res := n.submit(r.Context(), ik, func(tx *writeTx) result {
		v, err := fn(tx)
		if err != nil {
			return result{err: err}
		}
		b, err := json.Marshal(v)
		if err != nil {
			return result{err: err}
		}
		return result{status: http.StatusOK, body: b}
	})
	if res.err != nil {
		writeError(w, res.err)
		return
	}
	writeRaw(w, res.status, res.body)
}

type paymentRequest struct {
	Card           string `json:"card"`
	AmountCents    int64  `json:"amount_cents"`
	IdempotencyKey string `json:"idempotency_key"`
	Label          string `json:"label,omitempty"`
	// Stamp is the stamp read from the card (base64), if it is writable.
	Stamp []byte `json:"stamp,omitempty"`
}

func (n *Node) handlePayment(w http.ResponseWriter, r *http.Request) {
	var req paymentRequest
	if err := n.decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if len(req.Label) > crdt.MaxNameLen {
		writeError(w, badRequest("label longer than %d bytes", crdt.MaxNameLen))
		return
	}
	var stamp *crdt.CardStamp
	if len(req.Stamp) > 0 {
		st, err := crdt.DecodeStamp(req.Stamp)
		if err != nil {
			writeError(w, badRequest("the card's stamp is not valid: %v", err))
			return
		}
		stamp = &st
	}
	m, err := parseMoney("payment", &req.Card, req.AmountCents, req.IdempotencyKey, &req)
	if err != nil {
		writeError(w, err)
		return
	}
	n.evaluateIsolation()
	lost, busy := n.paymentQuorum(r.Context(), m.card, m.amount)
	n.writeGated(w, r, m.ik, busy, func(tx *writeTx) (any, error) { return tx.pay(m.card, m.amount, req.Label, stamp, lost) })
}

// moneyRequest is what payments, top-ups and refunds share once parsed.
type moneyRequest struct {
	card   crdt.CardID
	amount uint64
	ik     *idemKey
}

// parseMoney checks the card and amount of a money request, normalises the
// card id in req (so that retries spelling it differently are the same
// request) and derives the idempotency key from the whole request.
func parseMoney(route string, card *string, cents int64, key string, req any) (moneyRequest, error) {
	var m moneyRequest
	var err error
	if m.card, err = parseCard(*card); err != nil {
		return m, err
	}
	if m.amount, err = parseAmount(cents); err != nil {
		return m, err
	}
	*card = string(m.card)
	m.ik, err = idempotency(route, key, req)
	return m, err
}

type topUpRequest struct {
	Card           string `json:"card"`
	AmountCents    int64  `json:"amount_cents"`
	Method         string `json:"method"`
	IdempotencyKey string `json:"idempotency_key"`
	Reference      string `json:"reference,omitempty"`
}

func (n *Node) handleTopUp(w http.ResponseWriter, r *http.Request) {
	var req topUpRequest
	if err := n.decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Method != crdt.MethodCash && req.Method != crdt.MethodCardTerminal {
		writeError(w, badRequest(`method must be "cash" or "card_terminal"`))
		return
	}
	if len(req.Reference) > crdt.MaxRefLen {
		writeError(w, badRequest("reference longer than %d bytes", crdt.MaxRefLen))
		return
	}
	m, err := parseMoney("topup", &req.Card, req.AmountCents, req.IdempotencyKey, &req)
	if err != nil {
		writeError(w, err)
		return
	}
	n.write(w, r, m.ik, func(tx *writeTx) (any, error) { return tx.topUp(m.card, m.amount, req.Method, req.Reference) })
}

type refundRequest struct {
	Card           string `json:"card"`
	AmountCents    int64  `json:"amount_cents"`
	IdempotencyKey string `json:"idempotency_key"`
	Reason         string `json:"reason"`
}

func (n *Node) handleRefund(w http.ResponseWriter, r *http.Request) {
	var req refundRequest
	if err := n.decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := checkReason(req.Reason, "the refund"); err != nil {
		writeError(w, err)
		return
	}
	m, err := parseMoney("refund", &req.Card, req.AmountCents, req.IdempotencyKey, &req)
	if err != nil {
		writeError(w, err)
		return
	}
	lost, busy := n.paymentQuorum(r.Context(), m.card, m.amount)
	n.writeGated(w, r, m.ik, refundGate(lost, busy), func(tx *writeTx) (any, error) { return tx.refund(m.card, m.amount, req.Reason) })
}

type blockRequest struct {
	Reason         string `json:"reason"`
	IdempotencyKey string `json:"idempotency_key"`
	Card           string `json:"-"`
}

func (n *Node) handleBlock(blocked bool) http.HandlerFunc {
	route := "unblock"
	if blocked {
		route = "block"
	}
	return func(w http.ResponseWriter, r *http.Request) {
		card, err := parseCard(r.PathValue("card"))
		if err != nil {
			writeError(w, err)
			return
		}
		var req blockRequest
		if err := n.decode(w, r, &req); err != nil {
			writeError(w, err)
			return
		}
		if err := checkReason(req.Reason, "the "+route); err != nil {
			writeError(w, err)
			return
		}
		ik, err := idempotency(route+"/"+string(card), req.IdempotencyKey, req)
		if err != nil {
			writeError(w, err)
			return
		}
		n.write(w, r, ik, func(tx *writeTx) (any, error) {
			if err := tx.block(card, req.Reason, blocked); err != nil {
				return nil, err
			}
			return map[string]any{"card": card, "blocked": blocked}, nil
		})
	}
}

// EventView is an agenda event as the API shows it.
type EventView struct {
	ID          string    `json:"id"`
	Venue       string    `json:"venue"`
	VenueID     string    `json:"venue_id"`
	Title       string    `json:"title"`
	StartsAt    time.Time `json:"starts_at"`
	EndsAt      time.Time `json:"ends_at"`
	Description string    `json:"description"`
	Location    string    `json:"location,omitempty"`
	Cancelled   bool      `json:"cancelled"`
}

func eventView(set *crdt.OpSet, e *crdt.Event) EventView {
	return EventView{
		ID: e.Key.ID, Venue: venueName(set, e.Key.Venue), VenueID: e.Key.Venue.String(), Title: e.Title,
		StartsAt: time.UnixMilli(e.StartsAt).UTC(), EndsAt: time.UnixMilli(e.EndsAt).UTC(),
		Description: e.Description, Location: e.Location, Cancelled: e.Cancelled,
	}
}

// handleEvents lists the agenda a page at a time: ?from= (RFC 3339: the
// events running then or starting after; default every event), ?after=
// (the cursor of the previous page's Link header), ?limit= (default
// apiEventsLimit, at most agendaMaxShown).
func (n *Node) handleEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var from time.Time
	if s := q.Get("from"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			writeError(w, badRequest("from: want an RFC 3339 time"))
			return
		}
		from = t
	}
	limit := apiEventsLimit
	if s := q.Get("limit"); s != "" {
		l, err := strconv.Atoi(s)
		if err != nil || l < 1 {
			writeError(w, badRequest("limit: want a positive number"))
			return
		}
		limit = min(l, agendaMaxShown)
	}
	after := q.Get("after")
	if len(after) > 256 {
		writeError(w, badRequest("after: not a cursor"))
		return
	}
	out := []EventView{}
	complete, err := n.EachEvent(r.Context(), from, after, func(e EventView) bool {
		out = append(out, e)
		return len(out) < limit+1
	})
	switch {
	case errors.Is(err, ErrBadCursor):
		writeError(w, badRequest("after: not a cursor"))
		return
	case err != nil:
		writeError(w, err)
		return
	}
	if len(out) > limit || !complete {
		if len(out) > limit {
			out = out[:limit]
		}
		if len(out) > 0 {
			nq := url.Values{"after": {AgendaCursor(out[len(out)-1])}, "limit": {strconv.Itoa(limit)}}
			if !from.IsZero() {
				nq.Set("from", from.Format(time.RFC3339))
			}
			w.Header().Set("Link", "</api/v1/events?"+nq.Encode()+`>; rel="next"`)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

type eventRequest struct {
	ID string `json:"id,omitempty"`
	// VenueID, when given, names the venue whose event this is: it must
	// be this node's (a venue edits only its own events).
	VenueID        string     `json:"venue_id,omitempty"`
	Title          *string    `json:"title,omitempty"`
	StartsAt       *time.Time `json:"starts_at,omitempty"`
	EndsAt         *time.Time `json:"ends_at,omitempty"`
	Description    *string    `json:"description,omitempty"`
	Location       *string    `json:"location,omitempty"`
	Cancelled      bool       `json:"cancelled,omitempty"`
	Reason         string     `json:"reason,omitempty"`
	IdempotencyKey string     `json:"idempotency_key"`
}

func (n *Node) handleEventUpsert(w http.ResponseWriter, r *http.Request) {
	var req eventRequest
	if err := n.decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := n.checkEventRequest(&req); err != nil {
		writeError(w, err)
		return
	}
	ik, err := idempotency("event", req.IdempotencyKey, req)
	if err != nil {
		writeError(w, err)
		return
	}
	up := crdt.EventUpsert{EventID: req.ID}
	if req.Title != nil {
		up.Fields |= crdt.FieldTitle
		up.Title = *req.Title
	}
	if req.StartsAt != nil {
		up.Fields |= crdt.FieldStartsAt
		up.StartsAt = req.StartsAt.UnixMilli()
	}
	if req.EndsAt != nil {
		up.Fields |= crdt.FieldEndsAt
		up.EndsAt = req.EndsAt.UnixMilli()
	}
	if req.Description != nil {
		up.Fields |= crdt.FieldDescription
		up.Description = *req.Description
	}
	if req.Location != nil {
		up.Fields |= crdt.FieldLocation
		up.Location = *req.Location
	}
	n.write(w, r, ik, func(tx *writeTx) (any, error) {
		me := n.cfg.Key.Public()
		key := crdt.EventKey{Venue: me, ID: up.EventID}
		cur, existing := n.set.State.Event(key)
		existing = existing && key.ID != ""
		if key.ID == "" {
			key.ID = newEventID()
			up.EventID = key.ID
		}
		isUpdate := req.Cancelled || (up.Fields&(crdt.FieldTitle|crdt.FieldStartsAt|crdt.FieldEndsAt)) != crdt.FieldTitle|crdt.FieldStartsAt|crdt.FieldEndsAt
		if !existing && req.ID != "" && isUpdate {
			if err := otherVenuesEvent(n.set, me, req.ID); err != nil {
				return nil, err
			}
		}
		if !existing && !req.Cancelled && (up.Fields&(crdt.FieldTitle|crdt.FieldStartsAt|crdt.FieldEndsAt)) != crdt.FieldTitle|crdt.FieldStartsAt|crdt.FieldEndsAt {
			return nil, badRequest("a new event needs title, starts_at and ends_at")
		}
		if existing && up.Fields&(crdt.FieldStartsAt|crdt.FieldEndsAt) != 0 {
			s, en := cur.StartsAt, cur.EndsAt
			if up.Fields&crdt.FieldStartsAt != 0 {
				s = up.StartsAt
			}
			if up.Fields&crdt.FieldEndsAt != 0 {
				en = up.EndsAt
			}
			if en < s {
				return nil, badRequest("the event would end before it starts")
			}
		}
		if up.Fields != 0 {
			if _, err := crdt.DecodeBody(crdt.KindEventUpsert, crdt.EncodeBody(&up)); err != nil {
				return nil, badRequest("%v", err)
			}
			if _, err := tx.make(&up); err != nil {
				return nil, err
			}
		}
		if req.Cancelled {
			if !existing && up.Fields == 0 {
				return nil, apiErr(http.StatusNotFound, "not_found", "no event of this venue has id "+key.ID)
			}
			if _, err := tx.make(&crdt.EventCancel{EventID: key.ID, Reason: req.Reason}); err != nil {
				return nil, err
			}
		}
		if up.Fields == 0 && !req.Cancelled {
			return nil, badRequest("nothing to change")
		}
		e, _ := n.set.State.Event(key)
		return eventView(n.set, &e), nil
	})
}

func newEventID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// PeerStatus is what the node knows of one peer's sync state.
type PeerStatus struct {
	ID        string    `json:"id"`
	Venue     string    `json:"venue"`
	Connected bool      `json:"connected"`
	LastSeen  time.Time `json:"last_seen,omitzero"`
	Ops       uint64    `json:"ops,omitempty"`
	Digest    string    `json:"digest,omitempty"`
	Isolated  bool      `json:"isolated,omitempty"`
}

// SyncStatus is the answer of GET /api/v1/sync/status.
type SyncStatus struct {
	Node          string            `json:"node"`
	Venue         string            `json:"venue"`
	Federation    string            `json:"federation"`
	Ops           uint64            `json:"ops"`
	Digest        string            `json:"digest"`
	VersionVector map[string]uint64 `json:"version_vector"`
	Peers         []PeerStatus      `json:"peers"`
	Isolated      bool              `json:"isolated"`
	IsolationWhy  string            `json:"isolation_reason,omitempty"`
	IsolatedSince time.Time         `json:"isolated_since,omitzero"`
	OfflineCents  uint64            `json:"offline_cents,omitempty"`
	Conflicts     int               `json:"conflicts"`
	Pending       int               `json:"pending"`
	// DiskFull is set while the node refuses writes because its disk is
	// full (507 disk_full), since DiskFullSince.
	DiskFull      bool      `json:"disk_full,omitempty"`
	DiskFullSince time.Time `json:"disk_full_since,omitzero"`
	// History is the background fetch of the history older than the
	// checkpoint the venue started from, "history: 42 % (n of m ops)"
	// (docs/checkpoints.md); empty when there is none.
	History    string `json:"history,omitempty"`
	Membership        // revoked, revoked_after_seq, authors
}

// Status returns the node's sync status.
func (n *Node) Status() SyncStatus {
	iso := n.Isolation()
	s := SyncStatus{Node: n.nodeID(), VersionVector: map[string]uint64{}, Peers: []PeerStatus{},
		Isolated: iso.Isolated, IsolationWhy: iso.Reason, IsolatedSince: iso.Since, OfflineCents: iso.Offline}
	if d := n.Disk(); d.Full {
		s.DiskFull, s.DiskFullSince = true, d.Since
	}
	if c := n.cps; c != nil {
		if h := c.hist.get(); h.Total > 0 {
			s.History = h.String()
		}
	}
	var peers []p2p.PeerState
	if n.net != nil {
		peers = n.net.Peers() // outside View: it reads the replica itself
	}
	n.View(func(set *crdt.OpSet) {
		s.Venue = venueName(set, n.cfg.Key.Public())
		s.Federation = set.State.Name
		s.Ops = set.Len()
		d := set.Digest()
		s.Digest = hex.EncodeToString(d[:])
		for k, v := range set.VersionVector() {
			s.VersionVector[k.String()] = v
		}
		s.Conflicts = len(set.State.Conflicts)
		s.Pending = n.pending.Len()
		s.Membership = n.membership(set)
		for _, p := range peers {
			ps := PeerStatus{ID: p.ID.String(), Venue: venueName(set, p.Key), Connected: p.Connected, LastSeen: p.LastSeen}
			if hb := p.Heartbeat; hb != nil {
				ps.Ops, ps.Digest, ps.Isolated = hb.Ops, hex.EncodeToString(hb.Digest[:]), hb.Isolated
			}
			s.Peers = append(s.Peers, ps)
		}
	})
	return s
}

func (n *Node) nodeID() string {
	id, err := p2p.PeerID(n.cfg.Key.Public())
	if err != nil {
		return n.cfg.Key.Public().String()
	}
	return id.String()
}

func (n *Node) handleSyncStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, n.Status())
}

// ConflictView is a conflict as the API shows it.
type ConflictView struct {
	Kind       string      `json:"kind"`
	Card       crdt.CardID `json:"card,omitempty"`
	Counter    uint64      `json:"counter,omitempty"`
	Venue      string      `json:"venue,omitempty"`
	Seq        uint64      `json:"seq,omitempty"`
	Reference  string      `json:"reference,omitempty"`
	Ops        []crdt.OpID `json:"ops"`
	DetectedAt time.Time   `json:"detected_at"`
}

func (n *Node) handleConflicts(w http.ResponseWriter, r *http.Request) {
	out := []ConflictView{}
	n.View(func(set *crdt.OpSet) {
		for _, c := range set.State.SortedConflicts() {
			v := ConflictView{Kind: string(c.Kind), Card: c.Card, Counter: c.Counter, Seq: c.Seq, Reference: c.Ref, Ops: c.Ops}
			if !c.Author.IsZero() {
				v.Venue = venueName(set, c.Author)
			}
			v.DetectedAt = n.detectedAt(c.Key())
			out = append(out, v)
		}
	})
	writeJSON(w, http.StatusOK, out)
}
