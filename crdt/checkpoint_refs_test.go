package crdt_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

// checkpointWithRefs encodes the checkpoint of an empty set whose index
// holds refs.
func checkpointWithRefs(t *testing.T, refs map[string]crdt.RefEntry) []byte {
	t.Helper()
	idx := crdt.NewMemIndex()
	for k, e := range refs {
		idx.SetRef(k, e)
	}
	set := crdt.NewOpSet(crdt.Config{Federation: crdt.PublicKey{1}, Index: idx})
	cp, err := set.EncodeCheckpoint()
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// The references of a decoded checkpoint are read from its bytes, one at
// a time, in key order; CheckpointSet puts them in the set's index;
// after DropRefs they can no longer be read, and CheckpointSet leaves
// them out (the caller wrote them itself).
func TestCheckpointRefsReadFromTheBytes(t *testing.T) {
	refs := map[string]crdt.RefEntry{}
	for i := range 1000 {
		refs[fmt.Sprintf("venue/REF-%05d", 999-i)] = crdt.RefEntry{Card: crdt.CardID(fmt.Sprintf("04%012X", i)), Winner: crdt.Stamp{HLC: crdt.HLC(i + 1), ID: crdt.OpID{byte(i)}}, Amount: int64(i) - 500}
	}
	for _, tc := range []struct {
		name string
		refs map[string]crdt.RefEntry
	}{
		{"none", nil},
		{"one", map[string]crdt.RefEntry{"a": {Card: "04AA", Amount: 7}}},
		{"a thousand", refs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp := checkpointWithRefs(t, tc.refs)
			d, err := crdt.DecodeCheckpoint(cp)
			if err != nil {
				t.Fatal(err)
			}
			if d.NumRefs() != uint64(len(tc.refs)) {
				t.Fatalf("NumRefs %d, want %d", d.NumRefs(), len(tc.refs))
			}
			prev, n := "", 0
			if err := d.EachRef(func(k string, e crdt.RefEntry) error {
				if n > 0 && k <= prev {
					return fmt.Errorf("%q after %q", k, prev)
				}
				if e != tc.refs[k] {
					return fmt.Errorf("%q: %+v, want %+v", k, e, tc.refs[k])
				}
				prev, n = k, n+1
				return nil
			}); err != nil || n != len(tc.refs) {
				t.Fatalf("EachRef: %d references, %v", n, err)
			}
			set := crdt.CheckpointSet(crdt.Config{Federation: crdt.PublicKey{1}}, d)
			again, err := set.EncodeCheckpoint()
			if err != nil || !bytes.Equal(again, cp) {
				t.Fatalf("the restored set encodes another checkpoint (%v)", err)
			}
			stop := errors.New("stop")
			if len(tc.refs) > 1 {
				calls := 0
				if err := d.EachRef(func(string, crdt.RefEntry) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
					t.Fatalf("EachRef after fn failed: %d calls, %v", calls, err)
				}
			}
			d.DropRefs()
			if err := d.EachRef(func(string, crdt.RefEntry) error { return nil }); len(tc.refs) > 0 && !errors.Is(err, crdt.ErrCheckpoint) {
				t.Fatalf("EachRef after DropRefs: %v", err)
			}
			idx := crdt.NewMemIndex()
			crdt.CheckpointSet(crdt.Config{Federation: crdt.PublicKey{1}, Index: idx}, d)
			if len(idx.Refs) != 0 {
				t.Fatalf("CheckpointSet after DropRefs put %d references in the index", len(idx.Refs))
			}
		})
	}
}

// A checkpoint whose references are out of order, repeated or not UTF-8
// is not canonical: refused.
func TestCheckpointRefsNotCanonicalRefused(t *testing.T) {
	e := crdt.RefEntry{Card: "04AA", Amount: 1}
	cp := checkpointWithRefs(t, map[string]crdt.RefEntry{"REF-AAAA": e, "REF-BBBB": e})
	swap := func(b []byte, x, y string) []byte {
		b = bytes.Replace(b, []byte(x), []byte("REF-TEMP"), 1)
		b = bytes.Replace(b, []byte(y), []byte(x), 1)
		return bytes.Replace(b, []byte("REF-TEMP"), []byte(y), 1)
	}
	for _, tc := range []struct {
		name string
		cp   []byte
	}{
		{"out of order", swap(bytes.Clone(cp), "REF-AAAA", "REF-BBBB")},
		{"repeated", bytes.Replace(bytes.Clone(cp), []byte("REF-BBBB"), []byte("REF-AAAA"), 1)},
		{"not UTF-8", bytes.Replace(bytes.Clone(cp), []byte("REF-BBBB"), []byte("REF-\xff\xffBB"), 1)},
		{"truncated", cp[:len(cp)-3]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := crdt.DecodeCheckpoint(tc.cp); !errors.Is(err, crdt.ErrCheckpoint) {
				t.Fatalf("decoded: %v", err)
			}
		})
	}
	if _, err := crdt.DecodeCheckpoint(cp); err != nil {
		t.Fatalf("the canonical one: %v", err)
	}
}
