package crdt

import (
	"cmp"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"
)

// Checkpoints let a new venue start selling without folding every op since
// the federation began. A checkpoint is the state of a replica at a version
// vector (its records and the external references, not the card
// histories), in one canonical encoding: replicas that hold the same ops
// encode the same bytes. Venues attest a checkpoint by signing its hash,
// its version vector's digest and its state digest; a joiner trusts a
// checkpoint only with the attestations of a quorum of the venues its own
// federation chain says are current members (see docs/checkpoints.md).
// After it, the joiner fetches only newer ops.

// Errors of checkpoints.
var (
	ErrCheckpoint     = errors.New("crdt: invalid checkpoint")
	ErrNoQuorum       = errors.New("crdt: checkpoint not attested by a quorum of current venues")
	ErrCheckpointFork = errors.New("crdt: no checkpoint while a venue's fork is unresolved")
)

const (
	checkpointVersion  = byte(1)
	attestationDomain  = "cagnotte/checkpoint/v1\x00"
	maxCheckpointItems = 1 << 24
)

// EncodeCheckpoint returns the canonical encoding of the set's state at its
// version vector. It refuses while an unrevoked venue has forked (which
// branch is a replica's chain is an accident of arrival). Each kind of
// record is sorted by its key.
func (s *OpSet) EncodeCheckpoint() ([]byte, error) {
	for _, a := range s.Authors {
		if a.Fork != 0 && !a.Revoked {
			return nil, ErrCheckpointFork
		}
	}
	w := &writer{b: make([]byte, 0, 256+len(s.State.Cards)*128)}
	w.b = append(w.b, checkpointVersion)
	m := s.meta()
	w.key(m.Federation)
	w.str(m.Name)
	w.str(m.Currency)
	m.Settings.encode(w)
	w.varint(m.Credits)
	w.varint(m.Debits)
	w.uvarint(m.Counted)
	w.uvarint(m.Ops)
	w.boolean(m.Stale)

	authors := sortedValues(s.Authors, func(a *AuthorState) string { return string(a.Key[:]) })
	w.uvarint(uint64(len(authors)))
	for _, a := range authors {
		encodeAuthor(w, a)
	}
	cards := sortedValues(s.State.Cards, func(c *Card) string { return string(c.ID) })
	w.uvarint(uint64(len(cards)))
	for _, c := range cards {
		encodeCard(w, c)
	}
	venues := sortedValues(s.State.Venues, func(v *Venue) string { return string(v.Key[:]) })
	w.uvarint(uint64(len(venues)))
	for _, v := range venues {
		encodeVenue(w, v)
	}
	// Events in (venue, id) order, as the index lists them.
	var events []Event
	s.State.events.EachEvent(func(e Event) bool { events = append(events, e); return true })
	w.uvarint(uint64(len(events)))
	for i := range events {
		encodeEvent(w, &events[i])
	}
	conflicts := sortedValues(s.State.Conflicts, func(c *Conflict) string { return c.Key() })
	w.uvarint(uint64(len(conflicts)))
	for _, c := range conflicts {
		encodeConflict(w, c)
	}
	type ref struct {
		k string
		e RefEntry
	}
	var refs []ref
	s.State.index.EachRef(func(k string, e RefEntry) { refs = append(refs, ref{k, e}) })
	slices.SortFunc(refs, func(a, b ref) int { return cmp.Compare(a.k, b.k) })
	w.uvarint(uint64(len(refs)))
	for _, r := range refs {
		w.str(r.k)
		w.str(string(r.e.Card))
		encodeStamp(w, r.e.Winner)
		w.varint(r.e.Amount)
	}
	evidence := make([]Op, 0, len(s.EvidenceOps))
	for _, op := range s.EvidenceOps {
		evidence = append(evidence, op)
	}
	slices.SortFunc(evidence, func(a, b Op) int { ia, ib := a.ID(), b.ID(); return cmp.Compare(string(ia[:]), string(ib[:])) })
	w.uvarint(uint64(len(evidence)))
	for i := range evidence {
		w.bytes(evidence[i].Encode())
	}
	return w.b, nil
}

