package crdt_test

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

// venueChain makes n money ops of one venue.
func venueChain(v *actor, n int) []crdt.Op {
	ops := make([]crdt.Op, n)
	for i := range ops {
		if i%3 == 0 {
			ops[i] = v.make(1, &crdt.TopUp{Card: "04A1B2C3", Amount: 300, Method: crdt.MethodCash})
		} else {
			ops[i] = v.make(1, &crdt.Payment{Card: "04A1B2C3", Amount: 100, Counter: uint64(i)})
		}
	}
	return ops
}

func TestAddRange(t *testing.T) {
	f := newFixture(t)
	chain := venueChain(f.a, 300)
	oneByOne := f.replica(t)
	mustDeliver(t, oneByOne, chain...)

	fresh := func() *crdt.OpSet {
		s := crdt.NewOpSet(crdt.Config{Federation: f.fed.key()})
		mustAdd(t, s, f.base...)
		return s
	}
	t.Run("catch-up in ranges", func(t *testing.T) {
		s := fresh()
		for i := 0; i < len(chain); i += 128 {
			rg := chain[i:min(i+128, len(chain))]
			if n, err := s.AddRange(rg); err != nil || n != len(rg) {
				t.Fatalf("range at %d: %d %v", i, n, err)
			}
		}
		sameState(t, "AddRange", oneByOne.Set, s)
		// Overlapping again: all duplicates, nothing changes.
		before := fingerprint(s)
		if n, err := s.AddRange(chain[100:200]); err != nil || n != 100 {
			t.Fatalf("overlap: %d %v", n, err)
		}
		if fingerprint(s) != before {
			t.Fatal("overlapping range changed the set")
		}
	})
	refused := []struct {
		name string
		ops  func() []crdt.Op
		want error
	}{
		{"tampered middle op", func() []crdt.Op {
			ops := slices.Clone(chain[:10])
			ops[4].Body = crdt.EncodeBody(&crdt.TopUp{Card: "04A1B2C3", Amount: 99999, Method: crdt.MethodCash})
			return ops
		}, crdt.ErrBrokenChain},
		{"forged last signature", func() []crdt.Op {
			ops := slices.Clone(chain[:10])
			ops[9].Sig[0] ^= 1
			return ops
		}, crdt.ErrBadSignature},
		{"not contiguous", func() []crdt.Op {
			return []crdt.Op{chain[0], chain[2]}
		}, crdt.ErrBrokenChain},
		{"two authors", func() []crdt.Op {
			return []crdt.Op{chain[0], f.base[1]}
		}, crdt.ErrBrokenChain},
		{"gap before the range", func() []crdt.Op { return chain[5:10] }, crdt.ErrGap},
		{"unknown author", func() []crdt.Op {
			return venueChain(newActor(signerFromBytes(t, 9)), 3)
		}, crdt.ErrUnknownAuthor},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			s := fresh()
			before := fingerprint(s)
			n, err := s.AddRange(tc.ops())
			if n != 0 || !errors.Is(err, tc.want) {
				t.Fatalf("got %d %v, want 0 %v", n, err, tc.want)
			}
			if fingerprint(s) != before {
				t.Fatal("set changed")
			}
		})
	}
	t.Run("invalid op inside an authentic range", func(t *testing.T) {
		v := newActor(signerFromBytes(t, 1))
		v.ms = f.a.ms
		ops := venueChain(v, 3)
		// The venue itself signed an invalid op: the range is authentic
		// up to it, and the ops before it are kept.
		bad := crdt.Op{Seq: 4, Prev: ops[2].ID(), HLC: ops[2].HLC, Kind: crdt.KindTopUp, Body: topUpBody(0)}
		v.signer.Sign(&bad)
		next := crdt.NewAuthor(v.signer, crdt.NewClock(func() int64 { return baseMillis }), 4, bad.ID())
		ops = append(ops, bad, next.Make(&crdt.VenueInfo{Name: "after"}))
		s := fresh()
		n, err := s.AddRange(ops)
		if n != 3 || !errors.Is(err, crdt.ErrInvalidBody) {
			t.Fatalf("got %d %v, want 3 ErrInvalidBody", n, err)
		}
		if seq, _ := s.Head(v.key()); seq != 3 {
			t.Fatalf("head %d, want 3", seq)
		}
	})
	t.Run("equivocation in a range", func(t *testing.T) {
		s := crdt.NewOpSet(crdt.Config{Federation: f.fed.key(), Log: oneByOne.Log})
		mustAdd(t, s, f.base...)
		mustAdd(t, s, chain[:20]...)
		x := newActor(f.a.signer).fork(9, chain[8].ID())
		x.ms = f.a.ms
		branch := venueChain(x, 5) // seqs 10..14, conflicting with chain[9:14]
		n, ev, err := s.AddRangeEvidence(branch)
		if n != 0 || len(ev) != 5 || !errors.Is(err, crdt.ErrEquivocation) {
			t.Fatalf("got %d added, %d evidence, %v; want 0, 5, ErrEquivocation", n, len(ev), err)
		}
		// The whole branch is evidence and counts: both are signed facts.
		if a := s.Authors[f.a.key()]; a.Fork != 10 || a.NCounted != 25 || s.Stale {
			t.Fatalf("author %+v stale %v, want fork at 10 and 25 ops counted", a, s.Stale)
		}
		before := dumpState(s)
		if err := s.Refold(oneByOne.Log); err != nil {
			t.Fatal(err)
		}
		if after := dumpState(s); after != before {
			t.Fatalf("refold changed the views:\n%s", diffLines(before, after))
		}
	})
	t.Run("revoked venue", func(t *testing.T) {
		s := fresh()
		mustAdd(t, s, f.fed.make(1, &crdt.Revoke{Venue: f.a.key(), AfterSeq: 7}))
		n, err := s.AddRange(chain[:20])
		if n != 7 || !errors.Is(err, crdt.ErrRevoked) {
			t.Fatalf("got %d %v, want 7 ErrRevoked", n, err)
		}
	})
}

