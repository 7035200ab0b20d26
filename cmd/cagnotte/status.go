package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/cagnotte/cagnotte/node"
	"github.com/spf13/cobra"
)

func newStatusCmd(g *globals) *cobra.Command {
	var api string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a node's sync status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !strings.Contains(api, "://") {
				api = "http://" + api
			}
			req, err := http.NewRequestWithContext(cmd.Context(), "GET", strings.TrimRight(api, "/")+"/api/v1/sync/status", nil)
			if err != nil {
				return err
			}
			c := &http.Client{Timeout: 10 * time.Second}
			resp, err := c.Do(req)
			if err != nil {
				return fmt.Errorf("no node answers at %s (is `cagnotte node` running with this --http address?): %w", api, err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			if err != nil {
				return err
			}
			if resp.StatusCode != 200 {
				return fmt.Errorf("%s: %s", resp.Status, body)
			}
			if asJSON {
				_, err := g.stdout.Write(body)
				return err
			}
			var s node.SyncStatus
			if err := json.Unmarshal(body, &s); err != nil {
				return err
			}
			state := "in sync"
			if s.Isolated {
				state = "ISOLATED"
			}
			if s.Revoked {
				state = fmt.Sprintf("REVOKED by the federation after its op %d: writes refused", s.RevokedAfter)
			}
			fmt.Fprintf(g.stdout, "venue %s (%s) of %q: %s\n", s.Venue, s.Node, s.Federation, state)
			fmt.Fprintf(g.stdout, "ops %d, digest %s, conflicts %d, pending %d\n", s.Ops, s.Digest, s.Conflicts, s.Pending)
			for _, p := range s.Peers {
				fmt.Fprintf(g.stdout, "  peer %-20s %s connected=%v last seen %s\n", p.Venue, p.ID, p.Connected, p.LastSeen.Format(time.RFC3339))
			}
			for _, a := range s.Authors {
				rev := ""
				if a.Revoked {
					rev = fmt.Sprintf(" (revoked after op %d)", a.RevokedAfter)
				}
				fmt.Fprintf(g.stdout, "  %-10s %-20s %s ops up to %d%s\n", a.Role, a.Venue, a.PeerID, a.Seq, rev)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&api, "api", "127.0.0.1:8080", "the node's API address")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the raw JSON")
	return cmd
}
