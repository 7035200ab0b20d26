package crdt

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// Kind says what an op does and how its body is encoded.
type Kind uint8

// Op kinds. Values are part of the wire format: never renumber.
const (
	KindGenesis      Kind = 1  // federation: name, currency, settings (federation key, seq 1)
	KindAdmit        Kind = 2  // federation admits a venue key
	KindRevoke       Kind = 3  // federation revokes a venue after one of its seqs
	KindSettings     Kind = 4  // federation changes its settings
	KindVenueInfo    Kind = 10 // venue describes itself
	KindProducts     Kind = 11 // venue replaces its product list (point of sale)
	KindEventUpsert  Kind = 20 // venue creates or updates one of its events
	KindEventCancel  Kind = 21 // venue cancels one of its events
	KindCardRegister Kind = 30
	KindCardLink     Kind = 31 // link a card to a holder reference
	KindCardBlock    Kind = 32
	KindCardUnblock  Kind = 33
	KindTopUp        Kind = 40 // credit: cash, card terminal or online payment
	KindPayment      Kind = 41 // debit at a venue, with the card's counter
	KindRefund       Kind = 42 // debit: money given back to the holder
	KindCorrection   Kind = 43 // signed adjustment, credit or debit
)

var kindNames = map[Kind]string{
	KindGenesis: "genesis", KindAdmit: "admit", KindRevoke: "revoke", KindSettings: "settings",
	KindVenueInfo: "venue_info", KindProducts: "products", KindEventUpsert: "event_upsert", KindEventCancel: "event_cancel",
	KindCardRegister: "card_register", KindCardLink: "card_link", KindCardBlock: "card_block",
	KindCardUnblock: "card_unblock", KindTopUp: "topup", KindPayment: "payment",
	KindRefund: "refund", KindCorrection: "correction",
}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Field bounds, in bytes.
const (
	MaxNameLen   = 128
	MaxTextLen   = 1024
	MaxRefLen    = 128
	MaxEventID   = 64
	MaxAmount    = 100_000_000 // one million in currency units, in cents
	MinCardBytes = 4
	MaxCardBytes = 10
	// MaxCounter is the highest payment counter: what a card stamp holds.
	MaxCounter = 1<<32 - 1
	// MaxStampBalance is the highest balance a card stamp holds.
	MaxStampBalance = 1<<31 - 1
	// MaxCounterJump bounds how far a payment's counter may be ahead of the
	// number of payments the ledger holds for its card: a counter further
	// ahead is refused when a venue decides, and ignored by the card's
	// counter view when folded, so no counter value can brick a card.
	MaxCounterJump = 1000
)

// CardID is a card's NFC UID in upper-case hex (4, 7 or 10 bytes on ISO
// 14443 cards; any length from 4 to 10 bytes is accepted).
type CardID string

// ParseCardID normalises and checks a card id.
func ParseCardID(s string) (CardID, error) {
	s = strings.ToUpper(strings.TrimSpace(s))
	b, err := hex.DecodeString(s)
	if err != nil || len(b) < MinCardBytes || len(b) > MaxCardBytes {
		return "", fmt.Errorf("%w: card id must be %d to %d bytes of hex", ErrInvalidBody, MinCardBytes, MaxCardBytes)
	}
	return CardID(s), nil
}

func (w *writer) card(c CardID) {
	b, _ := hex.DecodeString(string(c))
	w.bytes(b)
}

func (r *reader) card() CardID {
	b := r.bytes(MaxCardBytes)
	if r.err == nil && len(b) < MinCardBytes {
		r.fail(fmt.Errorf("%w: card id too short", ErrInvalidBody))
	}
	return CardID(strings.ToUpper(hex.EncodeToString(b)))
}

func (w *writer) key(k PublicKey) { w.fixed(k[:]) }
func (r *reader) key() (k PublicKey) {
	r.fixed(k[:])
	return k
}

// Body is the typed content of an op.
type Body interface {
	Kind() Kind
	encode(w *writer)
	decode(r *reader)
	validate() error
}

// EncodeBody returns the canonical encoding of b.
func EncodeBody(b Body) []byte {
	w := writer{b: make([]byte, 0, 64)}
	b.encode(&w)
	return w.b
}

