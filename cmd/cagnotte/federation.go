package main

import (
	"fmt"
	"os"
	"path/filepath"

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
	var reason string
	revokeCmd := &cobra.Command{
		Use:   "revoke",
		Short: "Revoke a venue: its ops after --after-seq stop counting and its node is refused",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, f, err := openForPeer(dir, peerID)
			if err != nil {
				return err
			}
			if _, err := f.Revoke(key, afterSeq, reason); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "venue %s revoked after its op %d; give %s to any node to spread it\n", peerID, afterSeq, filepath.Join(dir, node.FederationChainFile))
			return nil
		},
	}
	revokeCmd.Flags().StringVar(&peerID, "peer", "", "the venue's peer id (required)")
	revokeCmd.Flags().Uint64Var(&afterSeq, "after-seq", 0, "the venue's last op that still counts (see its version vector in sync status)")
	revokeCmd.Flags().StringVar(&reason, "reason", "", "why")
	_ = revokeCmd.MarkFlagRequired("peer")

	showCmd := &cobra.Command{
		Use:   "show",
		Short: "Show the federation: name, settings, venues",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := node.OpenFederation(dir, nil)
			if err != nil {
				return err
			}
			st := f.State()
			fmt.Fprintf(g.stdout, "federation %q (%s), key %s, %d ops\n", st.Name, st.Currency, f.Public(), len(f.Ops()))
			fmt.Fprintf(g.stdout, "settings: %+v\n", st.Settings)
			for k, v := range st.Venues {
				id, _ := p2p.PeerID(k)
				state := "member"
				if v.Revoked {
					state = fmt.Sprintf("revoked after op %d", v.RevokedAfter)
				}
				fmt.Fprintf(g.stdout, "  %-24s %s  %s\n", v.Name, id, state)
			}
			return nil
		},
	}
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
