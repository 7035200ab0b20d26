package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

// refsOf returns each for WriteRefsAside over n references named prefix-i.
func refsOf(prefix string, n int) func(fn func(string, crdt.RefEntry) error) error {
	return func(fn func(string, crdt.RefEntry) error) error {
		for i := range n {
			if err := fn(fmt.Sprintf("%s-%05d", prefix, i), crdt.RefEntry{Card: "04AABBCCDDEEFF", Amount: int64(i)}); err != nil {
				return err
			}
		}
		return nil
	}
}

func countRefs(set *crdt.OpSet) int {
	n := 0
	set.State.Index().EachRef(func(string, crdt.RefEntry) { n++ })
	return n
}

// References written aside are read by nobody until the commit of the
// reset index switches to their generation; a stop midway (an AfterChunk
// error, or a reopen before the commit) leaves the committed index as it
// was, and the next WriteRefsAside clears what it left.
func TestWriteRefsAsideSwitchedInByTheResetCommit(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	w := newWorld(t, 1)
	st := openStore(t, dir, 0)
	set := st.NewSet(w.fedKey())
	addCommit(t, st, set, w.genesis())
	if _, err := st.Index().WriteRefsAside(ctx, refsOf("first", 10), RefsAsideConfig{}); !errors.Is(err, ErrNotReset) {
		t.Fatalf("without a reset: %v", err)
	}

	for _, tc := range []struct {
		name      string
		stopAt    int
		wantChunk int
	}{
		{"stopped after chunk 2", 2, 2},
		{"stopped after chunk 5", 5, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st.Index().Reset()
			stop := errors.New("stop")
			chunks, err := st.Index().WriteRefsAside(ctx, refsOf("first", 200), RefsAsideConfig{ChunkBytes: 256, AfterChunk: func(i int) error {
				if i == tc.stopAt {
					return stop
				}
				return nil
			}})
			if !errors.Is(err, stop) || chunks != tc.wantChunk {
				t.Fatalf("WriteRefsAside: %d chunks, %v", chunks, err)
			}
			// A crash: reopened without the commit.
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			st = openStore(t, dir, 0)
			loaded, err := st.Load(w.fedKey())
			if err != nil {
				t.Fatal(err)
			}
			if n := countRefs(loaded); n != 0 {
				t.Fatalf("after the stop: %d references", n)
			}
			if _, ok := st.Index().Ref("first-00000"); ok {
				t.Fatal("a reference written aside is read before the commit")
			}
			set = loaded
		})
	}

	// Written whole, then committed: only these, none of the stopped
	// attempts'.
	st.Index().Reset()
	chunks, err := st.Index().WriteRefsAside(ctx, refsOf("second", 50), RefsAsideConfig{ChunkBytes: 256})
	if err != nil || chunks < 2 {
		t.Fatalf("WriteRefsAside: %d chunks, %v", chunks, err)
	}
	if _, ok := st.Index().Ref("second-00000"); ok {
		t.Fatal("a reference written aside is read before the commit")
	}
	if err := st.Commit(Batch{State: set}); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		if n := countRefs(set); n != 50 {
			t.Fatalf("%s: %d references, want 50", when, n)
		}
		if e, ok := st.Index().Ref("second-00049"); !ok || e.Amount != 49 {
			t.Fatalf("%s: second-00049 = %+v %v", when, e, ok)
		}
		if _, ok := st.Index().Ref("first-00000"); ok {
			t.Fatalf("%s: a reference of a stopped attempt is read", when)
		}
	}
	check("committed")
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = openStore(t, dir, 0)
	defer st.Close()
	if set, err = st.Load(w.fedKey()); err != nil {
		t.Fatal(err)
	}
	check("reopened")
}

// A staged checkpoint is not the latest one until committed: a reopen in
// between keeps the previous one, and a staged checkpoint is not
// committed over one saved after it was staged.
func TestStagedCheckpointLatestOnlyOnceCommitted(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir, 0)
	a := signer(t, 1)
	att := func(cp []byte) []crdt.Attestation {
		return []crdt.Attestation{crdt.NewOpSet(crdt.Config{Federation: a.Public()}).Attest(a, cp)}
	}
	latest := func(want []byte) {
		t.Helper()
		got, _, err := st.LatestCheckpoint()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("latest checkpoint: %d bytes, %v; want %d bytes", len(got), err, len(want))
		}
	}
	cp1 := bytes.Repeat([]byte{1}, 3*checkpointChunk+5)
	cp2 := bytes.Repeat([]byte{2}, 2*checkpointChunk+7)
	cp3 := []byte{3, 3, 3}
	if err := st.SaveCheckpoint(cp1, att(cp1)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.StageCheckpoint(cp2); err != nil {
		t.Fatal(err)
	}
	latest(cp1)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = openStore(t, dir, 0)
	defer st.Close()
	latest(cp1)
	staged, err := st.StageCheckpoint(cp2)
	if err != nil || staged.Size() != uint64(len(cp2)) {
		t.Fatalf("stage: %+v %v", staged, err)
	}
	if err := st.CommitCheckpoint(staged, att(cp2)); err != nil {
		t.Fatal(err)
	}
	latest(cp2)
	old, err := st.StageCheckpoint(cp1)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SaveCheckpoint(cp3, att(cp3)); err != nil {
		t.Fatal(err)
	}
	if err := st.CommitCheckpoint(old, att(cp1)); err == nil {
		t.Fatal("a checkpoint staged before another was saved was committed over it")
	}
	latest(cp3)
	if err := st.CommitCheckpoint(StagedCheckpoint{}, nil); err == nil {
		t.Fatal("committed a checkpoint never staged")
	}
}
