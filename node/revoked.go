package node

import (
	"fmt"
	"net/http"

	"github.com/cagnotte/cagnotte/crdt"
)

// A revoked node. When the federation revokes a venue, its node keeps
// running (reads, status) but knows it: its sync status says revoked with
// the cut-off seq, it refuses every write with ErrVenueRevoked, and it logs
// so at start and when the revocation reaches it. Its ops after the
// cut-off would not count anywhere, and the other venues refuse its
// connections.

// ErrVenueRevoked is the error of a write on a node whose venue the
// federation revoked (403, code venue_revoked).
var ErrVenueRevoked = apiErr(http.StatusForbidden, "venue_revoked", "this venue was revoked by the federation: its node refuses writes")

// revokedErr returns ErrVenueRevoked, with the cut-off, if this node's
// venue is revoked, else nil.
func (n *Node) revokedErr() error {
	n.mu.RLock()
	v := n.set.State.Venues[n.cfg.Key.Public()]
	n.mu.RUnlock()
	if v == nil || !v.Revoked {
		return nil
	}
	msg := fmt.Sprintf("this venue was revoked by the federation after its op %d", v.RevokedAfter)
	if v.RevokeReason != "" {
		msg += " (" + v.RevokeReason + ")"
	}
	return apiErr(ErrVenueRevoked.Status, ErrVenueRevoked.Code, msg+": its node refuses writes; ask the federation's maintainers")
}

// refuseRevoked answers a write with ErrVenueRevoked if this node's venue
// is revoked, and reports whether it did.
func (n *Node) refuseRevoked(w http.ResponseWriter) bool {
	err := n.revokedErr()
	if err != nil {
		writeError(w, err)
	}
	return err != nil
}

// watchRevocation logs if the node starts revoked, and registers a commit
// hook that logs when the revocation of this node's venue arrives.
func (n *Node) watchRevocation() {
	me := n.cfg.Key.Public()
	if v := n.set.State.Venues[me]; v != nil && v.Revoked {
		n.log.Error("this venue is revoked by the federation: the node refuses writes and other venues refuse its connections",
			"after_seq", v.RevokedAfter, "reason", v.RevokeReason)
	}
	n.OnCommit(func(ops []crdt.Op) {
		for i := range ops {
			if ops[i].Author != n.fed || ops[i].Kind != crdt.KindRevoke {
				continue
			}
			b, err := ops[i].Decode()
			if r, ok := b.(*crdt.Revoke); err == nil && ok && r.Venue == me {
				n.log.Error("the federation revoked this venue: the node refuses writes from now on",
					"after_seq", r.AfterSeq, "reason", r.Reason)
			}
		}
	})
}
