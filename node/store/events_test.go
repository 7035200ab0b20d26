package store

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"pgregory.net/rapid"

	"github.com/cagnotte/cagnotte/crdt"
)

// Day is a day in Unix ms, for event times.
const day = int64(24 * 3600 * 1000)

// t0 is the events' time origin (2026-01-01).
const t0 = int64(1_767_225_600_000)

// eventOp makes a random agenda op of venue i: a new event, an update of
// some fields (its start time moved, its end moved far for a long event)
// or a cancellation. ids bounds the event ids a venue uses.
func (w *world) eventOp(i, ids int, desc int) crdt.Op {
	v := w.venues[i]
	id := fmt.Sprintf("ev%d", w.rng.IntN(ids))
	start := t0 + int64(w.rng.IntN(400))*day/4
	switch r := w.rng.IntN(10); {
	case r == 0:
		return v.Make(&crdt.EventCancel{EventID: id, Reason: "rain"})
	case r < 3:
		// Some fields only: the start, the end (sometimes weeks later),
		// the title.
		up := &crdt.EventUpsert{EventID: id}
		if w.rng.IntN(2) == 0 {
			up.Fields |= crdt.FieldStartsAt
			up.StartsAt = start
		}
		if w.rng.IntN(2) == 0 {
			up.Fields |= crdt.FieldEndsAt
			up.EndsAt = start + int64(w.rng.IntN(30))*day
		}
		if up.Fields == 0 || w.rng.IntN(2) == 0 {
			up.Fields |= crdt.FieldTitle
			up.Title = fmt.Sprintf("Concert %d", w.rng.IntN(100))
		}
		if up.Fields&(crdt.FieldStartsAt|crdt.FieldEndsAt) == crdt.FieldStartsAt|crdt.FieldEndsAt && up.EndsAt < up.StartsAt {
			up.EndsAt = up.StartsAt
		}
		return v.Make(up)
	default:
		end := start + int64(1+w.rng.IntN(6))*3600*1000
		if w.rng.IntN(8) == 0 {
			end = start + int64(8+w.rng.IntN(40))*day // longer than RunningWindow
		}
		return v.Make(&crdt.EventUpsert{EventID: id, Fields: crdt.FieldTitle | crdt.FieldStartsAt | crdt.FieldEndsAt | crdt.FieldDescription | crdt.FieldLocation,
			Title: fmt.Sprintf("Bal %d", w.rng.IntN(1000)), StartsAt: start, EndsAt: end,
			Description: strings.Repeat("d", desc), Location: "Salle"})
	}
}

// storeWithEvents opens a store in dir and commits the genesis and n agenda
// ops of two venues (ids distinct event ids per venue), in batches of 50,
// with a few payments between them.
func storeWithEvents(t testing.TB, dir string, n, ids, desc int) (*world, *Store, *crdt.OpSet) {
	t.Helper()
	w, st, set := storeWithGenesis(t, Config{Dir: dir})
	for n > 0 {
		var ops []crdt.Op
		for range min(n, 50) {
			op := w.eventOp(w.rng.IntN(2), ids, desc)
			w.deliver(op)
			ops = append(ops, op)
			n--
		}
		op := w.venueOp(0)
		w.deliver(op)
		addCommit(t, st, set, append(ops, op))
	}
	return w, st, set
}

// agendaFrom lists EventsByStart(from, after), at most limit events.
func agendaFrom(st *crdt.State, from int64, after *crdt.AgendaPos, limit int) []crdt.Event {
	var out []crdt.Event
	st.AgendaFrom(from, after, func(e crdt.Event) bool {
		out = append(out, e)
		return len(out) < limit
	})
	return out
}

