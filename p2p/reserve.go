package p2p

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/libp2p/go-libp2p/core/network"
)

// Reservations of cards above the floor limit (the rule is
// crdt.ReservationTable; see crdt/reserve.go). Every node serves stream
// protocol ReserveProtocol as a coordinator; a node about to take a payment
// above the floor asks the card's coordinators (crdt.Coordinators) with
// Reserve. One request per stream, both ways at most maxReserveMsg bytes:
//
//	request: version (1, = 1) | op (1: 1 reserve, 2 release) |
//	         card length (1, ≤ 2×crdt.MaxCardBytes) | card (hex, upper case) |
//	         amount (uvarint, reserve only)
//	answer:  status (1: 1 granted, 2 busy, 3 released, 4 refused) |
//	         card counter (uvarint) |
//	         busy only: holder key (32) | ms until the holder's reservation ends (uvarint)
//
// The requester is the stream's authenticated peer, which must be a member.
// The card counter is the highest payment counter the coordinator knows of
// the card (when its replica implements CardCounters): a venue granted a
// card after another venue's payment waits until it knows that payment
// too. A coordinator releases a venue's reservation when it commits that
// venue's payment (or refund) of the card, or after its TTL.

// ReserveProtocol is the reservation stream protocol.
const ReserveProtocol = "/cagnotte/reserve/1"

// maxReserveMsg bounds a reservation request or answer.
const maxReserveMsg = 128

// reserveStreamTimeout bounds a coordinator's exchange with one requester
// (a request is a few bytes; a requester waits at most its budget anyway).
const reserveStreamTimeout = 5 * time.Second

// reserveHold is how long a node keeps a reservation it obtained without
// committing a payment of that card before releasing it explicitly (the
// payment was refused, or the request was a retry answered from the
// idempotency record).
const reserveHold = time.Second

const (
	reserveOpReserve = 1
	reserveOpRelease = 2

	reserveGranted  = 1
	reserveBusy     = 2
	reserveReleased = 3
	reserveRefused  = 4
)

// CardCounters is implemented by replicas that know the payment counters of
// cards (node.Node does). Reservation grants carry the coordinator's.
type CardCounters interface {
	// CardCounter returns the highest payment counter known for card (0
	// if none or unknown).
	CardCounter(card crdt.CardID) uint64
}

// ErrReserveRefused is a coordinator's refusal of a malformed request or of
// a peer that is not a member.
var ErrReserveRefused = errors.New("p2p: reservation request refused")

// reserveState is the node's reservations: those it coordinates (table)
// and those it obtained (held).
type reserveState struct {
	mu       sync.Mutex
	table    *crdt.ReservationTable
	held     map[crdt.CardID]heldReservation
	sweeping bool
}

type heldReservation struct {
	coords []crdt.PublicKey
	at     time.Time
}

// ReserveResult is what the coordinators of a card answered.
type ReserveResult struct {
	// Coordinators asked, and how many granted, said busy or failed.
	Coordinators, Granted, Busy, Failed int
	// Counter is the highest payment counter of the card among the
	// coordinators that granted: wait until this node knows as much
	// before deciding the payment.
	Counter uint64
	// Holder is the venue holding the card when a coordinator said busy.
	Holder crdt.PublicKey
}

// startReservations serves the reservation protocol and releases
// reservations as payments commit. It is called once, from start.
func (n *Network) startReservations() {
	n.res.mu.Lock()
	n.res.table = crdt.NewReservationTable(crdt.DefaultReservationTTL)
	n.res.held = map[crdt.CardID]heldReservation{}
	n.res.mu.Unlock()
	n.host.SetStreamHandler(ReserveProtocol, n.handleReserve)
	n.rep.OnChange(n.reserveOnChange)
}

// reserveOnChange releases, as a coordinator, the reservations the
// committed payments announced, and forgets the reservations this node
// held for the cards it has now charged.
func (n *Network) reserveOnChange(ops []crdt.Op) {
	n.res.mu.Lock()
	defer n.res.mu.Unlock()
	if n.res.table == nil {
		return
	}
	for i := range ops {
		op := &ops[i]
		if op.Kind != crdt.KindPayment && op.Kind != crdt.KindRefund {
			continue
		}
		n.res.table.ReleasePayment(op)
		if op.Author == n.key && len(n.res.held) > 0 {
			if b, err := crdt.DecodeBody(op.Kind, op.Body); err == nil {
				switch b := b.(type) {
				case *crdt.Payment:
					delete(n.res.held, b.Card)
				case *crdt.Refund:
					delete(n.res.held, b.Card)
				}
			}
		}
	}
}

