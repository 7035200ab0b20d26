package crdt_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

// Benchmarks of the op set's hot paths. Ops are made and signed once,
// outside the timers. Run:
//
//	go test ./crdt -run '^$' -bench . -benchtime 2s -count 3

const (
	benchVenues   = 4
	benchOpsEach  = 2048 // ops per venue for BenchmarkAddOp
	benchChainLen = 4096 // ops per venue for BenchmarkAddRange
	benchRange    = 256
)

type benchWorld struct {
	fed  crdt.PublicKey
	base []crdt.Op // genesis and admissions
	// mixed are the venues' ops interleaved, as they arrive on gossip.
	mixed []crdt.Op
	// chains are other venues' chains, for catch-up.
	chains [][]crdt.Op
}

var (
	benchOnce sync.Once
	bench     *benchWorld
)

// moneyOps makes n payments and top-ups of a venue over 100 cards.
func moneyOps(v *actor, n int, counters map[crdt.CardID]uint64) []crdt.Op {
	ops := make([]crdt.Op, 0, n)
	for i := range n {
		card := crdt.CardID(fmt.Sprintf("04%06X", i%100))
		if i%4 == 0 {
			ops = append(ops, v.make(1, &crdt.TopUp{Card: card, Amount: 2000, Method: crdt.MethodCash}))
			continue
		}
		counters[card]++
		ops = append(ops, v.make(1, &crdt.Payment{Card: card, Amount: 350, Counter: counters[card], Label: "pint"}))
	}
	return ops
}

func benchSetup(b *testing.B) *benchWorld {
	benchOnce.Do(func() {
		w := &benchWorld{}
		fed := newActor(signerFromBytes(b, 0xBE))
		w.fed = fed.key()
		w.base = []crdt.Op{fed.make(1, &crdt.Genesis{Name: "Bench", Currency: "EUR", Settings: crdt.DefaultSettings()})}
		var venues, catchup []*actor
		for i := range benchVenues {
			v := newActor(signerFromBytes(b, 0xB0, byte(i)))
			c := newActor(signerFromBytes(b, 0xC0, byte(i)))
			venues, catchup = append(venues, v), append(catchup, c)
			w.base = append(w.base, fed.make(1, &crdt.Admit{Venue: v.key(), Name: fmt.Sprintf("V%d", i)}),
				fed.make(1, &crdt.Admit{Venue: c.key(), Name: fmt.Sprintf("C%d", i)}))
		}
		counters := map[crdt.CardID]uint64{}
		per := make([][]crdt.Op, benchVenues)
		for i, v := range venues {
			per[i] = moneyOps(v, benchOpsEach, counters)
		}
		for j := range benchOpsEach {
			for i := range per {
				w.mixed = append(w.mixed, per[i][j])
			}
		}
		for _, c := range catchup {
			w.chains = append(w.chains, moneyOps(c, benchChainLen, counters))
		}
		bench = w
	})
	return bench
}

// newBenchSet returns a set holding the genesis and admissions.
func (w *benchWorld) newSet(b *testing.B) *crdt.OpSet {
	s := crdt.NewOpSet(crdt.Config{Federation: w.fed})
	for _, op := range w.base {
		if _, err := s.AddTrusted(op); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

func reportOps(b *testing.B, ops int) {
	b.ReportMetric(float64(ops)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkVerify is the Ed25519 verification of one op: the floor of
// what adding an op from gossip costs.
func BenchmarkVerify(b *testing.B) {
	w := benchSetup(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		op := &w.mixed[i%len(w.mixed)]
		if err := op.Verify(); err != nil {
			b.Fatal(err)
		}
	}
	reportOps(b, b.N)
}

// BenchmarkAddOp adds ops one by one, as they arrive on gossip: signature,
// checks, fold into the views.
func BenchmarkAddOp(b *testing.B) {
	w := benchSetup(b)
	s := w.newSet(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i, j := 0, 0; i < b.N; i, j = i+1, j+1 {
		if j == len(w.mixed) {
			b.StopTimer()
			s, j = w.newSet(b), 0
			b.StartTimer()
		}
		if out, err := s.Add(w.mixed[j]); err != nil || out != crdt.Added {
			b.Fatal(out, err)
		}
	}
	reportOps(b, b.N)
}

// BenchmarkAddRange adds catch-up ranges of 256 ops: links hashed, one
// signature per range. One iteration is one range; ops/s counts ops.
func BenchmarkAddRange(b *testing.B) {
	w := benchSetup(b)
	s := w.newSet(b)
	var ranges [][]crdt.Op
	for _, c := range w.chains {
		for k := 0; k < len(c); k += benchRange {
			ranges = append(ranges, c[k:k+benchRange])
		}
	}
	// Ranges of one author must come in order: go through the authors
	// round-robin.
	order := make([][]crdt.Op, 0, len(ranges))
	per := benchChainLen / benchRange
	for k := range per {
		for a := range w.chains {
			order = append(order, ranges[a*per+k])
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i, j := 0, 0; i < b.N; i, j = i+1, j+1 {
		if j == len(order) {
			b.StopTimer()
			s, j = w.newSet(b), 0
			b.StartTimer()
		}
		if n, err := s.AddRange(order[j]); err != nil || n != benchRange {
			b.Fatal(n, err)
		}
	}
	reportOps(b, b.N*benchRange)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchRange), "ns/op-each")
}
