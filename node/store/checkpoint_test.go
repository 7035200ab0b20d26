package store

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

// The latest checkpoint survives a reopen, is replaced by the next one
// (bytes larger than a Badger transaction are written in chunks), and its
// attestations can be completed later.
func TestSaveCheckpointRoundTrip(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir, 0)
	if _, _, err := st.LatestCheckpoint(); !errors.Is(err, ErrNoCheckpoint) {
		t.Fatalf("empty store: %v", err)
	}
	a, b := signer(t, 1), signer(t, 2)
	att := func(s *crdt.Signer, cp []byte) crdt.Attestation {
		set := crdt.NewOpSet(crdt.Config{Federation: a.Public()})
		return set.Attest(s, cp)
	}
	for _, tc := range []struct {
		name string
		size int
	}{
		{"small", 1000},
		{"over a transaction", 5*checkpointChunk + 123},
		{"replaced by a smaller one", 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp := bytes.Repeat([]byte{byte(tc.size)}, tc.size)
			cp[0] = 1
			atts := []crdt.Attestation{att(a, cp)}
			if err := st.SaveCheckpoint(cp, atts); err != nil {
				t.Fatal(err)
			}
			more := append(atts, att(b, cp))
			if ok, err := st.UpdateCheckpointAttestations(sha256.Sum256(cp), more); err != nil || !ok {
				t.Fatalf("update: %v %v", ok, err)
			}
			if ok, _ := st.UpdateCheckpointAttestations([32]byte{1}, atts); ok {
				t.Fatal("updated the attestations of another checkpoint")
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			st = openStore(t, dir, 0)
			got, gotAtts, err := st.LatestCheckpoint()
			if err != nil || !bytes.Equal(got, cp) || len(gotAtts) != 2 || gotAtts[1] != more[1] {
				t.Fatalf("read back: %d bytes, %d attestations, %v", len(got), len(gotAtts), err)
			}
			info, err := st.CheckpointInfo()
			if err != nil || info.Size != uint64(len(cp)) || info.Hash != sha256.Sum256(cp) {
				t.Fatalf("info: %+v %v", info, err)
			}
		})
	}
	t.Cleanup(func() { st.Close() })
}

// LatestCheckpointHead reads a checkpoint's chunks only until its reader
// has what it needs: a new venue reads its checkpoint's authors without
// holding the whole checkpoint (80 MB at 10 M ops).
func TestLatestCheckpointHeadReadsOnlyWhatIsNeeded(t *testing.T) {
	st := openStore(t, t.TempDir(), 0)
	t.Cleanup(func() { st.Close() })
	if err := st.LatestCheckpointHead(func([]byte) error { return nil }); !errors.Is(err, ErrNoCheckpoint) {
		t.Fatalf("empty store: %v", err)
	}
	cp := make([]byte, 5*checkpointChunk+123)
	for i := range cp {
		cp[i] = byte(i * 7)
	}
	if err := st.SaveCheckpoint(cp, nil); err != nil {
		t.Fatal(err)
	}
	errShort := errors.New("need more")
	for _, tc := range []struct {
		name      string
		need      int // bytes the reader needs; -1: never satisfied
		wantCalls int
		wantErr   error
	}{
		{"the head in the first chunk", 100, 1, nil},
		{"the head across two chunks", checkpointChunk + 1, 2, nil},
		{"all of it", len(cp), 6, nil},
		{"never enough", -1, 6, errShort},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls, longest := 0, 0
			err := st.LatestCheckpointHead(func(p []byte) error {
				calls++
				longest = len(p)
				if !bytes.Equal(p, cp[:len(p)]) {
					t.Fatalf("call %d: the prefix is not the checkpoint's start", calls)
				}
				if tc.need < 0 || len(p) < tc.need {
					return errShort
				}
				return nil
			})
			if !errors.Is(err, tc.wantErr) || err != nil && tc.wantErr == nil {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if calls != tc.wantCalls {
				t.Fatalf("%d calls (last prefix %d bytes), want %d", calls, longest, tc.wantCalls)
			}
		})
	}
}

// A checkpoint is sent from the store a chunk at a time, in order, with
// its attestations first, and checked against its hash at the end: a
// venue serving a new one does not hold the whole checkpoint.
func TestStreamLatestCheckpoint(t *testing.T) {
	st := openStore(t, t.TempDir(), 0)
	t.Cleanup(func() { st.Close() })
	none := func(uint64, []crdt.Attestation) error { t.Fatal("header called without a checkpoint"); return nil }
	if err := st.StreamLatestCheckpoint(none, nil); !errors.Is(err, ErrNoCheckpoint) {
		t.Fatalf("empty store: %v", err)
	}
	a := signer(t, 1)
	cp := make([]byte, 3*checkpointChunk+77)
	for i := range cp {
		cp[i] = byte(i*13 + 1)
	}
	att := crdt.NewOpSet(crdt.Config{Federation: a.Public()}).Attest(a, cp)
	if err := st.SaveCheckpoint(cp, []crdt.Attestation{att}); err != nil {
		t.Fatal(err)
	}
	var got []byte
	chunks, biggest := 0, 0
	err := st.StreamLatestCheckpoint(func(size uint64, atts []crdt.Attestation) error {
		if size != uint64(len(cp)) || len(atts) != 1 || atts[0] != att || got != nil {
			t.Fatalf("header: size %d, %d attestations, after %d bytes", size, len(atts), len(got))
		}
		return nil
	}, func(p []byte) error {
		chunks++
		biggest = max(biggest, len(p))
		got = append(got, p...)
		return nil
	})
	if err != nil || !bytes.Equal(got, cp) {
		t.Fatalf("streamed %d of %d bytes: %v", len(got), len(cp), err)
	}
	if chunks != 4 || biggest > checkpointChunk {
		t.Fatalf("%d chunks, the biggest %d bytes: want 4 of at most %d", chunks, biggest, checkpointChunk)
	}
	// The sender's error stops the stream and comes back.
	errSend := errors.New("peer gone")
	calls := 0
	err = st.StreamLatestCheckpoint(func(uint64, []crdt.Attestation) error { return nil }, func([]byte) error { calls++; return errSend })
	if !errors.Is(err, errSend) || calls != 1 {
		t.Fatalf("after a send error: %v, %d calls", err, calls)
	}
}
