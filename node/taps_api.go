package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/nfc"
)

// The taps API (docs/api.md, "Taps"): staff wait for the next card on the
// node's readers, follow them as server-sent events, write a payment's
// stamp back onto the card, list the readers, and simulate taps on
// simulated readers.

// Bounds of the taps API.
const (
	defaultTapWait = 8 * time.Second
	// tapStreamRetry is the reconnection delay the stream asks clients for.
	tapStreamRetry = 250 * time.Millisecond
	// tapStreamKeepAlive is how often an idle stream sends a comment.
	tapStreamKeepAlive = 15 * time.Second
)

func (n *Node) registerTapRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v1/taps/wait", n.staff(n.handleTapWait))
	mux.HandleFunc("GET /api/v1/taps/stream", n.staff(n.handleTapStream))
	mux.HandleFunc("POST /api/v1/taps/stamp", n.staff(n.handleTapStamp))
	mux.HandleFunc("GET /api/v1/taps/readers", n.staff(n.handleTapReaders))
	mux.HandleFunc("POST /api/v1/taps/simulate", n.staff(n.handleTapSimulate))
}

// maxTapWait bounds a wait: within the request timeout, with a margin to
// answer.
func (n *Node) maxTapWait() time.Duration {
	return max(n.cfg.RequestTimeout-500*time.Millisecond, 100*time.Millisecond)
}

// tapWait parses timeout_ms (0: the default).
func (n *Node) tapWait(ms int64) (time.Duration, error) {
	maxWait := n.maxTapWait()
	if ms < 0 || time.Duration(ms)*time.Millisecond > maxWait {
		return 0, badRequest("timeout_ms must be between 0 and %d", maxWait.Milliseconds())
	}
	if ms == 0 {
		return min(defaultTapWait, maxWait), nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// decodeOptional decodes a body that may be empty.
func (n *Node) decodeOptional(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := n.readBody(w, r)
	if err != nil {
		return err
	}
	if len(body) == 0 {
		return nil
	}
	return decodeStrict(body, v)
}

type tapWaitRequest struct {
	TimeoutMS int64  `json:"timeout_ms,omitempty"`
	Reader    string `json:"reader,omitempty"`
	Current   bool   `json:"current,omitempty"`
}

// handleTapWait answers the next tap, or 204 when none came in time.
func (n *Node) handleTapWait(w http.ResponseWriter, r *http.Request) {
	var req tapWaitRequest
	if err := n.decodeOptional(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	d, err := n.tapWait(req.TimeoutMS)
	if err != nil {
		writeError(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), d)
	defer cancel()
	t, ok := n.nextTap(ctx, req.Reader, req.Current)
	if !ok {
		if r.Context().Err() != nil {
			writeError(w, r.Context().Err())
			return
		}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

// handleTapStream sends taps as server-sent events (event "tap", id a
// sequence number, data the tap's JSON) until shortly before the request
// timeout; clients reconnect (EventSource does by itself) with
// Last-Event-ID and get the taps they missed meanwhile (the last 32).
func (n *Node) handleTapStream(w http.ResponseWriter, r *http.Request) {
	if sw, ok := w.(*statusWriter); ok {
		w = sw.ResponseWriter // the API's metrics wrapper does not flush
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, errors.New("streaming not supported"))
		return
	}
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	var last uint64
	if s := r.Header.Get("Last-Event-ID"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			writeError(w, badRequest("Last-Event-ID must be a tap sequence number"))
			return
		}
		last = v
	}
	ch, unsub := n.taps.Subscribe()
	defer unsub()
	missed, newest := n.tapsAfter(last)
	if last == 0 {
		missed = nil // a new client: taps from now on
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "retry: %d\n\n", tapStreamRetry.Milliseconds())
	seq := newest
	send := func(id uint64, t Tap) bool {
		b, err := json.Marshal(t)
		if err != nil {
			return false
		}
		if _, err := fmt.Fprintf(w, "event: tap\nid: %d\ndata: %s\n\n", id, b); err != nil {
			return false
		}
		fl.Flush()
		return true
	}
	for _, m := range missed {
		if !send(m.seq, m.tap) {
			return
		}
	}
	fl.Flush()
	// End before the request timeout cuts the stream mid-event.
	end := time.NewTimer(max(n.cfg.RequestTimeout-time.Second, time.Second))
	defer end.Stop()
	keep := time.NewTicker(tapStreamKeepAlive)
	defer keep.Stop()
	closing := n.nfcs.closingCh()
	for {
		select {
		case t, ok := <-ch:
			if !ok {
				return
			}
			// The reader loop records its taps before publishing them:
			// send the recorded one's sequence number (a tap published
			// by someone else keeps the last one).
			after, _ := n.tapsAfter(seq)
			for _, m := range after {
				if m.tap.Card == t.Card && m.tap.Reader == t.Reader && m.tap.At.Equal(t.At) {
					seq = m.seq
					break
				}
			}
			if !send(seq, t) {
				return
			}
		case <-keep.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			fl.Flush()
		case <-end.C:
			return
		case <-closing:
			return
		case <-r.Context().Done():
			return
		}
	}
}

type tapStampRequest struct {
	Card      string `json:"card"`
	Stamp     []byte `json:"stamp"`
	TimeoutMS int64  `json:"timeout_ms,omitempty"`
}

// TapStampAnswer is the answer of POST /api/v1/taps/stamp.
type TapStampAnswer struct {
	Card    crdt.CardID `json:"card"`
	Reader  string      `json:"reader"`
	Written bool        `json:"written"`
}

// handleTapStamp writes a payment's stamp back onto the card.
func (n *Node) handleTapStamp(w http.ResponseWriter, r *http.Request) {
	var req tapStampRequest
	if err := n.decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	card, err := parseCard(req.Card)
	if err != nil {
		writeError(w, err)
		return
	}
	if len(req.Stamp) != crdt.StampSize {
		writeError(w, badRequest("stamp must be the %d-byte stamp of a payment answer (base64)", crdt.StampSize))
		return
	}
	d := time.Duration(0)
	if req.TimeoutMS != 0 {
		if d, err = n.tapWait(req.TimeoutMS); err != nil {
			writeError(w, err)
			return
		}
	}
	ctx := r.Context()
	if d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		if n.findPresent(card) == nil {
			cancel() // not waiting: answer at once
		}
		defer cancel()
	}
	reader, err := n.WriteStamp(ctx, card, req.Stamp)
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, TapStampAnswer{Card: card, Reader: reader, Written: true})
	case errors.Is(err, crdt.ErrBadStamp), errors.Is(err, ErrNotOwnStamp):
		writeError(w, badRequest("the stamp cannot be written: %v", err))
	case errors.Is(err, ErrCardNotPresent):
		writeError(w, apiErr(http.StatusConflict, "card_not_present", "the card is not on a reader of this node: the sale stands, the card keeps its previous stamp"))
	case errors.Is(err, nfc.ErrCardRemoved):
		writeError(w, apiErr(http.StatusConflict, "card_removed", "the card left the reader during the write: the sale stands, the card keeps its previous stamp; tap it again to update it"))
	case errors.Is(err, nfc.ErrNotWritable):
		writeError(w, apiErr(http.StatusUnprocessableEntity, "card_not_writable", "this card has no room for a stamp: the sale stands"))
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		writeError(w, err)
	default:
		writeError(w, apiErr(http.StatusBadGateway, "stamp_not_written", "the stamp was not written: "+err.Error()+"; the sale stands"))
	}
}