// DecodeBody parses and validates the body of an op of kind k.
func DecodeBody(k Kind, p []byte) (Body, error) {
	var b Body
	switch k {
	case KindGenesis:
		b = &Genesis{}
	case KindAdmit:
		b = &Admit{}
	case KindRevoke:
		b = &Revoke{}
	case KindSettings:
		b = &SettingsChange{}
	case KindVenueInfo:
		b = &VenueInfo{}
	case KindProducts:
		b = &Products{}
	case KindEventUpsert:
		b = &EventUpsert{}
	case KindEventCancel:
		b = &EventCancel{}
	case KindCardRegister:
		b = &CardRegister{}
	case KindCardLink:
		b = &CardLink{}
	case KindCardBlock:
		b = &CardBlock{}
	case KindCardUnblock:
		b = &CardUnblock{}
	case KindTopUp:
		b = &TopUp{}
	case KindPayment:
		b = &Payment{}
	case KindRefund:
		b = &Refund{}
	case KindCorrection:
		b = &Correction{}
	default:
		return nil, fmt.Errorf("%w: %d", ErrUnknownKind, uint8(k))
	}
	r := reader{b: p}
	b.decode(&r)
	if err := r.done(); err != nil {
		return nil, fmt.Errorf("%s body: %w", k, err)
	}
	if err := b.validate(); err != nil {
		return nil, fmt.Errorf("%s body: %w", k, err)
	}
	return b, nil
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidBody}, a...)...)
}

func checkAmount(a uint64) error {
	if a == 0 || a > MaxAmount {
		return invalid("amount must be between 1 and %d cents", MaxAmount)
	}
	return nil
}

func checkName(field, s string, max int, required bool) error {
	if required && strings.TrimSpace(s) == "" {
		return invalid("%s is required", field)
	}
	if len(s) > max {
		return invalid("%s longer than %d bytes", field, max)
	}
	return nil
}

// Settings are the federation's rules, set in the genesis and changed by a
// [SettingsChange]. Amounts are in cents, durations in milliseconds.
type Settings struct {
	// OfflinePaymentMax is the largest single payment an isolated venue
	// accepts (a floor limit, as card networks use for offline payments).
	OfflinePaymentMax uint64
	// OfflineCardMax is the amount one card may spend at one isolated venue
	// until the venue is back in sync.
	OfflineCardMax uint64
	// OfflineCardCount is the number of payments one card may make at one
	// isolated venue until the venue is back in sync.
	OfflineCardCount uint64
	// OfflineVenueBudget is the total an isolated venue may take offline.
	OfflineVenueBudget uint64
	// OfflineValidity is how long after losing sync a venue may keep
	// selling offline.
	OfflineValidity uint64
	// DailyCardMax caps what one card spends per day online; 0 means no cap.
	DailyCardMax uint64
	// HeartbeatInterval is how often nodes announce their state.
	HeartbeatInterval uint64
	// IsolationAfter is how long without hearing enough peers before a node
	// considers itself isolated.
	IsolationAfter uint64
	// MinPeersPercent is the share of the other admitted venues a node must
	// hear within IsolationAfter to be in sync.
	MinPeersPercent uint64
	// AutoBlock makes a node that sees a card overdrawn after a merge (or a
	// stale stamp presented while it is isolated) block the card.
	AutoBlock bool
	// MaxClockSkew is how far ahead of a receiver's clock an op's HLC may
	// be: an op further in the future is held, not applied, until it no
	// longer is. 0 means the default (DefaultMaxClockSkew).
	MaxClockSkew uint64
	// BalanceMax is the highest balance a card may reach: a top-up beyond
	// it is refused. 0 means no ceiling.
	BalanceMax uint64
}

// DefaultMaxClockSkew is the default Settings.MaxClockSkew: 5 minutes.
const DefaultMaxClockSkew = 5 * 60 * 1000

// DefaultBalanceMax is the default Settings.BalanceMax: 150.00, the
// ceiling anonymous e-money rules use for a prepaid card.
const DefaultBalanceMax = 15000

// Skew returns the clock skew bound in milliseconds.
func (s Settings) Skew() int64 {
	if s.MaxClockSkew == 0 {
		return DefaultMaxClockSkew
	}
	return int64(s.MaxClockSkew)
}

