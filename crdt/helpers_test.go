package crdt_test

import (
	"bytes"
	"cmp"
	"encoding/gob"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/cagnotte/cagnotte/crdt"
)

// tb is what the helpers need from *testing.T, *testing.B and *rapid.T.
type tb interface {
	Helper()
	Fatalf(format string, args ...any)
}

// baseMillis is the virtual wall clock every test author starts from.
const baseMillis int64 = 1_700_000_000_000

// actor is a test author with its own virtual wall clock.
type actor struct {
	signer *crdt.Signer
	author *crdt.Author
	ms     int64
}

func signerFromBytes(t tb, seed ...byte) *crdt.Signer {
	t.Helper()
	var b [32]byte
	copy(b[:], seed)
	s, err := crdt.SignerFromSeed(b[:])
	if err != nil {
		t.Fatalf("signer: %v", err)
	}
	return s
}

func newActor(s *crdt.Signer) *actor {
	a := &actor{signer: s, ms: baseMillis}
	a.author = crdt.NewAuthor(s, crdt.NewClock(func() int64 { return a.ms }), 0, crdt.OpID{})
	actors.Store(s.Public(), a)
	return a
}

// actors finds a venue's actor by key, so that an admission moves the
// venue's clock past it, as a real node's clock observes its admission
// (an op older than its author's admission is refused).
var actors sync.Map

// fork returns a second author signing with a's key after (seq, head): it
// equivocates with a from seq+1 on.
func (a *actor) fork(seq uint64, head crdt.OpID) *actor {
	b := &actor{signer: a.signer, ms: a.ms}
	b.author = crdt.NewAuthor(a.signer, crdt.NewClock(func() int64 { return b.ms }), seq, head)
	return b
}

func (a *actor) key() crdt.PublicKey { return a.signer.Public() }

// make advances the actor's clock by dt milliseconds and makes an op.
func (a *actor) make(dt int64, b crdt.Body) crdt.Op {
	a.ms += dt
	op := a.author.Make(b)
	if ad, ok := b.(*crdt.Admit); ok {
		if v, ok := actors.Load(ad.Venue); ok {
			v := v.(*actor)
			v.author.Clock.Observe(op.HLC)
			v.ms = max(v.ms, a.ms)
		}
	}
	return op
}

// testSettings are valid non-default settings.
func testSettings() crdt.Settings {
	s := crdt.DefaultSettings()
	s.OfflinePaymentMax = 3000
	s.AutoBlock = false
	return s
}

// mustAdd adds ops to a set and fails on any refusal.
func mustAdd(t tb, s *crdt.OpSet, ops ...crdt.Op) {
	t.Helper()
	for _, op := range ops {
		out, err := s.Add(op)
		if err != nil || out != crdt.Added {
			t.Fatalf("add %s#%d %s: %v %v", op.Author.Short(), op.Seq, op.Kind, out, err)
		}
	}
}

// mustDeliver delivers ops to a replica and fails on any error.
func mustDeliver(t tb, r *crdt.Replica, ops ...crdt.Op) {
	t.Helper()
	for _, op := range ops {
		if err := r.Deliver(op); err != nil {
			t.Fatalf("deliver %s#%d %s: %v", op.Author.Short(), op.Seq, op.Kind, err)
		}
	}
}

func sortedKeys[K cmp.Ordered, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func sortedPubKeys[V any](m map[crdt.PublicKey]V) []crdt.PublicKey {
	keys := make([]crdt.PublicKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b crdt.PublicKey) int { return bytes.Compare(a[:], b[:]) })
	return keys
}

