package crdt_test

import (
	"errors"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

// An op ahead of its author's head is checked fully by Check, so a gossip
// validator refuses a forged "early" op instead of relaying it.
func TestCheckVerifiesEarlyOps(t *testing.T) {
	fed := newActor(signerFromBytes(t, 1))
	ven := newActor(signerFromBytes(t, 2))
	set := crdt.NewOpSet(crdt.Config{Federation: fed.key()})
	mustAdd(t, set,
		fed.make(1, &crdt.Genesis{Name: "F", Currency: "EUR", Settings: crdt.DefaultSettings()}),
		fed.make(1, &crdt.Admit{Venue: ven.key(), Name: "V"}))
	ven.make(1, &crdt.CardRegister{Card: "04000000000001"}) // seq 1, never delivered
	early := ven.make(1, &crdt.CardRegister{Card: "04000000000002"})
	if err := set.Check(&early); !errors.Is(err, crdt.ErrGap) {
		t.Fatalf("valid early op: %v, want ErrGap", err)
	}
	forged := early
	forged.Sig[3] ^= 1
	if err := set.Check(&forged); !errors.Is(err, crdt.ErrBadSignature) {
		t.Fatalf("forged early op: %v, want ErrBadSignature", err)
	}
	wrongKind := ven.make(1, &crdt.Admit{Venue: fed.key(), Name: "x"})
	if err := set.Check(&wrongKind); !errors.Is(err, crdt.ErrNotAllowed) {
		t.Fatalf("early op of a kind the venue may not make: %v", err)
	}
}

// Check remembers verified ops so that Add does not verify them again; a
// copy with another signature is a different op and is verified.
func TestVerifiedCacheKeysOnWholeOp(t *testing.T) {
	fed := newActor(signerFromBytes(t, 1))
	set := crdt.NewOpSet(crdt.Config{Federation: fed.key()})
	g := fed.make(1, &crdt.Genesis{Name: "F", Currency: "EUR", Settings: crdt.DefaultSettings()})
	if err := set.Check(&g); err != nil {
		t.Fatal(err)
	}
	forged := g
	forged.Sig[0] ^= 1
	if _, err := set.Add(forged); !errors.Is(err, crdt.ErrBadSignature) {
		t.Fatalf("forged copy of a checked op: %v", err)
	}
	if _, err := set.Add(g); err != nil {
		t.Fatal(err)
	}
}
