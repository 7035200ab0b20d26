// Package nfc is where Cagnotte's card readers live: the Reader interface,
// the PC/SC reader (ebfe/scard) that reads a card's UID and its stamp, a
// keyboard-wedge reader and a simulated reader. They arrive with the NFC
// issue; nothing here is used yet.
//
// What is already fixed for them: a card is identified by its NFC UID in
// upper-case hex (crdt.CardID, 4 to 10 bytes), and a writable card carries
// a signed stamp, crdt.CardStamp, of crdt.StampSize (120) bytes, which fits
// the 144-byte user memory of an NTAG213. The point of sale passes the stamp
// read from the card with a payment and writes back the stamp the node
// answers with (see docs/api.md).
package nfc