// dumpState writes everything a replica's views say, in a canonical order,
// so that two replicas holding the same ops give the same text. It leaves
// out what legitimately depends on delivery order: the chains' raw length
// (a replica may hold a revoked venue's ops past its cut-off), the order of
// card entries (History sorts them) and the evidence ops each replica keeps.
func dumpState(s *crdt.OpSet) string {
	var b strings.Builder
	st := s.State
	fmt.Fprintf(&b, "federation %s name=%q currency=%q\nsettings %+v\n", s.Federation(), st.Name, st.Currency, st.Settings)
	fmt.Fprintf(&b, "credits=%d debits=%d counted=%d stale=%v\n", st.Credits, st.Debits, st.Counted, s.Stale)
	vv := s.VersionVector()
	for _, k := range sortedPubKeys(vv) {
		if a := s.Authors[k]; a != nil && a.Fork != 0 {
			// An equivocating author's chain is whichever branch the
			// replica followed: only its counted part must agree.
			continue
		}
		fmt.Fprintf(&b, "vv %s %d\n", k, vv[k])
	}
	for _, k := range sortedPubKeys(s.Authors) {
		a := s.Authors[k]
		// NCounted and Acc, not the chain's head: a forked venue's chain
		// is whichever branch the replica followed.
		fmt.Fprintf(&b, "author %s role=%d ncounted=%d acc=%x revoked=%v after=%d fork=%d\n",
			k, a.Role, a.NCounted, a.Acc, a.Revoked, a.RevokedAfter, a.Fork)
	}
	for _, id := range sortedKeys(st.Cards) {
		c := st.Cards[id]
		fmt.Fprintf(&b, "card %s balance=%d credits=%d debits=%d counter=%d registered=%v blocked=%v reason=%q blockstamp=%v holder=%q holderstamp=%v\n",
			c.ID, c.Balance, c.Credits, c.Debits, c.Counter, c.Registered, c.Blocked, c.BlockReason, c.BlockStamp, c.Holder, c.HolderStamp)
		for _, e := range st.CardHistory(c.ID, nil, false, 0) {
			fmt.Fprintf(&b, "  entry %+v\n", e)
		}
		for n := range c.Counter + 1 {
			if id, ok := st.Index().Payment(c.ID, n); ok {
				fmt.Fprintf(&b, "  payment counter=%d op=%s\n", n, id)
			}
		}
	}
	for _, e := range st.Agenda() {
		fmt.Fprintf(&b, "event %+v\n", *e)
	}
	for _, k := range sortedPubKeys(st.Venues) {
		fmt.Fprintf(&b, "venue %+v\n", *st.Venues[k])
	}
	for _, c := range st.SortedConflicts() {
		fmt.Fprintf(&b, "conflict %+v\n", *c)
	}
	if m, ok := st.Index().(*crdt.MemIndex); ok {
		for _, k := range sortedKeys(m.Refs) {
			fmt.Fprintf(&b, "ref %s %+v\n", k, m.Refs[k])
		}
	}
	return b.String()
}

// sameState fails when two sets differ in digest or views.
func sameState(t tb, what string, want, got *crdt.OpSet) {
	t.Helper()
	w, g := dumpState(want), dumpState(got)
	if w != g {
		t.Fatalf("%s: views differ\n%s", what, diffLines(w, g))
	}
	if want.Digest() != got.Digest() {
		t.Fatalf("%s: digests differ with the same views", what)
	}
}

// diffLines shows the first lines where two dumps differ.
func diffLines(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < max(len(wl), len(gl)) && shown < 12; i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			fmt.Fprintf(&b, "line %d\n  want %s\n  got  %s\n", i, w, g)
			shown++
		}
	}
	return b.String()
}

// setFingerprint is what must not change when an op is refused.
type setFingerprint struct {
	digest [32]byte
	len    uint64
	vv     string
	dump   string
}

func fingerprint(s *crdt.OpSet) setFingerprint {
	vv := s.VersionVector()
	var b strings.Builder
	for _, k := range sortedPubKeys(vv) {
		fmt.Fprintf(&b, "%s=%d ", k, vv[k])
	}
	return setFingerprint{digest: s.Digest(), len: s.Len(), vv: b.String(), dump: dumpState(s)}
}

// gobCopy deep-copies a snapshot the way node/store persists it.
func gobCopy(t tb, snap crdt.Snapshot) crdt.Snapshot {
	t.Helper()
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(snap); err != nil {
		t.Fatalf("gob encode: %v", err)
	}
	var out crdt.Snapshot
	if err := gob.NewDecoder(&buf).Decode(&out); err != nil {
		t.Fatalf("gob decode: %v", err)
	}
	return out
}

// copySet returns an independent copy of a set (through a snapshot).
func copySet(t tb, s *crdt.OpSet, log crdt.OpReader) *crdt.OpSet {
	t.Helper()
	return crdt.Restore(crdt.Config{Federation: s.Federation(), Log: log}, gobCopy(t, s.Snapshot()))
}

// readRange reads ops from a replica's log.
func readRange(t tb, log crdt.OpReader, rg crdt.Range) []crdt.Op {
	t.Helper()
	var out []crdt.Op
	if err := log.ReadRange(rg.Author, rg.From, rg.To, func(op crdt.Op) error {
		out = append(out, op)
		return nil
	}); err != nil {
		t.Fatalf("read range: %v", err)
	}
	if uint64(len(out)) != rg.Len() {
		t.Fatalf("read range %s %d..%d: got %d ops", rg.Author.Short(), rg.From, rg.To, len(out))
	}
	return out
}

func isAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
