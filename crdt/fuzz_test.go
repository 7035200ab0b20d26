package crdt_test

import (
	"bytes"
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

// Fuzz targets. Seed corpora live in testdata/fuzz/<FuzzName>/; regenerate
// them with `go test ./crdt -run TestWriteFuzzCorpus -crdt.writecorpus`.
// Run one with e.g. `go test ./crdt -run '^$' -fuzz FuzzOpSetAdd -fuzztime 2m`.

var writeCorpus = flag.Bool("crdt.writecorpus", false, "write the fuzz seed corpora to testdata/fuzz")

// fuzzWorld is a small federation: genesis, venues A and B admitted, C
// admitted then revoked after its first op, and a few ops of each. Its
// signers let the fuzzer re-sign mutated ops, to get past the signature
// check into the fold.
type fuzzWorld struct {
	fed, a, b, c *actor
	base         []crdt.Op // in causal order
	// next are valid ops that fit after base, one per kind and author.
	next []crdt.Op
}

func newFuzzWorld(t testing.TB) *fuzzWorld {
	w := &fuzzWorld{
		fed: newActor(signerFromBytes(t, 0xF1)),
		a:   newActor(signerFromBytes(t, 0xA1)),
		b:   newActor(signerFromBytes(t, 0xB1)),
		c:   newActor(signerFromBytes(t, 0xC1)),
	}
	card := crdt.CardID("04A1B2C3")
	w.base = []crdt.Op{
		w.fed.make(1, &crdt.Genesis{Name: "Fuzz", Currency: "EUR", Settings: crdt.DefaultSettings()}),
		w.fed.make(1, &crdt.Admit{Venue: w.a.key(), Name: "A"}),
		w.fed.make(1, &crdt.Admit{Venue: w.b.key(), Name: "B"}),
		w.fed.make(1, &crdt.Admit{Venue: w.c.key(), Name: "C"}),
		w.a.make(1, &crdt.CardRegister{Card: card}),
		w.a.make(1, &crdt.TopUp{Card: card, Amount: 5000, Method: crdt.MethodOnline, ExternalRef: "cs_1"}),
		w.b.make(1, &crdt.Payment{Card: card, Amount: 300, Counter: 1, Label: "beer"}),
		w.c.make(1, &crdt.VenueInfo{Name: "C"}),
		w.a.make(1, &crdt.EventUpsert{EventID: "e1", Fields: crdt.FieldTitle | crdt.FieldStartsAt, Title: "Gig", StartsAt: 1}),
	}
	c2 := w.c.make(1, &crdt.VenueInfo{Name: "C2"})
	w.base = append(w.base, w.fed.make(1, &crdt.Revoke{Venue: w.c.key(), AfterSeq: 1, Reason: "lost"}))
	// Ops that fit next (each made from a copy of its author's state).
	at := func(v *actor) *actor { return v.fork(v.author.Seq(), lastID(w.base, v.key())) }
	w.next = []crdt.Op{
		at(w.a).make(1, &crdt.Payment{Card: card, Amount: 200, Counter: 2, Label: "wine"}),
		at(w.a).make(1, &crdt.TopUp{Card: card, Amount: 1000, Method: crdt.MethodOnline, ExternalRef: "cs_1"}),
		at(w.a).make(1, &crdt.Refund{Card: card, Amount: 100, Reason: "gone", ExternalRef: "re_1"}),
		at(w.a).make(1, &crdt.CardLink{Card: card, Holder: "h1"}),
		at(w.a).make(1, &crdt.EventCancel{EventID: "e1", Reason: "rain"}),
		at(w.b).make(1, &crdt.Payment{Card: card, Amount: 200, Counter: 1, Label: "double"}),
		at(w.b).make(1, &crdt.CardBlock{Card: card, Reason: "cloned"}),
		at(w.b).make(1, &crdt.Correction{Card: card, Delta: -50, Reason: "till"}),
		at(w.fed).make(1, &crdt.SettingsChange{Settings: crdt.DefaultSettings()}),
		at(w.fed).make(1, &crdt.Revoke{Venue: w.a.key(), AfterSeq: 1}),
		at(w.fed).make(1, &crdt.CardUnblock{Card: card, Reason: "ok"}),
		c2,
		// An equivocation: another op at A's seq 2.
		w.a.fork(1, lastID(w.base[:5], w.a.key())).make(1, &crdt.VenueInfo{Name: "fork"}),
	}
	return w
}

func lastID(ops []crdt.Op, author crdt.PublicKey) crdt.OpID {
	for i := len(ops) - 1; i >= 0; i-- {
		if ops[i].Author == author {
			return ops[i].ID()
		}
	}
	return crdt.OpID{}
}

func (w *fuzzWorld) signer(k crdt.PublicKey) *crdt.Signer {
	for _, a := range []*actor{w.fed, w.a, w.b, w.c} {
		if a.key() == k {
			return a.signer
		}
	}
	return nil
}

// replica builds the world's set with its log, without verifying
// signatures again.
func (w *fuzzWorld) replica(t testing.TB) (*crdt.OpSet, *crdt.MemLog) {
	log := crdt.NewMemLog()
	s := crdt.NewOpSet(crdt.Config{Federation: w.fed.key(), Log: log})
	for _, op := range w.base {
		if out, err := s.AddTrusted(op); err != nil || out != crdt.Added {
			t.Fatalf("base op: %v %v", out, err)
		}
		if err := log.Append(op); err != nil {
			t.Fatal(err)
		}
	}
	return s, log
}

func FuzzDecodeOp(f *testing.F) {
	w := newFuzzWorld(f)
	for _, op := range append(w.base, w.next...) {
		f.Add(op.Encode())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		op, err := crdt.DecodeOp(b)
		if err != nil {
			return
		}
		enc := op.Encode()
		if !bytes.Equal(enc, b) {
			t.Fatalf("not canonical:\n in  %x\n out %x", b, enc)
		}
		if op.Size() != len(b) || op.ID() != crdt.OpID(sha256.Sum256(b)) {
			t.Fatal("size or id do not match the bytes")
		}
		body, err := op.Decode()
		if err != nil {
			t.Fatalf("decoded op with a bad body: %v", err)
		}
		if !bytes.Equal(crdt.EncodeBody(body), op.Body) {
			t.Fatal("body not canonical")
		}
	})
}

