package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/nfc"
)

// The reader loop: every reader of Config.Readers is watched by one
// goroutine that waits for a card, reads its stamp, publishes the tap
// (TapHub) and keeps the card at hand until it leaves the reader, so that
// the stamp of the payment it paid can be written back (WriteStamp).

// tapRing is how many recent taps the SSE stream replays to a client that
// reconnects (Last-Event-ID).
const tapRing = 32

// readerRetry is the pause after a reader error before waiting again.
const readerRetry = time.Second

// ErrCardNotPresent: the card is not on any reader of this node.
var ErrCardNotPresent = errors.New("node: the card is not on a reader of this node")

// ErrNotOwnStamp: a stamp to write that this node did not sign.
var ErrNotOwnStamp = errors.New("node: the stamp was not signed by this node")

// nfcState is the node's view of its readers.
type nfcState struct {
	mu      sync.Mutex
	readers []nfc.Reader
	present map[string]*presentCard // by reader name
	changed chan struct{}           // closed and replaced when present changes
	seq     uint64                  // taps recorded
	ring    []seqTap
	sim     *nfc.SimCards // when Config.SimCards is nil
	closing chan struct{} // closed when the HTTP server shuts down
}

// closingCh returns a channel closed when the node's HTTP server begins
// to shut down (long requests end then, not at the shutdown's deadline).
func (s *nfcState) closingCh() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing == nil {
		s.closing = make(chan struct{})
	}
	return s.closing
}

type seqTap struct {
	seq uint64
	tap Tap
}

// presentCard is a card on a reader; mu serialises what is done with it.
type presentCard struct {
	mu    sync.Mutex
	card  nfc.Card
	tap   Tap
	slots []nfc.Slot // the card's stamp slots as last read or written; nil: unknown
}

func (s *nfcState) broadcast() {
	if s.changed != nil {
		close(s.changed)
	}
	s.changed = make(chan struct{})
}

// watch returns a channel closed at the next change of the present cards.
func (s *nfcState) watch() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return s.changed
}

// startReaders starts one loop per configured reader; they stop with ctx
// and close their reader.
func (n *Node) startReaders(ctx context.Context) {
	n.nfcs.mu.Lock()
	n.nfcs.readers = n.cfg.Readers
	n.nfcs.present = map[string]*presentCard{}
	n.nfcs.mu.Unlock()
	n.nfcs.closingCh()
	var once sync.Once
	n.httpSrv.RegisterOnShutdown(func() { once.Do(func() { close(n.nfcs.closing) }) })
	for _, r := range n.cfg.Readers {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			defer r.Close()
			n.readerLoop(ctx, r)
		}()
	}
}

