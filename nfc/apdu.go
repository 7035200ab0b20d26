package nfc

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/cagnotte/cagnotte/crdt"
)

// The APDU layer: the pseudo-APDUs of PC/SC part 3 that CCID readers
// understand for contactless storage cards, and the ACR122U's direct
// transmit to its PN532 for what part 3 lacks (GET_VERSION).

// Transmitter sends one command APDU and returns the response APDU with
// its status word. The PC/SC card, the simulated card and recorded
// answers in tests implement it.
type Transmitter interface {
	Transmit(ctx context.Context, cmd []byte) ([]byte, error)
}

// ReaderKind selects how a reader reaches what PC/SC part 3 lacks.
type ReaderKind int

const (
	// GenericCCID speaks PC/SC part 3 only (transparent exchange for
	// GET_VERSION).
	GenericCCID ReaderKind = iota
	// ACR122U uses the PN532's InCommunicateThru through the reader's
	// direct transmit (FF 00 00 00).
	ACR122U
)

// KindOf guesses a reader's kind from its PC/SC name.
func KindOf(name string) ReaderKind {
	if strings.Contains(strings.ToUpper(name), "ACR122") {
		return ACR122U
	}
	return GenericCCID
}

// StatusError is a status word other than 90 00.
type StatusError struct {
	SW      uint16
	Command string
}

// Error says what the status word means.
func (e *StatusError) Error() string {
	return fmt.Sprintf("nfc: %s: status %04X (%s)", e.Command, e.SW, swMeaning(e.SW))
}

// Is lets errors.Is(err, ErrCardRemoved) match the status words readers
// answer when the card has gone.
func (e *StatusError) Is(target error) bool {
	return target == ErrCardRemoved && (e.SW == 0x6F00 || e.SW == 0x6401)
}

func swMeaning(sw uint16) string {
	switch {
	case sw == 0x9000:
		return "success"
	case sw == 0x6300:
		return "the operation failed (the card did not answer or refused it)"
	case sw&0xFF00 == 0x6200 || sw&0xFF00 == 0x6300:
		return "warning: the card's memory may have changed"
	case sw == 0x6400 || sw == 0x6401:
		return "execution error: the card did not answer (removed?)"
	case sw == 0x6581:
		return "memory failure"
	case sw&0xFF00 == 0x6700:
		return "wrong length"
	case sw == 0x6981:
		return "command incompatible with the card"
	case sw == 0x6982:
		return "security status not satisfied (page locked or protected)"
	case sw == 0x6986:
		return "command not allowed"
	case sw == 0x6A81:
		return "function not supported by the reader"
	case sw == 0x6A82:
		return "address out of the card's memory"
	case sw&0xFF00 == 0x6B00:
		return "wrong parameters P1-P2 (page out of range)"
	case sw&0xFF00 == 0x6C00:
		return "wrong Le"
	case sw == 0x6D00:
		return "instruction not supported"
	case sw == 0x6E00:
		return "class not supported"
	case sw == 0x6F00:
		return "no precise diagnosis (the card may have left)"
	}
	return "unknown status word"
}

// exchange transmits cmd and splits the answer into data and status.
func exchange(ctx context.Context, t Transmitter, name string, cmd []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r, err := t.Transmit(ctx, cmd)
	if err != nil {
		return nil, fmt.Errorf("nfc: %s: %w", name, err)
	}
	if len(r) == 0 { // the reader got nothing from the card (vpcd: the card left)
		return nil, fmt.Errorf("nfc: %s: no answer: %w", name, ErrCardRemoved)
	}
	if len(r) < 2 {
		return nil, fmt.Errorf("nfc: %s: answer of %d bytes", name, len(r))
	}
	sw := uint16(r[len(r)-2])<<8 | uint16(r[len(r)-1])
	if sw != 0x9000 {
		return nil, &StatusError{SW: sw, Command: name}
	}
	return r[:len(r)-2], nil
}

// GetUID reads the card's UID (FF CA 00 00 00).
func GetUID(ctx context.Context, t Transmitter) (crdt.CardID, error) {
	d, err := exchange(ctx, t, "get UID", []byte{0xFF, 0xCA, 0x00, 0x00, 0x00})
	if err != nil {
		return "", err
	}
	id, err := crdt.ParseCardID(hex.EncodeToString(d))
	if err != nil {
		return "", fmt.Errorf("nfc: get UID: %w", err)
	}
	return id, nil
}

// ReadPages reads count pages from page on with READ BINARY (FF B0),
// 4 pages per APDU.
func ReadPages(ctx context.Context, t Transmitter, page, count int) ([]byte, error) {
	if page < 0 || count < 0 || page+count > 256 {
		return nil, fmt.Errorf("nfc: read pages %d+%d: out of range", page, count)
	}
	out := make([]byte, 0, 4*count)
	for count > 0 {
		n := min(count, 4)
		d, err := exchange(ctx, t, fmt.Sprintf("read page %d", page), []byte{0xFF, 0xB0, 0x00, byte(page), byte(4 * n)})
		if err != nil {
			return nil, err
		}
		if len(d) < 4*n {
			return nil, fmt.Errorf("nfc: read page %d: %d bytes, want %d", page, len(d), 4*n)
		}
		out = append(out, d[:4*n]...)
		page += n
		count -= n
	}
	return out, nil
}

