package node

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
)

// handleICS serves the federated agenda as an RFC 5545 iCalendar feed.
func (n *Node) handleICS(w http.ResponseWriter, r *http.Request) { n.serveICS(w, r, nil) }

// serveICS serves the agenda as an iCalendar feed: the events running
// feedPast ago or starting after, at most agendaMaxShown of them (and of
// venue's only when venue is non-nil), read from the start-time index.
func (n *Node) serveICS(w http.ResponseWriter, r *http.Request, venue *crdt.PublicKey) {
	var b strings.Builder
	line := func(s string) { b.WriteString(foldICS(s)) }
	line("BEGIN:VCALENDAR")
	line("VERSION:2.0")
	line("PRODID:-//Cagnotte//Federated agenda//EN")
	line("CALSCALE:GREGORIAN")
	n.View(func(set *crdt.OpSet) {
		line("X-WR-CALNAME:" + escapeICS(set.State.Name))
		shown, scanned := 0, 0
		set.State.AgendaFrom(n.cfg.Now().Add(-feedPast).UnixMilli(), nil, func(e crdt.Event) bool {
			if scanned++; scanned > agendaMaxScan {
				return false
			}
			if venue != nil && e.Key.Venue != *venue {
				return true
			}
			shown++
			line("BEGIN:VEVENT")
			line("UID:" + escapeICS(e.Key.ID) + "@" + e.Key.Venue.String())
			line("DTSTAMP:" + icsTime(e.Updated.Millis()))
			line("DTSTART:" + icsTime(e.StartsAt))
			line("DTEND:" + icsTime(e.EndsAt))
			line("SUMMARY:" + escapeICS(e.Title))
			if e.Description != "" {
				line("DESCRIPTION:" + escapeICS(e.Description))
			}
			loc := venueName(set, e.Key.Venue)
			if e.Location != "" {
				loc = e.Location + ", " + loc
			}
			line("LOCATION:" + escapeICS(loc))
			if e.Cancelled {
				line("STATUS:CANCELLED")
			} else {
				line("STATUS:CONFIRMED")
			}
			line("END:VEVENT")
			return shown < agendaMaxShown
		})
	})
	line("END:VCALENDAR")
	w.Header().Set("Content-Type", "text/calendar; charset=utf-8")
	fmt.Fprint(w, b.String())
}

func icsTime(ms int64) string { return time.UnixMilli(ms).UTC().Format("20060102T150405Z") }

var icsEscaper = strings.NewReplacer(`\`, `\\`, ";", `\;`, ",", `\,`, "\r\n", `\n`, "\n", `\n`, "\r", `\n`)

func escapeICS(s string) string { return icsEscaper.Replace(s) }

// foldICS ends a content line with CRLF, folding it at 75 octets without
// splitting a UTF-8 sequence.
func foldICS(s string) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		l := len(string(r))
		if n+l > 75 {
			b.WriteString("\r\n ")
			n = 1
		}
		b.WriteRune(r)
		n += l
	}
	b.WriteString("\r\n")
	return b.String()
}
