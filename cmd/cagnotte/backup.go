package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cagnotte/cagnotte/node"
	"github.com/spf13/cobra"
)

func newBackupCmd(g *globals) *cobra.Command {
	var api, token, tokenFile, out string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Write a consistent backup of a running node's store to a file (through its API, with a staff token)",
		Long: `Backup asks a running node for a consistent copy of its store
(GET /api/v1/backup, staff token) and writes it to --out, atomically: the
file appears only once the whole backup arrived and its checksum matched.
The node keeps selling meanwhile. The backup holds every card's history but
neither the node key nor the staff tokens: back those up once, apart.
Restore it with "cagnotte restore".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, err := staffToken(token, tokenFile)
			if err != nil {
				return err
			}
			if out == "" {
				return errors.New("--out is required")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			h, size, err := downloadBackup(ctx, api, tok, out)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "backup of %q (%s) written to %s: %d ops, own chain at %d, %d bytes\n",
				h.VenueName, h.PeerID, out, h.Ops, h.OwnSeq, size)
			return nil
		},
	}
	cmd.Flags().StringVar(&api, "api", "127.0.0.1:8080", "the node's API address")
	cmd.Flags().StringVar(&token, "token", "", "a staff token of the node (or $CAGNOTTE_TOKEN, or --token-file)")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "a file whose first line is a staff token (e.g. the data dir's staff-tokens)")
	cmd.Flags().StringVar(&out, "out", "", "the backup file to write")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Hour, "give up after this long")
	return cmd
}

// staffToken takes the token from the flag, the file or $CAGNOTTE_TOKEN.
func staffToken(token, file string) (string, error) {
	if token != "" {
		return token, nil
	}
	if file != "" {
		toks, err := node.ReadTokens(file)
		if err != nil {
			return "", fmt.Errorf("staff token: %w", err)
		}
		if len(toks) == 0 {
			return "", fmt.Errorf("staff token: %s holds none", file)
		}
		return toks[0], nil
	}
	if t := os.Getenv("CAGNOTTE_TOKEN"); t != "" {
		return t, nil
	}
	return "", errors.New("a staff token is required: --token, --token-file or $CAGNOTTE_TOKEN")
}

// downloadBackup streams the node's backup into a temporary file next to
// out, checks it, syncs it and renames it to out.
func downloadBackup(ctx context.Context, api, token, out string) (node.BackupHeader, int64, error) {
	if !strings.Contains(api, "://") {
		api = "http://" + api
	}
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(api, "/")+"/api/v1/backup", nil)
	if err != nil {
		return node.BackupHeader{}, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return node.BackupHeader{}, 0, fmt.Errorf("no node answers at %s: %w", api, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return node.BackupHeader{}, 0, fmt.Errorf("the node refused the backup: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".part-*")
	if err != nil {
		return node.BackupHeader{}, 0, err
	}
	defer os.Remove(tmp.Name()) // after the rename: nothing
	defer tmp.Close()
	if err := tmp.Chmod(0o600); err != nil {
		return node.BackupHeader{}, 0, err
	}
	size, err := io.Copy(tmp, resp.Body)
	if err != nil {
		return node.BackupHeader{}, 0, fmt.Errorf("backup download cut: %w", err)
	}
	h, _, _, err := node.ReadBackupHeader(tmp)
	if err != nil {
		return h, 0, err
	}
	if err := tmp.Sync(); err != nil {
		return h, 0, err
	}
	if err := tmp.Close(); err != nil {
		return h, 0, err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return h, 0, err
	}
	if d, err := os.Open(filepath.Dir(out)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return h, size, nil
}

func newRestoreCmd(g *globals) *cobra.Command {
	var cfg node.RestoreConfig
	cmd := &cobra.Command{
		Use:   "restore",
		Short: "Restore a backup into an empty data dir (then start the node on it)",
		Long: `Restore checks a backup file (written by "cagnotte backup") whole, then
restores the store into --data, whose store must be absent or empty, and the
federation's chain (federation.ops) if the data dir has none. The node key
and the staff tokens are not in the backup: give them with --key and
--tokens (the key must be the backed-up venue's), or copy them into the data
dir yourself. Start the node as usual: it sells again once a peer has given
back the ops it made after the backup (writes answer 503 catching_up until
then), so it never signs an op twice.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Logger = g.logger()
			h, err := node.Restore(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "restored %q (%s) into %s: %d ops as of %s\n", h.VenueName, h.PeerID, cfg.DataDir, h.Ops, h.Created.Format(time.RFC3339))
			if _, err := os.Stat(filepath.Join(cfg.DataDir, node.KeyFile)); err != nil {
				fmt.Fprintf(g.stdout, "now copy the venue's node key to %s (and its staff-tokens) before starting the node\n", filepath.Join(cfg.DataDir, node.KeyFile))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cfg.Backup, "from", "", "the backup file")
	cmd.Flags().StringVar(&cfg.DataDir, "data", "", "the node's data dir (its store must be absent or empty)")
	cmd.Flags().StringVar(&cfg.KeyFile, "key", "", "the venue's node.key to put in the data dir (checked against the backup)")
	cmd.Flags().StringVar(&cfg.TokensFile, "tokens", "", "a staff-tokens file to put in the data dir")
	return cmd
}