func sortedValues[K comparable, V any](m map[K]V, key func(V) string) []V {
	out := make([]V, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b V) int { return cmp.Compare(key(a), key(b)) })
	return out
}

func encodeStamp(w *writer, st Stamp) {
	w.uvarint(uint64(st.HLC))
	w.fixed(st.ID[:])
}

func decodeStamp(r *reader) Stamp {
	var st Stamp
	st.HLC = HLC(r.uvarint())
	r.fixed(st.ID[:])
	return st
}

func encodeAuthor(w *writer, a *AuthorState) {
	w.key(a.Key)
	w.b = append(w.b, byte(a.Role))
	w.uvarint(a.Seq)
	w.fixed(a.Head[:])
	w.uvarint(uint64(a.AdmittedAt))
	w.boolean(a.Revoked)
	w.uvarint(a.RevokedAfter)
	w.fixed(a.RevokedHead[:])
	w.uvarint(a.PinLimit)
	pinned := make([]OpID, 0, len(a.Pinned))
	for id := range a.Pinned {
		pinned = append(pinned, id)
	}
	slices.SortFunc(pinned, func(x, y OpID) int { return cmp.Compare(string(x[:]), string(y[:])) })
	w.uvarint(uint64(len(pinned)))
	for _, id := range pinned {
		w.fixed(id[:])
	}
	w.uvarint(a.PinSeq)
	w.fixed(a.PinID[:])
	w.uvarint(a.Fork)
	w.uvarint(a.EvidenceMax)
	w.uvarint(a.Counted)
	w.fixed(a.CountedHead[:])
	w.uvarint(a.NCounted)
	w.fixed(a.Acc[:])
}

func decodeAuthor(r *reader) *AuthorState {
	a := &AuthorState{}
	a.Key = r.key()
	if p := r.take(1, 1); r.err == nil {
		a.Role = role(p[0])
	}
	a.Seq = r.uvarint()
	r.fixed(a.Head[:])
	a.AdmittedAt = HLC(r.uvarint())
	a.Revoked = r.boolean()
	a.RevokedAfter = r.uvarint()
	r.fixed(a.RevokedHead[:])
	a.PinLimit = r.uvarint()
	n := r.count()
	var prev OpID
	for i := range n {
		var id OpID
		r.fixed(id[:])
		if i > 0 && string(id[:]) <= string(prev[:]) {
			r.fail(fmt.Errorf("%w: pinned ops out of order", ErrNonCanonical)) // the writer sorts them, once each
		}
		prev = id
		if a.Pinned == nil {
			a.Pinned = map[OpID]bool{}
		}
		a.Pinned[id] = true
	}
	a.PinSeq = r.uvarint()
	r.fixed(a.PinID[:])
	a.Fork = r.uvarint()
	a.EvidenceMax = r.uvarint()
	a.Counted = r.uvarint()
	r.fixed(a.CountedHead[:])
	a.NCounted = r.uvarint()
	r.fixed(a.Acc[:])
	return a
}

func encodeCard(w *writer, c *Card) {
	w.str(string(c.ID))
	w.varint(c.Balance)
	w.varint(c.Credits)
	w.varint(c.Debits)
	w.uvarint(c.Counter)
	w.uvarint(c.NPayments)
	w.uvarint(c.StampedCounter)
	outliers := slices.Clone(c.Outliers)
	slices.Sort(outliers)
	w.uvarint(uint64(len(outliers)))
	for _, o := range outliers {
		w.uvarint(o)
	}
	w.boolean(c.Registered)
	w.boolean(c.Blocked)
	w.str(c.BlockReason)
	w.boolean(c.VenueBlocked)
	w.str(c.VenueReason)
	encodeStamp(w, c.BlockStamp)
	w.boolean(c.FedBlocked)
	w.str(c.FedReason)
	encodeStamp(w, c.FedStamp)
	w.str(c.Holder)
	encodeStamp(w, c.HolderStamp)
	w.uvarint(uint64(c.LastDebit))
	w.uvarint(c.Entries)
}

