package nfc

import (
	"log/slog"
	"time"
)

// PCSCConfig configures a PC/SC reader. Zero fields take the documented
// defaults.
type PCSCConfig struct {
	// Reader is the PC/SC name of the reader, or a prefix of it (e.g.
	// "ACS ACR122U"). Default "": the first reader pcscd lists.
	Reader string
	// Poll bounds each wait for a status change, so that a context
	// cancellation, an unplugged reader or a restarted pcscd is noticed
	// within it. Default 250 ms.
	Poll time.Duration
	// Retry is the pause before trying again when pcscd or the reader is
	// gone. Default 1 s.
	Retry time.Duration
	// Logger receives the reader's events (reader lost and back, pcscd
	// restarted). Default slog.Default().
	Logger *slog.Logger
}

func (c *PCSCConfig) setDefaults() {
	if c.Poll <= 0 {
		c.Poll = 250 * time.Millisecond
	}
	if c.Retry <= 0 {
		c.Retry = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}
