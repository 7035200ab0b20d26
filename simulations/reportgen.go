package simulations

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"html/template"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Report files written by WriteScenarioReport.
const (
	ReportHTML = "report.html"
	ReportJSON = "result.json"
)

// WriteScenarioReport writes into dir (created if needed) report.html, a
// self-contained page (plots as inline SVG, no script, no external
// asset), result.json (the whole result) and the raw figures as CSV:
// samples.csv, heals.csv, venues.csv, visibility.csv.
func WriteScenarioReport(dir string, res *ScenarioResult) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("simulations: report: %w", err)
	}
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("simulations: report: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ReportJSON), js, 0o644); err != nil {
		return fmt.Errorf("simulations: report: %w", err)
	}
	if err := writeCSVs(dir, res); err != nil {
		return err
	}
	plots, err := reportPlots(res)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := reportTmpl.Execute(&buf, map[string]any{"R": res, "Plots": plots, "Euros": euros, "Sim": fmtSim}); err != nil {
		return fmt.Errorf("simulations: report: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ReportHTML), buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("simulations: report: %w", err)
	}
	return nil
}

func writeCSV(path string, rows [][]string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("simulations: report: %w", err)
	}
	w := csv.NewWriter(f)
	if err := w.WriteAll(rows); err != nil {
		f.Close()
		return fmt.Errorf("simulations: report: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("simulations: report: %w", err)
	}
	return nil
}

func itoa[T ~int | ~int64](v T) string { return strconv.FormatInt(int64(v), 10) }

func writeCSVs(dir string, res *ScenarioResult) error {
	rows := [][]string{{"at_ms", "groups", "isolated_venues", "down_venues", "ops", "offline_cents", "honest_refused_cap", "honest_accepted", "loss_cents", "bound_cents", "conflicts"}}
	for _, s := range res.Samples {
		rows = append(rows, []string{itoa(s.AtMs), itoa(s.Groups), itoa(s.IsolatedVenues), itoa(s.DownVenues), itoa(s.Ops), itoa(s.OfflineCents),
			itoa(s.HonestRefusedCap), itoa(s.HonestAccepted), itoa(s.LossCents), itoa(s.BoundCents), itoa(s.ConflictsDetected)})
	}
	if err := writeCSV(filepath.Join(dir, "samples.csv"), rows); err != nil {
		return err
	}
	rows = [][]string{{"at_ms", "split_ms", "missing_ops", "missing_bytes", "max_venue_bytes", "est_converge_ms", "measured_converge_ms", "measured_wall_ms", "digest"}}
	for _, h := range res.Heals {
		rows = append(rows, []string{itoa(h.AtMs), itoa(h.SplitMs), itoa(h.MissingOps), itoa(h.MissingBytes), itoa(h.MaxVenueBytes), itoa(h.EstConvergeMs),
			strconv.FormatFloat(h.MeasuredConvergeMs, 'f', 3, 64), strconv.FormatFloat(h.MeasuredWallMs, 'f', 3, 64), h.Digest})
	}
	if err := writeCSV(filepath.Join(dir, "heals.csv"), rows); err != nil {
		return err
	}
	rows = [][]string{{"venue", "ops_made", "payments", "offline_payments", "offline_cents", "disk_bytes", "recv_bytes_per_day", "store_bytes", "events", "crashes", "wire_bytes", "wire_bytes_per_op"}}
	for _, v := range res.VenueFigures {
		perOp := 0.0
		if res.Ops > 0 {
			perOp = float64(v.WireBytes) / float64(res.Ops)
		}
		rows = append(rows, []string{v.Name, itoa(v.OpsMade), itoa(v.Payments), itoa(v.OfflinePayments), itoa(v.OfflineCents), itoa(v.DiskBytes),
			strconv.FormatFloat(v.RecvBytesPerDay, 'f', 0, 64), itoa(v.StoreBytes), itoa(v.Events), itoa(v.Crashes), itoa(v.WireBytes), strconv.FormatFloat(perOp, 'f', 1, 64)})
	}
	if err := writeCSV(filepath.Join(dir, "venues.csv"), rows); err != nil {
		return err
	}
	rows = [][]string{{"visibility_ms"}}
	for _, v := range res.VisibilityMs {
		rows = append(rows, []string{itoa(v)})
	}
	if err := writeCSV(filepath.Join(dir, "visibility.csv"), rows); err != nil {
		return err
	}
	rows = [][]string{{"measured_visibility_ms"}}
	for _, v := range res.MeasuredVisibilityMs {
		rows = append(rows, []string{strconv.FormatFloat(v, 'f', 3, 64)})
	}
	if err := writeCSV(filepath.Join(dir, "measured_visibility.csv"), rows); err != nil {
		return err
	}
	rows = [][]string{{"venue", "protocol", "wire_bytes_sent"}}
	for _, v := range res.VenueFigures {
		for _, p := range slices.Sorted(maps.Keys(v.WireByProtocol)) {
			rows = append(rows, []string{v.Name, p, itoa(v.WireByProtocol[p])})
		}
	}
	if err := writeCSV(filepath.Join(dir, "wire.csv"), rows); err != nil {
		return err
	}
	rows = [][]string{{"event_visibility_ms"}}
	for _, v := range res.EventVisibilityMs {
		rows = append(rows, []string{itoa(v)})
	}
	return writeCSV(filepath.Join(dir, "event_visibility.csv"), rows)
}

