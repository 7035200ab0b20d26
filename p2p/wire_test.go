package p2p

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	ma "github.com/multiformats/go-multiaddr"
)

func seedSigner(t testing.TB, b byte) *crdt.Signer {
	t.Helper()
	s, err := crdt.SignerFromSeed(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testFederation makes a federation chain admitting the venue signers.
func testFederation(t testing.TB, venues ...*crdt.Signer) []crdt.Op {
	t.Helper()
	clock := crdt.NewClock(func() int64 { return time.Now().UnixMilli() })
	fed := crdt.NewAuthor(seedSigner(t, 1), clock, 0, crdt.OpID{})
	ops := []crdt.Op{fed.Make(&crdt.Genesis{Name: "Test", Currency: "EUR", Settings: crdt.DefaultSettings()})}
	for i, v := range venues {
		ops = append(ops, fed.Make(&crdt.Admit{Venue: v.Public(), Name: string(rune('A' + i))}))
	}
	return ops
}

func topUps(t testing.TB, s *crdt.Signer, n int) []crdt.Op {
	clock := crdt.NewClock(func() int64 { return time.Now().UnixMilli() })
	a := crdt.NewAuthor(s, clock, 0, crdt.OpID{})
	out := make([]crdt.Op, n)
	for i := range out {
		out[i] = a.Make(&crdt.TopUp{Card: "04A1B2C3D4E5F6", Amount: uint64(100 + i), Method: crdt.MethodCash})
	}
	return out
}

func TestOpsMessageRoundTrip(t *testing.T) {
	ops := topUps(t, seedSigner(t, 2), 5)
	msg := EncodeOpsMessage(ops)
	got, err := DecodeOpsMessage(msg, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Fatalf("%d ops", len(got))
	}
	for i := range ops {
		if got[i].ID() != ops[i].ID() {
			t.Fatalf("op %d differs", i)
		}
	}
	bad := map[string][]byte{
		"empty":         nil,
		"version":       append([]byte{9}, msg[1:]...),
		"too many ops":  msg, // with maxOps 4 below
		"truncated":     msg[:len(msg)-1],
		"trailing":      append(append([]byte{}, msg...), 0),
		"zero ops":      {OpsMessageVersion, 0},
		"huge count":    {OpsMessageVersion, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"huge length":   {OpsMessageVersion, 1, 0xff, 0xff, 0x03},
		"garbage op":    append([]byte{OpsMessageVersion, 1, 200, 1}, bytes.Repeat([]byte{7}, 200)...),
		"count no data": {OpsMessageVersion, 3},
	}
	for name, p := range bad {
		max := 10
		if name == "too many ops" {
			max = 4
		}
		if _, err := DecodeOpsMessage(p, max); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v", name, err)
		}
	}
}

func TestHelloAndRuns(t *testing.T) {
	a, b := seedSigner(t, 2).Public(), seedSigner(t, 3).Public()
	h := hello{digest: [32]byte{1, 2}, ops: 42, vv: crdt.VersionVector{a: 7, b: 300}}
	p := appendHello(nil, h)
	if p[0] != frameHello {
		t.Fatal("type")
	}
	got, err := decodeHello(p[1:], 10)
	if err != nil || got.digest != h.digest || got.ops != 42 || len(got.vv) != 2 || got.vv[a] != 7 || got.vv[b] != 300 {
		t.Fatalf("%+v %v", got, err)
	}
	if _, err := decodeHello(p[1:], 1); !errors.Is(err, ErrMalformed) {
		t.Fatalf("vv bound: %v", err)
	}
	if _, err := decodeHello(p[1:len(p)-1], 10); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated: %v", err)
	}
	ops := topUps(t, seedSigner(t, 2), 4)
	run := appendOps(nil, ops)
	if got, err := decodeRun(run); err != nil || len(got) != 4 {
		t.Fatalf("run: %v", err)
	}
	holed := appendOps(nil, []crdt.Op{ops[0], ops[2]})
	if _, err := decodeRun(holed); !errors.Is(err, ErrMalformed) {
		t.Fatalf("non-contiguous run: %v", err)
	}
	mixed := appendOps(nil, []crdt.Op{ops[0], topUps(t, seedSigner(t, 3), 2)[1]})
	if _, err := decodeRun(mixed); !errors.Is(err, ErrMalformed) {
		t.Fatalf("two authors: %v", err)
	}
}

func TestMissingRangesFederationFirst(t *testing.T) {
	fed := seedSigner(t, 0xff).Public() // sorts after the others
	a, b := seedSigner(t, 2).Public(), seedSigner(t, 3).Public()
	mine := crdt.VersionVector{fed: 5, a: 10, b: 3}
	theirs := crdt.VersionVector{fed: 2, a: 10, b: 1}
	got := missingRanges(fed, mine, theirs)
	want := []crdt.Range{{Author: fed, From: 3, To: 5}, {Author: b, From: 2, To: 3}}
	if len(got) != len(want) {
		t.Fatalf("%v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%d: %v want %v", i, got[i], want[i])
		}
	}
	if len(missingRanges(fed, theirs, mine)) != 0 {
		t.Fatal("nothing is missing the other way")
	}
}

