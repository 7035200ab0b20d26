package p2p

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pubsubpb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/network"
)

// Fuzz targets for the frames a peer sends over the reservation, join and
// checkpoint protocols and the heartbeats the quorum check counts (issue
// 16). The direct targets call the decoders; the stream targets run two
// real networks on loopback TCP, an honest node and a member that sends
// the fuzzer's bytes, and check what the honest node answers or stores.
// Run one with
//
//	go test ./p2p -run '^$' -fuzz '^FuzzReserveStream$' -fuzztime 10m -parallel 1
//
// Crashers land in testdata/fuzz/<target>/ and stay there as seeds.

// fuzzFederation is testFederation on a fixed clock: every fuzzing
// process builds the same chain, so that seeds and inputs found by one
// worker mean the same in the others.
func fuzzFederation(tb testing.TB, venues ...*crdt.Signer) []crdt.Op {
	tb.Helper()
	clock := crdt.NewClock(func() int64 { return fuzzEpoch.UnixMilli() })
	fed := crdt.NewAuthor(seedSigner(tb, 1), clock, 0, crdt.OpID{})
	ops := []crdt.Op{fed.Make(&crdt.Genesis{Name: "Test", Currency: "EUR", Settings: crdt.DefaultSettings()})}
	for i, v := range venues {
		ops = append(ops, fed.Make(&crdt.Admit{Venue: v.Public(), Name: string(rune('A' + i))}))
	}
	return ops
}

// fuzzEpoch is the fixed time of fuzzFederation and of the heartbeats.
var fuzzEpoch = time.UnixMilli(1_700_000_000_000)

// fuzzPair is an honest node and a member whose streams the fuzzer writes.
type fuzzPair struct {
	fed            []crdt.Op
	honest, rogue  *Network
	honestRep      *MemReplica
	honestSigner   *crdt.Signer
	rogueSigner    *crdt.Signer
	honestDigest   [32]byte
	honestOps      uint64
	checkpoint     []byte
	checkpointAtts []crdt.Attestation
}

// WriteCheckpoint serves the honest node's real checkpoint.
func (p *fuzzPair) WriteCheckpoint(header func(int, []crdt.Attestation) error, chunk func([]byte) error) (bool, error) {
	if len(p.checkpoint) == 0 {
		return false, nil
	}
	if err := header(len(p.checkpoint), p.checkpointAtts); err != nil {
		return true, err
	}
	return true, chunk(p.checkpoint)
}

// newFuzzPair starts the two networks on loopback and waits until each
// counts the other as a connected member. now, if not nil, is the honest
// node's clock.
func newFuzzPair(tb testing.TB, now func() time.Time) *fuzzPair {
	tb.Helper()
	sa, sb := seedSigner(tb, 0x41), seedSigner(tb, 0x42)
	p := &fuzzPair{fed: fuzzFederation(tb, sa, sb), honestSigner: sa, rogueSigner: sb}
	start := func(s *crdt.Signer, boot []string, now func() time.Time) (*Network, *MemReplica) {
		rep, err := NewMemReplica(p.fed, s, nil)
		if err != nil {
			tb.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
		cfg.MDNS, cfg.NATPortMap, cfg.HolePunching = false, false, false
		cfg.StreamTimeout = 5 * time.Second
		cfg.Logger = quiet()
		cfg.Bootstrap = boot
		cfg.Now = now
		nw, err := New(context.Background(), cfg, rep, s)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { nw.Close() })
		return nw, rep
	}
	p.honest, p.honestRep = start(sa, nil, now)
	p.rogue, _ = start(sb, p.honest.P2PAddrs(), nil)
	waitUntil(tb, 30*time.Second, "the pair connected as members", func() bool {
		return p.honest.gater.member(p.rogue.ID()) && p.rogue.gater.member(p.honest.ID()) &&
			p.honest.host.Network().Connectedness(p.rogue.ID()) == network.Connected
	})
	p.honestRep.View(func(s *crdt.OpSet) {
		cp, err := s.EncodeCheckpoint()
		if err != nil {
			tb.Fatal(err)
		}
		p.checkpoint = cp
		p.checkpointAtts = []crdt.Attestation{s.Attest(sa, cp), s.Attest(sb, cp)}
	})
	p.honestDigest, p.honestOps = p.honestRep.Digest()
	return p
}

