package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cagnotte/cagnotte/internal/genhistory"
)

// TestGenHistoryCommand: `cagnotte gen-history` writes a node data dir and
// its federation dir, reports progress on stderr, and refuses a second run
// into the same dir.
func TestGenHistoryCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"generate", []string{"gen-history", "--data", dir, "--ops", "2000", "--seed", "5", "--venues", "5", "--log-level", "warn"}, 0, "genhistory: 2000 ops"},
		{"again", []string{"gen-history", "--data", dir, "--ops", "2000", "--venues", "5"}, 1, "already holds a store"},
		{"no data", []string{"gen-history", "--ops", "2000"}, 1, `"data" not set`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := Main(t.Context(), tc.args, &out, &errb); code != tc.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tc.code, errb.String())
			}
			if !strings.Contains(errb.String(), tc.want) {
				t.Errorf("stderr does not say %q:\n%s", tc.want, errb.String())
			}
		})
	}
	m, err := genhistory.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.Ops != 2000 || m.Seed != 5 || m.FederationDir != dir+"-federation" {
		t.Errorf("manifest: %d ops, seed %d, federation dir %s", m.Ops, m.Seed, m.FederationDir)
	}
}
