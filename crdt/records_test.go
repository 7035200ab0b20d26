package crdt

import (
	"bytes"
	"encoding/gob"
	"errors"
	"reflect"
	"testing"
)

// TestStoreRecordsRoundTrip: the author and meta records a store keeps
// read back equal, a gob record is not taken for one, and a truncated
// one is refused.
func TestStoreRecordsRoundTrip(t *testing.T) {
	id := func(b byte) (o OpID) { o[0], o[31] = b, b; return o }
	authors := []struct {
		name string
		a    AuthorState
	}{
		{"venue", AuthorState{Key: PublicKey{1, 2, 3}, Role: roleVenue, Seq: 1234567, Head: id(7), AdmittedAt: 99, Counted: 1234560, CountedHead: id(8), NCounted: 42, Acc: id(9)}},
		{"revoked with pins", AuthorState{Key: PublicKey{4}, Role: roleVenue, Seq: 10, Head: id(1), Revoked: true, RevokedAfter: 8, RevokedHead: id(2),
			PinLimit: 8, Pinned: map[OpID]bool{id(3): true, id(4): true}, PinSeq: 9, PinID: id(5), Fork: 9, EvidenceMax: 11}},
		{"empty", AuthorState{}},
	}
	for _, tc := range authors {
		t.Run("author "+tc.name, func(t *testing.T) {
			b := tc.a.AppendBinary(nil)
			got, ok, err := DecodeAuthorRecord(b)
			if err != nil || !ok {
				t.Fatalf("decode: ok %v, %v", ok, err)
			}
			if !reflect.DeepEqual(*got, tc.a) {
				t.Errorf("got %+v, want %+v", *got, tc.a)
			}
			if _, ok, err := DecodeAuthorRecord(b[:len(b)-1]); !ok || !errors.Is(err, ErrCheckpoint) {
				t.Errorf("truncated record: ok %v, err %v", ok, err)
			}
			var g bytes.Buffer
			if err := gob.NewEncoder(&g).Encode(&tc.a); err != nil {
				t.Fatal(err)
			}
			if _, ok, _ := DecodeAuthorRecord(g.Bytes()); ok {
				t.Error("a gob record was taken for a binary one")
			}
		})
	}
	metas := []struct {
		name string
		m    Meta
	}{
		{"federation", Meta{Federation: PublicKey{9}, Name: "Territoire", Currency: "EUR", Settings: DefaultSettings(), Credits: 1 << 40, Debits: 12345, Counted: 999, Ops: 10_000_000}},
		{"stale, negative", Meta{Credits: -5, Stale: true}},
	}
	for _, tc := range metas {
		t.Run("meta "+tc.name, func(t *testing.T) {
			b := tc.m.AppendBinary(nil)
			got, ok, err := DecodeMetaRecord(b)
			if err != nil || !ok {
				t.Fatalf("decode: ok %v, %v", ok, err)
			}
			if got != tc.m {
				t.Errorf("got %+v, want %+v", got, tc.m)
			}
			if _, ok, err := DecodeMetaRecord(append(b, 0)); !ok || !errors.Is(err, ErrCheckpoint) {
				t.Errorf("trailing byte: ok %v, err %v", ok, err)
			}
			var g bytes.Buffer
			if err := gob.NewEncoder(&g).Encode(tc.m); err != nil {
				t.Fatal(err)
			}
			if _, ok, _ := DecodeMetaRecord(g.Bytes()); ok {
				t.Error("a gob record was taken for a binary one")
			}
		})
	}
}
