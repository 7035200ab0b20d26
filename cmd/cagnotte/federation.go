package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/node"
	"github.com/cagnotte/cagnotte/p2p"
	"github.com/spf13/cobra"
)

func newFederationCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "federation",
		Short: "Maintainers' tools: create a federation, admit and revoke venues",
	}
	var dir string
	cmd.PersistentFlags().StringVar(&dir, "dir", "federation", "the federation's directory (its key and chain of ops)")

	var name, currency string
	s := crdt.DefaultSettings()
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Create a federation: its signing key and its genesis",
		Long: `Create a federation in --dir: a new Ed25519 signing key (federation.key,
keep it offline and backed up) and the genesis op with the federation's
name, currency and offline caps (chain.ops).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkSettings(s); err != nil {
				return err
			}
			f, err := node.InitFederation(dir, crdt.Genesis{Name: name, Currency: currency, Settings: s}, nil)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "federation %q created in %s\nfederation key: %s\n", name, dir, f.Public())
			return nil
		},
	}
	initCmd.Flags().StringVar(&name, "name", "", "the federation's name (required)")
	initCmd.Flags().StringVar(&currency, "currency", "EUR", "ISO 4217 currency code")
	settingsFlags(initCmd, &s)
	_ = initCmd.MarkFlagRequired("name")

	var peerID, venueName, out string
	admitCmd := &cobra.Command{
		Use:   "admit",
		Short: "Admit a venue's node (by its peer id) and write the bundle the venue starts with",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, f, err := openForPeer(dir, peerID)
			if err != nil {
				return err
			}
			if _, err := f.Admit(key, venueName); err != nil {
				return err
			}
			if out == "" {
				out = filepath.Join(dir, "bundle-"+peerID+".ops")
			}
			if err := node.WriteFileAtomic(out, f.Bundle(), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "venue %q admitted (%s)\nbundle for the venue: %s\n", venueName, peerID, out)
			return nil
		},
	}
	admitCmd.Flags().StringVar(&peerID, "peer", "", "the venue node's peer id, as printed by 'cagnotte node init' (required)")
	admitCmd.Flags().StringVar(&venueName, "name", "", "the venue's name (required)")
	admitCmd.Flags().StringVar(&out, "out", "", "where to write the venue's bundle (default <dir>/bundle-<peer>.ops)")
	_ = admitCmd.MarkFlagRequired("peer")
	_ = admitCmd.MarkFlagRequired("name")

	var afterSeq uint64
	var reason, nodeAPI string
	revokeCmd := &cobra.Command{
		Use:   "revoke",
		Short: "Revoke a venue: its ops after --after-seq stop counting and its node is refused",
		Long: `Revoke a venue (a lost or compromised node): its ops after --after-seq stop
