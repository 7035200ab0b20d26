//go:build cgo

package nfc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ebfe/scard"
)

// PCSC is a reader driven by pcsc-lite (pcscd) through ebfe/scard: any
// CCID contactless reader (ACR1252U…) and the ACR122U. It survives the
// reader being unplugged and plugged back and pcscd restarting: Wait logs
// what happened and keeps waiting. It uses two PC/SC contexts, one to
// watch the reader and one for the card, because pcsc-lite serialises the
// calls of one context and a status wait would delay the card's APDUs.
type PCSC struct {
	cfg PCSCConfig

	mu       sync.Mutex
	mon      *scard.Context // status changes
	cardCtx  *scard.Context // connect and transmit
	name     string         // the reader found, "" while none
	lastSeen uint32         // pcsc-lite's event counter of the card delivered last
	taken    bool           // a card was delivered and has not left yet
	closed   bool
	lost     bool // logged that the reader or pcscd is gone
}

// OpenPCSC connects to pcscd. It fails with a clear message when pcscd is
// not running; the reader itself may be plugged in later.
func OpenPCSC(cfg PCSCConfig) (*PCSC, error) {
	cfg.setDefaults()
	r := &PCSC{cfg: cfg}
	if err := r.establish(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *PCSC) establish() error {
	mon, err := scard.EstablishContext()
	if err != nil {
		return fmt.Errorf("%w: PC/SC service: %v (is pcscd running? `systemctl status pcscd.socket`)", ErrReaderGone, err)
	}
	cc, err := scard.EstablishContext()
	if err != nil {
		mon.Release()
		return fmt.Errorf("%w: PC/SC service: %v", ErrReaderGone, err)
	}
	r.mon, r.cardCtx = mon, cc
	return nil
}

func (r *PCSC) release() {
	if r.mon != nil {
		r.mon.Release()
		r.mon = nil
	}
	if r.cardCtx != nil {
		r.cardCtx.Release()
		r.cardCtx = nil
	}
	r.name = ""
}

// ListReaders lists the readers pcscd knows.
func ListReaders(ctx context.Context) ([]string, error) {
	c, err := scard.EstablishContext()
	if err != nil {
		return nil, fmt.Errorf("%w: PC/SC service: %v (is pcscd running?)", ErrReaderGone, err)
	}
	defer c.Release()
	names, err := c.ListReaders()
	if errors.Is(err, scard.ErrNoReadersAvailable) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("nfc: list readers: %w", err)
	}
	return names, nil
}

// Name returns the PC/SC name of the reader in use (or the configured
// prefix while it is not plugged in).
func (r *PCSC) Name() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.name != "" {
		return r.name
	}
	if r.cfg.Reader != "" {
		return r.cfg.Reader
	}
	return "PC/SC"
}

// Close releases the PC/SC contexts; a Wait in progress returns ErrClosed.
func (r *PCSC) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if r.mon != nil {
		r.mon.Cancel()
	}
	r.release()
	return nil
}

// gone reports an error that means pcscd or the reader went away.
func gone(err error) bool {
	switch {
	case errors.Is(err, scard.ErrNoService), errors.Is(err, scard.ErrServiceStopped),
		errors.Is(err, scard.ErrInvalidHandle), errors.Is(err, scard.ErrUnknownReader),
		errors.Is(err, scard.ErrReaderUnavailable), errors.Is(err, scard.ErrNoReadersAvailable),
		errors.Is(err, scard.ErrCommError), errors.Is(err, scard.ErrInternalError):
		return true
	}
	return false
}

// cardGone reports an error that means the card left.
func cardGone(err error) bool {
	switch {
	case errors.Is(err, scard.ErrRemovedCard), errors.Is(err, scard.ErrNoSmartcard),
		errors.Is(err, scard.ErrResetCard), errors.Is(err, scard.ErrUnpoweredCard),
		errors.Is(err, scard.ErrUnresponsiveCard):
		return true
	}
	return false
}

// mapErr turns a PC/SC error into ErrCardRemoved or ErrReaderGone where it
// means that, keeping the PC/SC error in the message.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case cardGone(err):
		return fmt.Errorf("%w (%v)", ErrCardRemoved, err)
	case gone(err):
		return fmt.Errorf("%w (%v)", ErrReaderGone, err)
	}
	return err
}

// resolve finds the reader to use, re-establishing the PC/SC contexts
// after pcscd restarted. Caller holds mu.
func (r *PCSC) resolve() error {
	if r.closed {
		return ErrClosed
	}
	if r.mon == nil {
		if err := r.establish(); err != nil {
			return err
		}
	}
	if r.name != "" {
		return nil
	}
	names, err := r.mon.ListReaders()
	if err != nil {
		if gone(err) && !errors.Is(err, scard.ErrNoReadersAvailable) {
			r.release()
		}
		return fmt.Errorf("%w: %v", ErrReaderGone, err)
	}
	for _, n := range names {
		if r.cfg.Reader == "" || strings.HasPrefix(n, r.cfg.Reader) {
			r.name = n
			return nil
		}
	}
	return fmt.Errorf("%w: no reader named %q among %q", ErrReaderGone, r.cfg.Reader, names)
}

func (r *PCSC) logLost(err error) {
	if !r.lost {
		r.lost = true
		r.cfg.Logger.Warn("nfc reader not available; waiting for it", "reader", r.cfg.Reader, "err", err)
	}
}

