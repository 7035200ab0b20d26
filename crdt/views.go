package crdt

import (
	"cmp"
	"slices"
	"strconv"
)

// Stamp orders writes of a last-writer-wins register: by HLC, then op id.
type Stamp struct {
	HLC HLC
	ID  OpID
}

// After reports whether s wins over t.
func (s Stamp) After(t Stamp) bool {
	if s.HLC != t.HLC {
		return s.HLC > t.HLC
	}
	return lessID(t.ID, s.ID)
}

// Entry is one money op in a card's history. Amount is signed: credits are
// positive, debits negative. Counted is false for a top-up or refund whose
// external reference was already recorded by another op.
type Entry struct {
	Op      OpID
	Kind    Kind
	Amount  int64
	Venue   PublicKey
	HLC     HLC
	Counter uint64
	Label   string
	Counted bool
}

// Card is the folded state of one card.
type Card struct {
	ID      CardID
	Balance int64
	Credits int64 // counted credits, in cents
	Debits  int64 // counted debits, in cents (positive)
	// Counter is the highest payment counter that is at most NPayments +
	// MaxCounterJump: a forged counter far ahead is kept in Outliers and
	// cannot brick the card.
	Counter   uint64
	NPayments uint64
	// StampedCounter is the highest counter of a payment that read the
	// card's stamp (and so wrote the next one): a stamp older than it is
	// stale. Payments through readers that cannot write do not move it.
	StampedCounter uint64
	Outliers       []uint64
	Registered     bool
	// Blocked is FedBlocked || VenueBlocked: a block by the federation
	// is lifted only by the federation, a venue's by any unblock.
	Blocked      bool
	BlockReason  string
	VenueBlocked bool
	VenueReason  string
	BlockStamp   Stamp // the venue register's last write
	FedBlocked   bool
	FedReason    string
	FedStamp     Stamp // the federation register's last write
	Holder       string
	HolderStamp  Stamp
	// LastDebit is the newest debit's HLC: an overdraft newer than the
	// last block-state change is news (see Card.NeedsAutoBlock).
	LastDebit HLC
	// Entries is the number of money ops of the card; the entries
	// themselves are in the set's Index (State.CardHistory).
	Entries uint64
}

// setBlocked recomputes Blocked and its reason from the two registers.
func (c *Card) setBlocked() {
	c.Blocked = c.FedBlocked || c.VenueBlocked
	switch {
	case c.FedBlocked:
		c.BlockReason = c.FedReason
	case c.VenueBlocked:
		c.BlockReason = c.VenueReason
	default:
		c.BlockReason = ""
	}
}

// NeedsAutoBlock reports whether a node should block the card on its own:
// money is actually missing (the merged balance is negative), the card is
// not blocked, and that overdraft is newer than the last block or unblock
// (a maintainer who unblocked an overdrawn card is not overruled until it
// is charged again). A double spend that the balance covers blocks nothing.
func (c *Card) NeedsAutoBlock() bool {
	if c == nil || c.Balance >= 0 || c.Blocked {
		return false
	}
	last := c.BlockStamp.HLC
	if c.FedStamp.HLC > last {
		last = c.FedStamp.HLC
	}
	return c.LastDebit > last
}

// CardHistory returns up to limit of a card's entries in (HLC, op id)
// order, newest first if newestFirst, starting after the entry at from
// (from the newest or oldest when from is nil); limit ≤ 0 means all.
func (s *State) CardHistory(card CardID, from *Stamp, newestFirst bool, limit int) []Entry {
	var out []Entry
	s.index.Entries(card, from, newestFirst, func(e Entry) bool {
		out = append(out, e)
		return limit <= 0 || len(out) < limit
	})
	return out
}

// EventKey identifies an event: its venue and the venue's own id for it.
type EventKey struct {
	Venue PublicKey
	ID    string
}

// Event is the folded state of one agenda event. Each field is a
// last-writer-wins register; Cancelled is sticky.
type Event struct {
	Key         EventKey
	Title       string
	StartsAt    int64
	EndsAt      int64
	Description string
	Location    string
	Cancelled   bool
	Stamps      [5]Stamp // per field, in Field* bit order
	Updated     HLC
}

