package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/cagnotte/cagnotte/crdt"
)

// TestRoundTrip commits a federation's ops in batches, closes, reopens and
// loads: the loaded set has the digest and views of the in-memory one,
// and the chain continues after a reload.
func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	w := newWorld(t, 3)
	st := openStore(t, dir, 100)
	set, err := st.Load(w.fedKey())
	if err != nil {
		t.Fatal(err)
	}
	if set.Len() != 0 {
		t.Fatalf("empty store loads %d ops", set.Len())
	}
	gen := w.genesis()
	w.deliver(gen...)
	addCommit(t, st, set, gen)
	total := uint64(len(gen))
	for batch := range 40 {
		var ops []crdt.Op
		for range 1 + w.rng.IntN(30) {
			op := w.venueOp(w.rng.IntN(len(w.venues)))
			w.deliver(op)
			ops = append(ops, op)
		}
		total += uint64(len(ops))
		addCommit(t, st, set, ops, IdemRecord{Key: fmt.Sprintf("req-%d", batch), Status: 201, Body: []byte("ok")})
	}
	sameSet(t, set, w.ref.Set)
	stats := st.Stats()
	if stats.OpsStored != total {
		t.Fatalf("stats %+v, want %d ops", stats, total)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = openStore(t, dir, 100)
	if got := st.Stats(); got.OpsStored != total {
		t.Fatalf("stats after reopen %+v, want %+v", got, stats)
	}
	loaded, err := st.Load(w.fedKey())
	if err != nil {
		t.Fatal(err)
	}
	sameSet(t, loaded, w.ref.Set)
	if got := st.Stats(); got.LoadedOps != 0 {
		t.Fatalf("loaded %d ops: a restart reads no op", got.LoadedOps)
	}
	for i := range 40 {
		r, ok, err := st.Idempotency(fmt.Sprintf("req-%d", i))
		if err != nil || !ok || r.Status != 201 || string(r.Body) != "ok" {
			t.Fatalf("idempotency record %d: %+v %v %v", i, r, ok, err)
		}
	}

	// Continue every chain from the loaded heads, as a restarted node does.
	for i, v := range w.venues {
		seq, head := loaded.Head(v.Signer.Public())
		w.venues[i] = crdt.NewAuthor(v.Signer, w.clock, seq, head)
	}
	for range 10 {
		var ops []crdt.Op
		for range 20 {
			op := w.venueOp(w.rng.IntN(len(w.venues)))
			w.deliver(op)
			ops = append(ops, op)
		}
		addCommit(t, st, loaded, ops)
	}
	sameSet(t, loaded, w.ref.Set)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = openStore(t, dir, 100)
	defer st.Close()
	again, err := st.Load(w.fedKey())
	if err != nil {
		t.Fatal(err)
	}
	sameSet(t, again, w.ref.Set)
	sameSet(t, rebuild(t, st, w.fedKey()), w.ref.Set)
}

