package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/cagnotte/cagnotte/node"
	"github.com/cagnotte/cagnotte/node/store"
	"github.com/cagnotte/cagnotte/p2p"
	"github.com/spf13/cobra"
)

func newNodeCmd(g *globals) *cobra.Command {
	var dataDir, bundle, httpAddr, pprofAddr string
	var aloneInSync, fullHistory bool
	var idemTTL time.Duration
	net := p2p.DefaultConfig()
	var sf stripeFlags
	var rf readerFlags
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run this venue's node",
		Long: `Run this venue's node from its data directory (made by 'cagnotte node init').
The first time, give the federation bundle the maintainers wrote when they
admitted the venue (--federation); it is copied into the data directory.

The node joins the federation's peer-to-peer network: it listens on --listen
(TCP and QUIC on every interface by default, on ports the system picks; give
fixed ports on a node others bootstrap from), connects to the --bootstrap
peers and finds the other venues of the LAN by mDNS. Behind a NAT that does
not map ports, --relay names a circuit relay others reach the node through.
See docs/operations.md, "Networking".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkDataDir(dataDir, bundle != ""); err != nil {
				return err
			}
			// Before node.New: its start is profiled too.
			stopPprof, err := startPprof(cmd.Context(), pprofAddr, g.logger())
			if err != nil {
				return err
			}
			defer stopPprof()
			if bundle != "" {
				ops, err := node.ReadBundle(bundle)
				if err != nil {
					return err
				}
				if err := node.WriteFileAtomic(filepath.Join(dataDir, node.FederationFile), node.EncodeBundle(ops), 0o644); err != nil {
					return err
				}
			}
			sc, err := sf.config()
			if err != nil {
				return err
			}
			readers, simCards, err := rf.readers(g.logger())
			if err != nil {
				return err
			}
			n, err := node.New(node.Config{DataDir: dataDir, HTTPAddr: httpAddr, Logger: g.logger(), P2P: &net, Stripe: sc, Readers: readers, SimCards: simCards, AloneInSync: aloneInSync,
				Checkpoints: node.CheckpointConfig{NoHistory: !fullHistory}, IdempotencyTTL: idemTTL})
			if err != nil {
				for _, r := range readers {
					r.Close()
				}
				return err
			}
			if !g.followGC {
				return n.Run(cmd.Context())
			}
			ctx, stop := context.WithCancel(cmd.Context())
			followed := make(chan struct{})
			go func() {
				defer close(followed)
				followGCTarget(ctx, gcFollowEvery, n.JoiningOrFetchingHistory, debug.SetGCPercent, g.logger())
			}()
			err = n.Run(ctx)
			stop()
			<-followed
			return err
		},
	}
	cmd.PersistentFlags().StringVar(&dataDir, "data", "cagnotte-data", "the node's data directory")
	cmd.Flags().StringVar(&bundle, "federation", "", "federation bundle from the maintainers (copied into the data directory)")
	cmd.Flags().StringVar(&httpAddr, "http", "127.0.0.1:8080", "HTTP API listen address")
	cmd.Flags().StringArrayVar(&net.ListenAddrs, "listen", net.ListenAddrs, "p2p listen multiaddr (repeatable), e.g. /ip4/0.0.0.0/tcp/4001 and /ip4/0.0.0.0/udp/4001/quic-v1")
	cmd.Flags().StringArrayVar(&net.Bootstrap, "bootstrap", nil, "bootstrap peer, a multiaddr ending in /p2p/<peer id> (repeatable)")
	cmd.Flags().BoolVar(&net.MDNS, "mdns", true, "find the federation's nodes on the local network by mDNS")
	cmd.Flags().StringVar(&pprofAddr, "pprof", "", "serve Go's profiles (net/http/pprof) on this loopback address, e.g. 127.0.0.1:6060 (default: off)")
	cmd.Flags().BoolVar(&aloneInSync, "alone-in-sync", false, "count this node in sync when it knows no other venue (only for a federation of a single venue; otherwise such a node is isolated until the others connect)")
	cmd.Flags().DurationVar(&idemTTL, "idempotency-ttl", store.DefaultIdempotencyTTL, "how long the API's answers stay stored under their idempotency keys (a retry within it gets the first answer; negative: forever)")
	cmd.Flags().BoolVar(&fullHistory, "full-history", true, "a new venue that starts from an attested checkpoint fetches, verifies and keeps the older history in the background (docs/checkpoints.md)")
	cmd.Flags().StringArrayVar(&net.Relays, "relay", nil, "static circuit relay for when this node is behind a NAT, a multiaddr ending in /p2p/<peer id> (repeatable)")
	sf.register(cmd)
	rf.register(cmd)

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

// checkDataDir refuses to run a node from a data directory 'node init' did
// not make (the node would otherwise create a key nobody admitted), or
// without a federation bundle.
func checkDataDir(dir string, bundleGiven bool) error {
	initFirst := fmt.Sprintf("run `cagnotte node init --data %s` first", dir)
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("no node data directory %s: %s", dir, initFirst)
	case err != nil:
		return fmt.Errorf("node data directory: %w", err)
	case !st.IsDir():
		return fmt.Errorf("%s is not a directory: %s", dir, initFirst)
	}
	for _, f := range []string{node.KeyFile, node.TokensFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s has no %s: it is not an initialised node: %s", dir, f, initFirst)
		} else if err != nil {
			return fmt.Errorf("node data directory: %w", err)
		}
	}
	if !bundleGiven {
		if _, err := os.Stat(filepath.Join(dir, node.FederationFile)); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s has no federation bundle yet: start the node once with --federation FILE, the bundle the maintainers sent when they admitted this venue", dir)
		}
	}
	return nil
}

// stripeFlags are the node's Stripe gateway flags (docs/stripe.md). The
// secrets come from the environment (STRIPE_SECRET_KEY,
// STRIPE_WEBHOOK_SECRET) or from files only their owner may read, never
// from a flag's value (which ps would show).
type stripeFlags struct {
	keyFile, webhookFile, publicURL, gatewayURL, apiURL string
	min, max                                            int64
	methods                                             []string
	autoRefunds                                         bool
}

func (f *stripeFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.keyFile, "stripe-key-file", "", "file (mode 0600) holding the Stripe secret key; or set STRIPE_SECRET_KEY. Makes this node a payment gateway")
	fl.StringVar(&f.webhookFile, "stripe-webhook-secret-file", "", "file (mode 0600) holding the webhook signing secret (whsec_…); or set STRIPE_WEBHOOK_SECRET")
	fl.StringVar(&f.publicURL, "stripe-public-url", "", "this gateway's public https URL, where Checkout sends card holders back")
	fl.StringVar(&f.gatewayURL, "stripe-gateway-url", "", "on a node without a key: a gateway's public URL that card holder pages point to")
	fl.StringVar(&f.apiURL, "stripe-api-url", "", "Stripe API base URL (default Stripe's; stripe-mock for trials)")
	fl.Int64Var(&f.min, "stripe-min-cents", 500, "smallest online top-up, in cents")
	fl.Int64Var(&f.max, "stripe-max-cents", 10000, "largest online top-up, in cents (the federation's balance ceiling applies too)")
	fl.StringSliceVar(&f.methods, "stripe-methods", nil, "Checkout payment method types, e.g. card,bancontact,ideal,sepa_debit (default: the account's dynamic payment methods)")
	fl.BoolVar(&f.autoRefunds, "stripe-auto-refunds", false, "refund card holders' requests without a staff approval")
}

// config builds the node's Stripe config from the flags and environment.
func (f *stripeFlags) config() (node.StripeConfig, error) {
	sc := node.StripeConfig{PublicURL: f.publicURL, GatewayURL: f.gatewayURL, BackendURL: f.apiURL,
		MinTopUp: f.min, MaxTopUp: f.max, PaymentMethods: f.methods, AutoApproveRefunds: f.autoRefunds}
	var err error
	if sc.SecretKey, err = secret(f.keyFile, "STRIPE_SECRET_KEY"); err != nil {
		return sc, err
	}
	if sc.WebhookSecret, err = secret(f.webhookFile, "STRIPE_WEBHOOK_SECRET"); err != nil {
		return sc, err
	}
	return sc, nil
}

// secret reads a secret from its file if given, else from the environment.
func secret(file, env string) (string, error) {
	if file != "" {
		return node.ReadSecretFile(file)
	}
	return os.Getenv(env), nil
}
