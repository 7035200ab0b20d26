//go:build !cgo

package nfc

import "context"

// PCSC is the PC/SC reader; this build has no cgo, so it cannot be opened.
type PCSC struct{}

// OpenPCSC returns ErrNoCGO: PC/SC needs cgo and libpcsclite.
func OpenPCSC(cfg PCSCConfig) (*PCSC, error) { return nil, ErrNoCGO }

// ListReaders returns ErrNoCGO: PC/SC needs cgo and libpcsclite.
func ListReaders(ctx context.Context) ([]string, error) { return nil, ErrNoCGO }

// Name returns "".
func (r *PCSC) Name() string { return "" }

// Wait returns ErrNoCGO.
func (r *PCSC) Wait(ctx context.Context) (Card, error) { return nil, ErrNoCGO }

// Close does nothing.
func (r *PCSC) Close() error { return nil }

var _ Reader = (*PCSC)(nil)