// namedPlot is one plot of the report.
type namedPlot struct {
	ID, Title, Caption string
	SVG                template.HTML
}

func svgOf(p *plot.Plot) (template.HTML, error) {
	wt, err := p.WriterTo(7*vg.Inch, 3.2*vg.Inch, "svg")
	if err != nil {
		return "", fmt.Errorf("simulations: plot: %w", err)
	}
	var b bytes.Buffer
	if _, err := wt.WriteTo(&b); err != nil {
		return "", fmt.Errorf("simulations: plot: %w", err)
	}
	out := b.Bytes()
	// Drop the XML prolog and doctype: the SVG goes inline in HTML.
	if i := bytes.Index(out, []byte("<svg")); i > 0 {
		out = out[i:]
	}
	return template.HTML(out), nil //nolint:gosec // generated by gonum/plot from numbers
}

func series(res *ScenarioResult, f func(Sample) float64) plotter.XYs {
	xy := make(plotter.XYs, len(res.Samples))
	for i, s := range res.Samples {
		xy[i].X, xy[i].Y = float64(s.AtMs)/3_600_000, f(s)
	}
	return xy
}

func linePlot(title, ylabel string, lines ...any) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "simulated hours"
	p.Y.Label.Text = ylabel
	p.Legend.Top = true
	if err := plotutil.AddLines(p, lines...); err != nil {
		return nil, fmt.Errorf("simulations: plot: %w", err)
	}
	return p, nil
}

