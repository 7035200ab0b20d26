package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cagnotte/cagnotte/nfc"
	"github.com/cagnotte/cagnotte/node"
	"github.com/cagnotte/cagnotte/p2p"
	"github.com/spf13/cobra"
)

// demoVenueJSON is one venue in `demo --json` output (see shared API.md).
type demoVenueJSON struct {
	Name   string   `json:"name"`
	API    string   `json:"api"`
	Web    string   `json:"web"`
	Token  string   `json:"token"`
	PeerID string   `json:"peer_id"`
	Data   string   `json:"data"`
	P2P    []string `json:"p2p,omitempty"`
	// Pages are the venue's web pages (point of sale, agenda, dashboard,
	// and the demo card's holder page).
	Pages node.WebPages `json:"pages"`
}

func newDemoCmd(g *globals) *cobra.Command {
	var venues, basePort int
	var dataDir string
	var asJSON, seed, tapStdin bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a local demo federation of venues on loopback, and print each venue's pages",
		Long: `Start a small federation of venues on this machine with the embedded default
settings, print each venue's web pages (point of sale, agenda, dashboard,
the demo card's holder page), API address and staff token, and
run until interrupted (Ctrl-C). Without --data the demo lives in a temporary
directory removed at exit; with --data it is kept and reused, on the same
API ports as its previous run (recorded in DIR/demo-ports.json; --base-port
chooses others).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			log := g.logger()
			if dataDir == "" {
				tmp, err := os.MkdirTemp("", "cagnotte-demo-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				dataDir = tmp
			}
			fresh := !fileExists(filepath.Join(dataDir, "federation", node.FederationChainFile))
			vs, err := node.PrepareDemo(dataDir, venues)
			if err != nil {
				return err
			}
			var nodes []*node.Node
			defer func() {
				for _, n := range nodes {
					if err := n.Close(); err != nil {
						log.Error("close", "err", err)
					}
				}
			}()
			out := struct {
				Venues []demoVenueJSON `json:"venues"`
			}{}
			// A kept demo reuses the API ports of its previous run, so the
			// addresses (and the commands it printed) stay valid.
			saved, err := node.LoadDemoPorts(dataDir)
			if err != nil {
				return err
			}
			var ports node.DemoPorts
			var names []string
			for _, v := range vs {
				names = append(names, v.Name)
			}
			simReaders, simCards, err := demoReaders(dataDir, names)
			if err != nil {
				return err
			}
			for i, v := range vs {
				port, kept := 0, false
				switch {
				case basePort > 0:
					port = basePort + i
				case i < len(saved.API) && saved.API[i] > 0:
					port, kept = saved.API[i], true
				}
				addr := fmt.Sprintf("127.0.0.1:%d", port)
				// The venues form one network on loopback: each listens on
				// a free TCP port and bootstraps from the first venue.
				net := p2p.DefaultConfig()
				net.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
				net.MDNS, net.NATPortMap, net.HolePunching = false, false, false
				if len(nodes) > 0 {
					net.Bootstrap = nodes[0].Network().P2PAddrs()
				}
				n, err := node.New(node.Config{DataDir: v.Dir, HTTPAddr: addr, Logger: log.With("name", v.Name), P2P: &net,
					Readers: []nfc.Reader{simReaders[i]}, SimCards: simCards, AloneInSync: len(vs) == 1})
				if err != nil {
					return fmt.Errorf("venue %s: %w", v.Name, err)
				}
				nodes = append(nodes, n)
				if err := n.Start(ctx); err != nil {
					if errors.Is(err, syscall.EADDRINUSE) {
						why := "--base-port"
						if kept {
							why = "the previous run of this demo (" + filepath.Join(dataDir, node.DemoPortsFile) + ")"
						}
						return fmt.Errorf("venue %s: port %d, from %s, is already in use (is this demo already running?): stop the program using it, or choose other ports with --base-port N: %w",
							v.Name, port, why, err)
					}
					return fmt.Errorf("venue %s: %w", v.Name, err)
				}
				_, p, _ := strings.Cut(n.Addr(), ":")
				pn, _ := strconv.Atoi(p)
				ports.API = append(ports.API, pn)
				id, _ := p2p.PeerID(v.Key)
				api := "http://" + n.Addr()
				out.Venues = append(out.Venues, demoVenueJSON{Name: v.Name, API: api, Web: api + "/", Token: v.Token, PeerID: id.String(), Data: v.Dir,
					P2P: n.Network().P2PAddrs()})
			}
			if err := node.SaveDemoPorts(dataDir, ports); err != nil {
				return err
			}
			if fresh && seed {
				if err := seedDemo(ctx, out.Venues); err != nil {
					return fmt.Errorf("seed demo data: %w", err)
				}
			}
			// The demo card's holder page: the first venue issues the
			// token, every venue opens it. Without the card (a kept demo
			// made with --seed=false), no card page.
			holder, err := holderToken(ctx, out.Venues[0], demoCard)
			if err != nil {
				log.Debug("no demo card", "err", err)
				holder = ""
			}
			for i := range out.Venues {
				out.Venues[i].Pages = node.PagesAt(out.Venues[i].API, holder)
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				if err := enc.Encode(out); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(g.stdout, "Cagnotte demo: %d venues, data in %s\n\n", len(out.Venues), dataDir)
				for _, v := range out.Venues {
					fmt.Fprintf(g.stdout, "%s\n  web:   %s\n  api:   %s\n  token: %s\n  peer:  %s\n", v.Name, v.Web, v.API, v.Token, v.PeerID)
					fmt.Fprintf(g.stdout, "  point of sale: %s (sign in with the token)\n  agenda:        %s\n  dashboard:     %s\n", v.Pages.POS, v.Pages.Agenda, v.Pages.Dashboard)
					if v.Pages.Card != "" {
						fmt.Fprintf(g.stdout, "  card %s:  %s\n", demoCard, v.Pages.Card)
					}
					for _, a := range v.P2P {
						fmt.Fprintf(g.stdout, "  p2p:   %s\n", a)
					}
					fmt.Fprintln(g.stdout)
				}
				if seed && holder != "" {
					fmt.Fprint(g.stdout, tryCommands(out.Venues[0], holder))
				}
				fmt.Fprint(g.stdout, demoTapHelp)
				fmt.Fprintln(g.stdout, "Press Ctrl-C to stop.")
				if tapStdin {
					go terminalTaps(ctx, os.Stdin, g.stdout, simReaders, simCards)
				}
			}
			<-ctx.Done()
			return nil
		},
	}
	cmd.Flags().IntVar(&venues, "venues", 3, "number of venues")
	cmd.Flags().BoolVar(&tapStdin, "tap-stdin", stdinIsTerminal(), `read "tap N CARD" and "remove N" lines from standard input to tap cards on the venues' simulated readers (default: when it is a terminal)`)
	cmd.Flags().StringVar(&dataDir, "data", "", "directory to keep the demo in (default: a temporary directory)")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"venues": [{"name", "api", "web", "token", "peer_id", "data", "pages": {"pos", "agenda", "dashboard", "card"}}]} as one JSON object`)
	cmd.Flags().IntVar(&basePort, "base-port", 0, "API port of the first venue, the next ones follow (default: free ports)")
	cmd.Flags().BoolVar(&seed, "seed", true, "on a new demo, give each venue products and an event, and top up a demo card")
	return cmd
}

// seedDemo gives a new demo something to look at, through the public API.
func seedDemo(ctx context.Context, vs []demoVenueJSON) error {
	c := &http.Client{Timeout: 10 * time.Second}
	post := func(v demoVenueJSON, path string, body any) error {
		b, _ := json.Marshal(body)
		req, err := http.NewRequestWithContext(ctx, "POST", v.API+path, bytes.NewReader(b))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+v.Token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			var e struct{ Message string }
			json.NewDecoder(resp.Body).Decode(&e)
			return errors.New(resp.Status + ": " + e.Message)
		}
		return nil
	}
	day := time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
	for _, v := range vs {
		if err := post(v, "/api/v1/products", map[string]any{
			"items": []map[string]any{{"name": "Bière", "price_cents": 350}, {"name": "Café", "price_cents": 150},
				{"name": "Limonade", "price_cents": 250}, {"name": "Part de tarte", "price_cents": 400}},
			"idempotency_key": "demo-products",
		}); err != nil {
			return err
		}
	}
	for i, v := range vs {
		start := day.Add(time.Duration(19+i%4) * time.Hour).Add(time.Duration(i/4) * 24 * time.Hour)
		if err := post(v, "/api/v1/events", map[string]any{
			"id": "demo", "title": "Soirée à " + v.Name, "starts_at": start, "ends_at": start.Add(3 * time.Hour),
			"description": "Demo event", "idempotency_key": "demo-event",
		}); err != nil {
			return err
		}
	}
	return post(vs[0], "/api/v1/topups", map[string]any{
		"card": demoCard, "amount_cents": 2000, "method": "cash", "idempotency_key": "demo-topup",
	})
}

// demoCard is the card a new demo tops up.
const demoCard = "04A1B2C3D4E5F6"

// tryCommands are the commands the demo prints, ready to paste in a shell.
func tryCommands(v demoVenueJSON, holder string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Demo card %s (topped up with 20.00 EUR when the demo was created). Try, in a shell:\n", demoCard)
	fmt.Fprintf(&b, "  TOKEN=%s\n", v.Token)
	fmt.Fprintf(&b, "  API=%s\n", v.API)
	fmt.Fprintf(&b, "  curl -s -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' -d '{\"card\":\"%s\",\"amount_cents\":350,\"idempotency_key\":\"try-1\"}' $API/api/v1/payments\n", demoCard)
	fmt.Fprintf(&b, "  curl -s -H \"Authorization: Bearer $TOKEN\" $API/api/v1/cards/%s\n", demoCard)
	fmt.Fprintf(&b, "  curl -s $API/api/v1/holder/%s\n", holder)
	fmt.Fprintf(&b, "(the same idempotency key charges once: change try-1 to pay again; the last command is the card holder's view, no staff token needed)\n\n")
	return b.String()
}

// holderToken asks the venue for the holder token of card.
func holderToken(ctx context.Context, v demoVenueJSON, card string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", v.API+"/api/v1/cards/"+card+"/holder-token", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+v.Token)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var ans struct{ Token, Message string }
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", errors.New(resp.Status + ": " + ans.Message)
	}
	return ans.Token, nil
}