// DefaultSettings are the federation rules used when a genesis does not set
// them: close to what card networks accept offline (see docs/offline.md).
func DefaultSettings() Settings {
	return Settings{
		OfflinePaymentMax:  2500,
		OfflineCardMax:     5000,
		OfflineCardCount:   20,
		OfflineVenueBudget: 100000,
		OfflineValidity:    24 * 3600 * 1000,
		DailyCardMax:       0,
		HeartbeatInterval:  2000,
		IsolationAfter:     6000,
		MinPeersPercent:    50,
		AutoBlock:          true,
		MaxClockSkew:       DefaultMaxClockSkew,
		BalanceMax:         DefaultBalanceMax,
	}
}

func (s *Settings) encode(w *writer) {
	for _, v := range []uint64{s.OfflinePaymentMax, s.OfflineCardMax, s.OfflineCardCount, s.OfflineVenueBudget,
		s.OfflineValidity, s.DailyCardMax, s.HeartbeatInterval, s.IsolationAfter, s.MinPeersPercent} {
		w.uvarint(v)
	}
	w.boolean(s.AutoBlock)
	w.uvarint(s.MaxClockSkew)
	w.uvarint(s.BalanceMax)
}

func (s *Settings) decode(r *reader) {
	for _, p := range []*uint64{&s.OfflinePaymentMax, &s.OfflineCardMax, &s.OfflineCardCount, &s.OfflineVenueBudget,
		&s.OfflineValidity, &s.DailyCardMax, &s.HeartbeatInterval, &s.IsolationAfter, &s.MinPeersPercent} {
		*p = r.uvarint()
	}
	s.AutoBlock = r.boolean()
	s.MaxClockSkew = r.uvarint()
	s.BalanceMax = r.uvarint()
}

func (s *Settings) validate() error {
	if s.MinPeersPercent > 100 {
		return invalid("min peers percent above 100")
	}
	if s.HeartbeatInterval == 0 || s.IsolationAfter < s.HeartbeatInterval {
		return invalid("isolation delay must be at least one heartbeat interval")
	}
	if s.OfflinePaymentMax > MaxAmount || s.OfflineCardMax > MaxAmount*100 || s.OfflineVenueBudget > MaxAmount*100 {
		return invalid("offline caps too large")
	}
	if s.MaxClockSkew > 24*3600*1000 {
		return invalid("clock skew bound above one day")
	}
	if s.BalanceMax > MaxStampBalance {
		return invalid("balance ceiling above %d", MaxStampBalance)
	}
	return nil
}

// Genesis founds a federation. It is the federation key's op at seq 1.
type Genesis struct {
	Name     string
	Currency string // ISO 4217 code, e.g. EUR
	Settings Settings
}

// Kind implements Body.
func (*Genesis) Kind() Kind { return KindGenesis }
func (b *Genesis) encode(w *writer) {
	w.str(b.Name)
	w.str(b.Currency)
	b.Settings.encode(w)
}
func (b *Genesis) decode(r *reader) {
	b.Name = r.str(MaxNameLen)
	b.Currency = r.str(8)
	b.Settings.decode(r)
}
func (b *Genesis) validate() error {
	if err := checkName("name", b.Name, MaxNameLen, true); err != nil {
		return err
	}
	if len(b.Currency) != 3 || strings.ToUpper(b.Currency) != b.Currency {
		return invalid("currency must be a 3-letter upper-case code")
	}
	return b.Settings.validate()
}

// SettingsChange replaces the federation settings.
type SettingsChange struct{ Settings Settings }

// Kind implements Body.
func (*SettingsChange) Kind() Kind         { return KindSettings }
func (b *SettingsChange) encode(w *writer) { b.Settings.encode(w) }
func (b *SettingsChange) decode(r *reader) { b.Settings.decode(r) }
func (b *SettingsChange) validate() error  { return b.Settings.validate() }

// Admit makes a venue key a member of the federation.
type Admit struct {
	Venue PublicKey
	Name  string
}

// Kind implements Body.
func (*Admit) Kind() Kind { return KindAdmit }
func (b *Admit) encode(w *writer) {
	w.key(b.Venue)
	w.str(b.Name)
}
func (b *Admit) decode(r *reader) {
	b.Venue = r.key()
	b.Name = r.str(MaxNameLen)
}
func (b *Admit) validate() error {
	if b.Venue.IsZero() {
		return invalid("venue key is zero")
	}
	return checkName("name", b.Name, MaxNameLen, true)
}