func TestAddEvidenceFromPeer(t *testing.T) {
	f := newFixture(t)
	a1 := f.a.make(1, &crdt.VenueInfo{Name: "A"})
	x := f.a.fork(1, a1.ID())
	a2 := f.a.make(1, &crdt.VenueInfo{Name: "A2"})
	b2 := x.make(1, &crdt.VenueInfo{Name: "B2"})
	r := f.replica(t)
	mustDeliver(t, r, a1)
	if out, err := r.Set.AddEvidence(a2); err != nil || out != crdt.Added {
		t.Fatalf("evidence that extends the chain: %v %v, want added", out, err)
	}
	if err := r.Log.Append(a2); err != nil {
		t.Fatal(err)
	}
	if out, err := r.Set.AddEvidence(b2); err != nil || out != crdt.Evidence {
		t.Fatalf("evidence: %v %v", out, err)
	}
	if _, err := r.Set.AddEvidence(b2); !errors.Is(err, crdt.ErrDuplicate) {
		t.Fatalf("evidence again: %v, want ErrDuplicate", err)
	}
	if _, err := r.Set.AddEvidence(a1); !errors.Is(err, crdt.ErrDuplicate) {
		t.Fatalf("held op as evidence: %v, want ErrDuplicate", err)
	}
	if a := r.Set.Authors[f.a.key()]; r.Set.Stale || a.NCounted != 3 {
		t.Fatalf("author %+v stale %v: both branches of a venue count, no refold needed", a, r.Set.Stale)
	}
}

func TestMissing(t *testing.T) {
	f := newFixture(t)
	full := f.replica(t)
	mustDeliver(t, full, venueChain(f.a, 5)...)
	mustDeliver(t, full, venueChain(f.b, 4)...)
	if m := full.Set.Missing(full.Set.VersionVector()); len(m) != 0 {
		t.Fatalf("missing from itself: %v", m)
	}
	empty := crdt.NewReplica(f.fed.key())
	m := full.Set.Missing(empty.Set.VersionVector())
	if len(m) != 3 || m[0].Author != f.fed.key() || m[0].From != 1 || m[0].To != 3 {
		t.Fatalf("missing %+v, want the federation first", m)
	}
	if bytes.Compare(m[1].Author[:], m[2].Author[:]) >= 0 {
		t.Fatal("venues not in key order")
	}
	var n uint64
	for _, rg := range m {
		n += rg.Len()
		mustDeliver(t, empty, readRange(t, full.Log, rg)...)
	}
	if n != full.Set.Len() {
		t.Fatalf("ranges hold %d ops, set %d", n, full.Set.Len())
	}
	sameState(t, "caught up", full.Set, empty.Set)
	partial := crdt.VersionVector{f.fed.key(): 3, f.a.key(): 2}
	m = full.Set.Missing(partial)
	if len(m) != 2 || m[0].Author != f.a.key() && m[1].Author != f.a.key() {
		t.Fatalf("missing %+v", m)
	}
	for _, rg := range m {
		if rg.Author == f.a.key() && (rg.From != 3 || rg.To != 5) {
			t.Fatalf("range %+v, want 3..5", rg)
		}
	}
}

