package node

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// getEvents lists GET path and returns the events' titles and the next
// page's path from the Link header ("" when none).
func getEvents(t *testing.T, v *testVenue, path string) (int, []string, string) {
	t.Helper()
	st, h, out := v.doRaw("GET", path, "", "", nil)
	if st != http.StatusOK {
		return st, nil, ""
	}
	var evs []EventView
	if err := json.Unmarshal([]byte(out["raw"].(string)), &evs); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var titles []string
	for _, e := range evs {
		titles = append(titles, e.Title)
	}
	next := ""
	if m := regexp.MustCompile(`^<([^>]+)>; rel="next"$`).FindStringSubmatch(h.Get("Link")); m != nil {
		next = m[1]
	}
	return st, titles, next
}

// TestEventsAPIPagesWithCursor: GET /api/v1/events lists the agenda by
// start time a page at a time, from a time, following its Link header to
// the end, and refuses a bad cursor or limit; the same agenda is served
// after a restart (read from the store, not from memory).
func TestEventsAPIPagesWithCursor(t *testing.T) {
	v := newTestVenue(t)
	start := time.Date(2031, 3, 1, 20, 0, 0, 0, time.UTC)
	var all []string
	for i := range 7 {
		at := start.Add(time.Duration(i) * 24 * time.Hour)
		title := fmt.Sprintf("Soirée %d", i)
		all = append(all, title)
		if st, r := v.post("/api/v1/events", map[string]any{"title": title, "starts_at": at, "ends_at": at.Add(3 * time.Hour), "idempotency_key": title}); st != 200 {
			t.Fatalf("event: %d %v", st, r)
		}
	}
	follow := func(path string) []string {
		var got []string
		for pages := 0; path != ""; pages++ {
			if pages > 10 {
				t.Fatalf("more than 10 pages")
			}
			st, titles, next := getEvents(t, v, path)
			if st != http.StatusOK {
				t.Fatalf("%s: %d", path, st)
			}
			if len(titles) > 3 {
				t.Fatalf("%s: %d events on a page of 3", path, len(titles))
			}
			got = append(got, titles...)
			path = next
		}
		return got
	}
	for _, phase := range []string{"running", "after a restart"} {
		if phase == "after a restart" {
			v.restart()
		}
		for _, tc := range []struct {
			name, path string
			want       []string
		}{
			{"every event", "/api/v1/events?limit=3", all},
			{"from the fourth day", "/api/v1/events?limit=3&from=" + start.Add(3*24*time.Hour).Format(time.RFC3339), all[3:]},
			{"one still running then", "/api/v1/events?limit=3&from=" + start.Add(4*24*time.Hour+time.Hour).Format(time.RFC3339), all[4:]},
			{"after the last", "/api/v1/events?limit=3&from=2032-01-01T00:00:00Z", nil},
		} {
			if got := follow(tc.path); strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("%s, %s: %q, want %q", phase, tc.name, got, tc.want)
			}
		}
	}
	for _, bad := range []string{"?after=nope", "?after=12~zz~a", "?limit=0", "?limit=x", "?from=yesterday", "?after=" + strings.Repeat("a", 300)} {
		if st, _, _ := getEvents(t, v, "/api/v1/events"+bad); st != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, st)
		}
	}
}