// Revoke removes a venue: its ops with a seq above AfterSeq do not count
// and are refused. AfterSeq is usually the venue's head as the maintainer's
// node saw it. Head, when not zero, pins the venue's history: the id of its
// op at AfterSeq. Only that op and its ancestors count, so a venue that
// forked cannot have another branch counted after its revocation.
type Revoke struct {
	Venue    PublicKey
	AfterSeq uint64
	Reason   string
	Head     OpID
}

// Kind implements Body.
func (*Revoke) Kind() Kind { return KindRevoke }
func (b *Revoke) encode(w *writer) {
	w.key(b.Venue)
	w.uvarint(b.AfterSeq)
	w.str(b.Reason)
	w.fixed(b.Head[:])
}
func (b *Revoke) decode(r *reader) {
	b.Venue = r.key()
	b.AfterSeq = r.uvarint()
	b.Reason = r.str(MaxTextLen)
	r.fixed(b.Head[:])
}
func (b *Revoke) validate() error {
	if b.Venue.IsZero() {
		return invalid("venue key is zero")
	}
	if b.AfterSeq == 0 && !b.Head.IsZero() {
		return invalid("a revocation after seq 0 pins no head")
	}
	return nil
}

// Product bounds.
const (
	// MaxProducts bounds a venue's product list (it must fit one op).
	MaxProducts = 48
	// MaxProductName bounds a product's name, in bytes.
	MaxProductName = 24
)

// Product is one item a venue sells at its point of sale.
type Product struct {
	Name  string
	Price uint64 // cents
}

// Products is a venue's whole product list, replacing the previous one
// (last writer wins per venue), so every till and a restored node show the
// same grid.
type Products struct {
	Items []Product
}

// Kind implements Body.
func (*Products) Kind() Kind { return KindProducts }
func (b *Products) encode(w *writer) {
	w.uvarint(uint64(len(b.Items)))
	for _, it := range b.Items {
		w.str(it.Name)
		w.uvarint(it.Price)
	}
}
func (b *Products) decode(r *reader) {
	n := r.uvarint()
	if n > MaxProducts {
		r.fail(fmt.Errorf("%w: %d products, max %d", ErrInvalidBody, n, MaxProducts))
		return
	}
	b.Items = make([]Product, 0, n)
	for range n {
		it := Product{Name: r.str(MaxProductName)}
		it.Price = r.uvarint()
		if r.err != nil {
			return
		}
		b.Items = append(b.Items, it)
	}
}
func (b *Products) validate() error {
	seen := map[string]bool{}
	for _, it := range b.Items {
		if err := checkName("product name", it.Name, MaxProductName, true); err != nil {
			return err
		}
		if err := checkAmount(it.Price); err != nil {
			return err
		}
		if seen[it.Name] {
			return invalid("product %q listed twice", it.Name)
		}
		seen[it.Name] = true
	}
	return nil
}

// VenueInfo is what a venue says about itself.
type VenueInfo struct {
	Name    string
	Address string
	URL     string
}

// Kind implements Body.
func (*VenueInfo) Kind() Kind { return KindVenueInfo }
func (b *VenueInfo) encode(w *writer) {
	w.str(b.Name)
	w.str(b.Address)
	w.str(b.URL)
}
func (b *VenueInfo) decode(r *reader) {
	b.Name = r.str(MaxNameLen)
	b.Address = r.str(MaxTextLen)
	b.URL = r.str(MaxTextLen)
}
func (b *VenueInfo) validate() error { return checkName("name", b.Name, MaxNameLen, true) }

// Event fields an upsert may set.
const (
	FieldTitle uint64 = 1 << iota
	FieldStartsAt
	FieldEndsAt
	FieldDescription
	FieldLocation
	fieldAll = FieldTitle | FieldStartsAt | FieldEndsAt | FieldDescription | FieldLocation
)

// EventUpsert creates an event of the author's venue or updates the fields
// named in Fields. Times are Unix milliseconds.
type EventUpsert struct {
	EventID     string
	Fields      uint64
	Title       string
	StartsAt    int64
	EndsAt      int64
	Description string
	Location    string
}

