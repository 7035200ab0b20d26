package store

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

// quietLogger drops everything below warnings.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func signer(t testing.TB, b byte) *crdt.Signer {
	t.Helper()
	s, err := crdt.SignerFromSeed(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testClock is a deterministic wall clock in Unix milliseconds.
func testClock() *crdt.Clock {
	ms := int64(1_700_000_000_000)
	return crdt.NewClock(func() int64 { ms++; return ms })
}

// world makes ops of one federation and keeps a reference replica: the
// in-memory set every store-backed set is compared with.
type world struct {
	t      testing.TB
	clock  *crdt.Clock
	fed    *crdt.Author
	venues []*crdt.Author
	ref    *crdt.Replica
	rng    *rand.Rand
	cards  []crdt.CardID
}

func newWorld(t testing.TB, nVenues int) *world {
	w := &world{t: t, clock: testClock(), rng: rand.New(rand.NewPCG(1, 2))}
	fs := signer(t, 1)
	w.fed = crdt.NewAuthor(fs, w.clock, 0, crdt.OpID{})
	w.ref = crdt.NewReplica(fs.Public())
	for i := range nVenues {
		w.venues = append(w.venues, crdt.NewAuthor(signer(t, byte(10+i)), w.clock, 0, crdt.OpID{}))
	}
	for i := range 8 {
		w.cards = append(w.cards, crdt.CardID(fmt.Sprintf("04A1B2C3D4E5%02X", i)))
	}
	return w
}

func (w *world) fedKey() crdt.PublicKey { return w.fed.Signer.Public() }

// genesis returns the federation's genesis and the admissions of every
// venue.
func (w *world) genesis() []crdt.Op {
	ops := []crdt.Op{w.fed.Make(&crdt.Genesis{Name: "Test", Currency: "EUR", Settings: crdt.DefaultSettings()})}
	for i, v := range w.venues {
		ops = append(ops, w.fed.Make(&crdt.Admit{Venue: v.Signer.Public(), Name: fmt.Sprintf("Venue %d", i)}))
	}
	return ops
}

// venueOp makes a random op of venue i: mostly top-ups and payments, some
// card registrations, events and venue info.
func (w *world) venueOp(i int) crdt.Op {
	v := w.venues[i]
	card := w.cards[w.rng.IntN(len(w.cards))]
	switch r := w.rng.IntN(20); {
	case r == 0:
		return v.Make(&crdt.CardRegister{Card: card})
	case r == 1:
		return v.Make(&crdt.EventUpsert{EventID: fmt.Sprintf("ev%d", w.rng.IntN(5)), Fields: crdt.FieldTitle | crdt.FieldStartsAt,
			Title: fmt.Sprintf("Concert %d", w.rng.IntN(100)), StartsAt: int64(w.rng.IntN(1e6))})
	case r == 2:
		return v.Make(&crdt.VenueInfo{Name: fmt.Sprintf("Bar %d", w.rng.IntN(100))})
	case r < 8:
		return v.Make(&crdt.TopUp{Card: card, Amount: uint64(100 + w.rng.IntN(5000)), Method: crdt.MethodCash})
	default:
		// The counter is the next after the highest one the reference knows.
		var counter uint64 = 1
		if c := w.ref.Set.State.Card(card); c != nil {
			counter = c.Counter + 1
		}
		return v.Make(&crdt.Payment{Card: card, Amount: uint64(1 + w.rng.IntN(300)), Counter: counter, Label: "beer"})
	}
}

// deliver gives ops to the reference replica.
func (w *world) deliver(ops ...crdt.Op) {
	w.t.Helper()
	for _, op := range ops {
		if err := w.ref.Deliver(op); err != nil {
			w.t.Fatalf("reference: %v", err)
		}
	}
}

// addCommit adds ops to set, commits them with the state they changed and
// refolds the set if it went stale (committing the refolded state), as a
// node does.
func addCommit(t testing.TB, st *Store, set *crdt.OpSet, ops []crdt.Op, idem ...IdemRecord) {
	t.Helper()
	b := Batch{Idem: idem, State: set}
	for _, op := range ops {
		out, err := set.Add(op)
		if err != nil {
			t.Fatalf("add %s#%d: %v", op.Author.Short(), op.Seq, err)
		}
		switch out {
		case crdt.Added:
			b.Ops = append(b.Ops, op)
		case crdt.Evidence:
			b.Evidence = append(b.Evidence, op)
		}
	}
	if err := st.Commit(b); err != nil {
		t.Fatal(err)
	}
	if set.Stale {
		if err := set.Refold(st); err != nil {
			t.Fatal(err)
		}
		if err := st.Commit(Batch{State: set}); err != nil {
			t.Fatal(err)
		}
	}
}

func openStore(t testing.TB, dir string, every uint64) *Store {
	t.Helper()
	st, err := Open(Config{Dir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// sameSet checks that got has the digest and the views of want.
func sameSet(t testing.TB, got, want *crdt.OpSet) {
	t.Helper()
	if got.Digest() != want.Digest() {
		t.Errorf("digest %x, want %x", got.Digest(), want.Digest())
	}
	if got.Stale {
		t.Errorf("loaded set is stale")
	}
	g, w := got.State, want.State
	if g.Name != w.Name || g.Currency != w.Currency || g.Settings != w.Settings {
		t.Errorf("federation %q %q %+v, want %q %q %+v", g.Name, g.Currency, g.Settings, w.Name, w.Currency, w.Settings)
	}
	if g.Credits != w.Credits || g.Debits != w.Debits || g.Counted != w.Counted {
		t.Errorf("totals credits %d debits %d counted %d, want %d %d %d", g.Credits, g.Debits, g.Counted, w.Credits, w.Debits, w.Counted)
	}
	if len(g.Cards) != len(w.Cards) {
		t.Errorf("%d cards, want %d", len(g.Cards), len(w.Cards))
	}
	for id, wc := range w.Cards {
		gc := g.Cards[id]
		if gc == nil {
			t.Errorf("card %s missing", id)
			continue
		}
		if gc.Balance != wc.Balance || gc.Credits != wc.Credits || gc.Debits != wc.Debits || gc.Counter != wc.Counter ||
			gc.Registered != wc.Registered || gc.Blocked != wc.Blocked || gc.Holder != wc.Holder ||
			!slices.Equal(g.CardHistory(id, nil, false, 0), w.CardHistory(id, nil, false, 0)) || gc.Entries != wc.Entries {
			t.Errorf("card %s: balance %d counter %d entries %d, want %d %d %d", id, gc.Balance, gc.Counter, gc.Entries, wc.Balance, wc.Counter, wc.Entries)
		}
		for n := range wc.Counter + 1 {
			wid, wok := w.Index().Payment(id, n)
			gid, gok := g.Index().Payment(id, n)
			if wid != gid || wok != gok {
				t.Errorf("card %s counter %d: first payment %v %v, want %v %v", id, n, gid, gok, wid, wok)
			}
		}
	}
	ga, wa := g.Agenda(), w.Agenda()
	if len(ga) != len(wa) {
		t.Errorf("%d events, want %d", len(ga), len(wa))
	} else {
		for i := range wa {
			if *ga[i] != *wa[i] {
				t.Errorf("event %d: %+v, want %+v", i, *ga[i], *wa[i])
			}
		}
	}
	if len(g.Venues) != len(w.Venues) {
		t.Errorf("%d venues, want %d", len(g.Venues), len(w.Venues))
	}
	for k, wv := range w.Venues {
		if gv := g.Venues[k]; gv == nil || !reflect.DeepEqual(*gv, *wv) {
			t.Errorf("venue %s: %+v, want %+v", k.Short(), gv, wv)
		}
	}
	gcs, wcs := g.SortedConflicts(), w.SortedConflicts()
	if len(gcs) != len(wcs) {
		t.Errorf("%d conflicts, want %d", len(gcs), len(wcs))
	} else {
		for i := range wcs {
			if gcs[i].Key() != wcs[i].Key() || !slices.Equal(gcs[i].Ops, wcs[i].Ops) || gcs[i].Seq != wcs[i].Seq {
				t.Errorf("conflict %d: %+v, want %+v", i, gcs[i], wcs[i])
			}
		}
	}
	if len(got.EvidenceOps) != len(want.EvidenceOps) {
		t.Errorf("%d evidence ops, want %d", len(got.EvidenceOps), len(want.EvidenceOps))
	}
	gv, wv := got.VersionVector(), want.VersionVector()
	if len(gv) != len(wv) {
		t.Errorf("version vector %v, want %v", gv, wv)
	}
	for k, seq := range wv {
		if gv[k] != seq {
			t.Errorf("version vector of %s: %d, want %d", k.Short(), gv[k], seq)
		}
	}
}

// rebuild builds a fresh set from every op the store holds, read back
// through ReadRange: the federation first, then every author it admitted.
func rebuild(t testing.TB, st *Store, fed crdt.PublicKey) *crdt.OpSet {
	t.Helper()
	set := crdt.NewOpSet(crdt.Config{Federation: fed, Log: st})
	add := func(op crdt.Op) error {
		if _, err := set.AddTrusted(op); err != nil {
			return err
		}
		return nil
	}
	if err := st.ReadRange(fed, 1, ^uint64(0), add); err != nil {
		t.Fatal(err)
	}
	keys := make([]crdt.PublicKey, 0, len(set.Authors))
	for k := range set.Authors {
		if k != fed {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b crdt.PublicKey) int { return bytes.Compare(a[:], b[:]) })
	for _, k := range keys {
		if err := st.ReadRange(k, 1, ^uint64(0), add); err != nil {
			t.Fatal(err)
		}
	}
	return set
}

// storeWithGenesis opens a store with cfg (a test logger if cfg has none)
// and commits a two-venue federation's genesis to it.
func storeWithGenesis(t testing.TB, cfg Config) (*world, *Store, *crdt.OpSet) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	w := newWorld(t, 2)
	st, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	set, err := st.Load(w.fedKey())
	if err != nil {
		t.Fatal(err)
	}
	gen := w.genesis()
	w.deliver(gen...)
	addCommit(t, st, set, gen)
	return w, st, set
}

// storeWithHistory opens a store in dir and commits the genesis, then
// batches of per random venue ops each: a store with some history.
func storeWithHistory(t testing.TB, dir string, batches, per int) (*world, *Store, *crdt.OpSet) {
	t.Helper()
	w, st, set := storeWithGenesis(t, Config{Dir: dir})
	for range batches {
		var ops []crdt.Op
		for range per {
			op := w.venueOp(w.rng.IntN(2))
			w.deliver(op)
			ops = append(ops, op)
		}
		addCommit(t, st, set, ops)
	}
	return w, st, set
}
