package p2p

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
)

func TestReserveRequestDecoding(t *testing.T) {
	valid := encodeReserveRequest(reserveOpReserve, "04A1B2C3D4", 3000)
	tests := []struct {
		name string
		p    []byte
		ok   bool
	}{
		{"reserve", valid, true},
		{"release", encodeReserveRequest(reserveOpRelease, "04A1B2C3D4", 0), true},
		{"empty", nil, false},
		{"bad version", append([]byte{2}, valid[1:]...), false},
		{"bad op", append([]byte{1, 9}, valid[2:]...), false},
		{"lower-case card", encodeReserveRequest(reserveOpReserve, "04a1b2c3d4", 3000), false},
		{"card too long", encodeReserveRequest(reserveOpReserve, crdt.CardID(bytes.Repeat([]byte("AB"), 40)), 3000), false},
		{"card length past the end", []byte{1, 1, 40, '0', '4'}, false},
		{"zero amount", encodeReserveRequest(reserveOpReserve, "04A1B2C3D4", 0), false},
		{"amount too large", encodeReserveRequest(reserveOpReserve, "04A1B2C3D4", crdt.MaxAmount+1), false},
		{"trailing bytes", append(valid, 0), false},
		{"too large", append(valid, make([]byte, maxReserveMsg)...), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := decodeReserveRequest(tc.p)
			if (err == nil) != tc.ok {
				t.Fatalf("got %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
		})
	}
}

// TestReserveAtCoordinators runs the reservation protocol between real
// hosts: the first venue to ask holds the card, another is told busy,
// the holder's payment releases it at every coordinator, and a
// reservation whose coordinators cannot be reached fails as such.
func TestReserveAtCoordinators(t *testing.T) {
	nodes := tcpCluster(t, 3, nil)
	waitUntil(t, 20*time.Second, "a full mesh", func() bool {
		for _, nd := range nodes {
			if len(nd.net.Connected()) < 2 {
				return false
			}
		}
		return true
	})
	coords := []crdt.PublicKey{nodes[0].net.key, nodes[1].net.key, nodes[2].net.key}
	ctx := context.Background()
	const card = crdt.CardID("04A1B2C3D4")
	if res, err := nodes[0].net.Reserve(ctx, card, 3000, coords, time.Second); err != nil || res.Granted < 2 {
		t.Fatalf("first reservation: %+v %v", res, err)
	}
	res, err := nodes[1].net.Reserve(ctx, card, 3000, coords, time.Second)
	if !errors.Is(err, crdt.ErrCardBusy) || res.Holder != nodes[0].net.key {
		t.Fatalf("second venue: %+v %v, want busy held by the first", res, err)
	}
	// Renewing is allowed to the holder (a retried request).
	if _, err := nodes[0].net.Reserve(ctx, card, 3000, coords, time.Second); err != nil {
		t.Fatalf("renewal: %v", err)
	}
	pay, err := nodes[0].rep.Make(&crdt.Payment{Card: card, Amount: 3000, Counter: 1})
	if err != nil {
		t.Fatal(err)
	}
	// Gossip carries it; hand it over too, so that the test is about the
	// coordinators' release, not gossip timing.
	for _, nd := range nodes[1:] {
		if err := nd.rep.Ingest(ctx, []crdt.Op{pay}); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 10*time.Second, "the payment to release the card at every coordinator", func() bool {
		for _, nd := range nodes {
			if _, coordinated := nd.net.HeldReservations(); coordinated != 0 {
				return false
			}
		}
		return true
	})
	if held, _ := nodes[0].net.HeldReservations(); held != 0 {
		t.Fatal("the venue still holds a reservation it used")
	}
	if _, err := nodes[1].net.Reserve(ctx, card, 3000, coords, time.Second); err != nil {
		t.Fatalf("after the payment: %v", err)
	}

	// A venue that gives up (no payment follows) releases within a
	// second or so, without waiting for the TTL.
	waitUntil(t, 5*time.Second, "the unused reservation to be released", func() bool {
		for _, nd := range nodes {
			if _, coordinated := nd.net.HeldReservations(); coordinated != 0 {
				return false
			}
		}
		return true
	})

	// Coordinators that do not exist (no address) cannot grant.
	ghosts := []crdt.PublicKey{nodes[2].net.key, seedSigner(t, 200).Public(), seedSigner(t, 201).Public()}
	if _, err := nodes[2].net.Reserve(ctx, "04FFFFFFFF", 3000, ghosts, 300*time.Millisecond); !errors.Is(err, crdt.ErrNoReservationQuorum) {
		t.Fatalf("unreachable coordinators: %v", err)
	}
}