// Venue is the folded state of one member of the federation.
type Venue struct {
	Key       PublicKey
	Name      string // as admitted
	Info      VenueInfo
	InfoStamp Stamp
	// Products is the venue's point-of-sale list (last writer wins).
	Products      []Product
	ProductsStamp Stamp
	Revoked       bool
	RevokedAfter  uint64
	RevokeReason  string
}

// DisplayName is the venue's own name if it gave one, else its admitted name.
func (v *Venue) DisplayName() string {
	if v.Info.Name != "" {
		return v.Info.Name
	}
	return v.Name
}

// ConflictKind names a kind of conflict.
type ConflictKind string

// Conflict kinds.
const (
	ConflictDoubleSpend  ConflictKind = "double_spend"
	ConflictEquivocation ConflictKind = "equivocation"
	ConflictDuplicateRef ConflictKind = "duplicate_ref"
	ConflictStaleStamp   ConflictKind = "stale_stamp"
)

// Conflict is evidence of a double spend, an equivocating author or an
// external reference recorded twice. Ops is sorted.
type Conflict struct {
	Kind    ConflictKind
	Card    CardID
	Counter uint64
	Author  PublicKey
	Seq     uint64
	Ref     string
	Ops     []OpID
}

// Key identifies a conflict: one per (card, counter), equivocating author
// or external reference.
func (c *Conflict) Key() string {
	switch c.Kind {
	case ConflictDoubleSpend:
		return string(c.Kind) + "/" + string(c.Card) + "/" + strconv.FormatUint(c.Counter, 10)
	case ConflictStaleStamp:
		return string(c.Kind) + "/" + string(c.Card)
	case ConflictEquivocation:
		return string(c.Kind) + "/" + c.Author.String()
	}
	return string(c.Kind) + "/" + c.Ref
}

func (c *Conflict) addOps(ids ...OpID) bool {
	added := false
	for _, id := range ids {
		i, found := slices.BinarySearchFunc(c.Ops, id, func(a, b OpID) int { return cmp.Compare(string(a[:]), string(b[:])) })
		if !found {
			c.Ops = slices.Insert(c.Ops, i, id)
			added = true
		}
	}
	return added
}

// State holds the views folded from the counted ops. Its fields are
// exported so that a store can snapshot it; treat them as read-only.
type State struct {
	// Fed is the federation key (its block beats a venue's unblock).
	Fed       PublicKey
	Name      string
	Currency  string
	Settings  Settings
	Cards     map[CardID]*Card
	Venues    map[PublicKey]*Venue
	Conflicts map[string]*Conflict
	Credits   int64 // Σ counted credits over all cards
	Debits    int64 // Σ counted debits over all cards
	Counted   uint64

	// index holds the views that grow with history (see Index), events
	// the agenda (see EventIndex).
	index  Index
	events EventIndex
	// dirty lists what changed since the last OpSet.TakeChanges, when the
	// set tracks changes (Config.TrackChanges); nil otherwise.
	dirty *dirty
}

// dirty is what changed in a State.
type dirty struct {
	cards     map[CardID]bool
	venues    map[PublicKey]bool
	conflicts map[string]bool
}

func newDirty() *dirty {
	return &dirty{cards: map[CardID]bool{}, venues: map[PublicKey]bool{}, conflicts: map[string]bool{}}
}

// Index returns the index holding the views that grow with history.
func (s *State) Index() Index { return s.index }

func newState() *State {
	return &State{
		Settings:  DefaultSettings(),
		Cards:     map[CardID]*Card{},
		Venues:    map[PublicKey]*Venue{},
		Conflicts: map[string]*Conflict{},
		index:     NewMemIndex(),
		events:    NewMemEvents(),
	}
}

func (s *State) card(id CardID) *Card {
	c := s.Cards[id]
	if c == nil {
		c = &Card{ID: id}
		s.Cards[id] = c
	}
	if s.dirty != nil {
		s.dirty.cards[id] = true
	}
	return c
}

