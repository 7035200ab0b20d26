package nfc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/cagnotte/cagnotte/crdt"
)

// The card's memory (docs/nfc.md): an NDEF message (TLV 03) at the start
// of the user memory, holding the card holder's link as a URI record where
// there is room, then stamp slots at the end of the user memory. A slot is
// a 4-byte header ('C', 'G', version 1, generation) and the 120-byte
// stamp: 31 pages. Cards with room for two slots (NTAG215/216) keep the
// previous stamp while the new one is written into the other slot; cards
// with room for one (NTAG213, Ultralight C, Ultralight EV1 MF0UL21)
// rewrite it in place; smaller cards carry no stamp. Phones stop reading
// at the NDEF terminator TLV (FE) and never see the slots.

const (
	slotHeader = 4
	slotBytes  = slotHeader + crdt.StampSize // 124
	slotPages  = slotBytes / 4               // 31
	slotMagic0 = 'C'
	slotMagic1 = 'G'
	slotVer    = 1
)

// Layout is where things are on one card type.
type Layout struct {
	Type CardType
	// NDEFStart and NDEFEnd bound the NDEF area (pages, end exclusive);
	// empty when the card has no room or no capability container.
	NDEFStart, NDEFEnd int
	// Slots are the first pages of the stamp slots (0, 1 or 2 of them).
	Slots []int
}

// LayoutOf returns the layout of a card type.
func LayoutOf(t CardType) Layout {
	l := Layout{Type: t}
	if !t.Known() {
		return l
	}
	pages := t.UserEnd - t.UserStart
	switch {
	case pages >= 2*slotPages+1:
		l.Slots = []int{t.UserEnd - 2*slotPages, t.UserEnd - slotPages}
	case pages >= slotPages:
		l.Slots = []int{t.UserEnd - slotPages}
	}
	if t.NDEF {
		l.NDEFStart = t.UserStart
		l.NDEFEnd = t.UserEnd - len(l.Slots)*slotPages
	}
	return l
}

// Slot is one stamp slot as read from a card.
type Slot struct {
	Page  int    // first page
	Data  []byte // the slot's 124 bytes as read
	Gen   byte   // generation: incremented at every write
	Raw   []byte // the stamp bytes, nil when the header is not a slot's
	Stamp *crdt.CardStamp
	Err   error // why the slot holds no valid stamp
}

// CardData is what a card holds, as read.
type CardData struct {
	UID    crdt.CardID
	Layout Layout
	// CC is the capability container (page 3) of NDEF cards.
	CC []byte
	// URI is the URI of the NDEF message's first record, if it is one.
	URI   string
	Slots []Slot
	// Current is the index in Slots of the stamp the card shows (-1 if
	// none is valid).
	Current int
}

// Stamp returns the card's current stamp's bytes, or ErrNoStamp.
func (d *CardData) Stamp() ([]byte, error) {
	if d.Current < 0 {
		return nil, ErrNoStamp
	}
	return d.Slots[d.Current].Raw, nil
}

// ReadCard reads the card's NDEF link and stamp slots. A slot whose stamp
// does not verify (a torn write, a blank card, another card's stamp) is
// reported with its error and never chosen.
func ReadCard(ctx context.Context, c Card) (*CardData, error) {
	l := LayoutOf(c.Type())
	d := &CardData{UID: c.UID(), Layout: l, Current: -1}
	if l.NDEFEnd > l.NDEFStart {
		cc, err := c.Read(ctx, 3, 1)
		if err != nil {
			return nil, err
		}
		d.CC = cc
		if cc[0] == 0xE1 {
			area, err := c.Read(ctx, l.NDEFStart, l.NDEFEnd-l.NDEFStart)
			if err != nil {
				return nil, err
			}
			d.URI, _ = parseNDEFURI(area)
		}
	}
	slots, err := readSlots(ctx, c, l)
	if err != nil {
		return nil, err
	}
	d.Slots = slots
	d.Current = currentSlot(d.Slots)
	return d, nil
}

func parseSlot(page int, b []byte, uid crdt.CardID) Slot {
	s := Slot{Page: page, Data: append([]byte(nil), b...), Gen: b[3]}
	if b[0] != slotMagic0 || b[1] != slotMagic1 || b[2] != slotVer {
		s.Err = ErrNoStamp
		return s
	}
	s.Raw = append([]byte(nil), b[slotHeader:]...)
	st, err := crdt.DecodeStamp(s.Raw)
	switch {
	case err != nil:
		s.Err = err
	case st.Card != uid:
		s.Err = fmt.Errorf("%w: the stamp is for card %s", crdt.ErrBadStamp, st.Card)
	default:
		s.Stamp = &st
	}
	return s
}