// sameAgenda checks that got lists the agenda of want: every event, and
// pages from various times and cursors.
func sameAgenda(t fataler, got, want *crdt.State) {
	t.Helper()
	ga, wa := got.Agenda(), want.Agenda()
	if len(ga) != len(wa) {
		t.Fatalf("%d events, want %d", len(ga), len(wa))
	}
	for i := range wa {
		if *ga[i] != *wa[i] {
			t.Fatalf("event %d: %+v, want %+v", i, *ga[i], *wa[i])
		}
	}
	var gk, wk []crdt.EventKey
	got.Events().EachEvent(func(e crdt.Event) bool { gk = append(gk, e.Key); return true })
	want.Events().EachEvent(func(e crdt.Event) bool { wk = append(wk, e.Key); return true })
	if !slices.Equal(gk, wk) {
		t.Fatalf("EachEvent lists %d keys, want %d (or another order)", len(gk), len(wk))
	}
	for _, from := range []int64{math.MinInt64, t0 - day, t0 + 10*day, t0 + 40*day, t0 + 60*day, t0 + 99*day, t0 + 200*day} {
		for _, limit := range []int{1, 7, 1 << 30} {
			g, w := agendaFrom(got, from, nil, limit), agendaFrom(want, from, nil, limit)
			if !slices.Equal(g, w) {
				t.Fatalf("from %d limit %d: %d events, want %d", from, limit, len(g), len(w))
			}
			if len(w) > 0 {
				// The next page, after the last event of this one.
				after := w[len(w)-1].Pos()
				g, w = agendaFrom(got, from, &after, 5), agendaFrom(want, from, &after, 5)
				if !slices.Equal(g, w) {
					t.Fatalf("from %d after %v: %d events, want %d", from, after, len(g), len(w))
				}
			}
		}
	}
	for _, e := range wa {
		if g, ok := got.Event(e.Key); !ok || g != *e {
			t.Fatalf("event %v: %+v %v, want %+v", e.Key, g, ok, *e)
		}
	}
}

// TestAgendaServedFromStoreAfterRestart: the agenda a store-backed set
// serves (every event, pages from a time and after a cursor, one event by
// key) is the in-memory reference's, before and after a restart, and
// after a refold.
func TestAgendaServedFromStoreAfterRestart(t *testing.T) {
	dir := t.TempDir()
	w, st, set := storeWithEvents(t, dir, 600, 40, 20)
	sameAgenda(t, set.State, w.ref.Set.State)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = openStore(t, dir, 0)
	defer st.Close()
	loaded, err := st.Load(w.fedKey())
	if err != nil {
		t.Fatal(err)
	}
	sameAgenda(t, loaded.State, w.ref.Set.State)
	sameSet(t, loaded, w.ref.Set)

	// More ops after the restart, then a refold into a new generation.
	for range 3 {
		var ops []crdt.Op
		for range 40 {
			op := w.eventOp(w.rng.IntN(2), 40, 20)
			w.deliver(op)
			ops = append(ops, op)
		}
		addCommit(t, st, loaded, ops)
	}
	sameAgenda(t, loaded.State, w.ref.Set.State)
	if err := loaded.Refold(st); err != nil {
		t.Fatal(err)
	}
	sameAgenda(t, loaded.State, w.ref.Set.State) // from the overlay
	if err := st.Commit(Batch{State: loaded}); err != nil {
		t.Fatal(err)
	}
	sameAgenda(t, loaded.State, w.ref.Set.State) // from the new generation
	again, err := st.Load(w.fedKey())
	if err != nil {
		t.Fatal(err)
	}
	sameAgenda(t, again.State, w.ref.Set.State)
}

// loadCost opens the store in dir, loads it and returns the bytes Load
// allocated and the event records it read.
func loadCost(t *testing.T, dir string, fed crdt.PublicKey) (alloc, reads uint64) {
	t.Helper()
	st := openStore(t, dir, 0)
	defer st.Close()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	r0 := st.Events().Reads()
	set, err := st.Load(fed)
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(set)
	return after.TotalAlloc - before.TotalAlloc, st.Events().Reads() - r0
}