// ReaderView is one reader in GET /api/v1/taps/readers.
type ReaderView struct {
	Name      string `json:"name"`
	Simulated bool   `json:"simulated"`
	Card      *Tap   `json:"card,omitempty"`
}

func (n *Node) handleTapReaders(w http.ResponseWriter, r *http.Request) {
	present := map[string]Tap{}
	for _, t := range n.PresentCards() {
		present[t.Reader] = t
	}
	out := []ReaderView{}
	for _, rd := range n.cfg.Readers {
		v := ReaderView{Name: rd.Name()}
		_, v.Simulated = rd.(*nfc.SimReader)
		if t, ok := present[rd.Name()]; ok {
			v.Card = &t
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, out)
}

type tapSimulateRequest struct {
	Card   string `json:"card,omitempty"`
	Reader string `json:"reader,omitempty"`
	Remove bool   `json:"remove,omitempty"`
}

// handleTapSimulate puts a card on (or takes it off) a simulated reader.
func (n *Node) handleTapSimulate(w http.ResponseWriter, r *http.Request) {
	var req tapSimulateRequest
	if err := n.decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	sr, err := n.simReader(req.Reader)
	if err != nil {
		writeError(w, apiErr(http.StatusNotFound, "not_found", err.Error()))
		return
	}
	if req.Remove {
		sr.Remove()
		writeJSON(w, http.StatusOK, map[string]any{"reader": sr.Name(), "card": nil})
		return
	}
	card, err := parseCard(req.Card)
	if err != nil {
		writeError(w, err)
		return
	}
	tag, err := n.simCards().Tag(card)
	if err != nil {
		writeError(w, err)
		return
	}
	sr.Present(tag)
	writeJSON(w, http.StatusOK, map[string]any{"reader": sr.Name(), "card": card})
}

// simCards returns the configured simulated cards, or an in-memory wallet.
func (n *Node) simCards() *nfc.SimCards {
	n.nfcs.mu.Lock()
	defer n.nfcs.mu.Unlock()
	if n.cfg.SimCards != nil {
		return n.cfg.SimCards
	}
	if n.nfcs.sim == nil {
		n.nfcs.sim, _ = nfc.NewSimCards("", nfc.NTAG215)
	}
	return n.nfcs.sim
}
