package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cagnotte/cagnotte/node"
	"github.com/spf13/cobra"
)

func newStatusCmd(g *globals) *cobra.Command {
	var api string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a node's sync status: every venue, its state, ops and lag, and the conflicts (the dashboard's table)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !strings.Contains(api, "://") {
				api = "http://" + api
			}
			base := strings.TrimRight(api, "/")
			c := &http.Client{Timeout: 10 * time.Second}
			var raw json.RawMessage
			if err := fetchJSON(cmd.Context(), c, base+"/api/v1/sync/status", &raw); err != nil {
				return err
			}
			var s node.SyncStatus
			if err := json.Unmarshal(raw, &s); err != nil {
				return err
			}
			var conflicts []node.ConflictView
			if err := fetchJSON(cmd.Context(), c, base+"/api/v1/conflicts", &conflicts); err != nil {
				return err
			}
			venues := node.DashboardVenues(s)
			if asJSON {
				// The status object as the node sent it, plus two keys.
				var m map[string]json.RawMessage
				if err := json.Unmarshal(raw, &m); err != nil {
					return err
				}
				v, _ := json.Marshal(venues)
				cl, _ := json.Marshal(conflicts)
				m["venues"], m["conflict_list"] = v, cl
				b, err := json.MarshalIndent(m, "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(g.stdout, "%s\n", b)
				return err
			}
			printStatus(g.stdout, s, venues, conflicts)
			return nil
		},
	}
	cmd.Flags().StringVar(&api, "api", "127.0.0.1:8080", "the node's API address")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON: the sync status with the venues' rows (venues) and the conflicts (conflict_list)")
	return cmd
}

// fetchJSON reads a node's JSON answer into v.
func fetchJSON(ctx context.Context, c *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("no node answers at %s (is `cagnotte node` running with this --http address?): %w", strings.TrimSuffix(url, req.URL.Path), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", resp.Status, body)
	}
	return json.Unmarshal(body, v)
}

// printStatus prints the dashboard as text: a summary line, a table of
// the venues, the conflicts, and the authors of the version vector.
func printStatus(w io.Writer, s node.SyncStatus, venues []node.DashboardVenue, conflicts []node.ConflictView) {
	state := "in sync"
	if s.Isolated {
		state = "ISOLATED"
		if !s.IsolatedSince.IsZero() {
			state += " since " + s.IsolatedSince.Format(time.RFC3339)
		}
		if s.IsolationWhy != "" {
			state += " (" + s.IsolationWhy + ")"
		}
	}
	if s.Revoked {
		state = fmt.Sprintf("REVOKED by the federation after its op %d: writes refused", s.RevokedAfter)
	}
	fmt.Fprintf(w, "venue %s (%s) of %q: %s\n", s.Venue, s.Node, s.Federation, state)
	fmt.Fprintf(w, "ops %d, digest %s, conflicts %d, pending %d\n\n", s.Ops, s.Digest, s.Conflicts, s.Pending)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VENUE\tSTATE\tLAST HEARD\tOPS\tLAG\tISOLATED SINCE\tOFFLINE\tPEER")
	dash := func(v *uint64) string {
		if v == nil {
			return "-"
		}
		return fmt.Sprint(*v)
	}
	for _, v := range venues {
		name := v.Venue
		if v.Self {
			name += " (this node)"
		}
		st := strings.ReplaceAll(v.State, "_", " ")
		if v.Revoked {
			st += fmt.Sprintf(", revoked after op %d", v.RevokedAfter)
		}
		seen, since, off := "-", "-", "-"
		if !v.LastSeen.IsZero() {
			seen = v.LastSeen.Format(time.RFC3339)
		}
		if !v.IsolatedSince.IsZero() {
			since = v.IsolatedSince.Format(time.RFC3339)
		}
		if v.OfflineCents != nil {
			off = fmt.Sprintf("%d.%02d", *v.OfflineCents/100, *v.OfflineCents%100)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, st, seen, dash(v.Ops), dash(v.Lag), since, off, v.PeerID)
	}
	tw.Flush()
	if len(conflicts) > 0 {
		fmt.Fprintf(w, "\nconflicts:\n")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "KIND\tCARD\tCOUNTER\tVENUE\tSEQ\tREFERENCE\tDETECTED\tOPS")
		for _, c := range conflicts {
			ops := make([]string, len(c.Ops))
			for i, o := range c.Ops {
				ops[i] = o.String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%s\t%s\n", c.Kind, c.Card, c.Counter, c.Venue, c.Seq, c.Reference, c.DetectedAt.Format(time.RFC3339), strings.Join(ops, " "))
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "\nauthors:\n")
	for _, a := range s.Authors {
		rev := ""
		if a.Revoked {
			rev = fmt.Sprintf(" (revoked after op %d)", a.RevokedAfter)
		}
		fmt.Fprintf(w, "  %-10s %-20s %s ops up to %d%s\n", a.Role, a.Venue, a.PeerID, a.Seq, rev)
	}
}