// TestEventsNotLoadedAtStart: loading a store reads no event record, and
// allocates about the same whether the store holds 40 events or 4,000
// (of 1 KiB each: 4 MiB of records).
func TestEventsNotLoadedAtStart(t *testing.T) {
	type result struct{ alloc, reads uint64 }
	var res []result
	for _, tc := range []struct {
		name string
		ids  int
	}{
		{"40 events", 20},
		{"4000 events", 2000},
	} {
		dir := t.TempDir()
		w, st, set := storeWithEvents(t, dir, tc.ids*3, tc.ids, 1024)
		n := len(set.State.Agenda())
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		alloc, reads := loadCost(t, dir, w.fedKey())
		t.Logf("%s (%d held): Load allocated %d KiB, read %d event records", tc.name, n, alloc>>10, reads)
		res = append(res, result{alloc, reads})
	}
	for i, r := range res {
		if r.reads != 0 {
			t.Errorf("load %d read %d event records, want none", i, r.reads)
		}
	}
	// 4,000 events of 1 KiB would be 4 MiB; allow 1 MiB of noise.
	if res[1].alloc > res[0].alloc+1<<20 {
		t.Errorf("Load allocated %d KiB with 4,000 events, %d KiB with 40: it grows with the events", res[1].alloc>>10, res[0].alloc>>10)
	}
}

// TestUpcomingEventsIndexed: listing the next events from a time reads
// the events of that page (and those that may still run then), not the
// season's past events, and agrees with the in-memory reference.
func TestUpcomingEventsIndexed(t *testing.T) {
	dir := t.TempDir()
	w, st, set := storeWithEvents(t, dir, 3000, 1500, 20)
	defer st.Close()
	n := len(w.ref.Set.State.Agenda())
	// From the last quarter of the season: most events are past.
	from := t0 + 90*day
	for _, limit := range []int{10, 50} {
		r0 := st.Events().Reads()
		got := agendaFrom(set.State, from, nil, limit)
		reads := st.Events().Reads() - r0
		want := agendaFrom(w.ref.Set.State, from, nil, limit)
		if !slices.Equal(got, want) {
			t.Fatalf("limit %d: %d events, want %d", limit, len(got), len(want))
		}
		// The page, the events that started in the week before from (about
		// 7/100 of them), the long ones still running, and the iterator's
		// prefetch (64).
		bound := uint64(limit + n*7/100 + n/8 + 64)
		t.Logf("next %d events from day 90 of 100: %d records read of %d events", limit, reads, n)
		if reads > bound || reads >= uint64(n)/2 {
			t.Errorf("next %d events: %d records read, want at most %d (of %d events)", limit, reads, bound, n)
		}
	}
	// A read by key goes through the cache the second time.
	e := w.ref.Set.State.Agenda()[n/2]
	set.State.Event(e.Key)
	r0 := st.Events().Reads()
	if got, ok := set.State.Event(e.Key); !ok || got != *e || st.Events().Reads() != r0 {
		t.Errorf("cached read of %v: %+v %v, %d records read", e.Key, got, ok, st.Events().Reads()-r0)
	}
}

