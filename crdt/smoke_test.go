package crdt

import (
	"bytes"
	"errors"
	"testing"
)

func seedSigner(t testing.TB, b byte) *Signer {
	t.Helper()
	s, err := SignerFromSeed(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSmoke(t *testing.T) {
	var ms int64 = 1_700_000_000_000
	clock := NewClock(func() int64 { ms++; return ms })
	fedS := seedSigner(t, 1)
	venS := seedSigner(t, 2)
	fed := NewAuthor(fedS, clock, 0, OpID{})
	ven := NewAuthor(venS, clock, 0, OpID{})
	r := NewReplica(fedS.Public())
	ops := []Op{
		fed.Make(&Genesis{Name: "Test", Currency: "EUR", Settings: DefaultSettings()}),
		fed.Make(&Admit{Venue: venS.Public(), Name: "Bar"}),
		ven.Make(&TopUp{Card: "04A1B2C3D4E5F6", Amount: 1000, Method: MethodCash}),
		ven.Make(&Payment{Card: "04A1B2C3D4E5F6", Amount: 300, Counter: 1}),
	}
	for i := len(ops) - 1; i >= 0; i-- {
		if err := r.Deliver(ops[i]); err != nil {
			t.Fatal(i, err)
		}
	}
	c := r.Set.State.Card("04A1B2C3D4E5F6")
	if c == nil || c.Balance != 700 || c.Counter != 1 {
		t.Fatalf("card %+v", c)
	}
	b, err := DecodeOp(ops[3].Encode())
	if err != nil || b.ID() != ops[3].ID() {
		t.Fatal(err)
	}
	bad := ops[3]
	bad.Sig[0] ^= 1
	if _, err := NewOpSet(Config{Federation: fedS.Public()}).Add(ops[0]); err != nil {
		t.Fatal(err)
	}
	r2 := NewReplica(fedS.Public())
	for _, o := range ops[:3] {
		if err := r2.Deliver(o); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r2.Set.Add(bad); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("want bad signature, got %v", err)
	}
	if err := r2.Deliver(ops[3]); err != nil {
		t.Fatal(err)
	}
	if r.Set.Digest() != r2.Set.Digest() {
		t.Fatal("digests differ")
	}
}
