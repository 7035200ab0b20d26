package main

import (
	"fmt"
	"path/filepath"

	"github.com/cagnotte/cagnotte/node"
	"github.com/cagnotte/cagnotte/p2p"
	"github.com/spf13/cobra"
)

func newNodeCmd(g *globals) *cobra.Command {
	var dataDir, bundle, httpAddr string
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run this venue's node",
		Long: `Run this venue's node from its data directory (made by 'cagnotte node init').
The first time, give the federation bundle the maintainers wrote when they
admitted the venue (--federation); it is copied into the data directory.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if bundle != "" {
				ops, err := node.ReadBundle(bundle)
				if err != nil {
					return err
				}
				if err := node.WriteFileAtomic(filepath.Join(dataDir, node.FederationFile), node.EncodeBundle(ops), 0o644); err != nil {
					return err
				}
			}
			n, err := node.New(node.Config{DataDir: dataDir, HTTPAddr: httpAddr, Logger: g.logger()})
			if err != nil {
				return err
			}
			return n.Run(cmd.Context())
		},
	}
	cmd.PersistentFlags().StringVar(&dataDir, "data", "cagnotte-data", "the node's data directory")
	cmd.Flags().StringVar(&bundle, "federation", "", "federation bundle from the maintainers (copied into the data directory)")
	cmd.Flags().StringVar(&httpAddr, "http", "127.0.0.1:8080", "HTTP API listen address")

	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Create this venue's node: its key and a staff token; prints its peer id",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, created, err := node.LoadOrCreateKey(filepath.Join(dataDir, node.KeyFile))
			if err != nil {
				return err
			}
			tok, err := node.EnsureToken(filepath.Join(dataDir, node.TokensFile))
			if err != nil {
				return err
			}
			id, err := p2p.PeerID(key.Public())
			if err != nil {
				return err
			}
			if created {
				fmt.Fprintf(g.stdout, "node created in %s\n", dataDir)
			} else {
				fmt.Fprintf(g.stdout, "node already exists in %s\n", dataDir)
			}
			fmt.Fprintf(g.stdout, "peer id: %s\nstaff token: %s (in %s)\n", id, tok, filepath.Join(dataDir, node.TokensFile))
			fmt.Fprintf(g.stdout, "send the peer id to the federation's maintainers to be admitted\n")
			return nil
		},
	}
	cmd.AddCommand(initCmd)
	return cmd
}
