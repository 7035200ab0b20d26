// Package season benchmarks a node holding a season of history, on real
// `cagnotte node` processes: memory (steady and peak RSS), cold start,
// payment latency at 200/s, disk bytes per op across restarts, the read of
// a card with 10,000 entries, and the time a new venue takes to sell its
// first payment. The histories come from internal/genhistory (`cagnotte
// gen-history`). Everything is in season_bench_test.go, behind -bench;
// results and commands are in docs/benchmarks.md, "Season of history".
// rejoin.sh runs the new venue again, alone, against a work directory the
// benchmark kept (-season.keep), to measure its memory without another
// hour of payments.
package season