func reportPlots(res *ScenarioResult) ([]namedPlot, error) {
	var out []namedPlot
	add := func(id, title, caption string, p *plot.Plot, err error) error {
		if err != nil {
			return err
		}
		svg, err := svgOf(p)
		if err != nil {
			return err
		}
		out = append(out, namedPlot{ID: id, Title: title, Caption: caption, SVG: svg})
		return nil
	}
	p, err := linePlot("Network", "venues / groups",
		"groups", series(res, func(s Sample) float64 { return float64(s.Groups) }),
		"isolated venues", series(res, func(s Sample) float64 { return float64(s.IsolatedVenues) }),
		"down venues", series(res, func(s Sample) float64 { return float64(s.DownVenues) }))
	if err := add("network", "Partitions over time", "Groups the network is split into, venues isolated (under the offline caps) and venues down (crashed).", p, err); err != nil {
		return nil, err
	}
	p, err = linePlot("Clone loss against the caps' bound", "euros",
		"loss", series(res, func(s Sample) float64 { return float64(s.LossCents) / 100 }),
		"bound", series(res, func(s Sample) float64 { return float64(s.BoundCents) / 100 }))
	if err := add("loss", "Clone losses against the bound", "Σ max(0, −balance) in the converged ledger, and the bound the offline caps give (checked at every heal).", p, err); err != nil {
		return nil, err
	}
	p, err = linePlot("Offline takings and honest refusals", "euros / payments",
		"offline takings (€)", series(res, func(s Sample) float64 { return float64(s.OfflineCents) / 100 }),
		"honest payments refused by the caps", series(res, func(s Sample) float64 { return float64(s.HonestRefusedCap) }),
		"conflicts detected", series(res, func(s Sample) float64 { return float64(s.ConflictsDetected) }))
	if err := add("offline", "Offline takings, refusals, conflicts", "Cumulative money taken under the caps, honest payments the caps refused, conflicts the ledger reports (venue 0's view).", p, err); err != nil {
		return nil, err
	}
	p = plot.New()
	p.Title.Text = "Visibility delay (op made → held by every venue)"
	p.X.Label.Text = "minutes"
	p.Y.Label.Text = "ops"
	vals := make(plotter.Values, len(res.VisibilityMs))
	for i, v := range res.VisibilityMs {
		vals[i] = float64(v) / 60_000
	}
	if len(vals) > 0 {
		hist, herr := plotter.NewHist(vals, 30)
		if herr != nil {
			return nil, fmt.Errorf("simulations: plot: %w", herr)
		}
		p.Add(hist)
	}
	if err := add("visibility", "Visibility delay", "Ops made while the network is whole reach every venue by gossip (sent on the author's uplink, received on the slowest other: latency + bytes / bandwidth, over 1 − loss); the others at the next heal, plus its catch-up.", p, nil); err != nil {
		return nil, err
	}
	if len(res.MeasuredVisibilityMs) > 0 {
		p = plot.New()
		p.Title.Text = "Measured visibility delay on " + res.Network + " (wall ms)"
		if res.TimeScale > 1 {
			p.Title.Text = fmt.Sprintf("Measured visibility delay on %s (wall ms × time scale %g)", res.Network, res.TimeScale)
		}
		p.X.Label.Text = "ms"
		p.Y.Label.Text = "ops"
		hist, herr := plotter.NewHist(plotter.Values(res.MeasuredVisibilityMs), 30)
		if herr != nil {
			return nil, fmt.Errorf("simulations: plot: %w", herr)
		}
		p.Add(hist)
		if err := add("measured-visibility", "Measured visibility delay", "On the network transport: each op's wall time from the end of the step that made it (when the networks may carry it) until the last venue of its side held it, through the venues' real GossipSub (and anti-entropy for what gossip missed). The virtual clock stops meanwhile.", p, nil); err != nil {
			return nil, err
		}
	}
	p = plot.New()
	p.Title.Text = "Heals: catch-up per heal"
	p.X.Label.Text = "simulated hours"
	p.Y.Label.Text = "KiB / ms"
	var miss, est, measured plotter.XYs
	for _, h := range res.Heals {
		miss = append(miss, plotter.XY{X: float64(h.AtMs) / 3_600_000, Y: float64(h.MissingBytes) / 1024})
		est = append(est, plotter.XY{X: float64(h.AtMs) / 3_600_000, Y: float64(h.EstConvergeMs)})
		measured = append(measured, plotter.XY{X: float64(h.AtMs) / 3_600_000, Y: h.MeasuredConvergeMs})
	}
	if len(miss) > 0 {
		lines := []any{"missing KiB (all venues)", miss, "est. catch-up ms", est}
		if res.Network != "" && res.Network != NetworkMemory {
			label := "measured ms (" + res.Network + ")"
			if res.TimeScale > 1 {
				label = fmt.Sprintf("measured ms (%s, wall × %g)", res.Network, res.TimeScale)
			}
			lines = append(lines, label, measured)
		}
		if err := plotutil.AddScatters(p, lines...); err != nil {
			return nil, fmt.Errorf("simulations: plot: %w", err)
		}
	}
	if err := add("heals", "Convergence after each heal", "Op bytes the venues lacked at each heal, the catch-up time estimated on each venue's uplink (3 × latency + bytes / bandwidth, over 1 − loss; the slowest venue) and, on a network transport, the wall time the venues' real anti-entropy took until every venue held the same ops.", p, nil); err != nil {
		return nil, err
	}
	p = plot.New()
	p.Title.Text = "Per venue: disk and bytes received per day"
	p.Y.Label.Text = "KiB"
	var disk, recv plotter.Values
	var names []string
	for _, v := range res.VenueFigures {
		disk = append(disk, float64(v.DiskBytes)/1024)
		recv = append(recv, v.RecvBytesPerDay/1024)
		names = append(names, strconv.Itoa(len(names)))
	}
	if len(disk) > 0 {
		w := vg.Points(max(1, 180/float64(len(disk))))
		b1, err := plotter.NewBarChart(disk, w)
		if err != nil {
			return nil, fmt.Errorf("simulations: plot: %w", err)
		}
		b2, err := plotter.NewBarChart(recv, w)
		if err != nil {
			return nil, fmt.Errorf("simulations: plot: %w", err)
		}
		b1.Color, b2.Color = plotutil.Color(0), plotutil.Color(1)
		b2.Offset = w
		p.Add(b1, b2)
		p.Legend.Add("op log on disk", b1)
		p.Legend.Add("received per day", b2)
		p.Legend.Top = true
		p.NominalX(names...)
		p.X.Label.Text = "venue index"
	}
	if err := add("venues", "Disk and bandwidth per venue", "Encoded ops each venue holds at the end, and op bytes it receives per simulated day (each op once; gossip payload, not wire bytes: see the libp2p measurement).", p, nil); err != nil {
		return nil, err
	}
	return out, nil
}

var reportTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"kib":  func(b int64) float64 { return float64(b) / 1024 },
	"kibf": func(b float64) float64 { return b / 1024 },
	// ms rounds a wall time for reading (3.5s, not 3.476579218s).
	"ms": func(d time.Duration) time.Duration { return d.Round(time.Millisecond) },
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cagnotte simulate: {{.R.Scenario}}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:60rem;margin:1rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.ok{color:#060}.bad{color:#a00;font-weight:bold}figure{margin:1rem 0}figure svg{max-width:100%;height:auto}
pre{background:#f6f6f6;padding:.5rem;overflow:auto}
</style></head><body>
<h1>Scenario “{{.R.Scenario}}”</h1>
<p>{{.R.Venues}} venues, {{.R.Cards}} cards, {{call .Sim .R.DurationMs}} simulated (seed {{.R.Seed}}) in {{ms .R.Wall}} of wall time. Engine: {{.R.Engine}}.</p>
{{if .R.Violation}}<h2 class="bad" id="violation">Invariant violated: {{.R.Violation.Invariant}}</h2>
<p>At {{call .Sim .R.Violation.AtMs}}: {{.R.Violation.Detail}}</p><pre>{{range .R.Violation.Ops}}{{.}}
{{end}}</pre>
{{else}}<p class="ok" id="invariants">Every invariant held at each of {{.R.Checks}} checks (every heal and the end): conservation of money, one digest everywhere, no acknowledged op lost (and at each of {{.R.Crashes}} restarts after a crash), every double spend reported and no false conflict, no honest card overdrawn, clone loss ≤ the caps' bound.</p>{{end}}
<h2>Figures</h2>
<table id="figures">
<tr><th>figure</th><th>value</th></tr>
<tr><td>ops</td><td>{{.R.Ops}}</td></tr>
<tr><td>final digest</td><td>{{.R.Digest}}</td></tr>
<tr><td>honest payments accepted / asked</td><td>{{.R.HonestAccepted}} / {{.R.HonestAttempted}}</td></tr>
<tr><td>honest payments refused by the caps</td><td>{{.R.HonestRefusedCap}}</td></tr>
<tr><td>honest payments refused for funds / other</td><td>{{.R.HonestRefusedFunds}} / {{.R.HonestRefusedOther}}</td></tr>
<tr><td>visits at a closed or crashed venue</td><td>{{.R.HonestClosed}}</td></tr>
<tr><td>top-ups (online)</td><td>{{.R.TopUps}} ({{.R.OnlineTopUps}})</td></tr>
<tr><td>topped up / paid</td><td>{{call .Euros .R.ToppedUpCents}} / {{call .Euros .R.PaidCents}}</td></tr>
<tr><td>offline takings (payments)</td><td>{{call .Euros .R.OfflineCents}} ({{.R.OfflinePayments}})</td></tr>
<tr><td>cloned cards; attack payments (amount)</td><td>{{.R.Clones}}; {{.R.AttackPayments}} ({{call .Euros .R.AttackCents}})</td></tr>
<tr><td>clone loss / bound</td><td>{{call .Euros .R.LossCents}} / {{call .Euros .R.BoundCents}}</td></tr>
<tr><td>double spends detected / made</td><td>{{.R.DoubleSpendsDetected}} / {{.R.DoubleSpends}}</td></tr>
<tr><td>conflicts; blocked cards</td><td>{{.R.Conflicts}}; {{.R.BlockedCards}}</td></tr>
<tr><td>mean op size (bytes)</td><td>{{printf "%.0f" .R.BytesPerOp}}</td></tr>
<tr><td>refunds (refused offline, asked again)</td><td>{{.R.Refunds}}: {{call .Euros .R.RefundedCents}} ({{.R.RefundsRefusedOffline}})</td></tr>
<tr><td>clone refunds accepted / refused</td><td>{{.R.CloneRefunds}} ({{call .Euros .R.CloneRefundCents}}) / {{.R.CloneRefundsRefused}}</td></tr>
<tr><td>events published (bytes/op)</td><td>{{.R.Events}} ({{printf "%.0f" .R.EventBytesPerOp}})</td></tr>
<tr><td>node crashes (kill -9), each restart checked</td><td>{{.R.Crashes}}</td></tr>
<tr><td>store</td><td>{{.R.Store}}</td></tr>
<tr><td>heals of the whole network</td><td>{{len .R.Heals}}</td></tr>
<tr><td>transport of the ops</td><td id="network">{{.R.Network}}</td></tr>
{{if gt .R.TimeScale 1.0}}<tr><td>time scale of the links (measured delays shown as wall time × it)</td><td id="time-scale">{{.R.TimeScale}}</td></tr>{{end}}
{{if .R.NetworkWait}}<tr><td>wall time the networks carried the ops (virtual clock stopped)</td><td>{{ms .R.NetworkWait}}</td></tr>{{end}}
{{if .R.WireBytes}}<tr><td>bytes on the wire: all hosts; per op per node</td><td id="wire">{{.R.WireBytes}} B; {{printf "%.0f" .R.WireBytesPerOpPerNode}} B</td></tr>{{end}}
</table>
{{with .R.Libp2p}}<h2>Heal on real libp2p hosts</h2>
<p id="libp2p">{{.Nodes}} nodes ({{.Transport}}), {{.OpsPerSide}} ops on each side of a partition: converged {{.Took}} after the heal; {{.MissingOps}} ops ({{.MissingBytes}} B) were missing, {{.WireBytes}} B sent on the wire.</p>{{end}}
{{range .Plots}}<figure id="plot-{{.ID}}"><figcaption><b>{{.Title}}.</b> {{.Caption}}</figcaption>{{.SVG}}</figure>
{{end}}
<h2>Venues</h2>
<table id="venues"><tr><th>venue</th><th>ops made</th><th>payments</th><th>offline</th><th>offline takings</th><th>op log (KiB)</th><th>Badger dir (KiB)</th><th>received/day (KiB)</th><th>events</th><th>crashes</th><th>wire sent (KiB)</th></tr>
{{range .R.VenueFigures}}<tr><td>{{.Name}}</td><td>{{.OpsMade}}</td><td>{{.Payments}}</td><td>{{.OfflinePayments}}</td><td>{{call $.Euros .OfflineCents}}</td><td>{{printf "%.1f" (kib .DiskBytes)}}</td><td>{{printf "%.1f" (kib .StoreBytes)}}</td><td>{{printf "%.1f" (kibf .RecvBytesPerDay)}}</td><td>{{.Events}}</td><td>{{.Crashes}}</td><td>{{printf "%.1f" (kib .WireBytes)}}</td></tr>
{{end}}</table>
<p>Raw figures: result.json, samples.csv, heals.csv, venues.csv, visibility.csv, measured_visibility.csv, wire.csv (bytes each venue's hosts sent per protocol), event_visibility.csv (next to this file).</p>
</body></html>
`))