func decodeCard(r *reader) *Card {
	c := &Card{}
	c.ID = CardID(r.str(2 * MaxCardBytes))
	c.Balance = r.varint()
	c.Credits = r.varint()
	c.Debits = r.varint()
	c.Counter = r.uvarint()
	c.NPayments = r.uvarint()
	c.StampedCounter = r.uvarint()
	for range r.count() {
		o := r.uvarint()
		if n := len(c.Outliers); n > 0 && o < c.Outliers[n-1] {
			r.fail(fmt.Errorf("%w: card outliers out of order", ErrNonCanonical)) // the writer sorts them
		}
		c.Outliers = append(c.Outliers, o)
	}
	c.Registered = r.boolean()
	c.Blocked = r.boolean()
	c.BlockReason = r.str(MaxTextLen)
	c.VenueBlocked = r.boolean()
	c.VenueReason = r.str(MaxTextLen)
	c.BlockStamp = decodeStamp(r)
	c.FedBlocked = r.boolean()
	c.FedReason = r.str(MaxTextLen)
	c.FedStamp = decodeStamp(r)
	c.Holder = r.str(MaxRefLen)
	c.HolderStamp = decodeStamp(r)
	c.LastDebit = HLC(r.uvarint())
	c.Entries = r.uvarint()
	return c
}

func encodeVenue(w *writer, v *Venue) {
	w.key(v.Key)
	w.str(v.Name)
	v.Info.encode(w)
	encodeStamp(w, v.InfoStamp)
	(&Products{Items: v.Products}).encode(w)
	encodeStamp(w, v.ProductsStamp)
	w.boolean(v.Revoked)
	w.uvarint(v.RevokedAfter)
	w.str(v.RevokeReason)
}

func decodeVenue(r *reader) *Venue {
	v := &Venue{}
	v.Key = r.key()
	v.Name = r.str(MaxNameLen)
	v.Info.decode(r)
	v.InfoStamp = decodeStamp(r)
	var p Products
	p.decode(r)
	v.Products = p.Items
	v.ProductsStamp = decodeStamp(r)
	v.Revoked = r.boolean()
	v.RevokedAfter = r.uvarint()
	v.RevokeReason = r.str(MaxTextLen)
	return v
}

func encodeEvent(w *writer, e *Event) {
	w.key(e.Key.Venue)
	w.str(e.Key.ID)
	w.str(e.Title)
	w.varint(e.StartsAt)
	w.varint(e.EndsAt)
	w.str(e.Description)
	w.str(e.Location)
	w.boolean(e.Cancelled)
	for _, st := range e.Stamps {
		encodeStamp(w, st)
	}
	w.uvarint(uint64(e.Updated))
}

func decodeEvent(r *reader) *Event {
	e := &Event{}
	e.Key.Venue = r.key()
	e.Key.ID = r.str(MaxEventID)
	e.Title = r.str(MaxBodySize)
	e.StartsAt = r.varint()
	e.EndsAt = r.varint()
	e.Description = r.str(MaxBodySize)
	e.Location = r.str(MaxBodySize)
	e.Cancelled = r.boolean()
	for i := range e.Stamps {
		e.Stamps[i] = decodeStamp(r)
	}
	e.Updated = HLC(r.uvarint())
	return e
}

func encodeConflict(w *writer, c *Conflict) {
	w.str(string(c.Kind))
	w.str(string(c.Card))
	w.uvarint(c.Counter)
	w.key(c.Author)
	w.uvarint(c.Seq)
	w.str(c.Ref)
	w.uvarint(uint64(len(c.Ops)))
	for _, id := range c.Ops {
		w.fixed(id[:])
	}
}

