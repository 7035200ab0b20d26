package crdt_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

// Fuzz targets for what a peer hands a joiner (checkpoints and their
// attestations, issue 16) and for the card records a store reads back.
// Run one with
//
//	go test ./crdt -run '^$' -fuzz '^FuzzDecodeCheckpoint$' -fuzztime 10m -parallel 1

// worldCheckpoint is the fuzz world's checkpoint (its base ops, then the
// next ops of A, B and the federation), attested by venues A, B and C.
func worldCheckpoint(tb testing.TB) (w *fuzzWorld, set *crdt.OpSet, cp []byte, atts []crdt.Attestation) {
	tb.Helper()
	w = newFuzzWorld(tb)
	set, _ = w.replica(tb)
	// One next op per author (the next ops of one author fork each other).
	for _, op := range []crdt.Op{w.next[0], w.next[5], w.next[8]} {
		if _, err := set.AddTrusted(op); err != nil {
			tb.Fatal(err)
		}
	}
	cp, err := set.EncodeCheckpoint()
	if err != nil {
		tb.Fatal(err)
	}
	for _, a := range []*actor{w.a, w.b, w.c} {
		atts = append(atts, set.Attest(a.signer, cp))
	}
	return w, set, cp, atts
}

// FuzzDecodeCheckpoint: a checkpoint that decodes installs as an op set
// whose own checkpoint is a fixed point (encode, decode, encode gives the
// same bytes and digest); refusals are ErrCheckpoint.
func FuzzDecodeCheckpoint(f *testing.F) {
	_, set, cp, _ := worldCheckpoint(f)
	f.Add(cp)
	empty := crdt.NewOpSet(crdt.Config{Federation: set.Federation()})
	if b, err := empty.EncodeCheckpoint(); err == nil {
		f.Add(b)
	}
	f.Add(cp[:len(cp)/2])
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		// The head-only decoder (the history fetch's) reads any bytes
		// without panicking and refuses with ErrCheckpoint.
		head, herr := crdt.DecodeCheckpointAuthors(b)
		if herr != nil && !errors.Is(herr, crdt.ErrCheckpoint) {
			t.Fatalf("head: error %v does not wrap ErrCheckpoint", herr)
		}
		d, err := crdt.DecodeCheckpoint(b)
		if err != nil {
			if !errors.Is(err, crdt.ErrCheckpoint) {
				t.Fatalf("error %v does not wrap ErrCheckpoint", err)
			}
			return
		}
		// A checkpoint that decodes whole has a head that decodes alike,
		// and references that read back lazily, all of them, in order.
		if herr != nil {
			t.Fatalf("checkpoint decodes but its head does not: %v", herr)
		}
		if head.Stored.Meta != d.Stored.Meta || len(head.Stored.Authors) != len(d.Stored.Authors) {
			t.Fatal("the head decodes differently from the whole checkpoint")
		}
		var n uint64
		prev := ""
		if err := d.EachRef(func(ref string, _ crdt.RefEntry) error {
			if n > 0 && ref <= prev {
				t.Fatalf("reference %q after %q: out of order", ref, prev)
			}
			n, prev = n+1, ref
			return nil
		}); err != nil {
			t.Fatalf("checked references do not read back: %v", err)
		}
		if n != d.NumRefs() {
			t.Fatalf("read %d references of %d", n, d.NumRefs())
		}
		s1 := crdt.CheckpointSet(crdt.Config{Federation: d.Stored.Meta.Federation}, d)
		enc1, err := s1.EncodeCheckpoint()
		if errors.Is(err, crdt.ErrCheckpointFork) {
			return
		}
		if err != nil {
			t.Fatalf("installed checkpoint does not encode: %v", err)
		}
		d2, err := crdt.DecodeCheckpoint(enc1)
		if err != nil {
			t.Fatalf("re-encoded checkpoint does not decode: %v", err)
		}
		s2 := crdt.CheckpointSet(crdt.Config{Federation: d2.Stored.Meta.Federation}, d2)
		enc2, err := s2.EncodeCheckpoint()
		if err != nil || !bytes.Equal(enc1, enc2) {
			t.Fatalf("checkpoint encoding is not a fixed point: %v", err)
		}
		if s1.Digest() != s2.Digest() {
			t.Fatal("the same checkpoint installs with two digests")
		}
	})
}

