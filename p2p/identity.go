package p2p

import (
	"crypto/ed25519"
	"fmt"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// PeerID returns the libp2p peer id of a node key. Node keys are Ed25519,
// so the id inlines the public key and the two convert both ways.
func PeerID(k crdt.PublicKey) (peer.ID, error) {
	pub, err := crypto.UnmarshalEd25519PublicKey(k[:])
	if err != nil {
		return "", fmt.Errorf("p2p: node key: %w", err)
	}
	return peer.IDFromPublicKey(pub)
}

// KeyOf returns the node key inlined in a peer id. Only Ed25519 peer ids
// are venue nodes; anything else is refused.
func KeyOf(id peer.ID) (crdt.PublicKey, error) {
	var k crdt.PublicKey
	pub, err := id.ExtractPublicKey()
	if err != nil {
		return k, fmt.Errorf("p2p: peer id %s: %w", id, err)
	}
	if pub.Type() != crypto.Ed25519 {
		return k, fmt.Errorf("p2p: peer id %s is not an Ed25519 key", id)
	}
	raw, err := pub.Raw()
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return k, fmt.Errorf("p2p: peer id %s: bad key", id)
	}
	copy(k[:], raw)
	return k, nil
}

// ParsePeerKey parses a peer id string and returns its node key.
func ParsePeerKey(s string) (crdt.PublicKey, error) {
	id, err := peer.Decode(s)
	if err != nil {
		return crdt.PublicKey{}, fmt.Errorf("p2p: %q is not a peer id: %w", s, err)
	}
	return KeyOf(id)
}

// PrivKey converts a node signer into its libp2p identity key.
func PrivKey(s *crdt.Signer) (crypto.PrivKey, error) {
	return crypto.UnmarshalEd25519PrivateKey(s.PrivateKey())
}
