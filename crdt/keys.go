package crdt

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// PublicKey is an Ed25519 public key: a venue node's identity (the same raw
// key libp2p uses for an Ed25519 peer identity) or the federation key.
type PublicKey [ed25519.PublicKeySize]byte

// String returns the key in lower-case hex.
func (k PublicKey) String() string { return hex.EncodeToString(k[:]) }

// Short returns the first 8 hex digits, for logs.
func (k PublicKey) Short() string { return hex.EncodeToString(k[:4]) }

// IsZero reports whether k is the zero key.
func (k PublicKey) IsZero() bool { return k == PublicKey{} }

// MarshalText encodes the key as hex.
func (k PublicKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText decodes a hex key.
func (k *PublicKey) UnmarshalText(b []byte) error {
	p, err := ParsePublicKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// ParsePublicKey parses a hex-encoded Ed25519 public key.
func ParsePublicKey(s string) (PublicKey, error) {
	var k PublicKey
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != len(k) {
		return k, fmt.Errorf("%w: public key must be %d hex bytes", ErrInvalidBody, len(k))
	}
	copy(k[:], b)
	return k, nil
}

// OpID identifies an op: the SHA-256 of its canonical encoding.
type OpID [sha256.Size]byte

// String returns the id in lower-case hex.
func (id OpID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is the zero id (the Prev of an author's first op).
func (id OpID) IsZero() bool { return id == OpID{} }

// MarshalText encodes the id as hex.
func (id OpID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText decodes a hex id.
func (id *OpID) UnmarshalText(b []byte) error {
	v, err := ParseOpID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// ParseOpID parses a hex op id.
func ParseOpID(s string) (OpID, error) {
	var id OpID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("%w: op id must be %d hex bytes", ErrInvalidBody, len(id))
	}
	copy(id[:], b)
	return id, nil
}

func lessID(a, b OpID) bool { return string(a[:]) < string(b[:]) }

// Signer signs ops for one author. It holds the private key; callers keep it
// away from logs.
type Signer struct {
	priv ed25519.PrivateKey
	pub  PublicKey
}

// NewSigner wraps an Ed25519 private key.
func NewSigner(priv ed25519.PrivateKey) (*Signer, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("crdt: private key has %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	s := &Signer{priv: priv}
	copy(s.pub[:], priv.Public().(ed25519.PublicKey))
	return s, nil
}

// SignerFromSeed builds a signer from a 32-byte seed (tests, simulations and
// keys stored as seeds).
func SignerFromSeed(seed []byte) (*Signer, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("crdt: seed has %d bytes, want %d", len(seed), ed25519.SeedSize)
	}
	return NewSigner(ed25519.NewKeyFromSeed(seed))
}

// Public returns the signer's public key.
func (s *Signer) Public() PublicKey { return s.pub }

// PrivateKey returns the Ed25519 private key, for the p2p identity.
func (s *Signer) PrivateKey() ed25519.PrivateKey { return s.priv }

func (s *Signer) sign(msg []byte) []byte { return ed25519.Sign(s.priv, msg) }