func (s *State) venueChanged(k PublicKey) {
	if s.dirty != nil {
		s.dirty.venues[k] = true
	}
}

// conflict records ids as evidence of a conflict, once per key.
func (s *State) conflict(c Conflict, ids ...OpID) {
	k := c.Key()
	cur := s.Conflicts[k]
	if cur == nil {
		cur = &c
		s.Conflicts[k] = cur
	}
	if cur.addOps(ids...) && s.dirty != nil {
		s.dirty.conflicts[k] = true
	}
}

// credit moves a counted amount on a card: positive credits, negative debits.
func (s *State) credit(c *Card, amount int64) {
	c.Balance += amount
	if amount >= 0 {
		c.Credits += amount
		s.Credits += amount
	} else {
		c.Debits -= amount
		s.Debits -= amount
	}
}

// uncredit takes back an amount credit moved earlier.
func (s *State) uncredit(c *Card, amount int64) {
	c.Balance -= amount
	if amount >= 0 {
		c.Credits -= amount
		s.Credits -= amount
	} else {
		c.Debits += amount
		s.Debits += amount
	}
}

// apply folds one counted op. The op was checked by the op set.
func (s *State) apply(op *Op, id OpID, body Body) {
	s.Counted++
	st := Stamp{HLC: op.HLC, ID: id}
	switch b := body.(type) {
	case *Genesis:
		s.Name, s.Currency, s.Settings = b.Name, b.Currency, b.Settings
	case *SettingsChange:
		s.Settings = b.Settings // federation ops fold in seq order
	case *Admit:
		v := s.Venues[b.Venue]
		if v == nil {
			v = &Venue{Key: b.Venue}
			s.Venues[b.Venue] = v
		}
		v.Name = b.Name
		s.venueChanged(b.Venue)
	case *Revoke:
		// The first revocation counts, as in the op set's author state.
		if v := s.Venues[b.Venue]; v != nil && !v.Revoked {
			v.Revoked, v.RevokedAfter, v.RevokeReason = true, b.AfterSeq, b.Reason
			s.venueChanged(b.Venue)
		}
	case *Products:
		if v := s.Venues[op.Author]; v != nil && st.After(v.ProductsStamp) {
			v.Products, v.ProductsStamp = b.Items, st
			s.venueChanged(op.Author)
		}
	case *VenueInfo:
		if v := s.Venues[op.Author]; v != nil && st.After(v.InfoStamp) {
			v.Info, v.InfoStamp = *b, st
			s.venueChanged(op.Author)
		}
	case *EventUpsert:
		s.upsertEvent(op.Author, b, st)
	case *EventCancel:
		s.cancelEvent(op.Author, b, op.HLC)
	case *CardRegister:
		s.card(b.Card).Registered = true
	case *CardLink:
		c := s.card(b.Card)
		if st.After(c.HolderStamp) {
			c.Holder, c.HolderStamp = b.Holder, st
		}
	case *CardBlock:
		c := s.card(b.Card)
		switch {
		case op.Author == s.Fed && st.After(c.FedStamp):
			c.FedBlocked, c.FedReason, c.FedStamp = true, b.Reason, st
		case op.Author != s.Fed && st.After(c.BlockStamp):
			c.VenueBlocked, c.VenueReason, c.BlockStamp = true, b.Reason, st
		}
		c.setBlocked()
	case *CardUnblock:
		c := s.card(b.Card)
		if op.Author == s.Fed && st.After(c.FedStamp) {
			c.FedBlocked, c.FedReason, c.FedStamp = false, "", st
		}
		// Any unblock (the federation's too) is a write of the venue
		// register; only the federation's clears the federation's.
		if st.After(c.BlockStamp) {
			c.VenueBlocked, c.VenueReason, c.BlockStamp = false, "", st
		}
		c.setBlocked()
	case *TopUp:
		s.money(op, st, b.Card, int64(b.Amount), 0, b.Method, "topup/"+b.ExternalRef, b.ExternalRef != "")
	case *Payment:
		s.money(op, st, b.Card, -int64(b.Amount), b.Counter, b.Label, "", false)
		s.payment(b, id)
	case *Refund:
		s.money(op, st, b.Card, -int64(b.Amount), 0, b.Reason, "refund/"+b.ExternalRef, b.ExternalRef != "")
	case *Correction:
		s.money(op, st, b.Card, b.Delta, 0, b.Reason, "", false)
	}
}

