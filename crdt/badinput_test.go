package crdt_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

// Bad input: every malformed, forged or unauthorised op is refused with
// its typed error, and the op set is exactly as it was.

// rawOp signs an op with an arbitrary body as a's next op in s.
func rawOp(s *crdt.OpSet, a *actor, kind crdt.Kind, body []byte) crdt.Op {
	seq, head := s.Head(a.key())
	op := crdt.Op{Seq: seq + 1, Prev: head, HLC: crdt.MakeHLC(uint64(a.ms), 0), Kind: kind, Body: body}
	a.signer.Sign(&op)
	return op
}

// resign signs op again after the test changed it.
func resign(a *actor, op crdt.Op) crdt.Op {
	a.signer.Sign(&op)
	return op
}

// body builds a raw body.
type body []byte

func (b body) uv(v uint64) body { return binary.AppendUvarint(b, v) }
func (b body) sv(v int64) body  { return binary.AppendVarint(b, v) }
func (b body) str(s string) body {
	return append(b.uv(uint64(len(s))), s...)
}
func (b body) card() body { return append(b.uv(4), 0x04, 0xA1, 0xB2, 0xC3) }

func topUpBody(amount uint64) body { return body(nil).card().uv(amount).str("cash").str("") }

// badInputFixture is a federation with venues A and B, and C revoked after
// its first op; it returns the set and C's second op, made before the
// revocation.
func badInputFixture(t *testing.T) (f *fixture, c *actor, s *crdt.OpSet, c2, aHead crdt.Op) {
	f = newFixture(t)
	c = newActor(signerFromBytes(t, 3))
	log := crdt.NewMemLog()
	s = crdt.NewOpSet(crdt.Config{Federation: f.fed.key(), Log: log})
	add := func(ops ...crdt.Op) {
		for _, op := range ops {
			mustAdd(t, s, op)
			if err := log.Append(op); err != nil {
				t.Fatal(err)
			}
		}
	}
	add(f.base...)
	admitC := f.fed.make(1, &crdt.Admit{Venue: c.key(), Name: "C"})
	c1 := c.make(1, &crdt.VenueInfo{Name: "C"})
	c2 = c.make(1, &crdt.VenueInfo{Name: "C2"})
	aHead = f.a.make(1, &crdt.TopUp{Card: "04A1B2C3", Amount: 500, Method: crdt.MethodCash})
	add(admitC, c1,
		f.fed.make(1, &crdt.Revoke{Venue: c.key(), AfterSeq: 1, Reason: "stolen"}), aHead)
	return f, c, s, c2, aHead
}