func decodeConflict(r *reader) *Conflict {
	c := &Conflict{}
	c.Kind = ConflictKind(r.str(32))
	c.Card = CardID(r.str(2 * MaxCardBytes))
	c.Counter = r.uvarint()
	c.Author = r.key()
	c.Seq = r.uvarint()
	c.Ref = r.str(MaxRefLen + 16)
	for range r.count() {
		var id OpID
		r.fixed(id[:])
		c.Ops = append(c.Ops, id)
	}
	return c
}

// count reads a list length, bounded so that a forged one cannot make a
// decoder allocate without end.
func (r *reader) count() uint64 {
	n := r.uvarint()
	if n > maxCheckpointItems || n > uint64(len(r.b)) {
		r.fail(fmt.Errorf("%w: list of %d items", ErrCheckpoint, n))
		return 0
	}
	return n
}

// DecodedCheckpoint is a checkpoint read back: the records to install with
// FromStored, and the external references to put in the new set's index.
// The references are not decoded into memory (a season's checkpoint holds
// hundreds of thousands of them): EachRef reads them, one at a time, from
// the checkpoint's bytes, which the DecodedCheckpoint keeps a reference to
// until DropRefs.
type DecodedCheckpoint struct {
	Stored Stored
	// refs is the references' section of the checkpoint (checked by
	// DecodeCheckpoint), nrefs how many it holds.
	refs  []byte
	nrefs uint64
}

// NumRefs is the number of external references the checkpoint carries.
func (d *DecodedCheckpoint) NumRefs() uint64 { return d.nrefs }

// RefBytes is the size of the references' section of the checkpoint.
func (d *DecodedCheckpoint) RefBytes() int { return len(d.refs) }

// EachRef calls fn with each external reference of the checkpoint, in
// key order, until fn returns an error, which it returns. It fails with
// ErrCheckpoint after DropRefs.
func (d *DecodedCheckpoint) EachRef(fn func(ref string, e RefEntry) error) error {
	if d.refs == nil && d.nrefs > 0 {
		return fmt.Errorf("%w: references dropped", ErrCheckpoint)
	}
	r := &reader{b: d.refs}
	for range d.nrefs {
		k, e := decodeRef(r)
		if r.err != nil {
			return fmt.Errorf("%w: %v", ErrCheckpoint, r.err) // checked by DecodeCheckpoint: unreachable
		}
		if err := fn(k, e); err != nil {
			return err
		}
	}
	return nil
}

// DropRefs releases the checkpoint's bytes the references were read from
// (the rest of the DecodedCheckpoint holds copies). EachRef fails after it.
func (d *DecodedCheckpoint) DropRefs() { d.refs = nil }

func decodeRef(r *reader) (string, RefEntry) {
	k := r.str(MaxRefLen + 16)
	e := RefEntry{Card: CardID(r.str(2 * MaxCardBytes))}
	e.Winner = decodeStamp(r)
	e.Amount = r.varint()
	return k, e
}

// skipRefs checks n references (in strictly increasing key order, as
// EncodeCheckpoint writes them) without keeping them, and returns the
// section they span.
func skipRefs(r *reader, n uint64) []byte {
	start := r.b
	var prev []byte
	var st [32]byte
	for i := range n {
		k := r.bytes(MaxRefLen + 16)
		card := r.bytes(2 * MaxCardBytes)
		if r.err == nil && (!utf8.Valid(k) || !utf8.Valid(card)) {
			r.fail(fmt.Errorf("%w: string is not UTF-8", ErrInvalidBody))
		}
		if r.err == nil && i > 0 && string(k) <= string(prev) {
			r.fail(fmt.Errorf("%w: references out of order", ErrNonCanonical))
		}
		prev = k
		r.uvarint()
		r.fixed(st[:])
		r.varint()
		if r.err != nil {
			return nil
		}
	}
	return start[:len(start)-len(r.b)]
}