// unchanged fails if the honest node's state moved: the rogue sends
// nothing the honest node lacks, so whatever it sends must change nothing.
func (p *fuzzPair) unchanged(t *testing.T) {
	t.Helper()
	if d, ops := p.honestRep.Digest(); d != p.honestDigest || ops != p.honestOps {
		t.Fatalf("the honest node's state changed: %d ops, was %d", ops, p.honestOps)
	}
}

// frames encodes payloads as join/checkpoint frames.
func frames(payloads ...[]byte) []byte {
	var buf bytes.Buffer
	jc := &joinConn{rw: &buf, max: 1 << 20}
	for _, pl := range payloads {
		if err := jc.write(pl); err != nil {
			panic(err)
		}
	}
	return buf.Bytes()
}

func uv(t byte, v uint64) []byte { return binary.AppendUvarint([]byte{t}, v) }

// FuzzDecodeReserveRequest: what decodes re-encodes to the same bytes, and
// every refusal is ErrMalformed.
func FuzzDecodeReserveRequest(f *testing.F) {
	for _, s := range [][]byte{
		encodeReserveRequest(reserveOpReserve, "04A1B2C3D4E5F6", 350),
		encodeReserveRequest(reserveOpRelease, "04A1B2C3D4E5F6", 0),
		encodeReserveRequest(reserveOpReserve, "04A1B2C3", crdt.MaxAmount),
		encodeReserveRequest(reserveOpReserve, "04A1B2C3", crdt.MaxAmount+1),
		{1, 1, 0}, {1, 3, 1, 'A'}, {},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		op, card, amount, err := decodeReserveRequest(p)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if again := encodeReserveRequest(op, card, amount); !bytes.Equal(again, p) {
			t.Fatalf("decoded (%d, %q, %d) re-encodes as %x, not %x", op, card, amount, again, p)
		}
		if op == reserveOpReserve && (amount == 0 || amount > crdt.MaxAmount) {
			t.Fatalf("amount %d accepted", amount)
		}
	})
}

// FuzzDecodeReserveAnswer: an answer decodes to what its fields say (the
// encoding of the decoded answer decodes the same), refusals are
// ErrMalformed.
func FuzzDecodeReserveAnswer(f *testing.F) {
	busy := append(uv(reserveBusy, 7), bytes.Repeat([]byte{0xAB}, 32)...)
	for _, s := range [][]byte{
		uv(reserveGranted, 3), uv(reserveReleased, 0), {reserveRefused, 0},
		binary.AppendUvarint(busy, 900), busy, {reserveGranted}, {},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		a, err := decodeReserveAnswer(p)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(p) > maxReserveMsg {
			t.Fatalf("answer of %d bytes accepted", len(p))
		}
		enc := uv(a.status, a.counter)
		if a.status == reserveBusy {
			enc = binary.AppendUvarint(append(enc, a.holder[:]...), 0)
		}
		b, err := decodeReserveAnswer(enc)
		if err != nil || b.status != a.status || b.counter != a.counter || b.holder != a.holder {
			t.Fatalf("answer %+v re-encoded as %x decodes as %+v, %v", a, enc, b, err)
		}
	})
}