// Kind implements Body.
func (*EventUpsert) Kind() Kind { return KindEventUpsert }
func (b *EventUpsert) encode(w *writer) {
	w.str(b.EventID)
	w.uvarint(b.Fields)
	w.str(b.Title)
	w.varint(b.StartsAt)
	w.varint(b.EndsAt)
	w.str(b.Description)
	w.str(b.Location)
}
func (b *EventUpsert) decode(r *reader) {
	b.EventID = r.str(MaxEventID)
	b.Fields = r.uvarint()
	b.Title = r.str(MaxNameLen)
	b.StartsAt = r.varint()
	b.EndsAt = r.varint()
	b.Description = r.str(MaxTextLen)
	b.Location = r.str(MaxNameLen)
}
func (b *EventUpsert) validate() error {
	if err := checkName("event id", b.EventID, MaxEventID, true); err != nil {
		return err
	}
	if b.Fields == 0 || b.Fields&^fieldAll != 0 {
		return invalid("unknown or no event fields")
	}
	if b.Fields&FieldTitle != 0 {
		if err := checkName("title", b.Title, MaxNameLen, true); err != nil {
			return err
		}
	}
	if b.Fields&(FieldStartsAt|FieldEndsAt) == FieldStartsAt|FieldEndsAt && b.EndsAt < b.StartsAt {
		return invalid("event ends before it starts")
	}
	return nil
}

// EventCancel cancels one of the author's events.
type EventCancel struct {
	EventID string
	Reason  string
}

// Kind implements Body.
func (*EventCancel) Kind() Kind { return KindEventCancel }
func (b *EventCancel) encode(w *writer) {
	w.str(b.EventID)
	w.str(b.Reason)
}
func (b *EventCancel) decode(r *reader) {
	b.EventID = r.str(MaxEventID)
	b.Reason = r.str(MaxTextLen)
}
func (b *EventCancel) validate() error { return checkName("event id", b.EventID, MaxEventID, true) }

// CardRegister records a new card.
type CardRegister struct{ Card CardID }

// Kind implements Body.
func (*CardRegister) Kind() Kind         { return KindCardRegister }
func (b *CardRegister) encode(w *writer) { w.card(b.Card) }
func (b *CardRegister) decode(r *reader) { b.Card = r.card() }
func (b *CardRegister) validate() error  { return nil }

// CardLink links a card to a holder reference (an opaque id, not personal
// data: the ledger is replicated to every venue).
type CardLink struct {
	Card   CardID
	Holder string
}

// Kind implements Body.
func (*CardLink) Kind() Kind { return KindCardLink }
func (b *CardLink) encode(w *writer) {
	w.card(b.Card)
	w.str(b.Holder)
}
func (b *CardLink) decode(r *reader) {
	b.Card = r.card()
	b.Holder = r.str(MaxRefLen)
}
func (b *CardLink) validate() error { return checkName("holder", b.Holder, MaxRefLen, true) }

// CardBlock blocks a card: payments are refused everywhere once it is known.
type CardBlock struct {
	Card   CardID
	Reason string
}

// Kind implements Body.
func (*CardBlock) Kind() Kind { return KindCardBlock }
func (b *CardBlock) encode(w *writer) {
	w.card(b.Card)
	w.str(b.Reason)
}
func (b *CardBlock) decode(r *reader) {
	b.Card = r.card()
	b.Reason = r.str(MaxTextLen)
}
func (b *CardBlock) validate() error { return nil }

// CardUnblock lifts a block.
type CardUnblock struct {
	Card   CardID
	Reason string
}

// Kind implements Body.
func (*CardUnblock) Kind() Kind { return KindCardUnblock }
func (b *CardUnblock) encode(w *writer) {
	w.card(b.Card)
	w.str(b.Reason)
}
func (b *CardUnblock) decode(r *reader) {
	b.Card = r.card()
	b.Reason = r.str(MaxTextLen)
}
func (b *CardUnblock) validate() error { return nil }

// Top-up methods.
const (
	MethodCash         = "cash"
	MethodCardTerminal = "card_terminal"
	MethodOnline       = "online"
)

// TopUp credits a card. A non-empty ExternalRef (a payment provider's id)
// is credited once across the federation, whichever venue records it.
type TopUp struct {
	Card        CardID
	Amount      uint64
	Method      string
	ExternalRef string
}

// Kind implements Body.
func (*TopUp) Kind() Kind { return KindTopUp }
func (b *TopUp) encode(w *writer) {
	w.card(b.Card)
	w.uvarint(b.Amount)
	w.str(b.Method)
	w.str(b.ExternalRef)
}
func (b *TopUp) decode(r *reader) {
	b.Card = r.card()
	b.Amount = r.uvarint()
	b.Method = r.str(32)
	b.ExternalRef = r.str(MaxRefLen)
}
func (b *TopUp) validate() error {
	switch b.Method {
	case MethodCash, MethodCardTerminal, MethodOnline:
	default:
		return invalid("unknown top-up method %q", b.Method)
	}
	return checkAmount(b.Amount)
}

