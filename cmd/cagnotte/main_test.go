package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// runBackground runs Main until the test ends and returns its stdout lines.
func runBackground(t *testing.T, args ...string) (*bufio.Scanner, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		done <- Main(ctx, args, pw, &stderr)
		pw.Close()
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			go io.Copy(io.Discard, pr)
			select {
			case code := <-done:
				if code != 0 {
					t.Errorf("%v exited %d: %s", args, code, stderr.String())
				}
			case <-time.After(30 * time.Second):
				t.Errorf("%v did not stop", args)
			}
		})
	}
	t.Cleanup(stop)
	return bufio.NewScanner(pr), stop
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := Main(context.Background(), args, &out, &errb); code != 0 {
		t.Fatalf("%v: exit %d: %s", args, code, errb.String())
	}
	return out.String()
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func TestDemoJSON(t *testing.T) {
	sc, _ := runBackground(t, "demo", "--venues", "3", "--data", t.TempDir(), "--json", "--log-level", "error")
	if !sc.Scan() {
		t.Fatal("no output")
	}
	var out struct {
		Venues []struct {
			Name, API, Token string
			PeerID           string `json:"peer_id"`
		} `json:"venues"`
	}
	if err := json.Unmarshal(sc.Bytes(), &out); err != nil {
		t.Fatalf("not JSON: %q: %v", sc.Text(), err)
	}
	if len(out.Venues) != 3 {
		t.Fatalf("venues: %+v", out)
	}
	for _, v := range out.Venues {
		if v.Name == "" || v.Token == "" || !strings.HasPrefix(v.PeerID, "12D3KooW") {
			t.Fatalf("venue %+v", v)
		}
		var s map[string]any
		getJSON(t, v.API+"/api/v1/sync/status", &s)
		if s["venue"] != v.Name || s["node"] != v.PeerID {
			t.Fatalf("status of %s: %v", v.Name, s)
		}
	}
}

