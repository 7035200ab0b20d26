package nfc

import (
	"crypto/ed25519"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

// testSigner returns a venue key for signing stamps in tests.
func testSigner(t testing.TB, seed byte) *crdt.Signer {
	t.Helper()
	var s [ed25519.SeedSize]byte
	s[0] = seed
	k, err := crdt.SignerFromSeed(s[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testStamp signs a stamp for card.
func testStamp(t testing.TB, s *crdt.Signer, card crdt.CardID, counter uint64, balance int64) []byte {
	t.Helper()
	st := crdt.CardStamp{Card: card, Counter: counter, Balance: balance, Time: 1_700_000_000}
	if err := s.SignStamp(&st); err != nil {
		t.Fatal(err)
	}
	return st.Encode()
}