// ReadSlots reads and checks the stamp slots of a card (none for a card
// without room for a stamp). Pass them to WriteStampOver to save reading
// them again.
func ReadSlots(ctx context.Context, c Card) ([]Slot, error) {
	return readSlots(ctx, c, LayoutOf(c.Type()))
}

// CurrentStamp returns the stamp the slots show, or ErrNoStamp.
func CurrentStamp(slots []Slot) ([]byte, error) {
	d := CardData{Slots: slots, Current: currentSlot(slots)}
	return d.Stamp()
}

// readSlots reads and checks every stamp slot of a card.
func readSlots(ctx context.Context, c Card, l Layout) ([]Slot, error) {
	var slots []Slot
	for _, p := range l.Slots {
		b, err := c.Read(ctx, p, slotPages)
		if err != nil {
			return nil, err
		}
		slots = append(slots, parseSlot(p, b, c.UID()))
	}
	return slots, nil
}

// currentSlot picks the valid slot with the highest counter, then the
// latest generation.
func currentSlot(slots []Slot) int {
	best := -1
	for i, s := range slots {
		if s.Stamp == nil {
			continue
		}
		if best < 0 {
			best = i
			continue
		}
		b := slots[best]
		if s.Stamp.Counter > b.Stamp.Counter || (s.Stamp.Counter == b.Stamp.Counter && int8(s.Gen-b.Gen) > 0) {
			best = i
		}
	}
	return best
}

// ReadStamp returns the card's current stamp, or ErrNoStamp (or
// ErrNotWritable for a card without a slot).
func ReadStamp(ctx context.Context, c Card) ([]byte, error) {
	if len(LayoutOf(c.Type()).Slots) == 0 {
		return nil, ErrNotWritable
	}
	slots, err := readSlots(ctx, c, LayoutOf(c.Type()))
	if err != nil {
		return nil, err
	}
	d := CardData{Slots: slots, Current: currentSlot(slots)}
	return d.Stamp()
}

// WriteStamp writes a new stamp on the card: into the slot that does not
// hold the current stamp (so the previous one stays readable until the new
// one verifies), stamp pages first and the header last, then reads the
// slot back and checks the bytes, the signature and the card. An error
// means the card may still show its previous stamp (two slots) or none
// (one slot): never a half-written one, which does not verify.
func WriteStamp(ctx context.Context, c Card, stamp []byte) error {
	_, err := WriteStampOver(ctx, c, nil, stamp)
	return err
}

// WriteStampOver is WriteStamp for a card whose slots were read in this
// session (ReadSlots, or the slots a previous WriteStampOver returned;
// nil reads them): it writes only the pages that change, and returns the
// slots as they are now. Only pass slots read while the card stayed on
// the reader (an exclusive PC/SC connection: nobody else wrote it).
func WriteStampOver(ctx context.Context, c Card, slots []Slot, stamp []byte) ([]Slot, error) {
	st, err := crdt.DecodeStamp(stamp)
	if err != nil {
		return nil, err
	}
	if st.Card != c.UID() {
		return nil, fmt.Errorf("%w: the stamp is for card %s, not %s", crdt.ErrBadStamp, st.Card, c.UID())
	}
	l := LayoutOf(c.Type())
	if len(l.Slots) == 0 {
		return nil, ErrNotWritable
	}
	if len(slots) != len(l.Slots) {
		if slots, err = readSlots(ctx, c, l); err != nil {
			return nil, err
		}
	}
	target, gen := 0, slots[0].Gen+1
	if cur := currentSlot(slots); cur >= 0 {
		target, gen = (cur+1)%len(slots), slots[cur].Gen+1
	} else if len(slots) == 2 {
		gen = max(slots[0].Gen, slots[1].Gen) + 1
	}
	page := l.Slots[target]
	old := slots[target].Data
	for i := 0; i < crdt.StampSize; i += 4 {
		if old != nil && bytes.Equal(old[slotHeader+i:slotHeader+i+4], stamp[i:i+4]) {
			continue // the page already holds these bytes
		}
		if err := c.Write(ctx, page+1+i/4, stamp[i:i+4]); err != nil {
			return nil, fmt.Errorf("nfc: write stamp: %w", err)
		}
	}
	if err := c.Write(ctx, page, []byte{slotMagic0, slotMagic1, slotVer, gen}); err != nil {
		return nil, fmt.Errorf("nfc: write stamp header: %w", err)
	}
	back, err := c.Read(ctx, page, slotPages)
	if err != nil {
		return nil, fmt.Errorf("nfc: read the stamp back: %w", err)
	}
	s := parseSlot(page, back, c.UID())
	if s.Stamp == nil || !bytes.Equal(s.Raw, stamp) || s.Gen != gen {
		return nil, fmt.Errorf("%w: stamp slot at page %d", ErrVerify, page)
	}
	out := append([]Slot(nil), slots...)
	out[target] = s
	return out, nil
}

