package nfc

import (
	"context"
	"errors"

	"github.com/cagnotte/cagnotte/crdt"
)

// Reader is one card reader, whatever its kind (PC/SC, simulated).
type Reader interface {
	// Name names the reader (e.g. "ACS ACR122U PICC Interface 00 00").
	Name() string
	// Wait blocks until a card is presented, or ctx ends, and returns a
	// session with it. A card already on the reader counts as presented,
	// once: after a Card is closed, Wait waits for the next card.
	Wait(ctx context.Context) (Card, error)
	// Close releases the reader; a Wait in progress returns.
	Close() error
}

// Card is a card presented to a reader, for as long as it stays there.
type Card interface {
	// UID returns the card's UID.
	UID() crdt.CardID
	// Type returns the card's model (UnknownCard when the reader cannot
	// tell it).
	Type() CardType
	// Read returns count pages (4 bytes each) from page on.
	Read(ctx context.Context, page, count int) ([]byte, error)
	// Write writes data (a multiple of 4 bytes) from page on.
	Write(ctx context.Context, page int, data []byte) error
	// Removed blocks until the card has left the reader, or ctx ends.
	Removed(ctx context.Context) error
	// Close ends the session; the card may stay on the reader.
	Close() error
}

// Errors a reader reports. Check them with errors.Is.
var (
	// ErrCardRemoved: the card left the reader during an operation.
	ErrCardRemoved = errors.New("nfc: the card was removed")
	// ErrReaderGone: the reader was unplugged, or the PC/SC service
	// stopped.
	ErrReaderGone = errors.New("nfc: the reader is not available")
	// ErrNoStamp: the card carries no valid stamp.
	ErrNoStamp = errors.New("nfc: no valid stamp on the card")
	// ErrNotWritable: the card has no room for a stamp (its model is
	// unknown or its memory too small).
	ErrNotWritable = errors.New("nfc: the card has no room for a stamp")
	// ErrVerify: what was read back after a write is not what was written.
	ErrVerify = errors.New("nfc: the write did not verify")
	// ErrClosed: the reader was closed.
	ErrClosed = errors.New("nfc: reader closed")
	// ErrNoCGO: the PC/SC reader needs a build with cgo.
	ErrNoCGO = errors.New("nfc: PC/SC needs cgo (this binary was built with CGO_ENABLED=0); rebuild with cgo and libpcsclite-dev")
)