// TestReadRange reads exact ranges, stops at a gap and passes fn's error.
func TestReadRange(t *testing.T) {
	st := openStore(t, t.TempDir(), 0)
	defer st.Close()
	w := newWorld(t, 2)
	gen := w.genesis()
	var ops []crdt.Op
	for range 20 {
		ops = append(ops, w.venueOp(0))
	}
	other := w.venueOp(1)
	// The store does not check chains: leave seq 16 out to make a gap.
	if err := st.Commit(Batch{Ops: append(append(append([]crdt.Op{}, gen...), ops[:15]...), append(ops[16:], other)...)}); err != nil {
		t.Fatal(err)
	}
	v := w.venues[0].Signer.Public()
	read := func(from, to uint64) []uint64 {
		t.Helper()
		var seqs []uint64
		err := st.ReadRange(v, from, to, func(op crdt.Op) error {
			if op.Author != v || op.ID() != ops[op.Seq-1].ID() {
				t.Fatalf("read %s#%d, not the op committed", op.Author.Short(), op.Seq)
			}
			seqs = append(seqs, op.Seq)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return seqs
	}
	seqs := func(from, to uint64) []uint64 {
		var s []uint64
		for i := from; i <= to; i++ {
			s = append(s, i)
		}
		return s
	}
	for _, c := range []struct {
		from, to uint64
		want     []uint64
	}{
		{1, 5, seqs(1, 5)},
		{0, 3, seqs(1, 3)},
		{3, 3, []uint64{3}},
		{4, 15, seqs(4, 15)},
		{10, 30, seqs(10, 15)}, // stops at the gap at 16
		{16, 16, nil},
		{17, 20, seqs(17, 20)},
		{17, ^uint64(0), seqs(17, 20)},
		{21, 40, nil},
		{5, 4, nil},
	} {
		if got := read(c.from, c.to); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("ReadRange(%d, %d) = %v, want %v", c.from, c.to, got, c.want)
		}
	}
	stop := errors.New("stop")
	n := 0
	err := st.ReadRange(v, 1, 10, func(crdt.Op) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("fn error: %v after %d ops", err, n)
	}
	var got []crdt.Op
	if err := st.ReadRange(w.venues[1].Signer.Public(), 1, 5, func(op crdt.Op) error { got = append(got, op); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID() != other.ID() {
		t.Fatalf("other author: %d ops", len(got))
	}
	if err := st.ReadRange(crdt.PublicKey{9}, 1, 5, func(crdt.Op) error { t.Fatal("op of unknown author"); return nil }); err != nil {
		t.Fatal(err)
	}
}

// TestLoadReadsNoOps checks that Load reads the state's records and no op:
// every op is deleted from disk before the reload, and the state is the
// same (the ops stay on disk for sync and audit, not for restarts).
func TestLoadReadsNoOps(t *testing.T) {
	dir := t.TempDir()
	w, st, set := storeWithHistory(t, dir, 12, 10)
	heads := map[crdt.PublicKey]uint64{}
	for k, a := range set.Authors {
		heads[k] = a.Seq
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := badger.Open(badgerOptions(Config{Dir: dir}, quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		for k, seq := range heads {
			for i := uint64(1); i <= seq; i++ {
				if err := txn.Delete(opKey(k, i)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	st = openStore(t, dir, 0)
	defer st.Close()
	loaded, err := st.Load(w.fedKey())
	if err != nil {
		t.Fatal(err)
	}
	sameSet(t, loaded, w.ref.Set)
	if got := st.Stats().LoadedOps; got != 0 {
		t.Fatalf("Load read %d ops", got)
	}
}

// TestIdempotency round-trips records, also across a reopen.
func TestIdempotency(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir, 0)
	recs := []IdemRecord{
		{Key: "a", RequestHash: sha256.Sum256([]byte("a")), Status: 201, Body: []byte(`{"approved":true}`)},
		{Key: "b", RequestHash: sha256.Sum256([]byte("b")), Status: 402, Body: nil},
		{Key: strings.Repeat("k", MaxIdempotencyKey), Status: -1, Body: bytes.Repeat([]byte{0xff}, 5000)},
	}
	if err := st.Commit(Batch{Idem: recs}); err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(Batch{Idem: []IdemRecord{{Key: "a", Status: 200}}}); err != nil {
		t.Fatal(err)
	}
	recs[0] = IdemRecord{Key: "a", Status: 200}
	for _, bad := range []string{"", strings.Repeat("k", MaxIdempotencyKey+1)} {
		if err := st.Commit(Batch{Idem: []IdemRecord{{Key: bad}}}); err == nil {
			t.Fatalf("key of %d bytes accepted", len(bad))
		}
	}
	check := func() {
		t.Helper()
		for _, want := range recs {
			got, ok, err := st.Idempotency(want.Key)
			if err != nil || !ok {
				t.Fatalf("%q: %v %v", want.Key, ok, err)
			}
			if got.Key != want.Key || got.RequestHash != want.RequestHash || got.Status != want.Status || !bytes.Equal(got.Body, want.Body) {
				t.Fatalf("%q: %+v, want %+v", want.Key, got, want)
			}
		}
		if _, ok, err := st.Idempotency("missing"); ok || err != nil {
			t.Fatalf("missing key: %v %v", ok, err)
		}
	}
	check()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = openStore(t, dir, 0)
	defer st.Close()
	check()
}

// TestRevocationOnLoad: a revocation voids ops already folded, the set goes
// stale. Committed with the stale state and not refolded yet (a crash
// before the refold was written), Load refolds; with the refolded state
// committed, Load reads it as it is.
func TestRevocationOnLoad(t *testing.T) {
	for _, refoldWritten := range []bool{false, true} {
		t.Run(fmt.Sprintf("refoldWritten=%v", refoldWritten), func(t *testing.T) {
			dir := t.TempDir()
			w, st, set := storeWithHistory(t, dir, 0, 0)
			var ops []crdt.Op
			for range 30 {
				op := w.venueOp(0)
				ops = append(ops, op, w.venueOp(1))
			}
			w.deliver(ops...)
			addCommit(t, st, set, ops)
			bad := w.venues[0].Signer.Public()
			rev := w.fed.Make(&crdt.Revoke{Venue: bad, AfterSeq: 10, Reason: "stolen"})
			w.deliver(rev)
			if out, err := set.Add(rev); err != nil || out != crdt.Added || !set.Stale {
				t.Fatalf("revoke: %v %v stale=%v", out, err, set.Stale)
			}
			if err := st.Commit(Batch{Ops: []crdt.Op{rev}, State: set}); err != nil {
				t.Fatal(err)
			}
			if refoldWritten {
				if err := set.Refold(st); err != nil {
					t.Fatal(err)
				}
				sameSet(t, set, w.ref.Set)
				if err := st.Commit(Batch{State: set}); err != nil {
					t.Fatal(err)
				}
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}

			st = openStore(t, dir, 0)
			defer st.Close()
			loaded, err := st.Load(w.fedKey())
			if err != nil {
				t.Fatal(err)
			}
			sameSet(t, loaded, w.ref.Set)
			if v := loaded.State.Venues[bad]; v == nil || !v.Revoked || v.RevokedAfter != 10 {
				t.Fatalf("venue after load: %+v", v)
			}
			got := st.Stats().LoadedOps
			switch {
			case !refoldWritten && got < loaded.State.Counted:
				t.Fatalf("loaded %d ops, the refold should read the %d counted", got, loaded.State.Counted)
			case refoldWritten && got != 0:
				t.Fatalf("loaded %d ops: the refolded state was on disk", got)
			}
		})
	}
}

// TestEvidence keeps an equivocation across reloads, whether the evidence
// is in the snapshot or committed after it.
func TestEvidence(t *testing.T) {
	dir := t.TempDir()
	w := newWorld(t, 2)
	st := openStore(t, dir, 1000)
	set, err := st.Load(w.fedKey())
	if err != nil {
		t.Fatal(err)
	}
	gen := w.genesis()
	w.deliver(gen...)
	addCommit(t, st, set, gen)
	v := w.venues[0]
	var ops []crdt.Op
	var heads []crdt.OpID
	for range 10 {
		op := w.venueOp(0)
		ops = append(ops, op)
		heads = append(heads, op.ID())
	}
	w.deliver(ops...)
	addCommit(t, st, set, ops)
	// The venue signs another op at seq 6 (on top of its op 5).
	twin := crdt.NewAuthor(v.Signer, w.clock, 5, heads[4])
	fork6 := twin.Make(&crdt.TopUp{Card: w.cards[0], Amount: 99999, Method: crdt.MethodCash})
	w.deliver(fork6)
	addCommit(t, st, set, []crdt.Op{fork6})
	if len(set.EvidenceOps) != 1 {
		t.Fatalf("%d evidence ops", len(set.EvidenceOps))
	}
	if err := st.Commit(Batch{State: set}); err != nil {
		t.Fatal(err)
	}
	// And another at seq 3, after the snapshot.
	twin = crdt.NewAuthor(v.Signer, w.clock, 2, heads[1])
	fork3 := twin.Make(&crdt.TopUp{Card: w.cards[1], Amount: 77777, Method: crdt.MethodCash})
	w.deliver(fork3)
	addCommit(t, st, set, []crdt.Op{fork3})
	sameSet(t, set, w.ref.Set)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = openStore(t, dir, 1000)
	defer st.Close()
	loaded, err := st.Load(w.fedKey())
	if err != nil {
		t.Fatal(err)
	}
	sameSet(t, loaded, w.ref.Set)
	if len(loaded.EvidenceOps) != 2 {
		t.Fatalf("%d evidence ops after load", len(loaded.EvidenceOps))
	}
	if a := loaded.Authors[v.Signer.Public()]; a.Fork != 3 {
		t.Fatalf("fork at %d, want 3", a.Fork)
	}
}

// TestFormat2StoreMarkedFormat3: a store of format 2 (gob meta and author
// records) opens, keeps its history, and is marked format 3 at once, so
// that a build of format 2, which cannot decode the binary records this
// build writes, refuses it as newer instead of calling it corrupt.
func TestFormat2StoreMarkedFormat3(t *testing.T) {
	dir := t.TempDir()
	w, st, _ := storeWithHistory(t, dir, 10, 20)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	setVersion := func(v byte) {
		t.Helper()
		db, err := badger.Open(badgerOptions(Config{Dir: dir}, quietLogger()))
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(txn *badger.Txn) error { return txn.Set(keyVersion, []byte{0, 0, 0, v}) }); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	setVersion(2)
	st, err := Open(Config{Dir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("open a format 2 store: %v", err)
	}
	var ver []byte
	if err := st.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(keyVersion)
		if err != nil {
			return err
		}
		ver, err = item.ValueCopy(nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got := binary.BigEndian.Uint32(ver); got != FormatVersion || FormatVersion != 3 {
		t.Errorf("format after opening a format 2 store: %d (this build writes %d), want 3", got, FormatVersion)
	}
	if st.opsStored == 0 {
		t.Error("the ops counter was not read")
	}
	loaded, err := st.Load(w.fedKey())
	if err != nil {
		t.Fatal(err)
	}
	sameSet(t, loaded, w.ref.Set)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestFormat refuses a store of a newer format and a directory that is
// not a store.
func TestFormat(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir, 0)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := badger.Open(badgerOptions(Config{Dir: dir}, quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set(keyVersion, []byte{0, 0, 0, 99}) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Open(Config{Dir: dir, Logger: quietLogger()})
	if !errors.Is(err, ErrNewerFormat) || !strings.Contains(err.Error(), "format 99") {
		t.Fatalf("open newer format: %v", err)
	}

	other := t.TempDir()
	db, err = badger.Open(badgerOptions(Config{Dir: other}, quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte("hello"), []byte("world")) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Config{Dir: other, Logger: quietLogger()}); !errors.Is(err, ErrUnknownFormat) {
		t.Fatalf("open foreign badger: %v", err)
	}
	if _, err := Open(Config{}); err == nil {
		t.Fatal("open without a dir")
	}
}

// TestWrongFederation refuses to load another federation's snapshot.
func TestWrongFederation(t *testing.T) {
	st := openStore(t, t.TempDir(), 0)
	defer st.Close()
	w := newWorld(t, 1)
	set, err := st.Load(w.fedKey())
	if err != nil {
		t.Fatal(err)
	}
	addCommit(t, st, set, w.genesis())
	if err := st.Commit(Batch{State: set}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Load(crdt.PublicKey{1}); !errors.Is(err, ErrWrongFederation) {
		t.Fatalf("load with another federation key: %v", err)
	}
}

// TestBatchTooBig: a batch over Badger's transaction limit fails cleanly
// and writes nothing.
func TestBatchTooBig(t *testing.T) {
	st := openStore(t, t.TempDir(), 0)
	defer st.Close()
	w := newWorld(t, 1)
	gen := w.genesis()
	if err := st.Commit(Batch{Ops: gen}); err != nil {
		t.Fatal(err)
	}
	desc := strings.Repeat("x", crdt.MaxTextLen)
	var ops []crdt.Op
	for i := range 3000 {
		ops = append(ops, w.venues[0].Make(&crdt.EventUpsert{EventID: fmt.Sprint(i), Fields: crdt.FieldDescription, Description: desc}))
	}
	err := st.Commit(Batch{Ops: ops})
	if !errors.Is(err, ErrBatchTooBig) || !errors.Is(err, badger.ErrTxnTooBig) {
		t.Fatalf("commit of %d big ops: %v", len(ops), err)
	}
	if got := st.Stats().OpsStored; got != uint64(len(gen)) {
		t.Fatalf("%d ops stored after a failed batch", got)
	}
	n := 0
	if err := st.ReadRange(w.venues[0].Signer.Public(), 1, 10, func(crdt.Op) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("read %d ops of the failed batch: %v", n, err)
	}
	// The store still works, and the same ops fit in smaller batches.
	for i := 0; i < len(ops); i += 500 {
		if err := st.Commit(Batch{Ops: ops[i:min(i+500, len(ops))]}); err != nil {
			t.Fatal(err)
		}
	}
	if got := st.Stats().OpsStored; got != uint64(len(gen)+len(ops)) {
		t.Fatalf("%d ops stored", got)
	}
}

// TestConcurrentCommit commits the chains of several venues from several
// goroutines at once.
func TestConcurrentCommit(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir, 0)
	w := newWorld(t, 6)
	gen := w.genesis()
	w.deliver(gen...)
	if err := st.Commit(Batch{Ops: gen}); err != nil {
		t.Fatal(err)
	}
	chains := make([][]crdt.Op, len(w.venues))
	for i, v := range w.venues {
		for range 200 {
			chains[i] = append(chains[i], v.Make(&crdt.TopUp{Card: w.cards[i], Amount: 10, Method: crdt.MethodCash}))
		}
		w.deliver(chains[i]...)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(chains))
	for i, chain := range chains {
		wg.Go(func() {
			for j := 0; j < len(chain); j += 7 {
				b := Batch{Ops: chain[j:min(j+7, len(chain))], Idem: []IdemRecord{{Key: fmt.Sprintf("%d/%d", i, j), Status: 200}}}
				if err := st.Commit(b); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want := uint64(len(gen) + 200*len(chains))
	if got := st.Stats().OpsStored; got != want {
		t.Fatalf("%d ops stored, want %d", got, want)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = openStore(t, dir, 0)
	defer st.Close()
	if got := st.Stats().OpsStored; got != want {
		t.Fatalf("%d ops stored after reopen, want %d", got, want)
	}
	set, err := st.Load(w.fedKey())
	if err != nil {
		t.Fatal(err)
	}
	sameSet(t, set, w.ref.Set)
}

// TestClose stops Badger's goroutines and refuses calls afterwards.
func TestClose(t *testing.T) {
	st := openStore(t, t.TempDir(), 0)
	w := newWorld(t, 1)
	set, err := st.Load(w.fedKey())
	if err != nil {
		t.Fatal(err)
	}
	addCommit(t, st, set, w.genesis())
	if err := st.Commit(Batch{State: set}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	// Goroutines that have been told to stop may still be returning: give
	// the scheduler a bounded number of turns.
	var leaked string
	for range 1000 {
		if leaked = storeGoroutines(); leaked == "" {
			break
		}
		runtime.Gosched()
	}
	if leaked != "" {
		t.Fatalf("goroutines left after Close:\n%s", leaked)
	}
	if err := st.Commit(Batch{Ops: w.genesis()}); !errors.Is(err, ErrClosed) {
		t.Fatalf("commit after close: %v", err)
	}
	if _, err := st.Load(w.fedKey()); !errors.Is(err, ErrClosed) {
		t.Fatalf("load after close: %v", err)
	}
	if err := st.ReadRange(w.fedKey(), 1, 1, func(crdt.Op) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	if _, _, err := st.Idempotency("a"); !errors.Is(err, ErrClosed) {
		t.Fatalf("idempotency after close: %v", err)
	}
}

// storeGoroutines returns the stacks of goroutines running Badger,
// Ristretto or this package's code, other than tests.
func storeGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "TestClose") || strings.Contains(g, "testing.tRunner") && !strings.Contains(g, "dgraph-io") {
			continue
		}
		if strings.Contains(g, "dgraph-io") || strings.Contains(g, "node/store.(*Store)") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