// FuzzVerifyCheckpoint: only the checkpoint the venues attested verifies,
// whatever bytes and attestations a peer sends; refusals are ErrCheckpoint
// or ErrNoQuorum.
func FuzzVerifyCheckpoint(f *testing.F) {
	w, _, cp, atts := worldCheckpoint(f)
	enc := func(as ...crdt.Attestation) []byte {
		var b []byte
		for _, a := range as {
			b = append(b, a.Encode()...)
		}
		return b
	}
	f.Add(cp, enc(atts...))
	f.Add(cp, enc(atts[0]))
	f.Add(cp, enc(atts[2])) // C is revoked: not a member
	f.Add(cp[:len(cp)-1], enc(atts...))
	f.Add([]byte{}, []byte{})
	members := map[crdt.PublicKey]bool{w.a.key(): true, w.b.key(): true}
	if _, err := crdt.VerifyCheckpoint(cp, atts, members, 2); err != nil {
		f.Fatalf("the seed checkpoint does not verify: %v", err)
	}
	f.Fuzz(func(t *testing.T, b, raw []byte) {
		var list []crdt.Attestation
		for len(raw) >= crdt.AttestationSize && len(list) < 16 {
			// Take the fields as sent, unchecked: VerifyCheckpoint checks.
			var a crdt.Attestation
			c := raw[:crdt.AttestationSize]
			copy(a.VV[:], c[0:32])
			copy(a.Digest[:], c[32:64])
			copy(a.Hash[:], c[64:96])
			for _, x := range c[96:104] {
				a.Ops = a.Ops<<8 | uint64(x)
			}
			copy(a.Venue[:], c[104:136])
			copy(a.Sig[:], c[136:])
			list = append(list, a)
			raw = raw[crdt.AttestationSize:]
		}
		_, err := crdt.VerifyCheckpoint(b, list, members, 1)
		if err == nil && !bytes.Equal(b, cp) {
			t.Fatalf("a checkpoint nobody attested verifies (%d bytes)", len(b))
		}
		if err != nil && !errors.Is(err, crdt.ErrCheckpoint) && !errors.Is(err, crdt.ErrNoQuorum) {
			t.Fatalf("error %v is neither ErrCheckpoint nor ErrNoQuorum", err)
		}
	})
}

// FuzzDecodeAttestation: an attestation that decodes (its signature
// verifies) encodes back to the same bytes; refusals are ErrCheckpoint.
func FuzzDecodeAttestation(f *testing.F) {
	_, _, _, atts := worldCheckpoint(f)
	for _, a := range atts {
		f.Add(a.Encode())
	}
	f.Add(make([]byte, crdt.AttestationSize))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := crdt.DecodeAttestation(b)
		if err != nil {
			if !errors.Is(err, crdt.ErrCheckpoint) {
				t.Fatalf("error %v does not wrap ErrCheckpoint", err)
			}
			return
		}
		if !bytes.Equal(a.Encode(), b) {
			t.Fatal("attestation does not encode back to its bytes")
		}
	})
}

// FuzzDecodeCardRecord: a card record that decodes encodes back to the
// same bytes (the record is canonical); refusals are ErrCheckpoint; bytes
// that are not a record are told apart.
func FuzzDecodeCardRecord(f *testing.F) {
	_, set, _, _ := worldCheckpoint(f)
	for _, c := range set.State.Cards {
		f.Add(c.AppendBinary(nil))
	}
	full := &crdt.Card{ID: "04A1B2C3D4E5F6", Balance: -5, Credits: 10, Debits: 15, Counter: 3, Outliers: []uint64{9, 2, 7},
		Registered: true, Blocked: true, BlockReason: "lost", FedBlocked: true, FedReason: "stolen", Holder: "h1", Entries: 4}
	f.Add(full.AppendBinary(nil))
	f.Add([]byte{0xC1})
	f.Add([]byte{'{'})
	f.Fuzz(func(t *testing.T, p []byte) {
		c, ok, err := crdt.DecodeCardRecord(p)
		if !ok {
			if err != nil || c != nil || (len(p) > 0 && p[0] == 0xC1) {
				t.Fatalf("not a record: %v %v", c, err)
			}
			return
		}
		if err != nil {
			if !errors.Is(err, crdt.ErrCheckpoint) {
				t.Fatalf("error %v does not wrap ErrCheckpoint", err)
			}
			return
		}
		if again := c.AppendBinary(nil); !bytes.Equal(again, p) {
			t.Fatalf("card record %x re-encodes as %x", p, again)
		}
	})
}