// TestRealFederationSetup walks the README's path: federation init, node
// init, admit, node run, status.
func TestRealFederationSetup(t *testing.T) {
	root := t.TempDir()
	fed, data := filepath.Join(root, "fed"), filepath.Join(root, "venue")
	out := run(t, "federation", "init", "--dir", fed, "--name", "Réseau test", "--offline-card-max", "3000")
	if !strings.Contains(out, "federation key:") {
		t.Fatal(out)
	}
	out = run(t, "node", "init", "--data", data)
	m := regexp.MustCompile(`peer id: (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatal(out)
	}
	bundle := filepath.Join(root, "venue.ops")
	run(t, "federation", "admit", "--dir", fed, "--peer", m[1], "--name", "Le Test", "--out", bundle)
	if out := run(t, "federation", "show", "--dir", fed); !strings.Contains(out, "Le Test") || !regexp.MustCompile(`30\.00|3000`).MatchString(out) {
		t.Fatal(out)
	}
	// Settings that void the offline bound are refused.
	var errb bytes.Buffer
	if Main(context.Background(), []string{"federation", "init", "--dir", filepath.Join(root, "fed2"), "--name", "X", "--min-peers-percent", "40"}, io.Discard, &errb) == 0 ||
		!strings.Contains(errb.String(), "below 50") {
		t.Fatalf("min peers 40 accepted: %s", errb.String())
	}
	// Admitting twice is refused.
	errb.Reset()
	if Main(context.Background(), []string{"federation", "admit", "--dir", fed, "--peer", m[1], "--name", "Again"}, io.Discard, &errb) == 0 {
		t.Fatal("second admission accepted")
	}
	// A node with no admission is refused with a clear error.
	other := filepath.Join(root, "other")
	run(t, "node", "init", "--data", other)
	errb.Reset()
	if Main(context.Background(), []string{"node", "--data", other, "--federation", bundle, "--http", "127.0.0.1:0"}, io.Discard, &errb) == 0 ||
		!strings.Contains(errb.String(), "not an admitted venue") {
		t.Fatalf("unadmitted node: %s", errb.String())
	}
	addr := freeAddr(t)
	runBackground(t, "node", "--data", data, "--federation", bundle, "--http", addr, "--log-level", "error")
	deadline := time.Now().Add(20 * time.Second)
	for {
		var errb bytes.Buffer
		var out bytes.Buffer
		if Main(context.Background(), []string{"status", "--api", addr}, &out, &errb) == 0 {
			if !strings.Contains(out.String(), "venue Le Test") {
				t.Fatal(out.String())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node never answered: %s", errb.String())
		}
		time.Sleep(50 * time.Millisecond) // polling for the node to listen
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// demoJSON starts a demo with --json in dir and returns its venues.
func demoJSON(t *testing.T, dir string, venues int) ([]demoVenueJSON, func()) {
	t.Helper()
	sc, stop := runBackground(t, "demo", "--venues", fmt.Sprint(venues), "--data", dir, "--json", "--log-level", "error")
	if !sc.Scan() {
		t.Fatal("demo printed nothing")
	}
	var out struct{ Venues []demoVenueJSON }
	if err := json.Unmarshal(sc.Bytes(), &out); err != nil {
		t.Fatalf("not JSON: %q: %v", sc.Text(), err)
	}
	go io.Copy(io.Discard, pipeReader(sc))
	return out.Venues, stop
}

// pipeReader drains what remains after the scanner (nothing is expected).
func pipeReader(sc *bufio.Scanner) io.Reader {
	return readerFunc(func(p []byte) (int, error) {
		if sc.Scan() {
			return copy(p, sc.Bytes()), nil
		}
		return 0, io.EOF
	})
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// runShell runs script with sh, as a user pasting it would, and returns the
// JSON objects it printed. It fails the test on any error answer.
func runShell(t *testing.T, script string) []map[string]any {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not on PATH: the pasted commands cannot run")
	}
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("sh is not on PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "sh", "-e", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s\noutput: %s", err, script, out)
	}
	var objs []map[string]any
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var o map[string]any
		if err := dec.Decode(&o); err != nil {
			t.Fatalf("output is not JSON answers: %v\n%s", err, out)
		}
		if o["error"] != nil {
			t.Fatalf("an answer is an error: %v\nscript:\n%s", o, script)
		}
		objs = append(objs, o)
	}
	return objs
}

// readmeDemoBlock returns the shell block of the README's "The demo"
// section.
func readmeDemoBlock(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n## The demo\n")
	if !ok {
		t.Fatal(`README.md has no "## The demo" section`)
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	_, block, ok := strings.Cut(sec, "```sh\n")
	if !ok {
		t.Fatal("no ```sh block in the README's demo section")
	}
	block, _, _ = strings.Cut(block, "```")
	return block
}

// TestReadmeCurl pastes the README's demo commands into a shell against a
// running demo, with the token and address the demo printed in place of
// the README's placeholders.
func TestReadmeCurl(t *testing.T) {
	block := readmeDemoBlock(t)
	if strings.Count(block, "curl ") < 3 {
		t.Fatalf("the README's demo block has fewer curl commands than expected:\n%s", block)
	}
	vs, _ := demoJSON(t, t.TempDir(), 1)
	var lines []string
	set := map[string]bool{}
	for _, l := range strings.Split(block, "\n") {
		switch {
		case strings.HasPrefix(l, "TOKEN="):
			l, set["TOKEN"] = "TOKEN="+vs[0].Token, true
		case strings.HasPrefix(l, "API="):
			l, set["API"] = "API="+vs[0].API, true
		}
		lines = append(lines, l)
	}
	if !set["TOKEN"] || !set["API"] {
		t.Fatalf("the README's demo block no longer sets TOKEN= and API=:\n%s", block)
	}
	objs := runShell(t, strings.Join(lines, "\n"))
	if len(objs) != 3 || objs[0]["balance_cents"] != 1650.0 || objs[1]["balance_cents"] != 1650.0 || objs[2]["token"] == nil {
		t.Fatalf("answers: %v", objs)
	}
	// The holder token the last command printed opens the card's view.
	var h map[string]any
	getJSON(t, vs[0].API+"/api/v1/holder/"+objs[2]["token"].(string), &h)
	if h["card"] != "04A1B2C3D4E5F6" {
		t.Fatalf("holder view: %v", h)
	}
}

// TestDemoPrintedCommands pastes the commands the demo prints.
func TestDemoPrintedCommands(t *testing.T) {
	sc, _ := runBackground(t, "demo", "--venues", "1", "--data", t.TempDir(), "--log-level", "error")
	var script []string
	in := false
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "Demo card ") {
			in = true
			continue
		}
		if in {
			cmd, ok := strings.CutPrefix(l, "  ")
			if !ok {
				break
			}
			script = append(script, cmd)
		}
	}
	go io.Copy(io.Discard, pipeReader(sc))
	if len(script) != 5 {
		t.Fatalf("the demo printed %d command lines: %q", len(script), script)
	}
	objs := runShell(t, strings.Join(script, "\n"))
	if len(objs) != 3 || objs[0]["balance_cents"] != 1650.0 || objs[1]["balance_cents"] != 1650.0 || objs[2]["balance_cents"] != 1650.0 {
		t.Fatalf("answers: %v", objs)
	}
}

