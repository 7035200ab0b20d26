package node

import (
	"cmp"
	"slices"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/p2p"
)

// AuthorStatus is one author of the op set as the sync status shows it:
// who it is (key, peer id, venue name) and how far its chain goes, so that
// an operator can match the version vector's keys with venues and peers.
type AuthorStatus struct {
	// Key is the author's public key in hex, as in version_vector.
	Key string `json:"key"`
	// PeerID is the libp2p peer id of that key (what `cagnotte node init`
	// prints and `federation admit --peer` takes).
	PeerID string `json:"peer_id"`
	// Venue is the venue's name (the federation's name for the federation
	// key); Role is "federation" or "venue".
	Venue string `json:"venue"`
	Role  string `json:"role"`
	// Seq is the highest contiguous seq held of the author (as in
	// version_vector, 0 if none) and Head the id of that op.
	Seq  uint64     `json:"seq"`
	Head *crdt.OpID `json:"head,omitempty"`
	// Revoked venues count only their ops up to RevokedAfter.
	Revoked      bool   `json:"revoked,omitempty"`
	RevokedAfter uint64 `json:"revoked_after_seq,omitempty"`
}

// Membership is the part of the sync status about the federation's
// members: whether this node's own venue was revoked (it then refuses
// writes, see ErrVenueRevoked), and every author the node knows.
type Membership struct {
	Revoked      bool           `json:"revoked"`
	RevokedAfter uint64         `json:"revoked_after_seq,omitempty"`
	RevokeReason string         `json:"revoke_reason,omitempty"`
	Authors      []AuthorStatus `json:"authors"`
}

// membership builds the membership status from the op set. Caller holds
// at least a read lock.
func (n *Node) membership(set *crdt.OpSet) Membership {
	var m Membership
	me := n.cfg.Key.Public()
	if v := set.State.Venues[me]; v != nil && v.Revoked {
		m.Revoked, m.RevokedAfter, m.RevokeReason = true, v.RevokedAfter, v.RevokeReason
	}
	vv := set.VersionVector()
	fed := set.Federation()
	add := func(k crdt.PublicKey, name, role string) {
		a := AuthorStatus{Key: k.String(), Venue: name, Role: role, Seq: vv[k]}
		if id, err := p2p.PeerID(k); err == nil {
			a.PeerID = id.String()
		}
		if st := set.Authors[k]; st != nil && st.Seq == a.Seq && a.Seq > 0 {
			h := st.Head
			a.Head = &h
		}
		if v := set.State.Venues[k]; v != nil && v.Revoked {
			a.Revoked, a.RevokedAfter = true, v.RevokedAfter
		}
		m.Authors = append(m.Authors, a)
	}
	add(fed, set.State.Name, "federation")
	venues := make([]*crdt.Venue, 0, len(set.State.Venues))
	for _, v := range set.State.Venues {
		venues = append(venues, v)
	}
	slices.SortFunc(venues, func(a, b *crdt.Venue) int {
		return cmp.Or(cmp.Compare(a.DisplayName(), b.DisplayName()), cmp.Compare(a.Key.String(), b.Key.String()))
	})
	for _, v := range venues {
		add(v.Key, v.DisplayName(), "venue")
	}
	return m
}