func TestBadOpsRefused(t *testing.T) {
	f, c, s, c2, aHead := badInputFixture(t)
	outsider := newActor(signerFromBytes(t, 9))
	next := func(b crdt.Body) crdt.Op { return rawOp(s, f.a, b.Kind(), crdt.EncodeBody(b)) }
	longName := strings.Repeat("x", crdt.MaxNameLen+1)

	cases := []struct {
		name string
		op   func() crdt.Op
		want error
		// signed: the fault is in the signature, so AddTrusted (which
		// skips it) is not expected to refuse the op.
		signed bool
		// dup: AddRange skips duplicates without an error.
		dup bool
	}{
		{name: "forged signature", want: crdt.ErrBadSignature, signed: true, op: func() crdt.Op {
			op := next(&crdt.VenueInfo{Name: "A"})
			op.Sig[7] ^= 0x20
			return op
		}},
		{name: "body changed after signing", want: crdt.ErrBadSignature, signed: true, op: func() crdt.Op {
			op := rawOp(s, f.a, crdt.KindTopUp, topUpBody(100))
			op.Body = topUpBody(100000)
			return op
		}},
		{name: "signed by A, author field B", want: crdt.ErrBadSignature, signed: true, op: func() crdt.Op {
			seq, head := s.Head(f.b.key())
			op := crdt.Op{Seq: seq + 1, Prev: head, HLC: 1, Kind: crdt.KindVenueInfo, Body: crdt.EncodeBody(&crdt.VenueInfo{Name: "B"})}
			f.a.signer.Sign(&op)
			op.Author = f.b.key()
			return op
		}},
		{name: "unknown author", want: crdt.ErrUnknownAuthor, op: func() crdt.Op {
			return rawOp(s, outsider, crdt.KindVenueInfo, crdt.EncodeBody(&crdt.VenueInfo{Name: "X"}))
		}},
		{name: "revoked author past its cut-off", want: crdt.ErrRevoked, op: func() crdt.Op { return c2 }},
		{name: "revoked author, later op", want: crdt.ErrRevoked, op: func() crdt.Op {
			return rawOp(s, c, crdt.KindVenueInfo, crdt.EncodeBody(&crdt.VenueInfo{Name: "C3"}))
		}},
		{name: "seq 0", want: crdt.ErrBadSeq, op: func() crdt.Op {
			op := next(&crdt.VenueInfo{Name: "A"})
			op.Seq, op.Prev = 0, crdt.OpID{}
			return resign(f.a, op)
		}},
		{name: "gap", want: crdt.ErrGap, op: func() crdt.Op {
			op := next(&crdt.VenueInfo{Name: "A"})
			op.Seq += 2
			return resign(f.a, op)
		}},
		{name: "duplicate of the head", want: crdt.ErrDuplicate, dup: true, op: func() crdt.Op {
			return aHead
		}},
		{name: "duplicate below the head", want: crdt.ErrDuplicate, dup: true, op: func() crdt.Op {
			return f.base[0]
		}},
		{name: "first op with a prev", want: crdt.ErrBrokenChain, op: func() crdt.Op {
			op := rawOp(s, f.b, crdt.KindVenueInfo, crdt.EncodeBody(&crdt.VenueInfo{Name: "B"}))
			op.Prev[0] = 1
			return resign(f.b, op)
		}},
		{name: "later op without a prev", want: crdt.ErrBrokenChain, op: func() crdt.Op {
			op := next(&crdt.VenueInfo{Name: "A"})
			op.Prev = crdt.OpID{}
			return resign(f.a, op)
		}},
		{name: "body over MaxBodySize", want: crdt.ErrTooLarge, op: func() crdt.Op {
			b := body(nil).str(strings.Repeat("n", 100)).str(strings.Repeat("a", crdt.MaxBodySize)).str("")
			return rawOp(s, f.a, crdt.KindVenueInfo, b)
		}},
		{name: "zero top-up", want: crdt.ErrInvalidBody, op: func() crdt.Op {
			return rawOp(s, f.a, crdt.KindTopUp, topUpBody(0))
		}},
		{name: "top-up over MaxAmount", want: crdt.ErrInvalidBody, op: func() crdt.Op {
			return rawOp(s, f.a, crdt.KindTopUp, topUpBody(crdt.MaxAmount+1))
		}},
		{name: "zero payment", want: crdt.ErrInvalidBody, op: func() crdt.Op {
			return next(&crdt.Payment{Card: "04A1B2C3", Amount: 0, Counter: 1})
		}},
		{name: "payment counter 0", want: crdt.ErrInvalidBody, op: func() crdt.Op {
			return next(&crdt.Payment{Card: "04A1B2C3", Amount: 10, Counter: 0})
		}},
		{name: "zero refund", want: crdt.ErrInvalidBody, op: func() crdt.Op {
			return next(&crdt.Refund{Card: "04A1B2C3", Amount: 0})
		}},
		{name: "correction delta 0", want: crdt.ErrInvalidBody, op: func() crdt.Op {
			return next(&crdt.Correction{Card: "04A1B2C3", Delta: 0, Reason: "none"})
		}},
		{name: "correction over MaxAmount", want: crdt.ErrInvalidBody, op: func() crdt.Op {
			return next(&crdt.Correction{Card: "04A1B2C3", Delta: -crdt.MaxAmount - 1, Reason: "big"})
		}},
		{name: "correction without reason", want: crdt.ErrInvalidBody, op: func() crdt.Op {
			return next(&crdt.Correction{Card: "04A1B2C3", Delta: 5})
		}},
		{name: "unknown top-up method", want: crdt.ErrInvalidBody, op: func() crdt.Op {
			return rawOp(s, f.a, crdt.KindTopUp, body(nil).card().uv(10).str("barter").str(""))
		}},
		{name: "unknown kind", want: crdt.ErrUnknownKind, op: func() crdt.Op {
			return rawOp(s, f.a, crdt.Kind(99), nil)
		}},
		{name: "kind 0", want: crdt.ErrUnknownKind, op: func() crdt.Op {
			return rawOp(s, f.a, crdt.Kind(0), nil)
		}},
		{name: "non-minimal varint", want: crdt.ErrNonCanonical, op: func() crdt.Op {
			b := body(nil).card()
			b = append(b, 0x85, 0x00) // 5 in two bytes
			return rawOp(s, f.a, crdt.KindTopUp, b.str("cash").str(""))
		}},
		{name: "varint over 64 bits", want: crdt.ErrNonCanonical, op: func() crdt.Op {
			b := append(body(nil).card(), bytes.Repeat([]byte{0xFF}, 10)...)
			b = append(b, 0x01)
			return rawOp(s, f.a, crdt.KindTopUp, b.str("cash").str(""))
		}},
		{name: "non-minimal string length", want: crdt.ErrNonCanonical, op: func() crdt.Op {
			b := body{0x81, 0x00, 'A'}.str("").str("")
			return rawOp(s, f.a, crdt.KindVenueInfo, b)
		}},
		{name: "trailing bytes in body", want: crdt.ErrNonCanonical, op: func() crdt.Op {
			return rawOp(s, f.a, crdt.KindTopUp, append(topUpBody(10), 0))
		}},
		{name: "truncated body", want: crdt.ErrTruncated, op: func() crdt.Op {
			b := topUpBody(10)
			return rawOp(s, f.a, crdt.KindTopUp, b[:len(b)-3])
		}},
		{name: "empty body", want: crdt.ErrTruncated, op: func() crdt.Op {
			return rawOp(s, f.a, crdt.KindPayment, nil)
		}},
		{name: "bad UTF-8", want: crdt.ErrInvalidBody, op: func() crdt.Op {
			return rawOp(s, f.a, crdt.KindVenueInfo, body(nil).str("caf\xe9").str("").str(""))
		}},
		{name: "name too long", want: crdt.ErrTooLarge, op: func() crdt.Op {
			return rawOp(s, f.a, crdt.KindVenueInfo, body(nil).str(longName).str("").str(""))
		}},
		{name: "card id too short", want: crdt.ErrInvalidBody, op: func() crdt.Op {
			return rawOp(s, f.a, crdt.KindCardRegister, body(nil).uv(3).uv(1).uv(2).uv(3))
		}},
		{name: "card id too long", want: crdt.ErrTooLarge, op: func() crdt.Op {
			return rawOp(s, f.a, crdt.KindCardRegister, append(body(nil).uv(11), make([]byte, 11)...))
		}},
		{name: "event title missing", want: crdt.ErrInvalidBody, op: func() crdt.Op {
			return next(&crdt.EventUpsert{EventID: "e1", Fields: crdt.FieldTitle})
		}},
		{name: "event with no fields", want: crdt.ErrInvalidBody, op: func() crdt.Op {
			return next(&crdt.EventUpsert{EventID: "e1"})
		}},
		{name: "event with unknown field", want: crdt.ErrInvalidBody, op: func() crdt.Op {
			return next(&crdt.EventUpsert{EventID: "e1", Fields: 1 << 5})
		}},
		{name: "event ends before it starts", want: crdt.ErrInvalidBody, op: func() crdt.Op {
			return next(&crdt.EventUpsert{EventID: "e1", Fields: crdt.FieldStartsAt | crdt.FieldEndsAt, StartsAt: 10, EndsAt: 5})
		}},
		{name: "venue admits", want: crdt.ErrNotAllowed, op: func() crdt.Op {
			return next(&crdt.Admit{Venue: outsider.key(), Name: "X"})
		}},
		{name: "venue revokes", want: crdt.ErrNotAllowed, op: func() crdt.Op {
			return next(&crdt.Revoke{Venue: f.b.key()})
		}},
		{name: "venue changes settings", want: crdt.ErrNotAllowed, op: func() crdt.Op {
			return next(&crdt.SettingsChange{Settings: crdt.DefaultSettings()})
		}},
		{name: "venue signs a genesis", want: crdt.ErrNotAllowed, op: func() crdt.Op {
			return next(&crdt.Genesis{Name: "Coup", Currency: "EUR", Settings: crdt.DefaultSettings()})
		}},
		{name: "federation tops up", want: crdt.ErrNotAllowed, op: func() crdt.Op {
			return rawOp(s, f.fed, crdt.KindTopUp, topUpBody(10))
		}},
		{name: "federation pays", want: crdt.ErrNotAllowed, op: func() crdt.Op {
			return rawOp(s, f.fed, crdt.KindPayment, crdt.EncodeBody(&crdt.Payment{Card: "04A1B2C3", Amount: 1, Counter: 1}))
		}},
		{name: "genesis not at seq 1", want: crdt.ErrNotAllowed, op: func() crdt.Op {
			return rawOp(s, f.fed, crdt.KindGenesis, crdt.EncodeBody(&crdt.Genesis{Name: "Again", Currency: "EUR", Settings: crdt.DefaultSettings()}))
		}},
		{name: "bad settings", want: crdt.ErrInvalidBody, op: func() crdt.Op {
			st := crdt.DefaultSettings()
			st.MinPeersPercent = 101
			return rawOp(s, f.fed, crdt.KindSettings, crdt.EncodeBody(&crdt.SettingsChange{Settings: st}))
		}},
		{name: "boolean not 0 or 1", want: crdt.ErrNonCanonical, op: func() crdt.Op {
			st := crdt.DefaultSettings()
			st.MaxClockSkew, st.BalanceMax = 0, 0 // one byte each, after the boolean
			b := crdt.EncodeBody(&crdt.SettingsChange{Settings: st})
			b[len(b)-3] = 2
			return rawOp(s, f.fed, crdt.KindSettings, b)
		}},
		{name: "admit of the zero key", want: crdt.ErrInvalidBody, op: func() crdt.Op {
			return rawOp(s, f.fed, crdt.KindAdmit, crdt.EncodeBody(&crdt.Admit{Name: "nobody"}))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			op := tc.op()
			before := fingerprint(s)
			check := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, tc.want) {
					t.Fatalf("%s: got %v, want %v", what, err, tc.want)
				}
				var oe *crdt.OpError
				if !errors.As(err, &oe) {
					t.Fatalf("%s: %v is not an *OpError", what, err)
				}
				if after := fingerprint(s); after != before {
					t.Fatalf("%s changed the set:\n%s", what, diffLines(before.dump, after.dump))
				}
			}
			out, err := s.Add(op)
			if out != 0 {
				t.Fatalf("Add outcome %v with error %v", out, err)
			}
			check("Add", err)
			check("Check", s.Check(&op))
			_, err = s.AddEvidence(op)
			check("AddEvidence", err)
			n, err := s.AddRange([]crdt.Op{op})
			switch {
			case tc.dup && (n != 1 || err != nil):
				t.Fatalf("AddRange of a duplicate: %d %v, want it skipped", n, err)
			case tc.dup:
			case n != 0:
				t.Fatalf("AddRange added %d", n)
			default:
				check("AddRange", err)
			}
			if after := fingerprint(s); after != before {
				t.Fatalf("AddRange changed the set:\n%s", diffLines(before.dump, after.dump))
			}
			if !tc.signed {
				_, err = s.AddTrusted(op)
				check("AddTrusted", err)
			}
		})
	}
}