// bodySeeds are valid bodies of every kind.
func bodySeeds() []crdt.Body {
	k := crdt.PublicKey{1, 2, 3}
	return []crdt.Body{
		&crdt.Genesis{Name: "F", Currency: "EUR", Settings: crdt.DefaultSettings()},
		&crdt.Admit{Venue: k, Name: "A"},
		&crdt.Revoke{Venue: k, AfterSeq: 300, Reason: "lost"},
		&crdt.SettingsChange{Settings: testSettings()},
		&crdt.VenueInfo{Name: "Café", Address: "1 rue X", URL: "https://example.org"},
		&crdt.EventUpsert{EventID: "e1", Fields: 31, Title: "Bal", StartsAt: -5, EndsAt: 1 << 40, Description: "é", Location: "L"},
		&crdt.EventCancel{EventID: "e1", Reason: "rain"},
		&crdt.CardRegister{Card: "04A1B2C3D4E5F6"},
		&crdt.CardLink{Card: "04A1B2C3", Holder: "holder"},
		&crdt.CardBlock{Card: "0102030405060708090A", Reason: "lost"},
		&crdt.CardUnblock{Card: "04A1B2C3"},
		&crdt.TopUp{Card: "04A1B2C3", Amount: crdt.MaxAmount, Method: crdt.MethodOnline, ExternalRef: "cs_1"},
		&crdt.Payment{Card: "04A1B2C3", Amount: 1, Counter: 1 << 33, Label: "beer"},
		&crdt.Refund{Card: "04A1B2C3", Amount: 70, ExternalRef: "re_1"},
		&crdt.Correction{Card: "04A1B2C3", Delta: -crdt.MaxAmount, Reason: "till"},
	}
}

