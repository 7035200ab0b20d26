package simulations

import (
	"flag"
	"fmt"
	"testing"
)

var printReport = flag.Bool("sim.print", false, "print one full-size offline-risk run (frozen clones, seed 1) as docs/benchmarks.md shows it")

// TestPrintOfflineReport prints a full-size report when asked:
// go test ./simulations -run TestPrintOfflineReport -sim.print -v
func TestPrintOfflineReport(t *testing.T) {
	if !*printReport {
		t.Skip("prints a report only with -sim.print")
	}
	cfg := FullOfflineConfig()
	cfg.Seed = 1
	r, err := RunOffline(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	fmt.Println(r.String())
}
