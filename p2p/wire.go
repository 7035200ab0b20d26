package p2p

import (
	"bufio"
	"cmp"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	ma "github.com/multiformats/go-multiaddr"
)

// Wire formats. Every length and count is an unsigned varint and bounded
// before anything is allocated; see doc.go for the layouts.

// OpsMessageVersion is the first byte of a gossip ops message.
const OpsMessageVersion = 1

// ErrMalformed is returned for a message or frame that does not decode.
var ErrMalformed = errors.New("p2p: malformed message")

// uvarint is binary.Uvarint refusing encodings longer than needed
// (k <= 0), so that every decoded frame has one encoding.
func uvarint(p []byte) (uint64, int) {
	v, k := binary.Uvarint(p)
	if k > 0 && k != uvarintLen(v) {
		return 0, -1
	}
	return v, k
}

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
}

// appendOps appends count and length-prefixed canonical ops.
func appendOps(dst []byte, ops []crdt.Op) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(ops)))
	for i := range ops {
		dst = binary.AppendUvarint(dst, uint64(ops[i].Size()))
		dst = ops[i].AppendEncode(dst)
	}
	return dst
}

// decodeOps reads a count and that many length-prefixed ops from p and
// returns them with the rest of p.
func decodeOps(p []byte, maxOps int) ([]crdt.Op, []byte, error) {
	n, k := uvarint(p)
	if k <= 0 {
		return nil, nil, malformed("op count")
	}
	p = p[k:]
	if n == 0 || n > uint64(maxOps) {
		return nil, nil, malformed("%d ops, want 1 to %d", n, maxOps)
	}
	// Each op takes at least MinOpSize bytes: a count the bytes cannot
	// hold is refused before allocating.
	if n > uint64(len(p)/crdt.MinOpSize) {
		return nil, nil, malformed("%d ops in %d bytes", n, len(p))
	}
	ops := make([]crdt.Op, 0, n)
	for range n {
		l, k := uvarint(p)
		if k <= 0 || l < crdt.MinOpSize || l > crdt.MaxOpSize || l > uint64(len(p)-k) {
			return nil, nil, malformed("op length")
		}
		op, err := crdt.DecodeOp(p[k : k+int(l)])
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		ops = append(ops, op)
		p = p[k+int(l):]
	}
	return ops, p, nil
}

// EncodeOpsMessage encodes a gossip ops message: a version byte, the op
// count and each canonical op prefixed by its length.
func EncodeOpsMessage(ops []crdt.Op) []byte {
	size := 1 + binary.MaxVarintLen64
	for i := range ops {
		size += 3 + ops[i].Size()
	}
	return appendOps(append(make([]byte, 0, size), OpsMessageVersion), ops)
}

// DecodeOpsMessage decodes a gossip ops message of at most maxOps ops. It
// checks each op's structure, not its signature nor its author.
func DecodeOpsMessage(p []byte, maxOps int) ([]crdt.Op, error) {
	if len(p) == 0 || p[0] != OpsMessageVersion {
		return nil, malformed("ops message version")
	}
	ops, rest, err := decodeOps(p[1:], maxOps)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, malformed("%d trailing bytes", len(rest))
	}
	return ops, nil
}

// appendVV appends a version vector in key order: count, then each key
// and its seq.
func appendVV(dst []byte, vv crdt.VersionVector) []byte {
	keys := sortedKeys(vv)
	dst = binary.AppendUvarint(dst, uint64(len(keys)))
	for _, k := range keys {
		dst = append(dst, k[:]...)
		dst = binary.AppendUvarint(dst, vv[k])
	}
	return dst
}

// decodeVV reads a version vector of at most max entries.
func decodeVV(p []byte, max int) (crdt.VersionVector, []byte, error) {
	n, k := uvarint(p)
	if k <= 0 || n > uint64(max) || n > uint64(len(p)-k)/33 {
		return nil, nil, malformed("version vector of %d entries (max %d)", n, max)
	}
	p = p[k:]
	vv := make(crdt.VersionVector, n)
	var prev crdt.PublicKey
	for range n {
		if len(p) < 33 {
			return nil, nil, malformed("version vector entry")
		}
		var key crdt.PublicKey
		copy(key[:], p[:32])
		seq, k := uvarint(p[32:])
		if k <= 0 || seq == 0 {
			return nil, nil, malformed("version vector seq")
		}
		if _, dup := vv[key]; dup {
			return nil, nil, malformed("author twice in a version vector")
		}
		if len(vv) > 0 && cmpKey(key, prev) < 0 {
			return nil, nil, malformed("version vector out of key order") // appendVV sorts: one encoding
		}
		prev = key
		vv[key] = seq
		p = p[32+k:]
	}
	return vv, p, nil
}