// TestEventCacheBounded: the decoded events kept in memory stay within
// Config.EventCache however many events are read.
func TestEventCacheBounded(t *testing.T) {
	dir := t.TempDir()
	w, st, _ := storeWithEvents(t, dir, 400, 200, 20)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := Open(Config{Dir: dir, Logger: testLogger(t), EventCache: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	set, err := st.Load(w.fedKey())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range w.ref.Set.State.Agenda() {
		if got, ok := set.State.Event(e.Key); !ok || got != *e {
			t.Fatalf("event %v: %+v, want %+v", e.Key, got, *e)
		}
	}
	if n := st.Events().cache.len(); n > 16 {
		t.Errorf("%d events cached, want at most 16", n)
	}
}

// toOldFormat rewrites a closed store's events as an older store held
// them: one "e" record each (binary, or gob for every other one), no
// event index.
func toOldFormat(t *testing.T, dir string) int {
	t.Helper()
	db, err := badger.Open(badgerOptions(Config{Dir: dir}, quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n := 0
	err = db.Update(func(txn *badger.Txn) error {
		var gen uint32
		if item, err := txn.Get(keyGeneration); err == nil {
			if err := item.Value(func(v []byte) error {
				gen = uint32(v[0])<<24 | uint32(v[1])<<16 | uint32(v[2])<<8 | uint32(v[3])
				return nil
			}); err != nil {
				return err
			}
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		var events []crdt.Event
		var keys [][]byte
		for _, p := range eventPrefixes {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: indexPrefix(p, gen)})
			for it.Rewind(); it.Valid(); it.Next() {
				keys = append(keys, it.Item().KeyCopy(nil))
				if p == prefixEventRec {
					if err := it.Item().Value(func(v []byte) error {
						e, err := decodeEventValue(v)
						events = append(events, e)
						return err
					}); err != nil {
						it.Close()
						return err
					}
				}
			}
			it.Close()
		}
		for _, k := range keys {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		for i := range events {
			e := &events[i]
			v := e.AppendBinary(nil)
			if i%2 == 1 {
				if v, err = gobBytes(e); err != nil {
					return err
				}
			}
			if err := txn.Set(recordKey(prefixEvent, e.Key.Venue[:], []byte(e.Key.ID)), v); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// countOld counts the "e" records of an open store.
func countOld(t *testing.T, st *Store) int {
	t.Helper()
	n := 0
	if err := st.db.View(func(txn *badger.Txn) error {
		return eachEventKey(txn, func([]byte, *crdt.Event) bool { n++; return true })
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestOldStoreEventsMigrate: a store whose events are "e" records (binary
// or gob, all read at every start, as before the event index) opens and
// serves the same agenda; its first Load moves them to the event index
// (resuming a move a crash cut short), and later ones find none to move.
func TestOldStoreEventsMigrate(t *testing.T) {
	dir := t.TempDir()
	w, st, _ := storeWithEvents(t, dir, 1200, 600, 100)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	n := toOldFormat(t, dir)
	if n < 500 {
		t.Fatalf("the history made %d events, want more than one migration transaction's 500", n)
	}
	for _, tc := range []struct {
		name    string
		wantOld int
		// crash: one transaction of the move is made, then the node
		// stops, as if it crashed in the middle of the move.
		crash bool
	}{
		{"a move cut by a crash", n, true},
		{"the next load moves the rest", n - 200, false},
		{"a later load finds nothing to move", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := openStore(t, dir, 0)
			defer st.Close()
			if tc.crash {
				var gen uint32
				if _, g, _, _, err := st.readRecords(); err != nil {
					t.Fatal(err)
				} else {
					gen = g
				}
				if moved, err := st.migrateEventsOnce(gen, 200); err != nil || moved != 200 {
					t.Fatalf("moved %d: %v", moved, err)
				}
				if got := countOld(t, st); got != n-200 {
					t.Errorf("%d old event records after the cut move, want %d", got, n-200)
				}
				return
			}
			if got := countOld(t, st); got != tc.wantOld {
				t.Errorf("%d old event records before Load, want %d", got, tc.wantOld)
			}
			set, err := st.Load(w.fedKey())
			if err != nil {
				t.Fatal(err)
			}
			if got := countOld(t, st); got != 0 {
				t.Errorf("%d old event records after Load, want 0", got)
			}
			sameAgenda(t, set.State, w.ref.Set.State)
			sameSet(t, set, w.ref.Set)
		})
	}
}

// fataler is what sameAgenda and storeReplica need of a *testing.T or a
// *rapid.T.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
	Fatal(args ...any)
}

// storeReplica is a store-backed set with a pending buffer, delivering
// ops in any order and committing them in batches, as a node does.
type storeReplica struct {
	st      *Store
	set     *crdt.OpSet
	pending crdt.Pending
	batch   Batch
}

func (r *storeReplica) deliver(t fataler, op crdt.Op) {
	out, err := r.set.Add(op)
	switch {
	case errors.Is(err, crdt.ErrGap) || errors.Is(err, crdt.ErrUnknownAuthor):
		r.pending.Hold(op)
		return
	case errors.Is(err, crdt.ErrDuplicate) || errors.Is(err, crdt.ErrStale):
		return // a duplicate (ErrStale: of an op not committed yet)
	case err != nil:
		t.Fatalf("add %s#%d: %v", op.Author.Short(), op.Seq, err)
	case out == crdt.Added:
		r.batch.Ops = append(r.batch.Ops, op)
	default:
		r.batch.Evidence = append(r.batch.Evidence, op)
	}
	added, evidence := r.pending.DrainAll(r.set)
	r.batch.Ops = append(r.batch.Ops, added...)
	r.batch.Evidence = append(r.batch.Evidence, evidence...)
}

func (r *storeReplica) commit(t fataler) {
	r.batch.State = r.set
	if err := r.st.Commit(r.batch); err != nil {
		t.Fatal(err)
	}
	r.batch = Batch{}
	if r.set.Stale {
		if err := r.set.Refold(r.st); err != nil {
			t.Fatal(err)
		}
		if err := r.st.Commit(Batch{State: r.set}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPropertyAgendaSameWhateverOrder: the same agenda ops delivered in
// any order (with duplicates), committed in batches of any size, with
// restarts between them, give the same digest and the same agenda with
// the store's event index as with the in-memory one.
func TestPropertyAgendaSameWhateverOrder(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		w := newWorld(t, 3)
		w.rng = rand.New(rand.NewPCG(rapid.Uint64().Draw(rt, "seed"), 7))
		ops := w.genesis()
		w.deliver(ops...)
		for range rapid.IntRange(1, 120).Draw(rt, "ops") {
			op := w.eventOp(w.rng.IntN(3), 8, 10)
			w.deliver(op)
			ops = append(ops, op)
		}
		idx := make([]int, len(ops))
		for i := range idx {
			idx[i] = i
		}
		dups := rapid.SliceOfN(rapid.IntRange(0, len(ops)-1), 0, len(ops)/4).Draw(rt, "duplicates")
		order := rapid.Permutation(append(idx, dups...)).Draw(rt, "order")

		// In memory, shuffled.
		mem := crdt.NewReplica(w.fedKey())
		for _, i := range order {
			if err := mem.Deliver(ops[i]); err != nil && !errors.Is(err, crdt.ErrDuplicate) {
				rt.Fatalf("deliver: %v", err)
			}
		}
		// On disk, shuffled, in batches, with restarts.
		dir, err := os.MkdirTemp("", "events-property")
		if err != nil {
			rt.Fatal(err)
		}
		defer os.RemoveAll(dir)
		st, err := Open(Config{Dir: dir, Logger: quietLogger(), NoSync: true, EventCache: rapid.IntRange(1, 8).Draw(rt, "cache")})
		if err != nil {
			rt.Fatal(err)
		}
		defer func() { st.Close() }()
		r := &storeReplica{st: st, set: st.NewSet(w.fedKey())}
		every := rapid.IntRange(1, 40).Draw(rt, "batch")
		restart := rapid.IntRange(0, 3).Draw(rt, "restarts")
		for k, i := range order {
			r.deliver(rt, ops[i])
			if (k+1)%every == 0 {
				r.commit(rt)
				if restart > 0 && (k/every)%3 == 1 {
					restart--
					if err := st.Close(); err != nil {
						rt.Fatal(err)
					}
					if st, err = Open(Config{Dir: dir, Logger: quietLogger(), NoSync: true}); err != nil {
						rt.Fatal(err)
					}
					if r.set, err = st.Load(w.fedKey()); err != nil {
						rt.Fatal(err)
					}
					r.st = st
				}
			}
		}
		r.commit(rt)
		for _, got := range []*crdt.OpSet{mem.Set, r.set} {
			if got.Digest() != w.ref.Set.Digest() {
				rt.Fatalf("digest differs from the reference")
			}
			sameAgenda(rt, got.State, w.ref.Set.State)
		}
	})
}

// BenchmarkAgendaNextEvents reads the next 50 events from a time near the
// end of a season of n events (nine in ten are past by then), from the
// store's start-time index and, for comparison, from the in-memory index
// (what the state held before: every event, sorted at each read):
//
//	go test ./node/store -run '^$' -bench BenchmarkAgendaNextEvents -benchtime 200x
func BenchmarkAgendaNextEvents(b *testing.B) {
	for _, n := range []int{5000, 50000} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			w := newWorld(b, 2)
			st, err := Open(Config{Dir: dir, Logger: quietLogger(), NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			set := st.NewSet(w.fedKey())
			gen := w.genesis()
			w.deliver(gen...)
			addCommit(b, st, set, gen)
			// n new events (distinct ids), over 100 days, in commits of 500.
			for made := 0; made < n; {
				var ops []crdt.Op
				for ; len(ops) < 500 && made < n; made++ {
					v := made % 2
					start := t0 + int64(w.rng.IntN(400))*day/4
					op := w.venues[v].Make(&crdt.EventUpsert{EventID: fmt.Sprint("ev", made), Fields: crdt.FieldTitle | crdt.FieldStartsAt | crdt.FieldEndsAt | crdt.FieldDescription | crdt.FieldLocation,
						Title: fmt.Sprintf("Bal %d", made), StartsAt: start, EndsAt: start + 3*3600*1000, Description: "Une soirée de musique", Location: "Grande salle"})
					w.deliver(op)
					ops = append(ops, op)
				}
				addCommit(b, st, set, ops)
			}
			from := t0 + 90*day
			for _, tc := range []struct {
				name  string
				state *crdt.State
			}{
				{"store", set.State},
				{"memory", w.ref.Set.State},
			} {
				b.Run(tc.name, func(b *testing.B) {
					r0 := st.Events().Reads()
					b.ResetTimer()
					for range b.N {
						if got := agendaFrom(tc.state, from, nil, 50); len(got) != 50 {
							b.Fatalf("%d events", len(got))
						}
					}
					b.StopTimer()
					b.ReportMetric(float64(st.Events().Reads()-r0)/float64(b.N), "records/op")
				})
			}
		})
	}
}

// TestCheckpointEventsFromAndIntoStore: a checkpoint encoded from a
// store-backed set carries the same bytes as one encoded from the
// in-memory reference (the events in the same canonical order), and a
// store that installs it (index reset, crdt.CheckpointSet, one commit)
// serves the same agenda, before and after a restart.
func TestCheckpointEventsFromAndIntoStore(t *testing.T) {
	w, st, set := storeWithEvents(t, t.TempDir(), 400, 150, 30)
	defer st.Close()
	cp, err := set.EncodeCheckpoint()
	if err != nil {
		t.Fatal(err)
	}
	want, err := w.ref.Set.EncodeCheckpoint()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cp, want) {
		t.Fatalf("the store's checkpoint (%d bytes) differs from the reference's (%d bytes)", len(cp), len(want))
	}
	d, err := crdt.DecodeCheckpoint(cp)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Stored.Events) == 0 {
		t.Fatal("the checkpoint carries no event")
	}

	dir := t.TempDir()
	joiner := openStore(t, dir, 0)
	idx := joiner.Index()
	idx.Reset()
	installed := crdt.CheckpointSet(crdt.Config{Federation: w.fedKey(), Log: joiner, Index: idx, TrackChanges: true}, d)
	if err := joiner.Commit(Batch{State: installed}); err != nil {
		t.Fatal(err)
	}
	sameAgenda(t, installed.State, w.ref.Set.State)
	if err := joiner.Close(); err != nil {
		t.Fatal(err)
	}
	joiner = openStore(t, dir, 0)
	defer joiner.Close()
	loaded, err := joiner.Load(w.fedKey())
	if err != nil {
		t.Fatal(err)
	}
	sameAgenda(t, loaded.State, w.ref.Set.State)
}