// money records a credit (amount > 0) or debit on a card. An op with an
// external reference counts only if it is the first (by HLC, then id) to
// carry that reference; a later-sorting duplicate is kept uncounted and
// reported as a conflict.
func (s *State) money(op *Op, st Stamp, card CardID, amount int64, counter uint64, label, ref string, hasRef bool) {
	c := s.card(card)
	e := Entry{Op: st.ID, Kind: op.Kind, Amount: amount, Venue: op.Author, HLC: op.HLC, Counter: counter, Label: label, Counted: true}
	if hasRef {
		if cur, ok := s.index.Ref(ref); ok {
			s.conflict(Conflict{Kind: ConflictDuplicateRef, Ref: ref}, cur.Winner.ID, st.ID)
			if st.After(cur.Winner) || st == cur.Winner {
				e.Counted = false
			} else {
				// The new op sorts first: it takes the credit, the old one
				// stops counting.
				old := s.card(cur.Card)
				s.uncredit(old, cur.Amount)
				s.index.SetCounted(cur.Card, cur.Winner, false)
				s.index.SetRef(ref, RefEntry{Card: card, Winner: st, Amount: amount})
			}
		} else {
			s.index.SetRef(ref, RefEntry{Card: card, Winner: st, Amount: amount})
		}
	}
	if e.Counted {
		s.credit(c, amount)
		if amount < 0 && op.HLC > c.LastDebit {
			c.LastDebit = op.HLC
		}
	}
	c.Entries++
	s.index.AddEntry(card, e)
}

func (s *State) payment(b *Payment, id OpID) {
	c := s.card(b.Card)
	c.NPayments++
	bound := c.NPayments + MaxCounterJump
	if b.Counter <= bound {
		c.Counter = max(c.Counter, b.Counter)
	} else {
		c.Outliers = append(c.Outliers, b.Counter)
	}
	// The bound grows with each payment: outliers it now covers count.
	for i := 0; i < len(c.Outliers); {
		if o := c.Outliers[i]; o <= bound {
			c.Counter = max(c.Counter, o)
			c.Outliers = slices.Delete(c.Outliers, i, i+1)
			continue
		}
		i++
	}
	if b.StampCounter > 0 {
		c.StampedCounter = max(c.StampedCounter, b.Counter)
	}
	if b.StampCounter > 0 && b.Counter > b.StampCounter+1 {
		s.conflict(Conflict{Kind: ConflictStaleStamp, Card: b.Card}, id)
	}
	first, seen := s.index.Payment(b.Card, b.Counter)
	switch {
	case !seen:
		s.index.SetPayment(b.Card, b.Counter, id)
	case first != id:
		s.conflict(Conflict{Kind: ConflictDoubleSpend, Card: b.Card, Counter: b.Counter}, first, id)
		if lessID(id, first) {
			s.index.SetPayment(b.Card, b.Counter, id)
		}
	}
}

// Card returns a card's state, or nil if no counted op mentions it.
func (s *State) Card(id CardID) *Card { return s.Cards[id] }

// SortedConflicts returns the conflicts ordered by key.
func (s *State) SortedConflicts() []*Conflict {
	return s.sortedConflicts(func(*Conflict) bool { return true })
}

// sortedConflicts returns the conflicts keep accepts, in key order.
func (s *State) sortedConflicts(keep func(*Conflict) bool) []*Conflict {
	out := []*Conflict{} // never nil: callers encode it as a JSON list
	for _, c := range s.Conflicts {
		if keep(c) {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b *Conflict) int { return cmp.Compare(a.Key(), b.Key()) })
	return out
}