func sortedKeys(vv crdt.VersionVector) []crdt.PublicKey {
	keys := make([]crdt.PublicKey, 0, len(vv))
	for k := range vv {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b crdt.PublicKey) int { return cmp.Compare(string(a[:]), string(b[:])) })
	return keys
}

// VVDigest is the SHA-256 of a version vector's entries in key order (key,
// then seq as 8 big-endian bytes). Heartbeats carry it.
func VVDigest(vv crdt.VersionVector) [32]byte {
	h := sha256.New()
	var buf [8]byte
	for _, k := range sortedKeys(vv) {
		h.Write(k[:])
		binary.BigEndian.PutUint64(buf[:], vv[k])
		h.Write(buf[:])
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// missingRanges lists, per author, the seqs mine holds and theirs lacks:
// the federation first (its admissions before the ops they admit), then
// the other authors in key order. It is crdt.OpSet.Missing over two
// version vectors.
func missingRanges(fed crdt.PublicKey, mine, theirs crdt.VersionVector) []crdt.Range {
	var out []crdt.Range
	if seq := mine[fed]; theirs[fed] < seq {
		out = append(out, crdt.Range{Author: fed, From: theirs[fed] + 1, To: seq})
	}
	for _, k := range sortedKeys(mine) {
		if k != fed && theirs[k] < mine[k] {
			out = append(out, crdt.Range{Author: k, From: theirs[k] + 1, To: mine[k]})
		}
	}
	return out
}

// Sync protocol frames: a varint length, then a type byte and its payload.
const (
	frameHello    byte = 1 // version, digest, op count, version vector (v2: fork digest, fork ids)
	frameOps      byte = 2 // count, length-prefixed ops of one author, contiguous
	frameEnd      byte = 3 // the sender has sent all it had to send
	frameBusy     byte = 4 // the responder cannot take the session now: retry later
	frameSum      byte = 5 // after the ops: heads digest, fork digest, fork ids
	frameForks    byte = 6 // fork list records (see forkRec)
	frameEvidence byte = 7 // count, length-prefixed ops of any authors, in (author, seq) order
)

// syncVersion is the version in a hello frame. Version 2 adds the fork
// digest to the hello and the fork comparison after the ops; a hello of
// version 1 is still understood (the session then skips the comparison).
const syncVersion = 2

type hello struct {
	version uint64
	digest  [32]byte
	ops     uint64
	vv      crdt.VersionVector
	// fork digests every op of authors caught forking, at or past their
	// fork seq (chain and evidence alike); forkIDs counts them. Version 2.
	fork    [32]byte
	forkIDs uint64
}

// appendHello appends a hello frame of h.version (syncVersion if 0): a
// responder answers a version 1 hello in version 1.
func appendHello(dst []byte, h hello) []byte {
	v := h.version
	if v == 0 || v > syncVersion {
		v = syncVersion
	}
	dst = append(dst, frameHello)
	dst = binary.AppendUvarint(dst, v)
	dst = append(dst, h.digest[:]...)
	dst = binary.AppendUvarint(dst, h.ops)
	dst = appendVV(dst, h.vv)
	if v < 2 {
		return dst
	}
	dst = append(dst, h.fork[:]...)
	return binary.AppendUvarint(dst, h.forkIDs)
}

func decodeHello(p []byte, maxVV int) (hello, error) {
	var h hello
	v, k := uvarint(p)
	if k <= 0 || v < 1 || v > syncVersion {
		return h, malformed("sync version")
	}
	h.version = v
	p = p[k:]
	if len(p) < 32 {
		return h, malformed("hello digest")
	}
	copy(h.digest[:], p)
	p = p[32:]
	h.ops, k = uvarint(p)
	if k <= 0 {
		return h, malformed("hello op count")
	}
	vv, rest, err := decodeVV(p[k:], maxVV)
	if err != nil {
		return h, err
	}
	if v >= 2 {
		if len(rest) < 32 {
			return h, malformed("hello fork digest")
		}
		copy(h.fork[:], rest)
		h.forkIDs, k = uvarint(rest[32:])
		if k <= 0 {
			return h, malformed("hello fork ids")
		}
		rest = rest[32+k:]
	}
	if len(rest) != 0 {
		return h, malformed("trailing bytes after hello")
	}
	h.vv = vv
	return h, nil
}

// sum is what each side sends once the ops are exchanged: whether the
// chains and the forks now match, beyond what version vectors show.
type sum struct {
	// heads digests the (key, seq, head id) of every author not known to
	// fork; fork and forkIDs are as in the hello.
	heads   [32]byte
	fork    [32]byte
	forkIDs uint64
}

func appendSum(dst []byte, s sum) []byte {
	dst = append(dst, frameSum)
	dst = append(dst, s.heads[:]...)
	dst = append(dst, s.fork[:]...)
	return binary.AppendUvarint(dst, s.forkIDs)
}

func decodeSum(p []byte) (sum, error) {
	var s sum
	if len(p) < 65 {
		return s, malformed("sum of %d bytes", len(p))
	}
	copy(s.heads[:], p)
	copy(s.fork[:], p[32:])
	n, k := uvarint(p[64:])
	if k <= 0 || len(p) != 64+k {
		return s, malformed("sum fork ids")
	}
	s.forkIDs = n
	return s, nil
}

// Fork list records, exchanged when the sums differ. First each side
// lists, for every author it holds, its chain head and, for an author
// known to fork, its fork seq with the digest of the op ids it holds at
// or past it (chain and evidence). Then, for the authors whose chains or
// forks differ, each side lists its chain's ids at a few seqs (probes:
// seq-1, seq-2, seq-4, …, 1, and around a known fork), from which the
// other side finds the highest seq where the two chains agree, and every
// op id it holds at or past the fork.
const (
	recHead   byte = 0 // seq, id: the author's chain head
	recProbe  byte = 1 // seq, id: the chain's op at seq
	recFork   byte = 2 // seq: the lowest known fork seq; id: digest of the ids held at or past it
	recMember byte = 3 // seq, id: an op held at or past the fork
)

// forkRecSize is the smallest encoded record: key, kind, seq, id.
const forkRecSize = 32 + 1 + 1 + 32

type forkRec struct {
	key  crdt.PublicKey
	kind byte
	seq  uint64
	id   crdt.OpID
}

// appendForkRecs appends a fork list frame holding recs.
func appendForkRecs(dst []byte, recs []forkRec) []byte {
	dst = append(dst, frameForks)
	dst = binary.AppendUvarint(dst, uint64(len(recs)))
	for _, r := range recs {
		dst = append(dst, r.key[:]...)
		dst = append(dst, r.kind)
		dst = binary.AppendUvarint(dst, r.seq)
		dst = append(dst, r.id[:]...)
	}
	return dst
}

// decodeForkRecs decodes a fork list frame of at most max records.
func decodeForkRecs(p []byte, max int) ([]forkRec, error) {
	n, k := uvarint(p)
	if k <= 0 || n == 0 || n > uint64(max) || n > uint64(len(p)-k)/forkRecSize {
		return nil, malformed("fork list of %d records", n)
	}
	p = p[k:]
	recs := make([]forkRec, n)
	for i := range recs {
		r := &recs[i]
		if len(p) < forkRecSize {
			return nil, malformed("fork record")
		}
		copy(r.key[:], p[:32])
		r.kind = p[32]
		if r.kind > recMember {
			return nil, malformed("fork record kind %d", r.kind)
		}
		seq, k := uvarint(p[33:])
		if k <= 0 || seq == 0 || len(p) < 33+k+32 {
			return nil, malformed("fork record seq")
		}
		r.seq = seq
		copy(r.id[:], p[33+k:])
		p = p[33+k+32:]
	}
	if len(p) != 0 {
		return nil, malformed("trailing bytes after fork list")
	}
	return recs, nil
}

// decodeEvidence decodes an evidence frame: ops of any authors.
func decodeEvidence(p []byte) ([]crdt.Op, error) {
	ops, rest, err := decodeOps(p, MaxSyncBatchOps)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, malformed("trailing bytes after evidence")
	}
	return ops, nil
}

// decodeRun decodes an ops frame: a contiguous run of one author's ops.
func decodeRun(p []byte) ([]crdt.Op, error) {
	ops, rest, err := decodeOps(p, MaxSyncBatchOps)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, malformed("trailing bytes after ops")
	}
	for i := 1; i < len(ops); i++ {
		if ops[i].Author != ops[0].Author || ops[i].Seq != ops[0].Seq+uint64(i) {
			return nil, malformed("ops frame is not one author's contiguous run")
		}
	}
	return ops, nil
}

