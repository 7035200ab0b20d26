package node

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/cagnotte/cagnotte/crdt"
)

// Card histories are not public: GET /api/v1/cards/{card} needs a staff
// token of this venue or the card holder's token, and the holder's page
// reads GET /api/v1/holder/{token}. A holder token needs no replicated
// state: it is the card id, the issuing venue's key and that venue's
// Ed25519 signature over holderDomain + card id, so any node of the
// federation verifies it.

// holderDomain separates holder-token signatures from every other
// signature the node key makes (ops, stamps, heartbeats).
const holderDomain = "cagnotte/holder/v1\x00"

// holderTokenVersion is the first byte of a token.
const holderTokenVersion = 1

// maxHolderToken bounds a token's text: 1+1+10+32+64 bytes in base64url.
const maxHolderToken = 160

// History pages.
const (
	defaultHistoryLimit = 50
	maxHistoryLimit     = 500
)

var errBadHolderToken = errors.New("not a valid card holder token")

// HolderToken returns the card holder's token for card, signed with this
// node's key. It is deterministic: the same card and venue always give the
// same token.
func (n *Node) HolderToken(card crdt.CardID) (string, error) {
	uid, err := hex.DecodeString(string(card))
	if err != nil || len(uid) == 0 || len(uid) > 255 {
		return "", errors.New("node: holder token: bad card id")
	}
	pub := n.cfg.Key.Public()
	sig := ed25519.Sign(n.cfg.Key.PrivateKey(), []byte(holderDomain+string(card)))
	b := make([]byte, 0, 2+len(uid)+len(pub)+len(sig))
	b = append(b, holderTokenVersion, byte(len(uid)))
	b = append(b, uid...)
	b = append(b, pub[:]...)
	b = append(b, sig...)
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// VerifyHolderToken returns the card a holder token opens. The token must
// be signed by a venue that is or was a member of the federation: a
// revoked venue's tokens stay valid, so that revoking a lost node does not
// cut its card holders off their history (see docs/api.md).
func (n *Node) VerifyHolderToken(tok string) (crdt.CardID, error) {
	if len(tok) > maxHolderToken {
		return "", errBadHolderToken
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(tok)
	if err != nil || len(b) < 2 || b[0] != holderTokenVersion {
		return "", errBadHolderToken
	}
	l := int(b[1])
	if len(b) != 2+l+ed25519.PublicKeySize+ed25519.SignatureSize {
		return "", errBadHolderToken
	}
	card, err := crdt.ParseCardID(hex.EncodeToString(b[2 : 2+l]))
	if err != nil {
		return "", errBadHolderToken
	}
	var pub crdt.PublicKey
	copy(pub[:], b[2+l:])
	sig := b[2+l+ed25519.PublicKeySize:]
	known := false
	n.View(func(set *crdt.OpSet) { known = set.State.Venues[pub] != nil })
	if !known {
		return "", errBadHolderToken
	}
	if !ed25519.Verify(pub[:], []byte(holderDomain+string(card)), sig) {
		return "", errBadHolderToken
	}
	return card, nil
}

func bearer(r *http.Request) string {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return strings.TrimSpace(tok)
}

func unauthorizedCard() *APIError {
	return apiErr(http.StatusUnauthorized, "unauthorized",
		"a card's history needs a staff token or the card holder's token (Authorization: Bearer <token>)")
}

// handleCard answers GET /api/v1/cards/{card} to staff and to the card's
// holder. Without a valid token it answers 401 whatever the card, so a
// bare UID reveals nothing, not even whether the card exists.
func (n *Node) handleCard(w http.ResponseWriter, r *http.Request) {
	tok := bearer(r)
	staff := tok != "" && n.checkToken(tok)
	card, err := parseCard(r.PathValue("card"))
	if !staff {
		held, herr := n.VerifyHolderToken(tok)
		if tok == "" || herr != nil || err != nil || held != card {
			w.Header().Set("WWW-Authenticate", `Bearer realm="cagnotte"`)
			writeError(w, unauthorizedCard())
			return
		}
	}
	if err != nil {
		writeError(w, err)
		return
	}
	n.serveCardPage(w, r, card)
}

// handleHolder answers GET /api/v1/holder/{token}, the card holder's
// view. An invalid token is 404 not_found, like a page that does not exist.
func (n *Node) handleHolder(w http.ResponseWriter, r *http.Request) {
	card, err := n.VerifyHolderToken(r.PathValue("token"))
	if err != nil {
		writeError(w, apiErr(http.StatusNotFound, "not_found", "no card for this link: the holder token is not valid"))
		return
	}
	n.serveCardPage(w, r, card)
}

// HolderTokenAnswer is the answer of POST /api/v1/cards/{card}/holder-token.
type HolderTokenAnswer struct {
	Card  crdt.CardID `json:"card"`
	Token string      `json:"token"`
	// URL is the card holder's page, relative to the node's address.
	URL string `json:"url"`
}

type holderTokenRequest struct{}

// handleHolderToken issues the holder token of a known card (staff only).
func (n *Node) handleHolderToken(w http.ResponseWriter, r *http.Request) {
	card, err := parseCard(r.PathValue("card"))
	if err != nil {
		writeError(w, err)
		return
	}
	body, err := n.readBody(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := decodeStrict(body, &holderTokenRequest{}); err != nil {
			writeError(w, err)
			return
		}
	}
	known := false
	n.View(func(set *crdt.OpSet) { known = set.State.Card(card) != nil })
	if !known {
		writeError(w, ErrUnknownCard)
		return
	}
	tok, err := n.HolderToken(card)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, HolderTokenAnswer{Card: card, Token: tok, URL: "/c/" + tok})
}

// CardPage is a card's view with one page of its history, newest first.
type CardPage struct {
	CardView
	// Next is the cursor of the following (older) page; empty on the last.
	Next string `json:"next,omitempty"`
}

// historyCursor is the position of an entry in a card's history: its HLC
// and op id, the history's sort key.
type historyCursor struct {
	hlc crdt.HLC
	op  crdt.OpID
}

func (c historyCursor) String() string {
	b := make([]byte, 8, 8+len(c.op))
	binary.BigEndian.PutUint64(b, uint64(c.hlc))
	return base64.RawURLEncoding.EncodeToString(append(b, c.op[:]...))
}

func parseCursor(s string) (historyCursor, error) {
	var c historyCursor
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != 8+len(c.op) {
		return c, badRequest("before: not a cursor this API gave (use the next of the previous page)")
	}
	c.hlc = crdt.HLC(binary.BigEndian.Uint64(b))
	copy(c.op[:], b[8:])
	return c, nil
}

// pageParams reads ?limit= and ?before=.
func pageParams(r *http.Request) (int, *historyCursor, error) {
	q := r.URL.Query()
	limit := defaultHistoryLimit
	if s := q.Get("limit"); s != "" {
		l, err := strconv.Atoi(s)
		if err != nil || l < 1 || l > maxHistoryLimit {
			return 0, nil, badRequest("limit must be a number from 1 to %d", maxHistoryLimit)
		}
		limit = l
	}
	var before *historyCursor
	if s := q.Get("before"); s != "" {
		c, err := parseCursor(s)
		if err != nil {
			return 0, nil, err
		}
		before = &c
	}
	return limit, before, nil
}

// serveCardPage answers one card's view with a page of its history.
func (n *Node) serveCardPage(w http.ResponseWriter, r *http.Request, card crdt.CardID) {
	limit, before, err := pageParams(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var page CardPage
	found := false
	n.View(func(set *crdt.OpSet) {
		c := set.State.Card(card)
		if c == nil {
			return
		}
		found = true
		var from *crdt.Stamp
		if before != nil {
			from = &crdt.Stamp{HLC: before.hlc, ID: before.op}
		}
		// One more than the page: whether there is a next page.
		entries := set.State.CardHistory(card, from, true, limit+1)
		page.CardView = cardView(set, c, nil, 0)
		page.History = make([]HistoryEntry, 0, min(limit, len(entries)))
		for i, e := range entries {
			if i == limit {
				last := entries[limit-1]
				page.Next = historyCursor{hlc: last.HLC, op: last.Op}.String()
				break
			}
			page.History = append(page.History, historyEntry(set, e))
		}
	})
	if !found {
		writeError(w, ErrUnknownCard)
		return
	}
	writeJSON(w, http.StatusOK, page)
}