// DecodeCheckpointAuthors parses only the head of a checkpoint: its meta
// and its author states (the chains it summarizes), which come first; the
// rest of the bytes is not read (not checked either: decode the whole
// checkpoint, DecodeCheckpoint, to check it). The result holds no card,
// venue, event, conflict, reference or evidence, and no reference to b.
func DecodeCheckpointAuthors(b []byte) (DecodedCheckpoint, error) {
	var d DecodedCheckpoint
	if len(b) == 0 || b[0] != checkpointVersion {
		return d, fmt.Errorf("%w: version", ErrCheckpoint)
	}
	r := &reader{b: b[1:]}
	decodeCheckpointHead(r, &d)
	if r.err != nil {
		return DecodedCheckpoint{}, fmt.Errorf("%w: %v", ErrCheckpoint, r.err)
	}
	d.refs = []byte{}
	return d, nil
}

// decodeCheckpointHead reads a checkpoint's meta and author states.
func decodeCheckpointHead(r *reader, d *DecodedCheckpoint) {
	m := &d.Stored.Meta
	m.Federation = r.key()
	m.Name = r.str(MaxNameLen)
	m.Currency = r.str(8)
	m.Settings.decode(r)
	m.Credits = r.varint()
	m.Debits = r.varint()
	m.Counted = r.uvarint()
	m.Ops = r.uvarint()
	m.Stale = r.boolean()
	for range r.count() {
		d.Stored.Authors = append(d.Stored.Authors, decodeAuthor(r))
	}
}

// DecodeCheckpoint parses a checkpoint's canonical encoding. The result
// refers to b for its references (see DecodedCheckpoint).
func DecodeCheckpoint(b []byte) (DecodedCheckpoint, error) {
	var d DecodedCheckpoint
	if len(b) == 0 || b[0] != checkpointVersion {
		return d, fmt.Errorf("%w: version", ErrCheckpoint)
	}
	r := &reader{b: b[1:]}
	decodeCheckpointHead(r, &d)
	for range r.count() {
		d.Stored.Cards = append(d.Stored.Cards, decodeCard(r))
	}
	for range r.count() {
		d.Stored.Venues = append(d.Stored.Venues, decodeVenue(r))
	}
	for range r.count() {
		d.Stored.Events = append(d.Stored.Events, decodeEvent(r))
	}
	for range r.count() {
		d.Stored.Conflicts = append(d.Stored.Conflicts, decodeConflict(r))
	}
	d.nrefs = r.count()
	d.refs = skipRefs(r, d.nrefs)
	for range r.count() {
		// A copy: the op must not keep the checkpoint's bytes alive.
		op, err := DecodeOp(slices.Clone(r.bytes(MaxOpSize)))
		if r.err == nil && err != nil {
			r.fail(fmt.Errorf("%w: evidence: %v", ErrCheckpoint, err))
		}
		d.Stored.Evidence = append(d.Stored.Evidence, op)
	}
	if err := r.done(); err != nil {
		return DecodedCheckpoint{}, fmt.Errorf("%w: %v", ErrCheckpoint, err)
	}
	if d.refs == nil {
		d.refs = []byte{} // no references: EachRef has nothing to read, DropRefs nothing to drop
	}
	return d, nil
}

// CheckpointSet returns an op set holding a decoded checkpoint's state,
// with cfg's index filled with its external references (unless they were
// dropped: a caller that wrote them to its index itself drops them
// first). Verify the checkpoint's attestations first (VerifyCheckpoint).
func CheckpointSet(cfg Config, d DecodedCheckpoint) *OpSet {
	if cfg.Index == nil {
		cfg.Index = NewMemIndex()
	}
	if d.refs != nil {
		_ = d.EachRef(func(k string, e RefEntry) error { cfg.Index.SetRef(k, e); return nil })
	}
	return FromStored(cfg, d.Stored)
}