// WritePages writes data (a multiple of 4 bytes) from page on with UPDATE
// BINARY (FF D6), one page per APDU as the cards require.
func WritePages(ctx context.Context, t Transmitter, page int, data []byte) error {
	if len(data)%4 != 0 || page < 0 || page+len(data)/4 > 256 {
		return fmt.Errorf("nfc: write %d bytes at page %d: not whole pages in range", len(data), page)
	}
	for i := 0; i < len(data); i += 4 {
		p := page + i/4
		cmd := append([]byte{0xFF, 0xD6, 0x00, byte(p), 0x04}, data[i:i+4]...)
		if _, err := exchange(ctx, t, fmt.Sprintf("write page %d", p), cmd); err != nil {
			return err
		}
	}
	return nil
}

// errNoVersion: the card or the reader does not answer GET_VERSION.
var errNoVersion = errors.New("nfc: no GET_VERSION answer")

// GetVersion sends the NTAG/Ultralight EV1 GET_VERSION command (60) to the
// card, through the ACR122U's PN532 or PC/SC part 3's transparent exchange.
func GetVersion(ctx context.Context, t Transmitter, kind ReaderKind) ([]byte, error) {
	if kind == ACR122U {
		// Direct transmit: InCommunicateThru (D4 42) 60.
		d, err := exchange(ctx, t, "GET_VERSION", []byte{0xFF, 0x00, 0x00, 0x00, 0x03, 0xD4, 0x42, 0x60})
		if err != nil {
			return nil, err
		}
		if len(d) < 3 || d[0] != 0xD5 || d[1] != 0x43 {
			return nil, fmt.Errorf("%w: PN532 answer % X", errNoVersion, d)
		}
		if d[2] != 0x00 {
			return nil, fmt.Errorf("%w: PN532 status %#02x (the card did not answer)", errNoVersion, d[2])
		}
		return d[3:], nil
	}
	// PC/SC part 3 transparent session: start, transceive, end.
	if _, err := exchange(ctx, t, "start transparent session", []byte{0xFF, 0xC2, 0x00, 0x00, 0x02, 0x81, 0x00}); err != nil {
		return nil, err
	}
	d, err := exchange(ctx, t, "GET_VERSION", []byte{0xFF, 0xC2, 0x00, 0x01, 0x03, 0x95, 0x01, 0x60})
	_, endErr := exchange(ctx, t, "end transparent session", []byte{0xFF, 0xC2, 0x00, 0x00, 0x02, 0x82, 0x00})
	if err != nil {
		return nil, err
	}
	var resp []byte
	for p := d; len(p) >= 2; {
		tag, l := p[0], int(p[1])
		if len(p) < 2+l {
			return nil, fmt.Errorf("%w: truncated data object in % X", errNoVersion, d)
		}
		v := p[2 : 2+l]
		switch tag {
		case 0xC0: // generic error status
			if l == 3 && (v[1] != 0x90 || v[2] != 0x00) {
				return nil, fmt.Errorf("%w: transparent exchange status % X", errNoVersion, v)
			}
		case 0x97: // ICC response
			resp = v
		}
		p = p[2+l:]
	}
	if resp == nil {
		return nil, fmt.Errorf("%w: no card response in % X", errNoVersion, d)
	}
	if endErr != nil {
		return nil, endErr
	}
	return resp, nil
}

// Identify reads a card's UID and tells its type from the ATR and
// GET_VERSION. reset re-activates the card after a GET_VERSION it did not
// understand (an NTAG or Ultralight that NAKs falls asleep); nil if the
// transmitter needs none.
func Identify(ctx context.Context, t Transmitter, kind ReaderKind, atr []byte, reset func() error) (crdt.CardID, CardType, error) {
	uid, err := GetUID(ctx, t)
	if err != nil {
		return "", UnknownCard, err
	}
	name := atrCardName(atr)
	if name == atrNameUltralightC {
		return uid, UltralightC, nil
	}
	if atr != nil && name != atrNameUltralight {
		return uid, UnknownCard, nil // not an Ultralight family card (a MIFARE Classic, a bank card…)
	}
	v, verr := GetVersion(ctx, t, kind)
	if verr == nil {
		typ, err := TypeFromVersion(v)
		return uid, typ, err
	}
	if errors.Is(verr, ErrCardRemoved) || ctx.Err() != nil {
		return uid, UnknownCard, verr
	}
	// No GET_VERSION: a first-generation Ultralight or an Ultralight C.
	if reset != nil {
		if err := reset(); err != nil {
			return uid, UnknownCard, fmt.Errorf("nfc: re-activate the card after GET_VERSION: %w", err)
		}
	}
	if _, err := ReadPages(ctx, t, 0x2B, 1); err == nil { // Ultralight C has 48 pages
		return uid, UltralightC, nil
	}
	if reset != nil {
		if err := reset(); err != nil {
			return uid, UnknownCard, fmt.Errorf("nfc: re-activate the card: %w", err)
		}
	}
	return uid, Ultralight, nil
}

// apduCard is a Card over a Transmitter; the reader kinds add Removed and
// Close.
type apduCard struct {
	t   Transmitter
	uid crdt.CardID
	typ CardType
}

func (c *apduCard) UID() crdt.CardID { return c.uid }
func (c *apduCard) Type() CardType   { return c.typ }
func (c *apduCard) Read(ctx context.Context, page, count int) ([]byte, error) {
	return ReadPages(ctx, c.t, page, count)
}
func (c *apduCard) Write(ctx context.Context, page int, data []byte) error {
	return WritePages(ctx, c.t, page, data)
}