// cardCounter returns the replica's counter of card, 0 if it cannot tell.
func (n *Network) cardCounter(card crdt.CardID) uint64 {
	if cc, ok := n.rep.(CardCounters); ok {
		return cc.CardCounter(card)
	}
	return 0
}

// grantLocal applies a request to this node's own table.
func (n *Network) grantLocal(card crdt.CardID, venue crdt.PublicKey, amount uint64) (crdt.Reservation, error) {
	now := n.cfg.Now().UnixMilli()
	n.res.mu.Lock()
	defer n.res.mu.Unlock()
	if n.res.table == nil {
		return crdt.Reservation{}, fmt.Errorf("%w: not serving reservations", ErrReserveRefused)
	}
	if n.res.table.Len() > 1024 {
		n.res.table.Expire(now)
	}
	return n.res.table.Grant(card, venue, amount, now)
}

func (n *Network) releaseLocal(card crdt.CardID, venue crdt.PublicKey) {
	n.res.mu.Lock()
	defer n.res.mu.Unlock()
	if n.res.table != nil {
		n.res.table.Release(card, venue)
	}
}

// handleReserve answers one reservation request.
func (n *Network) handleReserve(s network.Stream) {
	defer s.Close()
	p := s.Conn().RemotePeer()
	_ = s.SetDeadline(time.Now().Add(min(n.cfg.StreamTimeout, reserveStreamTimeout)))
	if !n.gater.member(p) {
		_ = s.Reset()
		return
	}
	n.noteTraffic(p)
	venue, err := KeyOf(p)
	if err != nil {
		_ = s.Reset()
		return
	}
	req, err := io.ReadAll(io.LimitReader(s, maxReserveMsg+1))
	if err != nil {
		_ = s.Reset()
		return
	}
	op, card, amount, err := decodeReserveRequest(req)
	if err != nil {
		n.log.Warn("malformed reservation request", "from", p, "err", err)
		_, _ = s.Write([]byte{reserveRefused, 0})
		return
	}
	var ans []byte
	switch op {
	case reserveOpRelease:
		n.releaseLocal(card, venue)
		ans = binary.AppendUvarint([]byte{reserveReleased}, n.cardCounter(card))
	default:
		r, err := n.grantLocal(card, venue, amount)
		switch {
		case errors.Is(err, crdt.ErrCardBusy):
			ans = binary.AppendUvarint([]byte{reserveBusy}, n.cardCounter(card))
			ans = append(ans, r.Venue[:]...)
			ans = binary.AppendUvarint(ans, uint64(max(0, r.Expires-n.cfg.Now().UnixMilli())))
		case err != nil:
			ans = []byte{reserveRefused, 0}
		default:
			ans = binary.AppendUvarint([]byte{reserveGranted}, n.cardCounter(card))
		}
	}
	_, _ = s.Write(ans)
}

func encodeReserveRequest(op byte, card crdt.CardID, amount uint64) []byte {
	b := []byte{1, op, byte(len(card))}
	b = append(b, card...)
	if op == reserveOpReserve {
		b = binary.AppendUvarint(b, amount)
	}
	return b
}

func decodeReserveRequest(p []byte) (op byte, card crdt.CardID, amount uint64, err error) {
	if len(p) > maxReserveMsg || len(p) < 3 || p[0] != 1 || (p[1] != reserveOpReserve && p[1] != reserveOpRelease) {
		return 0, "", 0, malformed("reservation request")
	}
	op, l := p[1], int(p[2])
	if l > 2*crdt.MaxCardBytes || len(p) < 3+l {
		return 0, "", 0, malformed("reservation card")
	}
	c, err := crdt.ParseCardID(string(p[3 : 3+l]))
	if err != nil || string(c) != string(p[3:3+l]) {
		return 0, "", 0, malformed("reservation card %q", p[3:3+l])
	}
	rest := p[3+l:]
	if op == reserveOpReserve {
		v, k := uvarint(rest) // minimal encodings only: one request, one encoding
		if k <= 0 || v == 0 || v > crdt.MaxAmount {
			return 0, "", 0, malformed("reservation amount")
		}
		rest = rest[k:]
		amount = v
	}
	if len(rest) != 0 {
		return 0, "", 0, malformed("trailing bytes in a reservation request")
	}
	return op, c, amount, nil
}