// Payment debits a card at the author's venue. Counter is the card's next
// counter; two payments of one card with one counter are a double spend.
// StampCounter is the counter of the stamp the card presented (0: none); a
// stamp older than the counter the venue knew (Counter > StampCounter+1) is
// a stale stamp, the mark of a cloned or rolled-back card. StampVenue is
// the venue that signed that stamp (present only with a stamp), so the
// ledger records whose word the payment relied on.
type Payment struct {
	Card         CardID
	Amount       uint64
	Counter      uint64
	Label        string
	StampCounter uint64
	StampVenue   PublicKey
}

// Kind implements Body.
func (*Payment) Kind() Kind { return KindPayment }
func (b *Payment) encode(w *writer) {
	w.card(b.Card)
	w.uvarint(b.Amount)
	w.uvarint(b.Counter)
	w.str(b.Label)
	w.uvarint(b.StampCounter)
	if b.StampCounter > 0 {
		w.key(b.StampVenue)
	}
}
func (b *Payment) decode(r *reader) {
	b.Card = r.card()
	b.Amount = r.uvarint()
	b.Counter = r.uvarint()
	b.Label = r.str(MaxNameLen)
	b.StampCounter = r.uvarint()
	if b.StampCounter > 0 {
		b.StampVenue = r.key()
	}
}
func (b *Payment) validate() error {
	if b.Counter == 0 {
		return invalid("counter starts at 1")
	}
	if b.Counter > MaxCounter {
		return invalid("counter above %d", uint64(MaxCounter))
	}
	if b.StampCounter >= b.Counter {
		return invalid("stamp counter must be below the payment's counter")
	}
	if b.StampCounter > 0 && b.StampVenue.IsZero() {
		return invalid("a payment that relied on a stamp names the venue that signed it")
	}
	if b.StampCounter == 0 && !b.StampVenue.IsZero() {
		return invalid("stamp venue without a stamp")
	}
	return checkAmount(b.Amount)
}

// Refund debits a card for money given back to its holder. A non-empty
// ExternalRef (a provider's refund id) is debited once.
type Refund struct {
	Card        CardID
	Amount      uint64
	Reason      string
	ExternalRef string
}

// Kind implements Body.
func (*Refund) Kind() Kind { return KindRefund }
func (b *Refund) encode(w *writer) {
	w.card(b.Card)
	w.uvarint(b.Amount)
	w.str(b.Reason)
	w.str(b.ExternalRef)
}
func (b *Refund) decode(r *reader) {
	b.Card = r.card()
	b.Amount = r.uvarint()
	b.Reason = r.str(MaxTextLen)
	b.ExternalRef = r.str(MaxRefLen)
}
func (b *Refund) validate() error { return checkAmount(b.Amount) }

// Correction adjusts a card by Delta cents (positive credits, negative
// debits), with a reason kept for audit.
type Correction struct {
	Card   CardID
	Delta  int64
	Reason string
}

// Kind implements Body.
func (*Correction) Kind() Kind { return KindCorrection }
func (b *Correction) encode(w *writer) {
	w.card(b.Card)
	w.varint(b.Delta)
	w.str(b.Reason)
}
func (b *Correction) decode(r *reader) {
	b.Card = r.card()
	b.Delta = r.varint()
	b.Reason = r.str(MaxTextLen)
}
func (b *Correction) validate() error {
	if b.Delta == 0 || b.Delta > MaxAmount || b.Delta < -MaxAmount {
		return invalid("correction must be non-zero and at most %d cents", MaxAmount)
	}
	return checkName("reason", b.Reason, MaxTextLen, true)
}

// role says who may author a kind.
type role uint8

const (
	roleFederation role = 1 << iota
	roleVenue
)

func kindRoles(k Kind) role {
	switch k {
	case KindGenesis, KindAdmit, KindRevoke, KindSettings:
		return roleFederation
	case KindCardBlock, KindCardUnblock, KindCorrection:
		return roleFederation | roleVenue
	}
	return roleVenue
}

func decodeHex(s string) ([]byte, error) { return hex.DecodeString(s) }

func encodeHexUpper(b []byte) string { return strings.ToUpper(hex.EncodeToString(b)) }
