package node

import (
	"net/http"
	"strings"

	"github.com/cagnotte/cagnotte/crdt"
)

// ErrNotYourEvent refuses a change to an event another venue published.
var ErrNotYourEvent = apiErr(http.StatusForbidden, "not_your_event", "this event belongs to another venue; a venue edits only its own events")

// checkReason requires a reason (docs/api.md: refunds, block, unblock) of
// at most crdt.MaxTextLen bytes.
func checkReason(reason, what string) error {
	if strings.TrimSpace(reason) == "" {
		return badRequest("reason is required: say why %s is made (it is kept in the signed op)", what)
	}
	if len(reason) > crdt.MaxTextLen {
		return badRequest("reason longer than %d bytes", crdt.MaxTextLen)
	}
	return nil
}

// validEventID reports whether id is a usable event id: 1 to 64 ASCII
// letters, digits, '-', '_', '.', ':' or '@', starting with a letter or a
// digit (it appears in URLs and in iCalendar UIDs).
func validEventID(id string) bool {
	if id == "" || len(id) > crdt.MaxEventID {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && strings.IndexByte("-_.:@", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// checkEventRequest checks an event request before it reaches the writer:
// the id's form, the venue it names, the lengths of its texts.
func (n *Node) checkEventRequest(req *eventRequest) error {
	if req.ID != "" && !validEventID(req.ID) {
		return badRequest("id %q: an event id is 1 to %d ASCII letters, digits, '-', '_', '.', ':' or '@', starting with a letter or digit", req.ID, crdt.MaxEventID)
	}
	if req.VenueID != "" {
		k, err := crdt.ParsePublicKey(req.VenueID)
		if err != nil {
			return badRequest("venue_id must be a venue's key in hex (as GET /api/v1/events shows it)")
		}
		if k != n.cfg.Key.Public() {
			return apiErr(ErrNotYourEvent.Status, ErrNotYourEvent.Code,
				"venue_id names another venue: a venue edits only its own events (publish your own event instead)")
		}
		if req.ID == "" {
			return badRequest("venue_id is given without the event's id")
		}
	}
	for _, f := range []struct {
		name string
		v    *string
		max  int
	}{{"title", req.Title, crdt.MaxNameLen}, {"location", req.Location, crdt.MaxNameLen}, {"description", req.Description, crdt.MaxTextLen}} {
		if f.v != nil && len(*f.v) > f.max {
			return badRequest("%s longer than %d bytes", f.name, f.max)
		}
	}
	if req.Title != nil && strings.TrimSpace(*req.Title) == "" {
		return badRequest("title may not be empty")
	}
	if len(req.Reason) > crdt.MaxTextLen {
		return badRequest("reason longer than %d bytes", crdt.MaxTextLen)
	}
	return nil
}

// otherVenuesEvent returns ErrNotYourEvent, naming the venue, when another
// venue has an event with this id (and this venue has none).
func otherVenuesEvent(set *crdt.OpSet, me crdt.PublicKey, id string) error {
	for k, v := range set.State.Venues {
		if k == me {
			continue
		}
		if _, ok := set.State.Event(crdt.EventKey{Venue: k, ID: id}); ok {
			return apiErr(ErrNotYourEvent.Status, ErrNotYourEvent.Code,
				"the event "+id+" belongs to "+v.DisplayName()+": a venue edits only its own events (an id is unique per venue; to publish your own event with this id, send title, starts_at and ends_at)")
		}
	}
	return nil
}
