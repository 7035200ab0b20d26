// Package nfc is Cagnotte's card reader layer: the Reader interface shared
// by every reader kind, the PC/SC reader (github.com/ebfe/scard, cgo and
// libpcsclite) for standard USB NFC readers (ACR122U, ACR1252U and other
// CCID readers), a simulated reader for the demo, the simulations and
// tests, the APDU layer they share, the layout of the card's memory (the
// signed stamp in two slots, the card holder's link as an NDEF URI record:
// see docs/nfc.md) and the UID normalisation keyboard-wedge readers need.
//
// A card is identified by its NFC UID in upper-case hex (crdt.CardID, 4 to
// 10 bytes); a writable card carries a signed stamp, crdt.CardStamp, of
// crdt.StampSize (120) bytes. The point of sale passes the stamp read from
// the card with a payment and writes back the stamp the node answers with
// (see docs/api.md): WriteStamp writes it into the slot that does not hold
// the current stamp, reads it back and verifies its signature, so a card
// pulled mid-write keeps its previous stamp (NTAG215/216).
package nfc