func TestHeartbeatSigned(t *testing.T) {
	s := seedSigner(t, 2)
	addr := ma.StringCast("/ip4/192.0.2.1/tcp/4001")
	hb := &Heartbeat{Time: time.UnixMilli(1_700_000_000_123), Digest: [32]byte{9}, Ops: 1234, VVDigest: [32]byte{8},
		Authors: 3, Peers: 2, Isolated: true, Addrs: []ma.Multiaddr{addr}}
	p := EncodeHeartbeat(hb, s)
	got, err := DecodeHeartbeat(p)
	if err != nil {
		t.Fatal(err)
	}
	if got.Peer != s.Public() || !got.Time.Equal(hb.Time) || got.Digest != hb.Digest || got.Ops != 1234 ||
		got.VVDigest != hb.VVDigest || got.Authors != 3 || got.Peers != 2 || !got.Isolated || len(got.Addrs) != 1 || !got.Addrs[0].Equal(addr) {
		t.Fatalf("%+v", got)
	}
	for i := range p {
		q := append([]byte{}, p...)
		q[i] ^= 0x40
		if _, err := DecodeHeartbeat(q); err == nil {
			t.Fatalf("flipping byte %d went unnoticed", i)
		}
	}
	if _, err := DecodeHeartbeat(p[:len(p)-1]); err == nil {
		t.Fatal("truncated heartbeat accepted")
	}
}

func TestVVDigestOrderIndependent(t *testing.T) {
	a, b := seedSigner(t, 2).Public(), seedSigner(t, 3).Public()
	x := VVDigest(crdt.VersionVector{a: 1, b: 2})
	y := VVDigest(crdt.VersionVector{b: 2, a: 1})
	z := VVDigest(crdt.VersionVector{a: 2, b: 1})
	if x != y || x == z {
		t.Fatal("vv digest")
	}
}

func FuzzDecodeOpsMessage(f *testing.F) {
	f.Add(EncodeOpsMessage(topUps(f, seedSigner(f, 2), 2)))
	f.Add([]byte{OpsMessageVersion, 1, 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		ops, err := DecodeOpsMessage(p, 16)
		if err == nil && !bytes.Equal(EncodeOpsMessage(ops), p) {
			t.Fatal("decoded message does not re-encode to itself")
		}
	})
}

func FuzzDecodeHeartbeat(f *testing.F) {
	f.Add(EncodeHeartbeat(&Heartbeat{Time: time.UnixMilli(1)}, seedSigner(f, 2)))
	f.Fuzz(func(t *testing.T, p []byte) { _, _ = DecodeHeartbeat(p) })
}