func (r *PCSC) logBack() {
	if r.lost {
		r.lost = false
		r.cfg.Logger.Info("nfc reader available", "reader", r.name)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Wait waits for a card and connects to it (exclusively: no other program
// talks to the card while the node holds it).
func (r *PCSC) Wait(ctx context.Context) (Card, error) {
	state := scard.StateUnaware
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r.mu.Lock()
		err := r.resolve()
		mon, name := r.mon, r.name
		r.mu.Unlock()
		if errors.Is(err, ErrClosed) {
			return nil, err
		}
		if err != nil {
			r.mu.Lock()
			r.logLost(err)
			r.mu.Unlock()
			if err := sleepCtx(ctx, r.cfg.Retry); err != nil {
				return nil, err
			}
			continue
		}
		rs := []scard.ReaderState{{Reader: name, CurrentState: state}}
		err = mon.GetStatusChange(rs, r.cfg.Poll)
		switch {
		case errors.Is(err, scard.ErrTimeout):
			continue
		case errors.Is(err, scard.ErrCancelled):
			return nil, ErrClosed
		case err != nil:
			r.mu.Lock()
			r.logLost(err)
			if gone(err) {
				if errors.Is(err, scard.ErrUnknownReader) || errors.Is(err, scard.ErrReaderUnavailable) {
					r.name = "" // unplugged: look for it again
				} else {
					r.release() // pcscd restarted: new contexts
				}
			}
			r.mu.Unlock()
			state = scard.StateUnaware
			if err := sleepCtx(ctx, r.cfg.Retry); err != nil {
				return nil, err
			}
			continue
		}
		ev := rs[0].EventState
		state = ev &^ scard.StateChanged
		r.mu.Lock()
		r.logBack()
		counter := uint32(ev) >> 16
		if ev&scard.StateEmpty != 0 {
			r.taken = false
		}
		fresh := ev&scard.StatePresent != 0 && ev&scard.StateMute == 0 && (!r.taken || counter != r.lastSeen)
		r.mu.Unlock()
		if !fresh {
			continue
		}
		c, err := r.connect(ctx, name)
		if err != nil {
			if errors.Is(err, ErrCardRemoved) {
				continue
			}
			return nil, err
		}
		r.mu.Lock()
		r.taken, r.lastSeen = true, counter
		r.mu.Unlock()
		return c, nil
	}
}

func (r *PCSC) connect(ctx context.Context, name string) (Card, error) {
	r.mu.Lock()
	cc := r.cardCtx
	r.mu.Unlock()
	if cc == nil {
		return nil, ErrReaderGone
	}
	h, err := cc.Connect(name, scard.ShareExclusive, scard.ProtocolAny)
	if err != nil {
		if errors.Is(err, scard.ErrSharingViolation) {
			return nil, fmt.Errorf("nfc: reader %s is in use by another program (a running node holds it): %w", name, err)
		}
		return nil, fmt.Errorf("nfc: connect to the card on %s: %w", name, mapErr(err))
	}
	st, err := h.Status()
	if err != nil {
		h.Disconnect(scard.LeaveCard)
		return nil, fmt.Errorf("nfc: card status: %w", mapErr(err))
	}
	link := &pcscLink{h: h}
	reset := func() error { return mapErr(h.Reconnect(scard.ShareExclusive, scard.ProtocolAny, scard.ResetCard)) }
	uid, typ, err := Identify(ctx, link, KindOf(name), st.Atr, reset)
	if err != nil {
		h.Disconnect(scard.LeaveCard)
		return nil, err
	}
	return &pcscCard{apduCard: apduCard{t: link, uid: uid, typ: typ}, r: r, h: h, name: name, atr: st.Atr}, nil
}

// pcscLink transmits APDUs to a connected card.
type pcscLink struct {
	mu sync.Mutex
	h  *scard.Card
}

func (l *pcscLink) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	r, err := l.h.Transmit(cmd)
	return r, mapErr(err)
}

type pcscCard struct {
	apduCard
	r    *PCSC
	h    *scard.Card
	name string
	atr  []byte
	once sync.Once
}

// ATR returns the card's ATR as the reader made it.
func (c *pcscCard) ATR() []byte { return c.atr }

// Removed waits until the reader reports no card, the reader is gone or
// pcscd stopped (the card is no longer reachable in all three cases).
func (c *pcscCard) Removed(ctx context.Context) error {
	state := scard.StateUnaware
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		c.r.mu.Lock()
		mon := c.r.mon
		closed := c.r.closed
		c.r.mu.Unlock()
		if closed || mon == nil {
			return nil
		}
		rs := []scard.ReaderState{{Reader: c.name, CurrentState: state}}
		err := mon.GetStatusChange(rs, c.r.cfg.Poll)
		switch {
		case errors.Is(err, scard.ErrTimeout):
			continue
		case err != nil:
			return nil
		}
		ev := rs[0].EventState
		c.r.mu.Lock()
		swapped := uint32(ev)>>16 != c.r.lastSeen
		c.r.mu.Unlock()
		if ev&scard.StatePresent == 0 || ev&scard.StateEmpty != 0 || swapped {
			c.r.mu.Lock()
			c.r.taken = false
			c.r.mu.Unlock()
			return nil
		}
		state = ev &^ scard.StateChanged
	}
}

// Close disconnects from the card, leaving it as it is.
func (c *pcscCard) Close() error {
	var err error
	c.once.Do(func() { err = c.h.Disconnect(scard.LeaveCard) })
	if cardGone(err) || gone(err) {
		return nil
	}
	return err
}

var _ Reader = (*PCSC)(nil)
