package node

import (
	"sync"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
)

// Taps: cards presented to the readers attached to a node. A reader loop
// (nfc: PC/SC or simulated) publishes each tap; the point of sale page
// subscribes (server-sent events) and API callers wait for the next one.
// Tests publish taps directly.

// Tap is one card presented to a reader of this node.
type Tap struct {
	// Card is the card's UID.
	Card crdt.CardID `json:"card"`
	// CardType names the card type when the reader knows it (e.g.
	// "NTAG215"); empty otherwise.
	CardType string `json:"card_type,omitempty"`
	// Stamp is the signed stamp read from the card (crdt.StampSize
	// bytes), nil if the card carries none or the reader cannot read it.
	Stamp []byte `json:"stamp,omitempty"`
	// Reader names the reader the card was presented to.
	Reader string `json:"reader,omitempty"`
	// At is when the tap happened.
	At time.Time `json:"at"`
}

// tapBuffer is how many taps a slow subscriber may fall behind by before
// it misses some (a till that stops reading must not block the reader).
const tapBuffer = 16

// TapHub fans taps out to subscribers. The zero value is ready to use and
// it is safe for concurrent use.
type TapHub struct {
	mu   sync.Mutex
	subs map[chan Tap]struct{}
}

// Publish delivers t to every subscriber that has room for it.
func (h *TapHub) Publish(t Tap) {
	if t.At.IsZero() {
		t.At = time.Now()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- t:
		default: // a subscriber that does not read misses the tap
		}
	}
}

// Subscribe returns a channel of the taps published from now on and a
// function that ends the subscription (and closes the channel).
func (h *TapHub) Subscribe() (<-chan Tap, func()) {
	ch := make(chan Tap, tapBuffer)
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[chan Tap]struct{}{}
	}
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			h.mu.Lock()
			delete(h.subs, ch)
			h.mu.Unlock()
			close(ch)
		})
	}
}

// Taps returns the node's tap hub.
func (n *Node) Taps() *TapHub { return &n.taps }