func TestMemLog(t *testing.T) {
	f := newFixture(t)
	l := crdt.NewMemLog()
	if err := l.Append(f.base[1]); !errors.Is(err, crdt.ErrGap) {
		t.Fatalf("append at seq 2 first: %v", err)
	}
	for _, op := range f.base {
		if err := l.Append(op); err != nil {
			t.Fatal(err)
		}
	}
	var seqs []uint64
	if err := l.ReadRange(f.fed.key(), 0, 99, func(op crdt.Op) error { seqs = append(seqs, op.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seqs, []uint64{1, 2, 3}) {
		t.Fatalf("read %v", seqs)
	}
	stop := errors.New("stop")
	if err := l.ReadRange(f.fed.key(), 2, 3, func(crdt.Op) error { return stop }); err != stop {
		t.Fatalf("callback error not returned: %v", err)
	}
}

func TestPendingBound(t *testing.T) {
	f := newFixture(t)
	ops := venueChain(f.a, 4)
	p := crdt.Pending{Max: 2}
	if !p.Hold(ops[3]) || !p.Hold(ops[2]) || p.Hold(ops[1]) || p.Len() != 2 {
		t.Fatalf("pending holds %d, want a bound of 2", p.Len())
	}
	s := crdt.NewOpSet(crdt.Config{Federation: f.fed.key()})
	mustAdd(t, s, f.base...)
	if added := p.Drain(s); len(added) != 0 || p.Len() != 2 {
		t.Fatalf("drained %d with a gap", len(added))
	}
	mustAdd(t, s, ops[0], ops[1])
	added := p.Drain(s)
	if len(added) != 2 || added[0].Seq != 3 || added[1].Seq != 4 || p.Len() != 0 {
		t.Fatalf("drained %d, %d left", len(added), p.Len())
	}
}

func TestClock(t *testing.T) {
	wall := int64(1000)
	c := crdt.NewClock(func() int64 { return wall })
	a := c.Now()
	b := c.Now()
	wall = 500 // the wall clock goes back
	d := c.Now()
	if !(a < b && b < d) || a.Millis() != 1000 || b.Logical() != 1 || d.Millis() != 1000 || d.Logical() != 2 {
		t.Fatalf("timestamps %v %v %v", a, b, d)
	}
	c.Observe(crdt.MakeHLC(5000, 7))
	if e := c.Now(); e != crdt.MakeHLC(5000, 8) || c.Last() != e {
		t.Fatalf("after observing 5000.7: %v", e)
	}
	c.Observe(crdt.MakeHLC(1, 0)) // older: no effect
	wall = 6000
	if e := c.Now(); e != crdt.MakeHLC(6000, 0) {
		t.Fatalf("wall clock ahead again: %v", e)
	}
	neg := crdt.NewClock(func() int64 { return -5 })
	if h := neg.Now(); h.Millis() != 0 {
		t.Fatalf("negative wall clock: %v", h)
	}
	if s := crdt.MakeHLC(12, 3).String(); s != "12.3" {
		t.Fatalf("String %q", s)
	}
}

func TestAuthorUndo(t *testing.T) {
	f := newFixture(t)
	seq, head := f.fed.author.Seq(), f.base[2].ID()
	op := f.fed.make(1, &crdt.VenueInfo{Name: "not allowed"})
	if op.Seq != seq+1 {
		t.Fatal("seq")
	}
	f.fed.author.Undo(seq, head)
	again := f.fed.make(1, &crdt.Admit{Venue: newActor(signerFromBytes(t, 5)).key(), Name: "E"})
	if again.Seq != seq+1 || again.Prev != head {
		t.Fatalf("after Undo: seq %d prev %s", again.Seq, again.Prev)
	}
	s := crdt.NewOpSet(crdt.Config{Federation: f.fed.key()})
	mustAdd(t, s, f.base...)
	mustAdd(t, s, again)
}

func TestParsing(t *testing.T) {
	for in, want := range map[string]crdt.CardID{
		"04a1b2c3":             "04A1B2C3",
		" 04A1B2C3D4E5F6 ":     "04A1B2C3D4E5F6",
		"0102030405060708090A": "0102030405060708090A",
	} {
		if got, err := crdt.ParseCardID(in); err != nil || got != want {
			t.Errorf("ParseCardID(%q) = %q %v", in, got, err)
		}
	}
	for _, in := range []string{"", "04A1B2", "0102030405060708090A0B", "04A1B2C", "ZZA1B2C3"} {
		if _, err := crdt.ParseCardID(in); !errors.Is(err, crdt.ErrInvalidBody) {
			t.Errorf("ParseCardID(%q): %v", in, err)
		}
	}
	k := signerFromBytes(t, 7).Public()
	var k2 crdt.PublicKey
	if text, _ := k.MarshalText(); k2.UnmarshalText(text) != nil || k2 != k {
		t.Fatal("public key text round trip")
	}
	if _, err := crdt.ParsePublicKey("abcd"); !errors.Is(err, crdt.ErrInvalidBody) {
		t.Fatalf("short key: %v", err)
	}
	if len(k.Short()) != 8 || k.IsZero() || !(crdt.PublicKey{}).IsZero() {
		t.Fatal("key helpers")
	}
	id := crdt.OpID{1, 2, 3}
	var id2 crdt.OpID
	if text, _ := id.MarshalText(); id2.UnmarshalText(text) != nil || id2 != id {
		t.Fatal("op id text round trip")
	}
	if _, err := crdt.ParseOpID("zz"); !errors.Is(err, crdt.ErrInvalidBody) {
		t.Fatalf("bad id: %v", err)
	}
	if crdt.KindPayment.String() != "payment" || crdt.Kind(200).String() != "kind(200)" {
		t.Fatal("kind names")
	}
	if _, err := crdt.SignerFromSeed([]byte{1}); err == nil {
		t.Fatal("short seed accepted")
	}
	if _, err := crdt.NewSigner(nil); err == nil {
		t.Fatal("empty private key accepted")
	}
}

// The agenda: each field is last-writer-wins by HLC, whatever the order;
// a cancellation sticks.
func TestAgendaLastWriterWins(t *testing.T) {
	f := newFixture(t)
	create := f.a.make(10, &crdt.EventUpsert{EventID: "gig", Fields: crdt.FieldTitle | crdt.FieldStartsAt | crdt.FieldEndsAt | crdt.FieldLocation,
		Title: "Jazz", StartsAt: 1000, EndsAt: 2000, Location: "Cellar"})
	retitle := f.a.make(10, &crdt.EventUpsert{EventID: "gig", Fields: crdt.FieldTitle, Title: "Jazz night"})
	move := f.a.make(10, &crdt.EventUpsert{EventID: "gig", Fields: crdt.FieldLocation | crdt.FieldDescription, Location: "Garden", Description: "outside"})
	cancel := f.a.make(10, &crdt.EventCancel{EventID: "gig", Reason: "rain"})
	late := f.a.make(10, &crdt.EventUpsert{EventID: "gig", Fields: crdt.FieldTitle, Title: "Jazz night (cancelled)"})
	info1 := f.a.make(1, &crdt.VenueInfo{Name: "Le Bar"})
	info2 := f.a.make(1, &crdt.VenueInfo{Name: "Le Bar Tabac"})
	var ref *crdt.Replica
	permutations([]crdt.Op{retitle, move, cancel, late}, func(order []crdt.Op) {
		r := f.replica(t)
		mustDeliver(t, r, info1, info2, create)
		mustDeliver(t, r, order...)
		ag := r.Set.State.Agenda()
		if len(ag) != 1 {
			t.Fatalf("%d events", len(ag))
		}
		e := ag[0]
		if e.Title != "Jazz night (cancelled)" || e.Location != "Garden" || e.Description != "outside" ||
			e.StartsAt != 1000 || e.EndsAt != 2000 || !e.Cancelled || e.Updated != late.HLC {
			t.Fatalf("event %+v", *e)
		}
		if v := r.Set.State.Venues[f.a.key()]; v.DisplayName() != "Le Bar Tabac" || v.Name != "A" {
			t.Fatalf("venue %+v", *v)
		}
		if ref == nil {
			ref = r
		}
		sameState(t, "agenda", ref.Set, r.Set)
	})
	if v := ref.Set.State.Venues[f.b.key()]; v.DisplayName() != "B" {
		t.Fatalf("venue without info: %q", v.DisplayName())
	}
}

// Cards: holder and block are last-writer-wins across venues; a tie on HLC
// is broken by op id, the same way everywhere.
func TestCardRegistersTie(t *testing.T) {
	f := newFixture(t)
	card := crdt.CardID("04A1B2C3")
	f.a.ms, f.b.ms = baseMillis+100, baseMillis+100
	la := f.a.make(0, &crdt.CardLink{Card: card, Holder: "alice"})
	lb := f.b.make(0, &crdt.CardLink{Card: card, Holder: "bob"})
	blk := f.a.make(5, &crdt.CardBlock{Card: card, Reason: "lost"})
	unb := f.b.make(6, &crdt.CardUnblock{Card: card, Reason: "found"})
	if la.HLC != lb.HLC {
		t.Fatal("want a tie")
	}
	want := "alice"
	ida, idb := la.ID(), lb.ID()
	if bytes.Compare(idb[:], ida[:]) > 0 {
		want = "bob"
	}
	permutations([]crdt.Op{la, lb, blk, unb}, func(order []crdt.Op) {
		r := f.replica(t)
		mustDeliver(t, r, order...)
		c := r.Set.State.Card(card)
		if c.Holder != want || c.Blocked || c.BlockReason != "" {
			t.Fatalf("card %+v, want holder %s, unblocked", *c, want)
		}
	})
}