// Attestation is a venue's signed statement that its state at the version
// vector whose digest is VV has the state digest Digest and encodes as a
// checkpoint with the hash Hash.
type Attestation struct {
	VV     [32]byte
	Digest [32]byte
	Hash   [32]byte
	Ops    uint64
	Venue  PublicKey
	Sig    [ed25519.SignatureSize]byte
}

// AttestationSize is the encoded size of an attestation.
const AttestationSize = 32*3 + 8 + 32 + ed25519.SignatureSize

func (a *Attestation) unsigned() []byte {
	b := make([]byte, 0, len(attestationDomain)+AttestationSize)
	b = append(b, attestationDomain...)
	b = append(b, a.VV[:]...)
	b = append(b, a.Digest[:]...)
	b = append(b, a.Hash[:]...)
	b = binary.BigEndian.AppendUint64(b, a.Ops)
	return append(b, a.Venue[:]...)
}

// Encode returns the attestation's AttestationSize bytes.
func (a *Attestation) Encode() []byte {
	return append(a.unsigned()[len(attestationDomain):], a.Sig[:]...)
}

// DecodeAttestation parses an attestation and checks its signature.
func DecodeAttestation(b []byte) (Attestation, error) {
	var a Attestation
	if len(b) != AttestationSize {
		return a, fmt.Errorf("%w: attestation of %d bytes", ErrCheckpoint, len(b))
	}
	copy(a.VV[:], b[0:32])
	copy(a.Digest[:], b[32:64])
	copy(a.Hash[:], b[64:96])
	a.Ops = binary.BigEndian.Uint64(b[96:104])
	copy(a.Venue[:], b[104:136])
	copy(a.Sig[:], b[136:])
	if !ed25519.Verify(a.Venue[:], a.unsigned(), a.Sig[:]) {
		return a, fmt.Errorf("%w: attestation signature", ErrCheckpoint)
	}
	return a, nil
}