// reserveAnswer is one coordinator's answer.
type reserveAnswer struct {
	from    crdt.PublicKey // the coordinator
	status  byte
	counter uint64
	holder  crdt.PublicKey
	err     error
}

func decodeReserveAnswer(p []byte) (reserveAnswer, error) {
	var a reserveAnswer
	if len(p) < 2 || len(p) > maxReserveMsg {
		return a, malformed("reservation answer of %d bytes", len(p))
	}
	a.status = p[0]
	v, k := binary.Uvarint(p[1:])
	if k <= 0 {
		return a, malformed("reservation answer counter")
	}
	a.counter = v
	rest := p[1+k:]
	if a.status == reserveBusy {
		if len(rest) < 32 {
			return a, malformed("reservation answer holder")
		}
		copy(a.holder[:], rest[:32])
		if _, k := binary.Uvarint(rest[32:]); k <= 0 {
			return a, malformed("reservation answer expiry")
		}
	}
	return a, nil
}

// ask sends one request to coordinator c (dialing it if needed) and reads
// its answer, within ctx.
func (n *Network) ask(ctx context.Context, c crdt.PublicKey, op byte, card crdt.CardID, amount uint64) reserveAnswer {
	p, err := PeerID(c)
	if err != nil {
		return reserveAnswer{err: err}
	}
	s, err := n.host.NewStream(ctx, p, ReserveProtocol)
	if err != nil {
		return reserveAnswer{err: fmt.Errorf("p2p: reservation stream to %s: %w", c.Short(), err)}
	}
	return n.exchangeReserve(ctx, s, c, encodeReserveRequest(op, card, amount))
}

// exchangeReserve writes a request on s and reads the answer, returning
// when ctx ends at the latest. On a yamux connection whose writes are
// stalled (a link gone dead, the peer's buffers full), the stream's
// Write, CloseWrite, Close and even Reset can each block until the
// connection's write timeout (10 s), whatever the stream's deadline or a
// Reset from another goroutine: so the exchange runs in a goroutine of
// its own, and when ctx ends first the stream is reset in another and
// the caller is answered at once. Both goroutines end when their call
// on the stream returns, by the connection's write timeout at the
// latest (or when the connection closes).
func (n *Network) exchangeReserve(ctx context.Context, s network.Stream, c crdt.PublicKey, req []byte) reserveAnswer {
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	done := make(chan reserveAnswer, 1)
	go func() {
		a := reserveExchange(s, c, req)
		if a.err != nil {
			_ = s.Reset()
		} else {
			_ = s.Close() // both halves already closed: returns at once
		}
		done <- a
	}()
	select {
	case a := <-done:
		if a.err == nil {
			n.noteTraffic(s.Conn().RemotePeer())
			if a.status == reserveRefused {
				a.err = fmt.Errorf("%w by %s", ErrReserveRefused, c.Short())
			}
		}
		return a
	case <-ctx.Done():
		go func() { _ = s.Reset() }()
		return reserveAnswer{err: fmt.Errorf("p2p: reservation request to %s: %w", c.Short(), ctx.Err())}
	}
}

// reserveExchange writes req on s, closes its writing half and reads the
// answer to the end of the stream.
func reserveExchange(s network.Stream, c crdt.PublicKey, req []byte) reserveAnswer {
	if _, err := s.Write(req); err != nil {
		return reserveAnswer{err: fmt.Errorf("p2p: reservation request to %s: %w", c.Short(), err)}
	}
	if err := s.CloseWrite(); err != nil {
		return reserveAnswer{err: fmt.Errorf("p2p: reservation request to %s: %w", c.Short(), err)}
	}
	p, err := io.ReadAll(io.LimitReader(s, maxReserveMsg+1))
	if err != nil {
		return reserveAnswer{err: fmt.Errorf("p2p: reservation answer from %s: %w", c.Short(), err)}
	}
	a, err := decodeReserveAnswer(p)
	if err != nil {
		return reserveAnswer{err: fmt.Errorf("p2p: reservation answer from %s: %w", c.Short(), err)}
	}
	return a
}