// errTooSlow marks a session cut because the peer read our frames, or
// sent its own, slower than the minimum rate, or was silent for the
// stream timeout.
var errTooSlow = errors.New("p2p: sync peer too slow")

// frameConn reads and writes length-prefixed frames on a stream with a
// deadline on each read and write: at most timeout, and, with a minimum
// rate, no later than the session's time blocked on the stream may reach
// grace plus its bytes at that rate. A peer that reads or writes slower
// than minRate is thus cut after about grace, whatever the size of the
// frames and of the stream's buffers.
type frameConn struct {
	rw interface {
		io.ReadWriter
		SetReadDeadline(time.Time) error
		SetWriteDeadline(time.Time) error
	}
	r       *bufio.Reader
	max     int
	timeout time.Duration
	minRate float64 // bytes per second; 0: no minimum
	grace   time.Duration
	blocked time.Duration
	buf     []byte
	// read and written count payload bytes, for statistics.
	read, written uint64
}

// deadline is the deadline of the next read or write of extra bytes.
func (c *frameConn) deadline(now time.Time, extra uint64) time.Time {
	d := now.Add(c.timeout)
	if c.minRate <= 0 {
		return d
	}
	allow := c.grace - c.blocked + time.Duration(float64(c.read+c.written+extra)/c.minRate*float64(time.Second))
	if r := now.Add(allow); r.Before(d) {
		return r
	}
	return d
}