// VVDigest hashes a version vector in key order.
func VVDigest(vv VersionVector) [32]byte {
	keys := make([]PublicKey, 0, len(vv))
	for k := range vv {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b PublicKey) int { return cmp.Compare(string(a[:]), string(b[:])) })
	h := sha256.New()
	h.Write([]byte("cagnotte/vv/v1"))
	var buf [8]byte
	for _, k := range keys {
		h.Write(k[:])
		binary.BigEndian.PutUint64(buf[:], vv[k])
		h.Write(buf[:])
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// Attest signs the set's checkpoint (its canonical encoding, as returned
// by EncodeCheckpoint) as venue s.
func (s *OpSet) Attest(signer *Signer, checkpoint []byte) Attestation {
	a := Attestation{VV: VVDigest(s.VersionVector()), Digest: s.Digest(), Hash: sha256.Sum256(checkpoint), Ops: s.ops, Venue: signer.Public()}
	copy(a.Sig[:], signer.sign(a.unsigned()))
	return a
}

// VerifyCheckpoint checks that checkpoint (its canonical encoding) is
// attested, with signatures over its hash, by at least need distinct venues
// that members lists as current members. It returns the decoded checkpoint.
// members must come from the joiner's own federation chain (ops signed by
// the federation key), never from the checkpoint: a forged checkpoint
// could name forged venues.
func VerifyCheckpoint(checkpoint []byte, atts []Attestation, members map[PublicKey]bool, need int) (DecodedCheckpoint, error) {
	hash := sha256.Sum256(checkpoint)
	d, err := DecodeCheckpoint(checkpoint)
	if err != nil {
		return d, err
	}
	if need <= 0 {
		return d, fmt.Errorf("%w: no quorum to check against", ErrNoQuorum)
	}
	// The version vector and the digest do not depend on the references:
	// they are not put in an index here.
	set := FromStored(Config{Federation: d.Stored.Meta.Federation}, d.Stored)
	vv, digest := VVDigest(set.VersionVector()), set.Digest()
	seen := map[PublicKey]bool{}
	for _, a := range atts {
		if a.Hash != hash || a.VV != vv || a.Digest != digest || !members[a.Venue] || seen[a.Venue] {
			continue
		}
		if !ed25519.Verify(a.Venue[:], a.unsigned(), a.Sig[:]) {
			continue
		}
		seen[a.Venue] = true
	}
	if len(seen) < need {
		return d, fmt.Errorf("%w: %d valid attestations of current venues, need %d", ErrNoQuorum, len(seen), need)
	}
	return d, nil
}

// CheckpointQuorum is how many venues must attest a checkpoint: the
// federation's MinPeersPercent (at least half) of the current venues,
// rounded up, and at least one.
func (s Settings) CheckpointQuorum(venues int) int {
	p := max(s.MinPeersPercent, 50)
	return max(1, int((p*uint64(venues)+99)/100))
}

// cardRecordVersion starts a card's binary record (AppendBinary).
const cardRecordVersion = 0xC1

// AppendBinary appends the card's record in the checkpoint's canonical
// encoding, for a store to keep (faster to read back than a general
// encoding: a restart reads every card).
func (c *Card) AppendBinary(b []byte) []byte {
	w := &writer{b: append(b, cardRecordVersion)}
	encodeCard(w, c)
	return w.b
}

// DecodeCardRecord reads a record written by AppendBinary; ok is false
// when p is not such a record.
func DecodeCardRecord(p []byte) (c *Card, ok bool, err error) {
	return decodeRecord(p, cardRecordVersion, "card", decodeCard)
}

// decodeRecord reads a store record that starts with version and holds
// one value in the checkpoint's encoding; ok is false when p does not
// start with version (a record of another encoding, e.g. an older gob).
func decodeRecord[T any](p []byte, version byte, what string, dec func(*reader) T) (v T, ok bool, err error) {
	if len(p) == 0 || p[0] != version {
		return v, false, nil
	}
	r := &reader{b: p[1:]}
	v = dec(r)
	if err := r.done(); err != nil {
		var zero T
		return zero, true, fmt.Errorf("%w: %s record: %v", ErrCheckpoint, what, err)
	}
	return v, true, nil
}

// eventRecordVersion starts an event's binary record (Event.AppendBinary).
const eventRecordVersion = 0xE1

// AppendBinary appends the event's record in the checkpoint's canonical
// encoding, for a store to keep (read one at a time, as the agenda needs
// them).
func (e *Event) AppendBinary(b []byte) []byte {
	w := &writer{b: append(b, eventRecordVersion)}
	encodeEvent(w, e)
	return w.b
}

// DecodeEventRecord reads a record written by Event.AppendBinary; ok is
// false when p is not such a record.
func DecodeEventRecord(p []byte) (e *Event, ok bool, err error) {
	return decodeRecord(p, eventRecordVersion, "event", decodeEvent)
}

// EventRecordTimes reads only the start and end times of a record written
// by Event.AppendBinary, without decoding its strings (a store checks
// which events still run at a time this way).
func EventRecordTimes(p []byte) (start, end int64, err error) {
	if len(p) == 0 || p[0] != eventRecordVersion {
		return 0, 0, fmt.Errorf("%w: not an event record", ErrCheckpoint)
	}
	r := &reader{b: p[1:]}
	var k PublicKey
	r.fixed(k[:])
	r.bytes(MaxEventID)  // id
	r.bytes(MaxBodySize) // title
	start, end = r.varint(), r.varint()
	if r.err != nil {
		return 0, 0, fmt.Errorf("%w: event record: %v", ErrCheckpoint, r.err)
	}
	return start, end, nil
}
