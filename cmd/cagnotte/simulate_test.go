package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/cagnotte/cagnotte/simulations"
)

// smallScenario is a short evening: 3 venues, one isolated for 20 minutes,
// one cloned card.
const smallScenario = `name = "small"
seed = 5
duration = "2h"
[venues]
count = 3
names = ["A", "B", "C"]
[cards]
count = 40
[[partitions]]
at = "30m"
for = "20m"
isolate = ["C"]
[clones]
count = 1
topup_cents = 9000
`

// TestSimulateCommandWritesReport runs `cagnotte simulate` and checks the
// report files and the progress line.
func TestSimulateCommandWritesReport(t *testing.T) {
	dir := t.TempDir()
	scen := filepath.Join(dir, "small.toml")
	if err := os.WriteFile(scen, []byte(smallScenario), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "report")
	var stdout, stderr strings.Builder
	if code := Main(context.Background(), []string{"simulate", scen, "--out", out}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	// Three venues: the default transport ("auto") is real libp2p hosts.
	if !strings.Contains(stdout.String(), "every invariant held") || !strings.Contains(stdout.String(), "over libp2p") || !strings.Contains(stderr.String(), "sim 2:00/2:00 100% ETA") {
		t.Fatalf("stdout %q, stderr %q", stdout.String(), stderr.String())
	}
	for _, f := range []string{"report.html", "result.json", "samples.csv", "heals.csv", "venues.csv", "visibility.csv", "measured_visibility.csv", "wire.csv"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Fatalf("%s: %v", f, err)
		}
	}
}

// TestSimulateBadScenarioNamesLineAndField checks the command's error on
// an invalid scenario.
func TestSimulateBadScenarioNamesLineAndField(t *testing.T) {
	scen := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(scen, []byte("duration = \"1h\"\n[venues]\ncount = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr strings.Builder
	if code := Main(context.Background(), []string{"simulate", scen}, &stdout, &stderr); code == 0 || !strings.Contains(stderr.String(), "line 3: venues.count") {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}

// TestSimulateNetworkFlagOverridesScenario: --network picks the transport
// whatever the file says, and a bad value is refused before anything runs.
func TestSimulateNetworkFlagOverridesScenario(t *testing.T) {
	dir := t.TempDir()
	scen := filepath.Join(dir, "small.toml")
	if err := os.WriteFile(scen, []byte("network = \"libp2p\"\n"+smallScenario), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, flag, want string
		ok               bool
	}{
		{"memory", "memory", "over memory", true},
		{"unknown", "carrier-pigeon", `--network "carrier-pigeon"`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			code := Main(context.Background(), []string{"simulate", scen, "--out", filepath.Join(dir, tc.name), "--network", tc.flag}, &stdout, &stderr)
			if (code == 0) != tc.ok || !strings.Contains(stdout.String()+stderr.String(), tc.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q: want %q", code, stdout.String(), stderr.String(), tc.want)
			}
		})
	}
}

// TestSimulateReportOpensInChromium opens a report in headless Chromium:
// no console error nor exception, no resource fetched (everything is
// inlined), every plot drawn. With CAGNOTTE_SIMULATE_SCREENSHOT=FILE it
// saves a screenshot there (docs/simulate-report.jpg).
func TestSimulateReportOpensInChromium(t *testing.T) {
	path := ""
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed: .ci/run installs the Debian package chromium")
		}
		t.Skip("chromium is not installed (apt-get install -y chromium); skipping the report browser test")
	}
	sc, err := simulations.ParseScenario([]byte(smallScenario))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	res, err := simulations.RunScenario(ctx, sc, simulations.ScenarioOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := simulations.WriteScenarioReport(dir, res); err != nil {
		t.Fatal(err)
	}
	actx, cancelA := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1100, 900),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.Flag("disable-extensions", true))
	defer cancelA()
	tab, cancelT := chromedp.NewContext(actx)
	defer cancelT()
	var mu sync.Mutex
	var problems []string
	if err := chromedp.Listen(tab, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeWarning {
				problems = append(problems, "console "+string(e.Type))
			}
		case *runtime.EventExceptionThrown:
			problems = append(problems, "exception: "+e.ExceptionDetails.Text)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tab, chromedp.Navigate("file://"+filepath.Join(dir, simulations.ReportHTML))); err != nil {
		t.Fatal(err)
	}
	// Every plot is an SVG drawn with a size and content; nothing fetched.
	drawn, err := chromedp.Run(tab, chromedp.Evaluate[int](`Array.from(document.querySelectorAll("figure svg")).filter(s => {
		const b = s.getBoundingClientRect(); return b.width > 100 && b.height > 50 && s.querySelectorAll("path,text").length > 10 }).length`))
	if err != nil {
		t.Fatal(err)
	}
	fetched, err := chromedp.Run(tab, chromedp.Evaluate[int](`performance.getEntriesByType("resource").length`))
	if err != nil {
		t.Fatal(err)
	}
	figures, err := chromedp.Run(tab, chromedp.Evaluate[int](`document.querySelectorAll("figure").length`))
	if err != nil {
		t.Fatal(err)
	}
	ok, err := chromedp.Run(tab, chromedp.Evaluate[bool](`!!document.querySelector("#invariants")`))
	if err != nil {
		t.Fatal(err)
	}
	// The ops went over real libp2p hosts: the measured visibility plot
	// is there too, and the wire bytes.
	wire, err := chromedp.Run(tab, chromedp.Evaluate[bool](`!!document.querySelector("#plot-measured-visibility svg") && !!document.querySelector("#wire")`))
	if err != nil {
		t.Fatal(err)
	}
	if figures < 7 || drawn != figures || fetched != 0 || !ok || !wire {
		t.Fatalf("figures %d, drawn %d, resources fetched %d, invariants line %v, measured visibility and wire %v", figures, drawn, fetched, ok, wire)
	}
	if shot := os.Getenv("CAGNOTTE_SIMULATE_SCREENSHOT"); shot != "" {
		img, err := chromedp.Run(tab, chromedp.FullScreenshot(80))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(shot, img, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Fatalf("console: %v", problems)
	}
}