// slow wraps err in errTooSlow when the deadline passed.
func slow(err error, dl time.Time) error {
	if err != nil && !time.Now().Before(dl) {
		return fmt.Errorf("%w: %w", errTooSlow, err)
	}
	return err
}

func (c *frameConn) writeFrame(payload []byte) error {
	if len(payload) > c.max {
		return fmt.Errorf("p2p: frame of %d bytes over %d", len(payload), c.max)
	}
	out := binary.AppendUvarint(c.buf[:0], uint64(len(payload)))
	out = append(out, payload...)
	c.buf = out[:0]
	now := time.Now()
	dl := c.deadline(now, uint64(len(out)))
	_ = c.rw.SetWriteDeadline(dl)
	_, err := c.rw.Write(out)
	c.blocked += time.Since(now)
	c.written += uint64(len(out))
	return slow(err, dl)
}

// readFrame returns the type and payload of the next frame. The payload is
// valid until the next read.
// readUntilEnd reads the next frame of a list of frames of type want that
// an end frame closes: it returns the payload, or end at the end frame; any
// other frame is malformed.
func (c *frameConn) readUntilEnd(want byte, what string) (payload []byte, end bool, err error) {
	t, p, err := c.readFrame()
	switch {
	case err != nil:
		return nil, false, err
	case t == frameEnd:
		return nil, true, nil
	case t != want:
		return nil, false, malformed("frame %d where %s was expected", t, what)
	}
	return p, false, nil
}

func (c *frameConn) readFrame() (byte, []byte, error) {
	now := time.Now()
	defer func() { c.blocked += time.Since(now) }()
	dl := c.deadline(now, 0)
	_ = c.rw.SetReadDeadline(dl)
	n, err := binary.ReadUvarint(c.r)
	if err != nil {
		return 0, nil, slow(err, dl)
	}
	if n == 0 || n > uint64(c.max) {
		return 0, nil, malformed("frame of %d bytes (max %d)", n, c.max)
	}
	if c.minRate > 0 {
		dl = c.deadline(time.Now(), n)
		_ = c.rw.SetReadDeadline(dl)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(c.r, p); err != nil {
		return 0, nil, slow(err, dl)
	}
	c.read += n + uint64(uvarintLen(n))
	return p[0], p[1:], nil
}

func uvarintLen(n uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], n)
}

// Heartbeat is a node's signed announcement of its sync state, gossiped
// every HeartbeatInterval.
type Heartbeat struct {
	// Peer is the node key that signed it.
	Peer crdt.PublicKey
	// Time is the sender's clock when it was made (millisecond precision).
	Time time.Time
	// Digest and Ops are the sender's state digest and op count.
	Digest [32]byte
	Ops    uint64
	// VVDigest is VVDigest of the sender's version vector; Authors is the
	// number of authors in it.
	VVDigest [32]byte
	Authors  int
	// Peers is the number of peers the sender is connected to.
	Peers int
	// Isolated is the sender's own view: true when it considers itself cut
	// off from the network (set by the node through SetIsolated).
	Isolated bool
	// Addrs are addresses the sender listens on, so that peers that hear
	// of it through others can connect to it directly (at most
	// MaxHeartbeatAddrs).
	Addrs []ma.Multiaddr
}