// FuzzReserveStream: a member sends any request over ReserveProtocol; the
// honest node answers with an answer that decodes, refused exactly when
// the request does not decode.
func FuzzReserveStream(f *testing.F) {
	p := newFuzzPair(f, nil)
	for _, s := range [][]byte{
		encodeReserveRequest(reserveOpReserve, "04A1B2C3D4E5F6", 350),
		encodeReserveRequest(reserveOpRelease, "04A1B2C3D4E5F6", 0),
		encodeReserveRequest(reserveOpReserve, "04A1B2C3", crdt.MaxAmount+1),
		bytes.Repeat([]byte{1}, maxReserveMsg+1), {},
	} {
		f.Add(s)
	}
	exchange := func(tb testing.TB, req []byte) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := p.rogue.host.NewStream(network.WithNoDial(ctx, "fuzz"), p.honest.ID(), ReserveProtocol)
		if err != nil {
			tb.Fatalf("open a reservation stream: %v", err)
		}
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := s.Write(req); err != nil {
			tb.Fatalf("write: %v", err)
		}
		_ = s.CloseWrite()
		return io.ReadAll(io.LimitReader(s, 4*maxReserveMsg))
	}
	if ans, err := exchange(f, encodeReserveRequest(reserveOpReserve, "04A1B2C3D4E5F6", 350)); err != nil || len(ans) == 0 || ans[0] != reserveGranted {
		f.Fatalf("a genuine reservation is answered %x, %v", ans, err)
	}
	f.Fuzz(func(t *testing.T, req []byte) {
		ans, err := exchange(t, req)
		if len(req) > maxReserveMsg && len(ans) == 0 {
			return // over the limit: the node may reset before reading it all
		}
		if err != nil {
			t.Fatalf("read the answer to %x: %v", req, err)
		}
		a, err := decodeReserveAnswer(ans)
		if err != nil {
			t.Fatalf("the honest node's answer %x to %x does not decode: %v", ans, req, err)
		}
		op, _, _, derr := decodeReserveRequest(req)
		switch {
		case derr != nil && a.status != reserveRefused:
			t.Fatalf("malformed request %x answered %d", req, a.status)
		case derr == nil && op == reserveOpRelease && a.status != reserveReleased:
			t.Fatalf("release %x answered %d", req, a.status)
		case derr == nil && op == reserveOpReserve && a.status != reserveGranted && a.status != reserveBusy && a.status != reserveRefused:
			t.Fatalf("reservation %x answered %d", req, a.status)
		}
	})
}

