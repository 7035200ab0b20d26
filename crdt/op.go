package crdt

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// Encoding bounds. An op is at most MaxOpSize bytes on the wire.
const (
	// EncodingVersion is the first byte of every encoded op.
	EncodingVersion = 1
	// MaxBodySize bounds an op body.
	MaxBodySize = 2048
	// headerSize is version, author, seq, prev, hlc, kind and body length.
	headerSize = 1 + 32 + 8 + 32 + 8 + 1 + 2
	// MaxOpSize bounds a whole encoded op.
	MaxOpSize = headerSize + MaxBodySize + ed25519.SignatureSize
	// MinOpSize is the size of an op with an empty body.
	MinOpSize = headerSize + ed25519.SignatureSize
)

// sigDomain separates op signatures from any other use of a node key.
const sigDomain = "cagnotte/op/v1\x00"

// Op is one signed, immutable change to the replicated state.
type Op struct {
	Author PublicKey
	Seq    uint64
	Prev   OpID
	HLC    HLC
	Kind   Kind
	Body   []byte // canonical encoding of the typed body
	Sig    [ed25519.SignatureSize]byte
}

// unsigned appends the canonical encoding of everything but the signature.
func (op *Op) unsigned(dst []byte) []byte {
	dst = append(dst, EncodingVersion)
	dst = append(dst, op.Author[:]...)
	dst = binary.BigEndian.AppendUint64(dst, op.Seq)
	dst = append(dst, op.Prev[:]...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(op.HLC))
	dst = append(dst, byte(op.Kind))
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(op.Body)))
	return append(dst, op.Body...)
}

// AppendEncode appends the canonical encoding of op to dst.
func (op *Op) AppendEncode(dst []byte) []byte {
	return append(op.unsigned(dst), op.Sig[:]...)
}

// Encode returns the canonical encoding of op.
func (op *Op) Encode() []byte {
	return op.AppendEncode(make([]byte, 0, MinOpSize+len(op.Body)))
}

// Size is the length of the canonical encoding.
func (op *Op) Size() int { return MinOpSize + len(op.Body) }

// ID is the SHA-256 of the canonical encoding.
func (op *Op) ID() OpID {
	var buf [MaxOpSize]byte
	return sha256.Sum256(op.AppendEncode(buf[:0]))
}

// DecodeOp parses one canonical op. It checks the structure and the body of
// the op's kind, not the signature nor the author: see [OpSet.Add].
func DecodeOp(b []byte) (Op, error) {
	var op Op
	if len(b) < MinOpSize {
		return op, fmt.Errorf("%w: %d bytes", ErrTruncated, len(b))
	}
	if len(b) > MaxOpSize {
		return op, fmt.Errorf("%w: %d bytes, max %d", ErrTooLarge, len(b), MaxOpSize)
	}
	if b[0] != EncodingVersion {
		return op, fmt.Errorf("%w: %d", ErrBadVersion, b[0])
	}
	p := b[1:]
	copy(op.Author[:], p[:32])
	op.Seq = binary.BigEndian.Uint64(p[32:40])
	copy(op.Prev[:], p[40:72])
	op.HLC = HLC(binary.BigEndian.Uint64(p[72:80]))
	op.Kind = Kind(p[80])
	n := int(binary.BigEndian.Uint16(p[81:83]))
	if n > MaxBodySize {
		return op, fmt.Errorf("%w: body of %d bytes", ErrTooLarge, n)
	}
	if len(b) != MinOpSize+n {
		if len(b) < MinOpSize+n {
			return op, ErrTruncated
		}
		return op, fmt.Errorf("%w: %d trailing bytes", ErrNonCanonical, len(b)-MinOpSize-n)
	}
	op.Body = append([]byte(nil), p[83:83+n]...)
	copy(op.Sig[:], p[83+n:])
	if err := op.check(); err != nil {
		return op, err
	}
	return op, nil
}

// check validates what can be checked without keys: seq, prev of a first op
// and the body.
func (op *Op) check() error {
	if op.Seq == 0 {
		return ErrBadSeq
	}
	if op.Seq == 1 && !op.Prev.IsZero() {
		return fmt.Errorf("%w: first op has a prev", ErrBrokenChain)
	}
	if op.Seq > 1 && op.Prev.IsZero() {
		return fmt.Errorf("%w: missing prev", ErrBrokenChain)
	}
	if len(op.Body) > MaxBodySize {
		return ErrTooLarge
	}
	_, err := DecodeBody(op.Kind, op.Body)
	return err
}

// Decode returns the typed body of op.
func (op *Op) Decode() (Body, error) { return DecodeBody(op.Kind, op.Body) }

// Verify checks the signature against the op's author.
func (op *Op) Verify() error {
	var buf [MaxOpSize]byte
	msg := append(buf[:0], sigDomain...)
	msg = op.unsigned(msg)
	if !ed25519.Verify(op.Author[:], msg, op.Sig[:]) {
		return ErrBadSignature
	}
	return nil
}

// Sign sets the op's author to s and signs it.
func (s *Signer) Sign(op *Op) {
	op.Author = s.pub
	var buf [MaxOpSize]byte
	msg := append(buf[:0], sigDomain...)
	msg = op.unsigned(msg)
	copy(op.Sig[:], s.sign(msg))
}

// Author makes an author's ops: it tracks its seq, prev and clock. It is
// not safe for concurrent use.
type Author struct {
	Signer *Signer
	Clock  *Clock
	seq    uint64
	prev   OpID
}

// NewAuthor returns an author that continues its chain after (seq, head);
// pass 0 and the zero id for a new author.
func NewAuthor(s *Signer, c *Clock, seq uint64, head OpID) *Author {
	return &Author{Signer: s, Clock: c, seq: seq, prev: head}
}

// Seq returns the seq of the last op made.
func (a *Author) Seq() uint64 { return a.seq }

// Make encodes, stamps and signs the next op of the author. The caller must
// add it to its op set and persist it before making another.
func (a *Author) Make(b Body) Op {
	op := Op{Seq: a.seq + 1, Prev: a.prev, HLC: a.Clock.Now(), Kind: b.Kind(), Body: EncodeBody(b)}
	a.Signer.Sign(&op)
	a.seq = op.Seq
	a.prev = op.ID()
	return op
}

// Undo forgets the last op made (when it could not be added or persisted),
// so the next op reuses its seq instead of leaving a gap.
func (a *Author) Undo(seq uint64, prev OpID) { a.seq, a.prev = seq, prev }
