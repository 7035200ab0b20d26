// Package vpcd emulates contactless cards behind vsmartcard's virtual
// reader driver (Debian package vsmartcard-vpcd): pcscd loads the driver,
// which shows a reader ("Virtual PCD 00 00") and waits for a card
// emulator to connect to its TCP port (35963 by default, see
// /etc/reader.conf.d/vpcd); every APDU a PC/SC program sends to that
// reader is forwarded to the emulator. Card emulates an NTAG21x or MIFARE
// Ultralight (nfc.SimTag) behind a PC/SC reader, so nfc's PC/SC reader is
// tested through the real pcscd stack. Daemon starts a private pcscd for
// tests.
//
// The vpcd protocol (virtualsmartcard/src/vpcd/vpcd.c): every message, in
// both directions, is a 2-byte big-endian length and that many bytes. A
// 1-byte message from vpcd is a control: 0 power off, 1 power on, 2 reset
// (no answer), 4 get ATR (answered with the ATR). Anything longer is a
// command APDU, answered with the response APDU. The card is present while
// the connection is open: closing it removes the card.
package vpcd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/cagnotte/cagnotte/nfc"
)

// DefaultPort is vpcd's first slot's port in Debian's configuration.
const DefaultPort = 35963

// Control bytes of the vpcd protocol.
const (
	ctrlOff   = 0
	ctrlOn    = 1
	ctrlReset = 2
	ctrlATR   = 4
)

// maxMessage bounds a message from vpcd (an extended APDU).
const maxMessage = 0xFFFF

// Card is an emulated card inserted in a vpcd reader.
type Card struct {
	tag  *nfc.SimTag
	atr  []byte
	conn net.Conn
	done chan struct{}
	once sync.Once
	err  error
}

// Insert connects a card emulator for tag to vpcd at addr (host:port):
// the card is then present on the reader until Remove, or until the tag
// is pulled mid-write (nfc.SimTag.PullAfterWrites).
func Insert(ctx context.Context, addr string, tag *nfc.SimTag) (*Card, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("vpcd: connect to the virtual reader at %s (is pcscd running with vsmartcard-vpcd?): %w", addr, err)
	}
	c := &Card{tag: tag, atr: nfc.ATRUltralight, conn: conn, done: make(chan struct{})}
	go c.serve()
	return c, nil
}

// Done is closed when the card has left the reader.
func (c *Card) Done() <-chan struct{} { return c.done }

// Err returns why the card left (nil after Remove or a pull).
func (c *Card) Err() error {
	<-c.done
	return c.err
}

// Remove takes the card off the reader and waits for the emulator to stop.
func (c *Card) Remove() {
	c.once.Do(func() { c.conn.Close() })
	<-c.done
}

func (c *Card) serve() {
	defer close(c.done)
	defer c.once.Do(func() { c.conn.Close() })
	var hdr [2]byte
	buf := make([]byte, maxMessage)
	for {
		quickAck(c.conn)
		if _, err := io.ReadFull(c.conn, hdr[:]); err != nil {
			if !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
				c.err = err
			}
			return
		}
		n := int(binary.BigEndian.Uint16(hdr[:]))
		msg := buf[:n]
		quickAck(c.conn)
		if _, err := io.ReadFull(c.conn, msg); err != nil {
			c.err = err
			return
		}
		var out []byte
		switch {
		case n == 1 && (msg[0] == ctrlOff || msg[0] == ctrlOn || msg[0] == ctrlReset):
			continue
		case n == 1 && msg[0] == ctrlATR:
			out = c.atr
		case n == 1:
			c.err = fmt.Errorf("vpcd: unknown control %#02x", msg[0])
			return
		default:
			out = c.tag.APDU(msg)
			if out == nil { // pulled mid-write: the card is gone
				return
			}
		}
		frame := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(out)), uint16(len(out)))
		if _, err := c.conn.Write(append(frame, out...)); err != nil {
			c.err = err
			return
		}
	}
}
