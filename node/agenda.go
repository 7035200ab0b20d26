package node

import (
	"context"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
)

// The agenda is read a page at a time from the store's start-time index
// (node/store events.go): a read starts at a time (the events running at
// it, then those starting after it) and stops after the events it needs,
// so it costs the same however many events the season published before.
const (
	// agendaMaxScan bounds the events one read goes through (a filter
	// that matches few of them stops there, with a cursor to go on).
	agendaMaxScan = 20000
	// apiEventsLimit is how many events GET /api/v1/events lists by
	// default; ?limit= asks for up to agendaMaxShown.
	apiEventsLimit = 500
	// feedPast is how far back the iCalendar feeds go: the events running
	// at now - feedPast or starting after it.
	feedPast = 90 * 24 * time.Hour
	// staffEventsPast is how far back the staff's events page goes.
	staffEventsPast = 30 * 24 * time.Hour
)

// ErrBadCursor is returned for an agenda cursor that is not one.
var ErrBadCursor = errors.New("node: bad agenda cursor")

// AgendaCursor returns the cursor that continues an agenda listing after
// e: its start time, venue and id.
func AgendaCursor(e EventView) string {
	return strconv.FormatInt(e.StartsAt.UnixMilli(), 10) + "~" + e.VenueID + "~" + e.ID
}

// parseAgendaCursor reads a cursor made by AgendaCursor.
func parseAgendaCursor(s string) (*crdt.AgendaPos, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.SplitN(s, "~", 3)
	if len(parts) != 3 || len(parts[2]) == 0 || len(parts[2]) > crdt.MaxEventID {
		return nil, ErrBadCursor
	}
	ms, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil {
		return nil, ErrBadCursor
	}
	venue, err := crdt.ParsePublicKey(parts[1])
	if err != nil {
		return nil, ErrBadCursor
	}
	return &crdt.AgendaPos{StartsAt: ms, Key: crdt.EventKey{Venue: venue, ID: parts[2]}}, nil
}

// EachEvent calls fn with the agenda's events running at from or starting
// after it (every event when from is zero), by start time, venue and id,
// after the cursor after ("" for none, else an AgendaCursor), until fn
// returns false or it went through agendaMaxScan events. complete reports
// that it went through every such event.
func (n *Node) EachEvent(ctx context.Context, from time.Time, after string, fn func(EventView) bool) (complete bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	pos, err := parseAgendaCursor(after)
	if err != nil {
		return false, err
	}
	start := int64(math.MinInt64)
	if !from.IsZero() {
		start = from.UnixMilli()
	}
	n.View(func(set *crdt.OpSet) {
		scanned := 0
		complete = true
		set.State.AgendaFrom(start, pos, func(e crdt.Event) bool {
			if scanned++; scanned > agendaMaxScan || scanned%256 == 0 && ctx.Err() != nil {
				complete = false
				return false
			}
			if !fn(eventView(set, &e)) {
				complete = false
				return false
			}
			return true
		})
	})
	if err := ctx.Err(); err != nil {
		return false, err
	}
	return complete, nil
}

// Event returns the event of a venue (hex key) with id; with venue empty,
// the event with id of the first venue (by key) that has one.
func (n *Node) Event(ctx context.Context, venue, id string) (EventView, bool, error) {
	if err := ctx.Err(); err != nil {
		return EventView{}, false, err
	}
	if id == "" || len(id) > crdt.MaxEventID {
		return EventView{}, false, nil
	}
	var keys []crdt.PublicKey
	if venue != "" {
		k, err := crdt.ParsePublicKey(venue)
		if err != nil {
			return EventView{}, false, nil
		}
		keys = append(keys, k)
	}
	var out EventView
	found := false
	n.View(func(set *crdt.OpSet) {
		if venue == "" {
			for k := range set.State.Venues {
				keys = append(keys, k)
			}
			slices.SortFunc(keys, func(a, b crdt.PublicKey) int { return strings.Compare(string(a[:]), string(b[:])) })
		}
		for _, k := range keys {
			if e, ok := set.State.Event(crdt.EventKey{Venue: k, ID: id}); ok {
				out, found = eventView(set, &e), true
				return
			}
		}
	})
	return out, found, nil
}