func (n *Node) readerLoop(ctx context.Context, r nfc.Reader) {
	log := n.log.With("reader", r.Name())
	log.Info("nfc reader loop started")
	lastErr := ""
	for {
		c, err := r.Wait(ctx)
		if ctx.Err() != nil || errors.Is(err, nfc.ErrClosed) {
			return
		}
		if err != nil {
			if msg := err.Error(); msg != lastErr { // once per kind of trouble
				log.Warn("nfc reader: no card read", "err", err)
				lastErr = msg
			}
			t := time.NewTimer(readerRetry)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		lastErr = ""
		n.cardPresented(ctx, r, c)
	}
}

// cardPresented reads the card's stamp, publishes the tap and holds the
// card until it leaves.
func (n *Node) cardPresented(ctx context.Context, r nfc.Reader, c nfc.Card) {
	defer c.Close()
	tap := Tap{Card: c.UID(), CardType: c.Type().Name, Reader: r.Name(), At: n.cfg.Now()}
	slots, err := nfc.ReadSlots(ctx, c)
	if err == nil {
		var stamp []byte
		if stamp, err = nfc.CurrentStamp(slots); err == nil {
			tap.Stamp = stamp
		}
	}
	switch {
	case err == nil, errors.Is(err, nfc.ErrNoStamp):
	default:
		// The UID is known: the tap stands, without the card's memory.
		n.log.Warn("nfc: the card's stamp could not be read", "reader", r.Name(), "card", tap.Card, "err", err)
	}
	pc := &presentCard{card: c, tap: tap, slots: slots}
	n.nfcs.mu.Lock()
	n.nfcs.present[r.Name()] = pc
	n.nfcs.seq++
	n.nfcs.ring = append(n.nfcs.ring, seqTap{seq: n.nfcs.seq, tap: tap})
	if len(n.nfcs.ring) > tapRing {
		n.nfcs.ring = n.nfcs.ring[len(n.nfcs.ring)-tapRing:]
	}
	n.nfcs.broadcast()
	n.nfcs.mu.Unlock()
	n.log.Debug("nfc: card presented", "reader", r.Name(), "card", tap.Card, "type", tap.CardType, "stamp", tap.Stamp != nil)
	n.taps.Publish(tap)

	err = c.Removed(ctx)
	n.nfcs.mu.Lock()
	if n.nfcs.present[r.Name()] == pc {
		delete(n.nfcs.present, r.Name())
		n.nfcs.broadcast()
	}
	n.nfcs.mu.Unlock()
	// Wait for an operation in progress on the card to end before closing.
	pc.mu.Lock()
	pc.mu.Unlock()
	if err != nil && ctx.Err() == nil {
		n.log.Warn("nfc: waiting for the card to leave", "reader", r.Name(), "err", err)
	}
}

// findPresent returns the card on a reader of this node, or nil.
func (n *Node) findPresent(card crdt.CardID) *presentCard {
	n.nfcs.mu.Lock()
	defer n.nfcs.mu.Unlock()
	for _, pc := range n.nfcs.present {
		if pc.tap.Card == card {
			return pc
		}
	}
	return nil
}

// PresentCards returns the taps of the cards on the node's readers now.
func (n *Node) PresentCards() []Tap {
	n.nfcs.mu.Lock()
	defer n.nfcs.mu.Unlock()
	out := make([]Tap, 0, len(n.nfcs.present))
	for _, pc := range n.nfcs.present {
		out = append(out, pc.tap)
	}
	return out
}

// WriteStamp writes a stamp this node issued (the `stamp` of a payment
// answer) onto the card, which must be on one of the node's readers; if it
// is not, WriteStamp waits for it to be presented again until ctx ends
// (ErrCardNotPresent then). It reads the stamp back and verifies it before
// returning nil (nfc.WriteStamp): the point of sale shows "approved" after
// it. It returns the reader's name. If the write fails, the sale still
// stands: the card keeps its previous stamp and the ledger knows the
// payment (docs/nfc.md).
func (n *Node) WriteStamp(ctx context.Context, card crdt.CardID, stamp []byte) (string, error) {
	st, err := crdt.DecodeStamp(stamp)
	if err != nil {
		return "", err
	}
	if st.Venue != n.Key() {
		return "", ErrNotOwnStamp
	}
	if st.Card != card {
		return "", fmt.Errorf("%w: the stamp is for card %s, not %s", crdt.ErrBadStamp, st.Card, card)
	}
	for {
		ch := n.nfcs.watch()
		if pc := n.findPresent(card); pc != nil {
			pc.mu.Lock()
			slots, err := nfc.WriteStampOver(ctx, pc.card, pc.slots, stamp)
			pc.slots = slots // nil after a failure: read them again next time
			pc.mu.Unlock()
			if err == nil {
				n.nfcs.mu.Lock()
				pc.tap.Stamp = stamp
				n.nfcs.mu.Unlock()
			}
			if err != nil {
				n.log.Warn("nfc: stamp not written", "reader", pc.tap.Reader, "card", card, "err", err)
				return pc.tap.Reader, err
			}
			return pc.tap.Reader, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return "", ErrCardNotPresent
		}
	}
}

// nextTap waits for the next tap on the node's readers (or one of reader,
// if not empty), or returns a card already on a reader when current is
// set.
func (n *Node) nextTap(ctx context.Context, reader string, current bool) (Tap, bool) {
	ch, unsub := n.taps.Subscribe()
	defer unsub()
	if current {
		for _, t := range n.PresentCards() {
			if reader == "" || t.Reader == reader {
				return t, true
			}
		}
	}
	for {
		select {
		case t, ok := <-ch:
			if !ok {
				return Tap{}, false
			}
			if reader == "" || t.Reader == reader {
				return t, true
			}
		case <-ctx.Done():
			return Tap{}, false
		}
	}
}

// tapsAfter returns the recorded taps after seq (for a reconnecting SSE
// client) and the newest seq.
func (n *Node) tapsAfter(seq uint64) ([]seqTap, uint64) {
	n.nfcs.mu.Lock()
	defer n.nfcs.mu.Unlock()
	var out []seqTap
	for _, st := range n.nfcs.ring {
		if st.seq > seq {
			out = append(out, st)
		}
	}
	return out, n.nfcs.seq
}

// simReader returns the simulated reader named name (the first one if
// name is empty).
func (n *Node) simReader(name string) (*nfc.SimReader, error) {
	for _, r := range n.cfg.Readers {
		if sr, ok := r.(*nfc.SimReader); ok && (name == "" || sr.Name() == name) {
			return sr, nil
		}
	}
	if name == "" {
		return nil, errors.New("this node has no simulated reader")
	}
	return nil, fmt.Errorf("this node has no simulated reader named %q", name)
}
