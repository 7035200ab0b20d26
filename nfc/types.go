package nfc

import (
	"bytes"
	"fmt"
)

// CardType describes a card model: its name and where its user memory is,
// in 4-byte pages.
type CardType struct {
	// Name is the model's name, e.g. "NTAG215".
	Name string
	// UserStart is the first page of user memory; UserEnd the page after
	// the last one. Both are 0 for a card whose memory is unknown.
	UserStart, UserEnd int
	// NDEF is true for cards that carry an NFC Forum capability container
	// (page 3) and so can hold an NDEF message a phone reads.
	NDEF bool
}

// The card types venues buy. The user memory sizes are the data sheets'.
var (
	NTAG213 = CardType{Name: "NTAG213", UserStart: 4, UserEnd: 40, NDEF: true}  // 144 bytes
	NTAG215 = CardType{Name: "NTAG215", UserStart: 4, UserEnd: 130, NDEF: true} // 504 bytes
	NTAG216 = CardType{Name: "NTAG216", UserStart: 4, UserEnd: 226, NDEF: true} // 888 bytes
	// UltralightEV1 48 bytes (MF0UL11) and 128 bytes (MF0UL21).
	UltralightEV1_48  = CardType{Name: "MIFARE Ultralight EV1 (MF0UL11)", UserStart: 4, UserEnd: 16}
	UltralightEV1_128 = CardType{Name: "MIFARE Ultralight EV1 (MF0UL21)", UserStart: 4, UserEnd: 36}
	UltralightC       = CardType{Name: "MIFARE Ultralight C", UserStart: 4, UserEnd: 40} // 144 bytes
	Ultralight        = CardType{Name: "MIFARE Ultralight", UserStart: 4, UserEnd: 16}   // 48 bytes
	// UnknownCard is a card whose model the reader could not tell: only
	// its UID is used.
	UnknownCard = CardType{Name: "unknown"}
)

// UserBytes is the size of the user memory in bytes.
func (t CardType) UserBytes() int { return 4 * (t.UserEnd - t.UserStart) }

// Known reports whether the card's memory layout is known.
func (t CardType) Known() bool { return t.UserEnd > t.UserStart }

// String returns the type's name.
func (t CardType) String() string { return t.Name }

// TypeFromVersion identifies a card from its GET_VERSION answer (8 bytes:
// header, vendor, type, subtype, major, minor, storage size, protocol).
func TypeFromVersion(v []byte) (CardType, error) {
	if len(v) != 8 {
		return UnknownCard, fmt.Errorf("nfc: GET_VERSION answer of %d bytes, want 8", len(v))
	}
	if v[1] != 0x04 { // NXP
		return UnknownCard, fmt.Errorf("nfc: GET_VERSION vendor %#02x is not NXP", v[1])
	}
	switch {
	case v[2] == 0x04 && v[6] == 0x0F:
		return NTAG213, nil
	case v[2] == 0x04 && v[6] == 0x11:
		return NTAG215, nil
	case v[2] == 0x04 && v[6] == 0x13:
		return NTAG216, nil
	case v[2] == 0x03 && v[6] == 0x0B:
		return UltralightEV1_48, nil
	case v[2] == 0x03 && v[6] == 0x0E:
		return UltralightEV1_128, nil
	}
	return UnknownCard, fmt.Errorf("nfc: unknown card version % X", v)
}

// Version answers of the supported types (NXP data sheets), used by the
// simulated and emulated cards.
var (
	VersionNTAG213 = []byte{0x00, 0x04, 0x04, 0x02, 0x01, 0x00, 0x0F, 0x03}
	VersionNTAG215 = []byte{0x00, 0x04, 0x04, 0x02, 0x01, 0x00, 0x11, 0x03}
	VersionNTAG216 = []byte{0x00, 0x04, 0x04, 0x02, 0x01, 0x00, 0x13, 0x03}
	VersionUL11    = []byte{0x00, 0x04, 0x03, 0x01, 0x01, 0x00, 0x0B, 0x03}
	VersionUL21    = []byte{0x00, 0x04, 0x03, 0x01, 0x01, 0x00, 0x0E, 0x03}
)

// versionOf returns the GET_VERSION answer of a type (nil for types
// without GET_VERSION: Ultralight, Ultralight C).
func versionOf(t CardType) []byte {
	for _, c := range []struct {
		t CardType
		v []byte
	}{{NTAG213, VersionNTAG213}, {NTAG215, VersionNTAG215}, {NTAG216, VersionNTAG216}, {UltralightEV1_48, VersionUL11}, {UltralightEV1_128, VersionUL21}} {
		if c.t == t {
			return c.v
		}
	}
	return nil
}

// ATR card names of PC/SC part 3 (storage cards, ISO 14443 A part 3).
const (
	atrNameUltralight  = 0x0003 // MIFARE Ultralight, NTAG21x
	atrNameUltralightC = 0x003A
)

// pcscStorageATR is the prefix of a PC/SC part 3 storage-card ATR up to
// the RID: 3B 8x 80 01 80 4F len A0 00 00 03 06, then the standard byte and
// the card name (2 bytes).
var pcscRID = []byte{0xA0, 0x00, 0x00, 0x03, 0x06}

// atrCardName returns the PC/SC part 3 card name of a contactless storage
// card's ATR, or 0 if the ATR is not of that form.
func atrCardName(atr []byte) uint16 {
	i := bytes.Index(atr, pcscRID)
	if i < 0 || len(atr) < i+len(pcscRID)+3 {
		return 0
	}
	p := atr[i+len(pcscRID):]
	return uint16(p[1])<<8 | uint16(p[2])
}

// ATRUltralight is the ATR a PC/SC reader makes for an NTAG21x or MIFARE
// Ultralight (PC/SC part 3, card name 0x0003).
var ATRUltralight = withTCK([]byte{0x3B, 0x8F, 0x80, 0x01, 0x80, 0x4F, 0x0C, 0xA0, 0x00, 0x00, 0x03, 0x06, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00})

// withTCK appends the ATR's check byte (XOR of T0 to the last byte).
func withTCK(atr []byte) []byte {
	var x byte
	for _, b := range atr[1:] {
		x ^= b
	}
	return append(atr, x)
}