const (
	heartbeatVersion = 1
	heartbeatDomain  = "cagnotte/heartbeat/v1\x00"
	maxHeartbeatSize = 1 + 32 + 8 + 32 + 10 + 32 + 10 + 10 + 1 + 10 +
		MaxHeartbeatAddrs*(2+maxAddrLen) + ed25519.SignatureSize
)

// EncodeHeartbeat encodes hb and signs it with the node key.
func EncodeHeartbeat(hb *Heartbeat, key *crdt.Signer) []byte {
	p := []byte{heartbeatVersion}
	pub := key.Public()
	p = append(p, pub[:]...)
	p = binary.BigEndian.AppendUint64(p, uint64(hb.Time.UnixMilli()))
	p = append(p, hb.Digest[:]...)
	p = binary.AppendUvarint(p, hb.Ops)
	p = append(p, hb.VVDigest[:]...)
	p = binary.AppendUvarint(p, uint64(hb.Authors))
	p = binary.AppendUvarint(p, uint64(hb.Peers))
	var flags byte
	if hb.Isolated {
		flags |= 1
	}
	p = append(p, flags)
	var addrs [][]byte
	for _, a := range hb.Addrs {
		if b := a.Bytes(); len(b) <= maxAddrLen && len(addrs) < MaxHeartbeatAddrs {
			addrs = append(addrs, b)
		}
	}
	p = binary.AppendUvarint(p, uint64(len(addrs)))
	for _, b := range addrs {
		p = binary.AppendUvarint(p, uint64(len(b)))
		p = append(p, b...)
	}
	sig := ed25519.Sign(key.PrivateKey(), append([]byte(heartbeatDomain), p...))
	return append(p, sig...)
}

// DecodeHeartbeat decodes a heartbeat and verifies its signature.
func DecodeHeartbeat(p []byte) (*Heartbeat, error) {
	if len(p) > maxHeartbeatSize || len(p) < 1+32+8+32+1+32+1+1+1+1+ed25519.SignatureSize {
		return nil, malformed("heartbeat of %d bytes", len(p))
	}
	if p[0] != heartbeatVersion {
		return nil, malformed("heartbeat version %d", p[0])
	}
	body, sig := p[:len(p)-ed25519.SignatureSize], p[len(p)-ed25519.SignatureSize:]
	hb := &Heartbeat{}
	copy(hb.Peer[:], body[1:33])
	if !ed25519.Verify(hb.Peer[:], append([]byte(heartbeatDomain), body...), sig) {
		return nil, fmt.Errorf("p2p: heartbeat: %w", crdt.ErrBadSignature)
	}
	q := body[33:]
	hb.Time = time.UnixMilli(int64(binary.BigEndian.Uint64(q[:8])))
	q = q[8:]
	copy(hb.Digest[:], q[:32])
	q = q[32:]
	var k int
	next := func() uint64 {
		if k < 0 {
			return 0
		}
		v, n := binary.Uvarint(q)
		if n <= 0 {
			k = -1
			return 0
		}
		q = q[n:]
		return v
	}
	hb.Ops = next()
	if k < 0 || len(q) < 32 {
		return nil, malformed("heartbeat")
	}
	copy(hb.VVDigest[:], q[:32])
	q = q[32:]
	authors, peers := next(), next()
	if k < 0 || len(q) < 1 || authors > 1<<20 || peers > 1<<20 {
		return nil, malformed("heartbeat")
	}
	hb.Authors, hb.Peers = int(authors), int(peers)
	hb.Isolated = q[0]&1 != 0
	q = q[1:]
	n := next()
	if k < 0 || n > MaxHeartbeatAddrs {
		return nil, malformed("heartbeat addresses")
	}
	for range n {
		l := next()
		if k < 0 || l > maxAddrLen || l > uint64(len(q)) {
			return nil, malformed("heartbeat address")
		}
		a, err := ma.NewMultiaddrBytes(q[:l])
		if err != nil {
			return nil, malformed("heartbeat address: %v", err)
		}
		hb.Addrs = append(hb.Addrs, a)
		q = q[l:]
	}
	if len(q) != 0 {
		return nil, malformed("trailing bytes after heartbeat")
	}
	return hb, nil
}