// A federation's first op must be its genesis.
func TestFederationStartsWithGenesis(t *testing.T) {
	f := newFixture(t)
	s := crdt.NewOpSet(crdt.Config{Federation: f.fed.key()})
	admit := rawOp(s, f.fed, crdt.KindAdmit, crdt.EncodeBody(&crdt.Admit{Venue: f.a.key(), Name: "A"}))
	before := fingerprint(s)
	if _, err := s.Add(admit); !errors.Is(err, crdt.ErrNotAllowed) {
		t.Fatalf("admit at seq 1: %v, want ErrNotAllowed", err)
	}
	if fingerprint(s) != before {
		t.Fatal("set changed")
	}
	// A venue op before the genesis: the venue is unknown.
	if _, err := s.Add(f.a.make(1, &crdt.VenueInfo{Name: "A"})); !errors.Is(err, crdt.ErrUnknownAuthor) {
		t.Fatalf("venue op before genesis: %v, want ErrUnknownAuthor", err)
	}
	mustAdd(t, s, f.base...)
}

// Byte-level: what DecodeOp refuses.
func TestDecodeOpRefuses(t *testing.T) {
	f := newFixture(t)
	good := f.a.make(1, &crdt.TopUp{Card: "04A1B2C3", Amount: 100, Method: crdt.MethodOnline, ExternalRef: "cs_1"})
	enc := good.Encode()
	if op, err := crdt.DecodeOp(enc); err != nil || op.ID() != good.ID() || !bytes.Equal(op.Encode(), enc) {
		t.Fatalf("good op: %v", err)
	}
	mutate := func(fn func(b []byte) []byte) []byte { return fn(bytes.Clone(enc)) }
	const bodyLenAt = 1 + 32 + 8 + 32 + 8 + 1
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, crdt.ErrTruncated},
		{"header only", enc[:50], crdt.ErrTruncated},
		{"one byte short", enc[:len(enc)-1], crdt.ErrTruncated},
		{"body shorter than its length", mutate(func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[bodyLenAt:], uint16(len(good.Body)+1))
			return b
		}), crdt.ErrTruncated},
		{"trailing byte", append(bytes.Clone(enc), 0), crdt.ErrNonCanonical},
		{"oversized", make([]byte, crdt.MaxOpSize+1), crdt.ErrTooLarge},
		{"body length over MaxBodySize", mutate(func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[bodyLenAt:], crdt.MaxBodySize+1)
			return b
		}), crdt.ErrTooLarge},
		{"version 0", mutate(func(b []byte) []byte { b[0] = 0; return b }), crdt.ErrBadVersion},
		{"version 2", mutate(func(b []byte) []byte { b[0] = 2; return b }), crdt.ErrBadVersion},
		{"seq 0", mutate(func(b []byte) []byte {
			binary.BigEndian.PutUint64(b[33:], 0)
			return b
		}), crdt.ErrBadSeq},
		{"first op with prev", mutate(func(b []byte) []byte { b[41] = 1; return b }), crdt.ErrBrokenChain},
		{"unknown kind", mutate(func(b []byte) []byte { b[bodyLenAt-1] = 77; return b }), crdt.ErrUnknownKind},
		{"kind of another body", mutate(func(b []byte) []byte { b[bodyLenAt-1] = byte(crdt.KindPayment); return b }), crdt.ErrTruncated},
	}
	for _, tc := range cases {
		if _, err := crdt.DecodeOp(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}

// DecodeBody refuses bodies no writer could have produced.
func TestDecodeBodyRefuses(t *testing.T) {
	cases := []struct {
		name string
		kind crdt.Kind
		b    []byte
		want error
	}{
		{"genesis lower-case currency", crdt.KindGenesis, crdt.EncodeBody(&crdt.Genesis{Name: "F", Currency: "eur", Settings: crdt.DefaultSettings()}), crdt.ErrInvalidBody},
		{"genesis without name", crdt.KindGenesis, crdt.EncodeBody(&crdt.Genesis{Name: " ", Currency: "EUR", Settings: crdt.DefaultSettings()}), crdt.ErrInvalidBody},
		{"heartbeat 0", crdt.KindSettings, crdt.EncodeBody(&crdt.SettingsChange{Settings: crdt.Settings{IsolationAfter: 10}}), crdt.ErrInvalidBody},
		{"card link without holder", crdt.KindCardLink, crdt.EncodeBody(&crdt.CardLink{Card: "04A1B2C3"}), crdt.ErrInvalidBody},
		{"event cancel without id", crdt.KindEventCancel, crdt.EncodeBody(&crdt.EventCancel{}), crdt.ErrInvalidBody},
		{"revoke of the zero key", crdt.KindRevoke, crdt.EncodeBody(&crdt.Revoke{}), crdt.ErrInvalidBody},
		{"venue info without name", crdt.KindVenueInfo, crdt.EncodeBody(&crdt.VenueInfo{}), crdt.ErrInvalidBody},
	}
	for _, tc := range cases {
		if _, err := crdt.DecodeBody(tc.kind, tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}