// Reserve reserves card for this venue with its coordinators coords
// (crdt.Coordinators; this node answers for itself when it is one),
// waiting at most timeout and until ctx ends. It returns once a majority
// granted, or fails with an error wrapping crdt.ErrCardBusy (another venue
// holds the card) or crdt.ErrNoReservationQuorum (too few coordinators
// answered); on failure the grants obtained are released. A granted
// reservation lasts until this node's payment of the card commits (the
// coordinators release it when they see the op) or, if no payment of the
// card commits within a second, until it is released explicitly.
func (n *Network) Reserve(ctx context.Context, card crdt.CardID, amount uint64, coords []crdt.PublicKey, timeout time.Duration) (ReserveResult, error) {
	res := ReserveResult{Coordinators: len(coords)}
	if len(coords) == 0 {
		return res, crdt.ErrNoReservationQuorum
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	answers := make(chan reserveAnswer, len(coords))
	var wg sync.WaitGroup
	for _, c := range coords {
		if c == n.key {
			r, err := n.grantLocal(card, n.key, amount)
			a := reserveAnswer{from: c, status: reserveGranted, err: err}
			if errors.Is(err, crdt.ErrCardBusy) {
				a.status, a.holder, a.err = reserveBusy, r.Venue, nil
			}
			answers <- a
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := n.ask(ctx, c, reserveOpReserve, card, amount)
			a.from = c
			answers <- a
		}()
	}
	var err error
	for range coords {
		a := <-answers
		switch {
		case a.err != nil:
			res.Failed++
		case a.status == reserveGranted:
			res.Granted++
			res.Counter = max(res.Counter, a.counter)
		case a.status == reserveBusy:
			res.Busy++
			res.Holder = a.holder
		default:
			res.Failed++
		}
		var done bool
		if done, err = crdt.ReservationOutcome(len(coords), res.Granted, res.Busy, res.Failed); done {
			break
		}
	}
	// Answers still in flight are not waited for: ctx ends them.
	cancel()
	n.goSafe(wg.Wait)
	if err != nil {
		if errors.Is(err, crdt.ErrCardBusy) {
			err = fmt.Errorf("card %s: %w (held by %s)", card, err, res.Holder.Short())
		}
		n.release(card, coords)
		return res, err
	}
	n.res.mu.Lock()
	n.res.held[card] = heldReservation{coords: coords, at: time.Now()}
	sweep := !n.res.sweeping
	n.res.sweeping = true
	n.res.mu.Unlock()
	if sweep && !n.goSafe(n.sweepHeld) {
		n.res.mu.Lock()
		n.res.sweeping = false
		n.res.mu.Unlock()
	}
	return res, nil
}

// release tells coords, in the background, that this node gives up its
// reservation of card.
func (n *Network) release(card crdt.CardID, coords []crdt.PublicKey) {
	for _, c := range coords {
		if c == n.key {
			n.releaseLocal(card, n.key)
			continue
		}
		n.goSafe(func() {
			// Asked twice at most: a release lost on a busy link would
			// leave the card held until the coordinator's TTL.
			for range 2 {
				ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
				ans := n.ask(ctx, c, reserveOpRelease, card, 0)
				cancel()
				if ans.err == nil || n.ctx.Err() != nil {
					return
				}
			}
		})
	}
}

// sweepHeld releases the reservations this node obtained and did not use
// within reserveHold; it returns when none is held (or the network closes).
func (n *Network) sweepHeld() {
	t := time.NewTicker(reserveHold / 4)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		var drop []crdt.CardID
		var coords [][]crdt.PublicKey
		n.res.mu.Lock()
		for card, h := range n.res.held {
			if now.Sub(h.at) >= reserveHold {
				drop = append(drop, card)
				coords = append(coords, h.coords)
				delete(n.res.held, card)
			}
		}
		empty := len(n.res.held) == 0
		if empty {
			n.res.sweeping = false
		}
		n.res.mu.Unlock()
		for i, card := range drop {
			n.release(card, coords[i])
		}
		if empty {
			return
		}
	}
}

// HeldReservations returns how many reservations this node obtained and
// still holds, and how many it coordinates (live or expired).
func (n *Network) HeldReservations() (held, coordinated int) {
	n.res.mu.Lock()
	defer n.res.mu.Unlock()
	if n.res.table != nil {
		coordinated = n.res.table.Len()
	}
	return len(n.res.held), coordinated
}
