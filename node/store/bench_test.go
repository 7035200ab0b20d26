package store

import (
	"fmt"
	"sync"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

// benchVenues is the number of venues whose payments the benchmarks add.
const benchVenues = 8

// benchBatch is the number of ops per commit, as a busy node batches them.
const benchBatch = 256

// benchOps holds pre-signed ops, grown on demand and shared by benchmarks:
// the federation's genesis and admissions, then payments of the venues in
// turn, so that any prefix of Ops is a valid set of chains.
var benchOps struct {
	sync.Mutex
	genesis  []crdt.Op
	venues   []*crdt.Author
	counters map[crdt.CardID]uint64
	ops      []crdt.Op
}

func benchPrepare(b testing.TB, n int) (gen, ops []crdt.Op) {
	b.Helper()
	c := &benchOps
	c.Lock()
	defer c.Unlock()
	if c.genesis == nil {
		clock := testClock()
		fed := crdt.NewAuthor(signer(b, 1), clock, 0, crdt.OpID{})
		c.genesis = append(c.genesis, fed.Make(&crdt.Genesis{Name: "Bench", Currency: "EUR", Settings: crdt.DefaultSettings()}))
		for i := range benchVenues {
			v := crdt.NewAuthor(signer(b, byte(10+i)), clock, 0, crdt.OpID{})
			c.venues = append(c.venues, v)
			c.genesis = append(c.genesis, fed.Make(&crdt.Admit{Venue: v.Signer.Public(), Name: fmt.Sprintf("Venue %d", i)}))
		}
		c.counters = map[crdt.CardID]uint64{}
	}
	for len(c.ops) < n {
		i := len(c.ops)
		card := crdt.CardID(fmt.Sprintf("04%06X", i%1000))
		c.counters[card]++
		c.ops = append(c.ops, c.venues[i%benchVenues].Make(&crdt.Payment{Card: card, Amount: 250, Counter: c.counters[card], Label: "beer"}))
	}
	return c.genesis, c.ops[:n]
}

// BenchmarkAddAndCommit adds pre-signed payments to an op set (signature
// verified) and commits them in batches of 256 with the set as snapshot
// candidate, as a node does: "fsync" with a real fsync per commit, "nosync"
// without.
func BenchmarkAddAndCommit(b *testing.B) {
	for _, noSync := range []bool{false, true} {
		name := "fsync"
		if noSync {
			name = "nosync"
		}
		b.Run(name, func(b *testing.B) {
			gen, ops := benchPrepare(b, b.N)
			st, err := Open(Config{Dir: b.TempDir(), Logger: quietLogger(), NoSync: noSync})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			set, err := st.Load(gen[0].Author)
			if err != nil {
				b.Fatal(err)
			}
			for _, op := range gen {
				if _, err := set.Add(op); err != nil {
					b.Fatal(err)
				}
			}
			if err := st.Commit(Batch{Ops: gen}); err != nil {
				b.Fatal(err)
			}
			batch := make([]crdt.Op, 0, benchBatch)
			commit := func() {
				if err := st.Commit(Batch{Ops: batch, State: set}); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
			b.ReportAllocs()
			b.ResetTimer()
			for _, op := range ops {
				out, err := set.Add(op)
				if err != nil || out != crdt.Added {
					b.Fatalf("add: %v %v", out, err)
				}
				batch = append(batch, op)
				if len(batch) == benchBatch {
					commit()
				}
			}
			if len(batch) > 0 {
				commit()
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

// BenchmarkVerify is the signature check alone, the floor of Add: the
// ratio of AddAndCommit's ops/s to this one is the cost of the store.
func BenchmarkVerify(b *testing.B) {
	_, ops := benchPrepare(b, 4096)
	b.ResetTimer()
	for i := range b.N {
		if err := ops[i%len(ops)].Verify(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}
