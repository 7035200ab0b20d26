package nfc

import (
	"encoding/hex"
	"fmt"
	"math/big"
	"slices"
	"strings"

	"github.com/cagnotte/cagnotte/crdt"
)

// Keyboard-wedge readers type the UID as keystrokes, in the format their
// firmware was set to: hex with or without separators, or a decimal
// number, in the card's byte order or reversed (many print the first 4
// bytes as a little-endian integer). The point of sale page configures the
// format of its reader and normalises what it types with ParseWedgeUID.

// WedgeFormat is how a keyboard-wedge reader types a UID.
type WedgeFormat struct {
	// Decimal: the UID is a decimal number (else hex).
	Decimal bool
	// Reversed: the bytes come last-first.
	Reversed bool
	// Bytes is the UID's length for decimal formats (the number drops
	// leading zero bytes); 0 takes the number's minimal length, at least
	// 4 bytes.
	Bytes int
}

// The formats met on the market's wedge readers.
var (
	WedgeHex             = WedgeFormat{}
	WedgeHexReversed     = WedgeFormat{Reversed: true}
	WedgeDecimal         = WedgeFormat{Decimal: true}
	WedgeDecimalReversed = WedgeFormat{Decimal: true, Reversed: true}
)

// maxWedgeInput bounds what is parsed (a 10-byte UID in decimal is 25
// digits; with separators in hex, 29 characters).
const maxWedgeInput = 64

// ParseWedgeUID turns what a keyboard-wedge reader typed into the card's
// UID (crdt.CardID: upper-case hex in the card's byte order). Spaces,
// colons, dashes and a trailing newline are ignored in hex input; a "0x"
// prefix is accepted.
func ParseWedgeUID(s string, f WedgeFormat) (crdt.CardID, error) {
	s = strings.TrimSpace(s)
	if len(s) == 0 || len(s) > maxWedgeInput {
		return "", fmt.Errorf("nfc: wedge UID: %d characters, want 1 to %d", len(s), maxWedgeInput)
	}
	var b []byte
	if f.Decimal {
		n, ok := new(big.Int).SetString(s, 10)
		if !ok || n.Sign() < 0 {
			return "", fmt.Errorf("nfc: wedge UID %q is not a decimal number", s)
		}
		b = n.Bytes()
		size := f.Bytes
		if size == 0 {
			size = max(len(b), crdt.MinCardBytes)
		}
		if len(b) > size {
			return "", fmt.Errorf("nfc: wedge UID %q does not fit %d bytes", s, size)
		}
		b = append(make([]byte, size-len(b)), b...)
	} else {
		h := strings.NewReplacer(" ", "", ":", "", "-", "").Replace(s)
		h = strings.TrimPrefix(strings.TrimPrefix(h, "0x"), "0X")
		var err error
		if b, err = hex.DecodeString(h); err != nil {
			return "", fmt.Errorf("nfc: wedge UID %q is not hex: %w", s, err)
		}
	}
	if f.Reversed {
		slices.Reverse(b)
	}
	id, err := crdt.ParseCardID(hex.EncodeToString(b))
	if err != nil {
		return "", fmt.Errorf("nfc: wedge UID %q: %w", s, err)
	}
	return id, nil
}

// FormatWedgeUID is the inverse of ParseWedgeUID without separators: what
// a reader set to f types for card (used to configure and test a reader).
func FormatWedgeUID(card crdt.CardID, f WedgeFormat) (string, error) {
	b, err := hex.DecodeString(string(card))
	if err != nil {
		return "", fmt.Errorf("nfc: bad card id %q: %w", card, err)
	}
	if f.Reversed {
		slices.Reverse(b)
	}
	if f.Decimal {
		return new(big.Int).SetBytes(b).String(), nil
	}
	return strings.ToUpper(hex.EncodeToString(b)), nil
}