func FuzzDecodeBody(f *testing.F) {
	for _, b := range bodySeeds() {
		f.Add(byte(b.Kind()), crdt.EncodeBody(b))
	}
	f.Fuzz(func(t *testing.T, kind byte, p []byte) {
		b, err := crdt.DecodeBody(crdt.Kind(kind), p)
		if err != nil {
			if b != nil {
				t.Fatal("body returned with an error")
			}
			return
		}
		if b.Kind() != crdt.Kind(kind) {
			t.Fatalf("kind %d decoded as %s", kind, b.Kind())
		}
		if enc := crdt.EncodeBody(b); !bytes.Equal(enc, p) {
			t.Fatalf("not canonical:\n in  %x\n out %x", p, enc)
		}
	})
}

func FuzzOpSetAdd(f *testing.F) {
	w := newFuzzWorld(f)
	for _, op := range w.next {
		f.Add(op.Encode(), false)
		f.Add(op.Encode(), true)
	}
	f.Add(w.base[3].Encode(), false)
	f.Fuzz(func(t *testing.T, b []byte, resign bool) {
		op, err := crdt.DecodeOp(b)
		if err != nil {
			return
		}
		if resign {
			// Sign the mutated op again, to reach the checks after the
			// signature and the fold.
			s := w.signer(op.Author)
			if s == nil {
				return
			}
			s.Sign(&op)
		}
		s, log := w.replica(t)
		before := fingerprint(s)
		checkErr := s.Check(&op)
		if fingerprint(s) != before {
			t.Fatal("Check changed the set")
		}
		out, err := s.Add(op)
		if (checkErr == nil) != (err == nil) {
			t.Fatalf("Check says %v, Add says %v %v", checkErr, out, err)
		}
		if err != nil {
			if out != 0 {
				t.Fatalf("outcome %v with error %v", out, err)
			}
			if after := fingerprint(s); after != before {
				t.Fatalf("refused op (%v) changed the set:\n%s", err, diffLines(before.dump, after.dump))
			}
			return
		}
		if out == crdt.Added {
			if err := log.Append(op); err != nil {
				t.Fatal(err)
			}
			if s.Len() != before.len+1 {
				t.Fatal("added op not counted in Len")
			}
		} else if s.Len() != before.len {
			t.Fatal("evidence counted in Len")
		}
		if s.Stale {
			if err := s.Refold(log); err != nil {
				t.Fatal(err)
			}
		}
		var sum int64
		for _, c := range s.State.Cards {
			sum += c.Balance
		}
		if sum != s.State.Credits-s.State.Debits {
			t.Fatalf("Σ balances %d, credits - debits %d", sum, s.State.Credits-s.State.Debits)
		}
		incremental := dumpState(s)
		if err := s.Refold(log); err != nil {
			t.Fatal(err)
		}
		if full := dumpState(s); full != incremental {
			t.Fatalf("incremental and full fold differ:\n%s", diffLines(incremental, full))
		}
	})
}

// TestWriteFuzzCorpus writes the seed corpora (with -crdt.writecorpus).
func TestWriteFuzzCorpus(t *testing.T) {
	if !*writeCorpus {
		t.Skip("run with -crdt.writecorpus to regenerate testdata/fuzz")
	}
	w := newFuzzWorld(t)
	write := func(target, name string, lines ...string) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		data := "go test fuzz v1\n"
		for _, l := range lines {
			data += l + "\n"
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, op := range append(w.base, w.next...) {
		write("FuzzDecodeOp", fmt.Sprintf("seed-%02d-%s", i, op.Kind), fmt.Sprintf("[]byte(%q)", op.Encode()))
	}
	for _, b := range bodySeeds() {
		write("FuzzDecodeBody", "seed-"+b.Kind().String(), fmt.Sprintf("byte(%q)", byte(b.Kind())), fmt.Sprintf("[]byte(%q)", crdt.EncodeBody(b)))
	}
	for i, op := range w.next {
		write("FuzzOpSetAdd", fmt.Sprintf("seed-%02d-%s", i, op.Kind), fmt.Sprintf("[]byte(%q)", op.Encode()), "bool(true)")
	}
}
