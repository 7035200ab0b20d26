// Command cagnotte runs a Cagnotte venue node, a local demo federation and
// the maintainers' federation tools. It is thin: it parses flags, builds a
// Config and calls the packages.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	followGC := setRuntimeLimits()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runArgs(ctx, args{os.Args[1:], os.Stdout, os.Stderr, followGC})
	stop()
	os.Exit(code)
}

// Main runs the command line with args and returns the exit code. Tests
// call it directly; it leaves the process's collector target alone.
func Main(ctx context.Context, argv []string, stdout, stderr io.Writer) int {
	return runArgs(ctx, args{argv, stdout, stderr, false})
}

// args is what a run of the command line gets from its process.
type args struct {
	argv           []string
	stdout, stderr io.Writer
	// followGC: the node command sets the collector's target by what the
	// node does (followGCTarget); the binary does when the operator set
	// no GOGC.
	followGC bool
}

func runArgs(ctx context.Context, a args) int {
	root := newRoot(a.stdout, a.stderr, a.followGC)
	root.SetArgs(a.argv)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(a.stderr, "error:", err)
		return 1
	}
	return 0
}

type globals struct {
	stdout, stderr io.Writer
	logLevel       string
	logJSON        bool
	// followGC: see args.
	followGC bool
}

func (g *globals) logger() *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if g.logJSON {
		return slog.New(slog.NewJSONHandler(g.stderr, opts))
	}
	return slog.New(slog.NewTextHandler(g.stderr, opts))
}

func newRoot(stdout, stderr io.Writer, followGC bool) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr, followGC: followGC}
	root := &cobra.Command{
		Use:   "cagnotte",
		Short: "Cashless card and shared agenda for a federation of venues, peer to peer",
		Long: `Cagnotte: one NFC card pays at every venue of a federation, and the venues
share one agenda, with no central server. Every venue runs a node.

Start with "cagnotte demo" for a local network of venues, or see the README
for setting up a real federation.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().BoolVar(&g.logJSON, "log-json", false, "write logs as JSON lines")
	root.AddCommand(newDemoCmd(g), newNodeCmd(g), newFederationCmd(g), newStatusCmd(g), newGenHistoryCmd(g), newNFCCmd(g))
	root.AddCommand(newBackupCmd(g), newRestoreCmd(g)) // backup.go
	root.AddCommand(newVersionCmd(g))                  // version.go
	root.AddCommand(newSimulateCmd(g))                 // simulate.go
	return root
}