// Format prepares a card: the NDEF message with the card holder's link
// (uri; empty for an empty NDEF message), where the card has room for it,
// and empty stamp slots. It writes the capability container of a blank
// NDEF card. It returns an error if the link does not fit.
func Format(ctx context.Context, c Card, uri string) error {
	l := LayoutOf(c.Type())
	if !l.Type.Known() {
		return fmt.Errorf("nfc: format: %w", ErrNotWritable)
	}
	if l.NDEFEnd > l.NDEFStart {
		cc, err := c.Read(ctx, 3, 1)
		if err != nil {
			return err
		}
		if bytes.Equal(cc, []byte{0, 0, 0, 0}) {
			size := byte(l.Type.UserBytes() / 8)
			if err := c.Write(ctx, 3, []byte{0xE1, 0x10, size, 0x00}); err != nil {
				return fmt.Errorf("nfc: write the capability container: %w", err)
			}
		} else if cc[0] != 0xE1 {
			return fmt.Errorf("nfc: format: capability container % X is not NDEF's", cc)
		}
		msg, err := ndefURITLV(uri)
		if err != nil {
			return err
		}
		room := 4 * (l.NDEFEnd - l.NDEFStart)
		if len(msg) > room {
			return fmt.Errorf("nfc: format: the link needs %d bytes, the card has %d before its stamp slots (use an NTAG215 or 216, or a shorter address)", len(msg), room)
		}
		for len(msg)%4 != 0 {
			msg = append(msg, 0)
		}
		if err := c.Write(ctx, l.NDEFStart, msg); err != nil {
			return fmt.Errorf("nfc: write the link: %w", err)
		}
	} else if uri != "" && len(l.Slots) > 0 {
		return fmt.Errorf("nfc: format: a %s has no room for the link", l.Type.Name)
	}
	for _, p := range l.Slots {
		if err := c.Write(ctx, p, make([]byte, slotBytes)); err != nil {
			return fmt.Errorf("nfc: clear stamp slot: %w", err)
		}
	}
	return nil
}

// uriPrefixes are the NDEF URI record's abbreviations (NFC Forum RTD URI).
var uriPrefixes = []string{"", "http://www.", "https://www.", "http://", "https://"}

// ndefURITLV encodes an NDEF message TLV with one URI record (an empty
// message if uri is empty), followed by the terminator TLV.
func ndefURITLV(uri string) ([]byte, error) {
	if uri == "" {
		return []byte{0x03, 0x00, 0xFE}, nil
	}
	code, rest := byte(0), uri
	for i := len(uriPrefixes) - 1; i > 0; i-- {
		if r, ok := strings.CutPrefix(uri, uriPrefixes[i]); ok {
			code, rest = byte(i), r
			break
		}
	}
	payload := append([]byte{code}, rest...)
	if len(payload) > 255 {
		return nil, fmt.Errorf("nfc: link of %d bytes is too long", len(uri))
	}
	// MB ME SR, TNF well-known (1), type "U".
	rec := append([]byte{0xD1, 0x01, byte(len(payload)), 'U'}, payload...)
	var tlv []byte
	if len(rec) < 0xFF {
		tlv = append([]byte{0x03, byte(len(rec))}, rec...)
	} else {
		tlv = append([]byte{0x03, 0xFF, byte(len(rec) >> 8), byte(len(rec))}, rec...)
	}
	return append(tlv, 0xFE), nil
}

var errNoURI = errors.New("nfc: no URI record")

// parseNDEFURI finds the first NDEF message TLV in a Type 2 tag's data
// area and returns its first record's URI.
func parseNDEFURI(area []byte) (string, error) {
	for p := area; len(p) > 0; {
		t := p[0]
		switch t {
		case 0x00:
			p = p[1:]
			continue
		case 0xFE:
			return "", errNoURI
		}
		if len(p) < 2 {
			return "", errNoURI
		}
		l, h := int(p[1]), 2
		if p[1] == 0xFF {
			if len(p) < 4 {
				return "", errNoURI
			}
			l, h = int(p[2])<<8|int(p[3]), 4
		}
		if len(p) < h+l {
			return "", errNoURI
		}
		v := p[h : h+l]
		if t != 0x03 {
			p = p[h+l:]
			continue
		}
		// One short well-known record of type "U".
		if len(v) < 5 || v[0]&0x1F != 0x11 || v[1] != 1 || v[3] != 'U' || len(v) < 4+int(v[2]) || v[2] == 0 {
			return "", errNoURI
		}
		pl := v[4 : 4+int(v[2])]
		prefix := ""
		if int(pl[0]) < len(uriPrefixes) {
			prefix = uriPrefixes[pl[0]]
		}
		return prefix + string(pl[1:]), nil
	}
	return "", errNoURI
}