// TestDemoKeepsPorts: a kept demo comes back on the same API ports, and a
// port taken meanwhile is reported clearly.
func TestDemoKeepsPorts(t *testing.T) {
	dir := t.TempDir()
	first, stop := demoJSON(t, dir, 2)
	stop()
	second, stop := demoJSON(t, dir, 2)
	for i := range first {
		if first[i].API != second[i].API || first[i].Token != second[i].Token {
			t.Fatalf("venue %d: %s then %s", i, first[i].API, second[i].API)
		}
	}
	stop()
	// Another program takes the second venue's port.
	l, err := net.Listen("tcp", strings.TrimPrefix(second[1].API, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if code := Main(ctx, []string{"demo", "--venues", "2", "--data", dir, "--json", "--log-level", "error"}, io.Discard, &errb); code == 0 ||
		!strings.Contains(errb.String(), "already in use") || !strings.Contains(errb.String(), "demo-ports.json") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}

// TestNodeNeedsInit: a node started from a missing or uninitialised data
// directory says to run node init first, and exits non-zero.
func TestNodeNeedsInit(t *testing.T) {
	root := t.TempDir()
	empty := filepath.Join(root, "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	inited := filepath.Join(root, "inited")
	run(t, "node", "init", "--data", inited)
	cases := []struct{ name, dir, want string }{
		{"missing", filepath.Join(root, "nope"), "run `cagnotte node init --data " + filepath.Join(root, "nope") + "` first"},
		{"empty", empty, "run `cagnotte node init --data " + empty + "` first"},
		{"no bundle", inited, "start the node once with --federation FILE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var errb bytes.Buffer
			if code := Main(context.Background(), []string{"node", "--data", tc.dir, "--http", "127.0.0.1:0"}, io.Discard, &errb); code == 0 || !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			if tc.name != "no bundle" {
				if _, err := os.Stat(filepath.Join(tc.dir, "node.key")); err == nil {
					t.Fatal("a key was created in a directory node init did not make")
				}
			}
		})
	}
}

// TestStatusNoNode: status against an address where no node listens says
// so, and exits non-zero.
func TestStatusNoNode(t *testing.T) {
	var errb bytes.Buffer
	addr := freeAddr(t)
	if code := Main(context.Background(), []string{"status", "--api", addr}, io.Discard, &errb); code == 0 || !strings.Contains(errb.String(), "no node answers at http://"+addr) {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}