// FuzzJoinFrames feeds a member's join reader (receiveFedOps, as in
// askAdmission and FetchCheckpoint) with frames from a peer: the replica
// stores only genuine federation ops, in order, and nothing else.
func FuzzJoinFrames(f *testing.F) {
	var venues []*crdt.Signer
	for i := range 4 {
		venues = append(venues, seedSigner(f, byte(0x50+i)))
	}
	fed := fuzzFederation(f, venues...)
	other := topUps(f, venues[0], 2)
	run := func(ops ...crdt.Op) []byte { return appendOps([]byte{joinOps}, ops) }
	for _, s := range [][]byte{
		frames(run(fed[2:]...), uv(joinEnd, uint64(len(fed)))),
		frames(run(fed[2]), run(fed[3:]...), uv(joinEnd, uint64(len(fed)))),
		frames(run(fed[3:]...), uv(joinEnd, 9)),
		frames(run(other...), uv(joinEnd, 1)),
		frames(uv(joinEnd, 2)),
		frames(uv(joinVerdict, 1)),
		{0x80, 0x80, 0x80, 0x80, 0x01},
	} {
		f.Add(s)
	}
	fedKey := fed[0].Author
	read := func(tb testing.TB, stream []byte) (*MemReplica, int, error) {
		rep, err := NewMemReplica(fed[:2], nil, nil)
		if err != nil {
			tb.Fatal(err)
		}
		cfg := DefaultConfig()
		n := &Network{fed: fedKey, rep: rep, cfg: cfg}
		jc := &joinConn{rw: io.Discard, r: bufio.NewReader(bytes.NewReader(stream)), max: cfg.MaxMessageSize}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		total, _, err := n.receiveFedOps(ctx, jc)
		return rep, total, err
	}
	if rep, _, err := read(f, frames(appendOps([]byte{joinOps}, fed[2:]), uv(joinEnd, uint64(len(fed))))); err != nil || rep.VersionVector()[fedKey] != uint64(len(fed)) {
		f.Fatalf("a genuine proof is not taken: %v", err)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		rep, total, err := read(t, stream)
		if total > MaxJoinOps+MaxSyncBatchOps {
			t.Fatalf("%d ops read from a peer", total)
		}
		_ = err // any refusal is fine; what got stored is what matters
		vv := rep.VersionVector()
		for k, seq := range vv {
			if k != fedKey && seq != 0 {
				t.Fatalf("a join stored %d ops of a venue", seq)
			}
		}
		if vv[fedKey] > uint64(len(fed)) {
			t.Fatalf("federation seq %d, genuine chain %d", vv[fedKey], len(fed))
		}
		i := 0
		err = rep.ReadRange(fedKey, 1, vv[fedKey], func(op crdt.Op) error {
			if op.ID() != fed[i].ID() {
				t.Fatalf("federation op #%d is not the genuine one", op.Seq)
			}
			i++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzCheckpointFetch: a member answers FetchCheckpoint with any frames.
// The honest node stores nothing (it holds the whole federation chain),
// and returns a checkpoint only of the announced size, at most the
// maximum, with attestations that verify.
func FuzzCheckpointFetch(f *testing.F) {
	p := newFuzzPair(f, nil)
	var answer atomic.Pointer[[]byte]
	p.rogue.host.SetStreamHandler(CheckpointProtocol, func(s network.Stream) {
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		jc := &joinConn{rw: s, r: bufio.NewReader(s), max: 1 << 20}
		if _, _, err := jc.read(); err != nil {
			_ = s.Reset()
			return
		}
		_, _ = s.Write(*answer.Load())
		_ = s.CloseWrite()
		_, _ = io.Copy(io.Discard, io.LimitReader(s, 1<<20))
	})
	const maxCP = 64 << 10
	cp := p.checkpoint
	header := uv(cpHeader, uint64(len(cp)))
	header = binary.AppendUvarint(header, uint64(len(p.checkpointAtts)))
	for _, a := range p.checkpointAtts {
		header = append(header, a.Encode()...)
	}
	end := uv(joinEnd, uint64(len(p.fed)))
	half := len(cp) / 2
	for _, s := range [][]byte{
		frames(end, header, append([]byte{cpChunk}, cp...)),
		frames(end, header, append([]byte{cpChunk}, cp[:half]...), append([]byte{cpChunk}, cp[half:]...)),
		frames(end, []byte{cpNone}),
		frames(appendOps([]byte{joinOps}, p.fed[1:]), end, []byte{cpNone}),
		frames(end, uv(cpHeader, maxCP+1)),
		frames(end, header),
		frames([]byte{cpHeader}),
	} {
		f.Add(s)
	}
	genuine := frames(end, header, append([]byte{cpChunk}, cp...))
	answer.Store(&genuine)
	if got, err := p.honest.FetchCheckpoint(context.Background(), p.rogue.ID(), maxCP); err != nil || !bytes.Equal(got.Bytes, cp) || len(got.Attestations) != 2 {
		f.Fatalf("a genuine answer is not taken: %v", err)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		answer.Store(&stream)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		got, err := p.honest.FetchCheckpoint(ctx, p.rogue.ID(), maxCP)
		p.unchanged(t)
		if ctx.Err() != nil {
			t.Fatalf("FetchCheckpoint took the whole deadline: %v", err)
		}
		if err != nil {
			return
		}
		if len(got.Bytes) == 0 || len(got.Bytes) > maxCP {
			t.Fatalf("checkpoint of %d bytes returned", len(got.Bytes))
		}
		for _, a := range got.Attestations {
			if _, err := crdt.DecodeAttestation(a.Encode()); err != nil {
				t.Fatalf("an attestation that does not verify was returned: %v", err)
			}
		}
		if bytes.Equal(got.Bytes, cp) {
			return
		}
		// A checkpoint the rogue made up is returned (FetchCheckpoint does
		// not verify), but verification refuses it.
		members := map[crdt.PublicKey]bool{p.honestSigner.Public(): true, p.rogueSigner.Public(): true}
		if _, err := crdt.VerifyCheckpoint(got.Bytes, got.Attestations, members, 1); err == nil {
			t.Fatal("a checkpoint that is not the attested one verifies")
		}
	})
}

// FuzzCheckpointAsk: a member sends any ask over CheckpointProtocol; the
// honest node answers nothing, or well-formed frames whose checkpoint is
// the attested one.
func FuzzCheckpointAsk(f *testing.F) {
	p := newFuzzPair(f, nil)
	p.honest.ServeCheckpoints(p)
	fedKey := p.fed[0].Author
	ask := func(v, seq uint64) []byte {
		b := uv(cpAsk, v)
		b = append(b, fedKey[:]...)
		return binary.AppendUvarint(b, seq)
	}
	for _, s := range [][]byte{
		frames(ask(checkpointVersion, uint64(len(p.fed)))),
		frames(ask(checkpointVersion, 1)),
		frames(ask(checkpointVersion, 0)),
		frames(ask(2, 1)),
		frames(uv(cpAsk, 1)),
		{0},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := p.rogue.host.NewStream(network.WithNoDial(ctx, "fuzz"), p.honest.ID(), CheckpointProtocol)
		if err != nil {
			t.Fatalf("open a checkpoint stream: %v", err)
		}
		defer s.Reset()
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = s.Write(stream)
		_ = s.CloseWrite()
		jc := &joinConn{rw: io.Discard, r: bufio.NewReader(io.LimitReader(s, 4<<20)), max: 1 << 20}
		var size uint64
		var body []byte
		var hash [32]byte
		for {
			typ, pl, err := jc.read()
			if err != nil {
				break // the end of the answer, or a reset
			}
			switch typ {
			case joinOps, joinEnd, cpNone:
			case cpHeader:
				v, k := binary.Uvarint(pl)
				if k <= 0 {
					t.Fatalf("header %x", pl)
				}
				size = v
				rest := pl[k:]
				n, k := binary.Uvarint(rest)
				if k <= 0 || uint64(len(rest)-k) != n*crdt.AttestationSize || n == 0 {
					t.Fatalf("header's attestations %x", rest)
				}
				a, err := crdt.DecodeAttestation(rest[k : k+crdt.AttestationSize])
				if err != nil {
					t.Fatalf("served attestation: %v", err)
				}
				hash = a.Hash
			case cpChunk:
				body = append(body, pl...)
			default:
				t.Fatalf("frame type %d in the answer", typ)
			}
		}
		if uint64(len(body)) == size && size > 0 && sha256.Sum256(body) != hash {
			t.Fatal("the checkpoint served is not the one attested")
		}
		p.unchanged(t)
	})
}

// FuzzHeartbeatQuorum: heartbeats relayed over the heartbeat topic are
// what the quorum check counts for members it is not connected to. Any
// bytes go through the topic's validator; only a member's genuinely
// signed heartbeat is accepted, and then recorded (onHeartbeat) and
// counted by the quorum check without harm.
func FuzzHeartbeatQuorum(f *testing.F) {
	at := fuzzEpoch.Add(time.Minute)
	p := newFuzzPair(f, func() time.Time { return at })
	outsider := seedSigner(f, 0x77)
	hb := p.rogue.makeHeartbeat()
	hb.Time = at
	good := EncodeHeartbeat(hb, p.rogueSigner)
	f.Add(good)
	f.Add(EncodeHeartbeat(hb, outsider))
	old := *hb
	old.Time = at.Add(-time.Hour)
	f.Add(EncodeHeartbeat(&old, p.rogueSigner))
	f.Add(good[:len(good)-1])
	from := p.rogue.ID()
	if res := p.honest.validateHeartbeat(context.Background(), from, &pubsub.Message{Message: &pubsubpb.Message{Data: good}}); res != pubsub.ValidationAccept {
		f.Fatalf("a member's heartbeat is not accepted: %v", res)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msg := &pubsub.Message{Message: &pubsubpb.Message{Data: data, From: []byte(from)}, ReceivedFrom: from}
		res := p.honest.validateHeartbeat(context.Background(), from, msg)
		if res != pubsub.ValidationAccept {
			return
		}
		got, ok := msg.ValidatorData.(*Heartbeat)
		if !ok {
			t.Fatal("accepted heartbeat without its decoded form")
		}
		if _, err := DecodeHeartbeat(data); err != nil || !p.honestRep.IsMember(got.Peer) {
			t.Fatalf("accepted a heartbeat that is not a member's: %v", err)
		}
		pid, err := PeerID(got.Peer)
		if err != nil {
			t.Fatal(err)
		}
		p.honest.onHeartbeat(pid, got)
		res2, _ := p.honest.countQuorum(QuorumQuery{Need: 1, Fresh: DefaultQuorumFresh, RelayedFresh: time.Hour}, DefaultQuorumFresh)
		if res2.Reached > 1 {
			t.Fatalf("one other venue counted as %d", res2.Reached)
		}
	})
}