counting everywhere, the other venues refuse its node, and its node refuses
writes. The federation directory holds only the federation's chain, not the
venue's ops, so say where the venue's history ends: --after-seq N (its last
op that still counts; 0 voids them all), or --node-api URL to take the last
op a running node holds of the venue (its sync status). Then give chain.ops
to any venue (restart it with --federation chain.ops): the others get the
revocation from it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, f, err := openForPeer(dir, peerID)
			if err != nil {
				return err
			}
			v := f.State().Venues[key]
			if v == nil {
				return fmt.Errorf("%s is not a venue of this federation (see 'cagnotte federation show --dir %s')", peerID, dir)
			}
			if v.Revoked {
				return fmt.Errorf("%q (%s) is already revoked, after its op %d", v.Name, peerID, v.RevokedAfter)
			}
			var head crdt.OpID
			if !cmd.Flags().Changed("after-seq") {
				if nodeAPI == "" {
					return fmt.Errorf("--after-seq or --node-api is required: %s holds only the federation's chain, not %q's ops, so it cannot tell its last good op.\n"+
						"Pass --after-seq N (the venue's last op that still counts, e.g. from 'cagnotte status --api <a running node> --json', \"authors\"), "+
						"or --node-api http://<a running node's API> to take the last op that node holds of the venue", dir, v.Name)
				}
				st, err := fetchStatus(cmd.Context(), nodeAPI)
				if err != nil {
					return fmt.Errorf("ask %s for %q's last op: %w", nodeAPI, v.Name, err)
				}
				a := findAuthor(st, key)
				if a == nil || a.Seq == 0 {
					return fmt.Errorf("the node at %s (%s) holds no op of %q: pass --after-seq 0 if the venue never made an op that should count", nodeAPI, st.Venue, v.Name)
				}
				afterSeq = a.Seq
				if a.Head != nil {
					head = *a.Head
				}
				fmt.Fprintf(g.stdout, "the node at %s (%s) holds %q's ops up to %d\n", nodeAPI, st.Venue, v.Name, afterSeq)
			}
			if _, err := f.RevokeAt(key, afterSeq, head, reason); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "venue %q (%s) revoked after its op %d\nthe chain is %s: give it to any running venue (restart it with --federation %s) and the others get the revocation from it\n",
				v.Name, peerID, afterSeq, filepath.Join(dir, node.FederationChainFile), filepath.Join(dir, node.FederationChainFile))
			return nil
		},
	}
	revokeCmd.Flags().StringVar(&peerID, "peer", "", "the venue's peer id (required)")
	revokeCmd.Flags().Uint64Var(&afterSeq, "after-seq", 0, "the venue's last op that still counts (0: none); without it, --node-api is required")
	revokeCmd.Flags().StringVar(&nodeAPI, "node-api", "", "a running node's API (e.g. http://127.0.0.1:8080): revoke after the last op it holds of the venue")
	revokeCmd.Flags().StringVar(&reason, "reason", "", "why")
	_ = revokeCmd.MarkFlagRequired("peer")

	var showJSON bool
	showCmd := &cobra.Command{
		Use:   "show",
		Short: "Show the federation: name, settings, venues",
		Long: `Show the federation in --dir: its name, key and settings, and a table of its
venues (name, peer id, when admitted, revoked or not). --json prints the
same as JSON.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := node.OpenFederation(dir, nil)
			if err != nil {
				return err
			}
			return showFederation(g.stdout, f, showJSON)
		},
	}
	showCmd.Flags().BoolVar(&showJSON, "json", false, "print JSON")
	cmd.AddCommand(initCmd, admitCmd, revokeCmd, showCmd)
	return cmd
}

func settingsFlags(cmd *cobra.Command, s *crdt.Settings) {
	f := cmd.Flags()
	f.Uint64Var(&s.OfflinePaymentMax, "offline-payment-max", s.OfflinePaymentMax, "largest single payment an isolated venue accepts, in cents")
	f.Uint64Var(&s.OfflineCardMax, "offline-card-max", s.OfflineCardMax, "amount one card may spend at one isolated venue, in cents")
	f.Uint64Var(&s.OfflineCardCount, "offline-card-count", s.OfflineCardCount, "payments one card may make at one isolated venue")
	f.Uint64Var(&s.OfflineVenueBudget, "offline-venue-budget", s.OfflineVenueBudget, "total an isolated venue may take, in cents")
	f.Uint64Var(&s.OfflineValidity, "offline-validity-ms", s.OfflineValidity, "how long an isolated venue may keep selling, in ms")
	f.Uint64Var(&s.DailyCardMax, "daily-card-max", s.DailyCardMax, "what one card may spend per day online, in cents (0: no cap)")
	f.BoolVar(&s.AutoBlock, "auto-block", s.AutoBlock, "block a card automatically when a double spend is detected")
	f.Uint64Var(&s.MinPeersPercent, "min-peers-percent", s.MinPeersPercent, "share of the other venues a node must hear to be in sync (at least 50)")
	f.Uint64Var(&s.HeartbeatInterval, "heartbeat-ms", s.HeartbeatInterval, "how often nodes announce their state, in ms")
	f.Uint64Var(&s.IsolationAfter, "isolation-after-ms", s.IsolationAfter, "silence after which a node is isolated, in ms")
	f.Uint64Var(&s.MaxClockSkew, "max-clock-skew-ms", s.MaxClockSkew, "how far ahead of a node's clock an op may be stamped before it is held, in ms")
	f.Uint64Var(&s.BalanceMax, "balance-max", s.BalanceMax, "the highest balance a card may reach, in cents (0: no ceiling)")
}

// checkSettings refuses settings that would void the offline bound.
func checkSettings(s crdt.Settings) error {
	if s.MinPeersPercent < 50 {
		return fmt.Errorf("--min-peers-percent %d: below 50, both sides of a network split could believe they are in sync and the offline caps would no longer bound losses", s.MinPeersPercent)
	}
	return nil
}

// openForPeer parses a venue's peer id and opens the federation directory.
func openForPeer(dir, peerID string) (crdt.PublicKey, *node.Federation, error) {
	key, err := p2p.ParsePeerKey(peerID)
	if err != nil {
		return key, nil, err
	}
	f, err := node.OpenFederation(dir, nil)
	return key, f, err
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// federationJSON is what `federation show --json` prints.
type federationJSON struct {
	Name     string                 `json:"name"`
	Currency string                 `json:"currency"`
	Key      crdt.PublicKey         `json:"key"`
	Ops      int                    `json:"ops"`
	Settings crdt.Settings          `json:"settings"`
	Venues   []node.FederationVenue `json:"venues"`
}

// showFederation prints the federation and a table of its venues, or JSON.
func showFederation(w io.Writer, f *node.Federation, asJSON bool) error {
	st := f.State()
	venues := f.Venues(func(k crdt.PublicKey) string {
		id, err := p2p.PeerID(k)
		if err != nil {
			return ""
		}
		return id.String()
	})
	if asJSON {
		if venues == nil {
			venues = []node.FederationVenue{}
		}
		b, err := json.MarshalIndent(federationJSON{Name: st.Name, Currency: st.Currency, Key: f.Public(), Ops: len(f.Ops()), Settings: st.Settings, Venues: venues}, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	fmt.Fprintf(w, "federation %q (%s), key %s, %d ops\n", st.Name, st.Currency, f.Public(), len(f.Ops()))
	fmt.Fprintf(w, "settings: %+v\n", st.Settings)
	if len(venues) == 0 {
		fmt.Fprintf(w, "no venue admitted yet ('cagnotte federation admit')\n")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VENUE\tPEER ID\tADMITTED\tSTATE")
	for _, v := range venues {
		state := "member"
		if v.Revoked {
			state = fmt.Sprintf("revoked after op %d", v.RevokedAfter)
			if v.RevokeReason != "" {
				state += " (" + v.RevokeReason + ")"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s (op %d)\t%s\n", v.Name, v.PeerID, v.AdmittedAt.Format("2006-01-02 15:04 MST"), v.AdmittedSeq, state)
	}
	return tw.Flush()
}

// fetchStatus asks a running node for its sync status.
func fetchStatus(ctx context.Context, api string) (*node.SyncStatus, error) {
	if !strings.Contains(api, "://") {
		api = "http://" + api
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(api, "/")+"/api/v1/sync/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var st node.SyncStatus
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("sync status: %w", err)
	}
	return &st, nil
}

// findAuthor returns the author of key in a sync status, or nil.
func findAuthor(st *node.SyncStatus, key crdt.PublicKey) *node.AuthorStatus {
	for i := range st.Authors {
		if st.Authors[i].Key == key.String() {
			return &st.Authors[i]
		}
	}
	return nil
}