func TestHelloVersions(t *testing.T) {
	a := seedSigner(t, 2).Public()
	h := hello{digest: [32]byte{1}, ops: 3, vv: crdt.VersionVector{a: 3}, fork: [32]byte{9}, forkIDs: 7}
	got, err := decodeHello(appendHello(nil, h)[1:], 10)
	if err != nil || got.version != syncVersion || got.fork != h.fork || got.forkIDs != 7 || got.vv[a] != 3 {
		t.Fatalf("v2: %+v %v", got, err)
	}
	// A version 1 hello (no fork digest) is understood, and answered in
	// version 1.
	v1 := []byte{1}
	v1 = append(v1, h.digest[:]...)
	v1 = append(v1, 3)
	v1 = appendVV(v1, h.vv)
	old := h
	old.version = 1
	if got := appendHello(nil, old); !bytes.Equal(got[1:], v1) {
		t.Fatalf("v1 hello encoded as %x, want %x", got[1:], v1)
	}
	got, err = decodeHello(v1, 10)
	if err != nil || got.version != 1 || got.fork != ([32]byte{}) || got.vv[a] != 3 {
		t.Fatalf("v1: %+v %v", got, err)
	}
	for name, p := range map[string][]byte{
		"version 3":      append([]byte{3}, v1[1:]...),
		"v2 no fork":     append([]byte{2}, v1[1:]...),
		"v1 trailing":    append(append([]byte{}, v1...), 0),
		"v2 fork no ids": append(append([]byte{2}, v1[1:]...), make([]byte, 32)...),
	} {
		if _, err := decodeHello(p, 10); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestSumAndForkRecords(t *testing.T) {
	s := sum{heads: [32]byte{1}, fork: [32]byte{2}, forkIDs: 300}
	got, err := decodeSum(appendSum(nil, s)[1:])
	if err != nil || got != s {
		t.Fatalf("sum: %+v %v", got, err)
	}
	if _, err := decodeSum(appendSum(nil, s)[1:66]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated sum: %v", err)
	}
	k := seedSigner(t, 2).Public()
	recs := []forkRec{{key: k, kind: recHead, seq: 9, id: crdt.OpID{1}}, {key: k, kind: recFork, seq: 6, id: crdt.OpID{2}},
		{key: k, kind: recProbe, seq: 300, id: crdt.OpID{3}}, {key: k, kind: recMember, seq: 7, id: crdt.OpID{4}}}
	p := appendForkRecs(nil, recs)
	if p[0] != frameForks {
		t.Fatal("type")
	}
	back, err := decodeForkRecs(p[1:], 10)
	if err != nil || len(back) != len(recs) {
		t.Fatalf("records: %v", err)
	}
	for i := range recs {
		if back[i] != recs[i] {
			t.Fatalf("record %d: %+v, want %+v", i, back[i], recs[i])
		}
	}
	bad := map[string][]byte{
		"over the bound": p[1:],
		"truncated":      p[1 : len(p)-1],
		"trailing":       append(append([]byte{}, p[1:]...), 0),
		"zero records":   {0},
		"huge count":     {0xff, 0xff, 0xff, 0xff, 0x0f},
		"unknown kind":   appendForkRecs(nil, []forkRec{{key: k, kind: 9, seq: 1}})[1:],
		"seq zero":       appendForkRecs(nil, []forkRec{{key: k, kind: recHead}})[1:],
	}
	for name, q := range bad {
		max := 10
		if name == "over the bound" {
			max = 3
		}
		if _, err := decodeForkRecs(q, max); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	ops := append(topUps(t, seedSigner(t, 2), 2), topUps(t, seedSigner(t, 3), 1)...)
	ev, err := decodeEvidence(appendOps(nil, ops))
	if err != nil || len(ev) != 3 {
		t.Fatalf("evidence of several authors: %v", err)
	}
}

func TestProbeSeqs(t *testing.T) {
	got := probeSeqs(11, 6)
	want := []uint64{1, 3, 5, 6, 7, 9, 10}
	if !slices.Equal(got, want) {
		t.Fatalf("probes of 11 (fork 6): %v, want %v", got, want)
	}
	if got := probeSeqs(1, 0); len(got) != 0 {
		t.Fatalf("probes of 1: %v", got)
	}
	if got := probeSeqs(1<<40, 0); len(got) > 64 {
		t.Fatalf("%d probes", len(got))
	}
}

func FuzzDecodeHello(f *testing.F) {
	a := seedSigner(f, 2).Public()
	f.Add(appendHello(nil, hello{digest: [32]byte{1}, ops: 3, vv: crdt.VersionVector{a: 3}, fork: [32]byte{9}, forkIDs: 7})[1:])
	f.Add([]byte{1, 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		h, err := decodeHello(p, 16)
		if err == nil && h.version == syncVersion && !bytes.Equal(appendHello(nil, h)[1:], p) {
			t.Fatal("decoded hello does not re-encode to itself")
		}
	})
}

func FuzzDecodeSum(f *testing.F) {
	f.Add(appendSum(nil, sum{forkIDs: 5})[1:])
	f.Fuzz(func(t *testing.T, p []byte) {
		s, err := decodeSum(p)
		if err == nil && !bytes.Equal(appendSum(nil, s)[1:], p) {
			t.Fatal("decoded sum does not re-encode to itself")
		}
	})
}

func FuzzDecodeForkRecs(f *testing.F) {
	k := seedSigner(f, 2).Public()
	f.Add(appendForkRecs(nil, []forkRec{{key: k, kind: recHead, seq: 9, id: crdt.OpID{1}}, {key: k, kind: recMember, seq: 300}})[1:])
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, p []byte) {
		recs, err := decodeForkRecs(p, 64)
		if err == nil && !bytes.Equal(appendForkRecs(nil, recs)[1:], p) {
			t.Fatal("decoded records do not re-encode to themselves")
		}
	})
}

func FuzzDecodeEvidence(f *testing.F) {
	f.Add(appendOps(nil, append(topUps(f, seedSigner(f, 2), 2), topUps(f, seedSigner(f, 3), 1)...)))
	f.Add([]byte{1, 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		ops, err := decodeEvidence(p)
		if err == nil && !bytes.Equal(appendOps(nil, ops), p) {
			t.Fatal("decoded evidence does not re-encode to itself")
		}
	})
}
