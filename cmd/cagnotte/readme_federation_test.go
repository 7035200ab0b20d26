package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/node"
)

// The README's "Setting up a real federation", run through the binary as
// written: its commands are read from the README's shell blocks, and only
// the placeholders (paths, peer ids, addresses, names) are replaced.

// rfReadmeCommands returns the `cagnotte ...` commands of the README's
// "Setting up a real federation" section, by their first words
// ("federation init", "node init", "federation admit", "node", "status",
// "federation show", "federation revoke"), each split into arguments.
func rfReadmeCommands(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n## Setting up a real federation\n")
	if !ok {
		t.Fatal(`README.md has no "## Setting up a real federation" section`)
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	cmds := map[string][]string{}
	for _, block := range strings.Split(sec, "```sh\n")[1:] {
		block, _, _ = strings.Cut(block, "```")
		block = strings.ReplaceAll(block, "\\\n", " ")
		for _, line := range strings.Split(block, "\n") {
			args := rfSplit(t, line)
			if len(args) < 2 || args[0] != "cagnotte" {
				continue
			}
			args = args[1:]
			key := args[0]
			if args[0] == "federation" || (args[0] == "node" && args[1] == "init") {
				key += " " + args[1]
			}
			cmds[key] = args
		}
	}
	for _, k := range []string{"federation init", "node init", "federation admit", "node", "status", "federation show", "federation revoke"} {
		if cmds[k] == nil {
			t.Fatalf("the README's federation section has no `cagnotte %s` command", k)
		}
	}
	return cmds
}

// rfSplit splits a shell command line as sh would for these simple
// commands: blanks separate words, double and single quotes group, # starts
// a comment.
func rfSplit(t *testing.T, line string) []string {
	var out []string
	var cur strings.Builder
	quote, word := rune(0), false
	for _, r := range line {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote, word = r, true
		case r == '#' && !word:
			if cur.Len() > 0 {
				out = append(out, cur.String())
			}
			return out
		case r == ' ' || r == '\t':
			if word {
				out = append(out, cur.String())
				cur.Reset()
				word = false
			}
		default:
			cur.WriteRune(r)
			word = true
		}
	}
	if quote != 0 {
		t.Fatalf("unbalanced quote in the README: %s", line)
	}
	if word {
		out = append(out, cur.String())
	}
	return out
}

// rfSubst replaces the README's placeholders in args: whole words in
// words, and the peer id placeholder "12D3KooW..." inside words by peer.
func rfSubst(args []string, words map[string]string, peer string) []string {
	out := make([]string, 0, len(args))
	for _, a := range args {
		if w, ok := words[a]; ok {
			a = w
		}
		if peer != "" {
			a = strings.ReplaceAll(a, "12D3KooW...", peer)
		}
		out = append(out, a)
	}
	return out
}

// rfDropFlag removes a flag and its value.
func rfDropFlag(args []string, flag string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == flag {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// rfBuild builds the cagnotte binary into a temp dir.
func rfBuild(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cagnotte")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// rfRun runs the binary in dir and returns stdout, failing the test unless
// it exits 0.
func rfRun(t *testing.T, bin, dir string, args ...string) string {
	t.Helper()
	out, errb, err := rfTry(bin, dir, args...)
	if err != nil {
		t.Fatalf("cagnotte %s: %v\n%s%s", strings.Join(args, " "), err, out, errb)
	}
	return out
}

// rfTry runs the binary in dir and returns stdout, stderr and the error.
func rfTry(bin, dir string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// rfPort returns a free TCP port on loopback.
func rfPort(t *testing.T) int {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// rfProc is a running `cagnotte node`.
type rfProc struct {
	cmd  *exec.Cmd
	logs *rfBuffer
	done chan struct{}
}

type rfBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *rfBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *rfBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// rfStart starts the binary in the background; it is stopped (SIGINT,
// then killed after 10 s) at the end of the test.
func rfStart(t *testing.T, bin, dir string, args ...string) *rfProc {
	t.Helper()
	p := &rfProc{cmd: exec.Command(bin, args...), logs: &rfBuffer{}, done: make(chan struct{})}
	p.cmd.Dir, p.cmd.Stdout, p.cmd.Stderr = dir, p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

func (p *rfProc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Errorf("%v did not stop on SIGINT; killed", p.cmd.Args)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// rfStatus reads a node's sync status, or returns nil if it does not answer.
func rfStatus(api string) *node.SyncStatus {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + api + "/api/v1/sync/status")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var s node.SyncStatus
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&s) != nil {
		return nil
	}
	return &s
}

// rfWait polls cond every 100 ms until it holds, or fails the test after
// timeout with what describe says.
func rfWait(t *testing.T, timeout time.Duration, what string, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s\n%s", timeout, what, describe())
		}
		<-tick.C
	}
}

// TestReadmeFederationFourVenues runs the README's federation setup through
// the binary, in order, as written: the maintainers create the
// federation; four venues, one after another, run `node init`, are
// admitted with `federation admit --out`, and start `cagnotte node` with
// only their own bundle, bootstrapping from the first venue. They form one
// network: every venue knows the four, all hold the same ops, nobody is
// isolated, `cagnotte status` says so. Then `federation show` lists them,
// `federation revoke` refuses to guess the cut-off, takes it from a running
// node with --node-api, refuses a second revocation, and the revocation
// spreads from the venue restarted with the chain: the others drop the
// revoked node, which learns it and refuses writes.
func TestReadmeFederationFourVenues(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs four nodes")
	}
	cmds := rfReadmeCommands(t)
	bin := rfBuild(t)
	root := t.TempDir()
	start := time.Now()

	if out := rfRun(t, bin, root, cmds["federation init"]...); !strings.Contains(out, "federation key:") {
		t.Fatalf("federation init: %s", out)
	}
	names := []string{"La Guinguette", "Le Local", "Café des Arts", "La Friche"}
	type venue struct {
		name, data, peer, api, p2p, bundle string
		proc                               *rfProc
	}
	venues := make([]*venue, len(names))
	describe := func() string {
		var b strings.Builder
		for _, v := range venues {
			if v == nil || v.proc == nil {
				continue
			}
			s, _ := json.MarshalIndent(rfStatus(v.api), "", " ")
			fmt.Fprintf(&b, "--- %s (%s): status %s\nlogs:\n%s\n", v.name, v.peer, s, v.proc.logs.String())
		}
		return b.String()
	}
	for i, name := range names {
		v := &venue{name: name, data: filepath.Join(root, fmt.Sprintf("venue-%d", i+1)), bundle: fmt.Sprintf("venue-%d.ops", i+1)}
		venues[i] = v
		words := map[string]string{"/var/lib/cagnotte": v.data}
		out := rfRun(t, bin, root, rfSubst(cmds["node init"], words, "")...)
		m := regexp.MustCompile(`peer id: (\S+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("node init printed no peer id: %s", out)
		}
		v.peer = m[1]
		words["La Guinguette"], words["guinguette.ops"] = name, v.bundle
		rfRun(t, bin, root, rfSubst(cmds["federation admit"], words, v.peer)...)

		p2pPort, httpPort := rfPort(t), rfPort(t)
		v.api = fmt.Sprintf("127.0.0.1:%d", httpPort)
		v.p2p = fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", p2pPort)
		words["0.0.0.0:8080"], words["/ip4/0.0.0.0/tcp/4001"] = v.api, v.p2p
		args := cmds["node"]
		if i == 0 {
			args = rfDropFlag(args, "--bootstrap") // the first venue has no other venue to bootstrap from
		} else {
			words["/ip4/203.0.113.7/tcp/4001/p2p/12D3KooW..."] = venues[0].p2p + "/p2p/" + venues[0].peer
		}
		v.proc = rfStart(t, bin, root, rfSubst(args, words, "")...)
		rfWait(t, 20*time.Second, name+"'s node to answer", func() bool { return rfStatus(v.api) != nil }, describe)
	}

	oneNetwork := func() bool {
		var digest string
		for _, v := range venues {
			s := rfStatus(v.api)
			if s == nil || s.Isolated || s.Revoked {
				return false
			}
			known, connected := 0, 0
			for _, a := range s.Authors {
				if a.Role == "venue" && !a.Revoked {
					known++
				}
			}
			for _, p := range s.Peers {
				if p.Connected {
					connected++
				}
			}
			if known != len(venues) || connected != len(venues)-1 || (digest != "" && s.Digest != digest) {
				return false
			}
			digest = s.Digest
		}
		return true
	}
	rfWait(t, 30*time.Second, "one network of four venues, same digest, nobody isolated", oneNetwork, describe)
	t.Logf("four venues in one network %s after the first command", time.Since(start).Round(time.Millisecond))
	for _, v := range venues {
		words := map[string]string{"127.0.0.1:8080": v.api}
		out := rfRun(t, bin, root, rfSubst(cmds["status"], words, "")...)
		if !strings.Contains(out, v.name) || !strings.Contains(out, ": in sync") {
			t.Fatalf("cagnotte status of %s:\n%s", v.name, out)
		}
		if v == venues[0] {
			t.Logf("cagnotte status:\n%s", out)
		}
	}

	// federation show: a table, and JSON.
	out := rfRun(t, bin, root, cmds["federation show"]...)
	t.Logf("cagnotte federation show:\n%s", out)
	for _, v := range venues {
		if !regexp.MustCompile(regexp.QuoteMeta(v.name) + `\s+` + v.peer + `\s+.*member`).MatchString(out) {
			t.Fatalf("federation show lacks %s:\n%s", v.name, out)
		}
	}

	// Revoke the last venue: no guess without --after-seq or --node-api.
	lost := venues[3]
	rev := rfDropFlag(rfSubst(cmds["federation revoke"], map[string]string{"127.0.0.1:8080": venues[0].api}, lost.peer), "--node-api")
	if _, errOut, err := rfTry(bin, root, rev...); err == nil || !strings.Contains(errOut, "--after-seq") {
		t.Fatalf("revoke without a cut-off: err %v, stderr %s", err, errOut)
	}
	// Let the lost venue make an op, and wait until the first venue holds it.
	tok, err := node.ReadTokens(filepath.Join(lost.data, node.TokensFile))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", "http://"+lost.api+"/api/v1/topups", strings.NewReader(`{"card":"04A1B2C3D4E5F6","amount_cents":500,"method":"cash","idempotency_key":"rf-1"}`))
	req.Header.Set("Authorization", "Bearer "+tok[0])
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("top-up at the venue to revoke: %v %v", resp, err)
	}
	rfWait(t, 10*time.Second, "the top-up at the first venue", oneNetwork, describe)
	out = rfRun(t, bin, root, rfSubst(cmds["federation revoke"], map[string]string{"127.0.0.1:8080": venues[0].api}, lost.peer)...)
	if !strings.Contains(out, "ops up to 1") || !strings.Contains(out, "revoked after its op 1") {
		t.Fatalf("revoke with --node-api:\n%s", out)
	}
	if _, errOut, err := rfTry(bin, root, rev...); err == nil || !strings.Contains(errOut, "already revoked") {
		t.Fatalf("second revocation: err %v, stderr %s", err, errOut)
	}
	var shown struct {
		Venues []node.FederationVenue `json:"venues"`
	}
	if err := json.Unmarshal([]byte(rfRun(t, bin, root, append(cmds["federation show"], "--json")...)), &shown); err != nil {
		t.Fatal(err)
	}
	if len(shown.Venues) != 4 || !shown.Venues[3].Revoked || shown.Venues[3].RevokedAfter != 1 || shown.Venues[3].PeerID != lost.peer {
		t.Fatalf("federation show --json: %+v", shown.Venues)
	}

	// The first venue restarts with the chain; the revocation spreads.
	first := venues[0]
	first.proc.stop(t)
	args := rfDropFlag(cmds["node"], "--bootstrap")
	first.proc = rfStart(t, bin, root, rfSubst(args, map[string]string{
		"/var/lib/cagnotte": first.data, "guinguette.ops": filepath.Join("fed", node.FederationChainFile),
		"0.0.0.0:8080": first.api, "/ip4/0.0.0.0/tcp/4001": first.p2p,
	}, "")...)
	rfWait(t, 30*time.Second, "the revocation everywhere, the revoked node out and aware", func() bool {
		for _, v := range venues[:3] {
			s := rfStatus(v.api)
			if s == nil {
				return false
			}
			for _, a := range s.Authors {
				if a.PeerID == lost.peer && !a.Revoked {
					return false
				}
			}
			for _, p := range s.Peers {
				if p.ID == lost.peer && p.Connected {
					return false
				}
			}
		}
		s := rfStatus(lost.api)
		return s != nil && s.Revoked && s.RevokedAfter == 1
	}, describe)
	out = rfRun(t, bin, root, rfSubst(cmds["status"], map[string]string{"127.0.0.1:8080": lost.api}, "")...)
	if !strings.Contains(out, "REVOKED") {
		t.Fatalf("status of the revoked venue:\n%s", out)
	}
	t.Logf("status of the revoked venue:\n%s", out)
	t.Logf("done in %s", time.Since(start).Round(time.Millisecond))
}

// rfMain runs Main in-process and returns its exit code, stdout and stderr.
func rfMain(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestFederationRevokeCutOff: `federation revoke` never guesses the
// cut-off: without --after-seq it asks the node named by --node-api, and
// refuses when there is none, when the node holds no op of the venue, or
// when the venue is revoked already.
func TestFederationRevokeCutOff(t *testing.T) {
	root := t.TempDir()
	vs, err := node.PrepareDemo(root, 3)
	if err != nil {
		t.Fatal(err)
	}
	fed := filepath.Join(root, "federation")
	n, err := node.New(node.Config{DataDir: vs[0].Dir, HTTPAddr: "127.0.0.1:0", Logger: rfQuietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	for i := range 2 { // two ops of venue 0
		req, _ := http.NewRequest("POST", "http://"+n.Addr()+"/api/v1/topups", strings.NewReader(fmt.Sprintf(`{"card":"04A1B2C3D4E5F6","amount_cents":100,"method":"cash","idempotency_key":"k%d"}`, i)))
		req.Header.Set("Authorization", "Bearer "+vs[0].Token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("top-up: %v %v", resp, err)
		}
		resp.Body.Close()
	}
	peer := func(i int) string {
		out := rfRun0(t, "node", "init", "--data", vs[i].Dir)
		return regexp.MustCompile(`peer id: (\S+)`).FindStringSubmatch(out)[1]
	}
	p0, p1, p2 := peer(0), peer(1), peer(2)
	cases := []struct {
		name    string
		args    []string
		ok      bool
		outputs string // in stdout (ok) or stderr
	}{
		{"no cut-off and no node", []string{"--peer", p0}, false, "--after-seq or --node-api is required"},
		{"node unreachable", []string{"--peer", p0, "--node-api", "127.0.0.1:1"}, false, "ask 127.0.0.1:1"},
		{"node holds no op of the venue", []string{"--peer", p1, "--node-api", n.Addr()}, false, "holds no op"},
		{"cut-off from the node", []string{"--peer", p0, "--node-api", n.Addr(), "--reason", "lost"}, true, "revoked after its op 2"},
		{"already revoked", []string{"--peer", p0, "--after-seq", "5"}, false, "already revoked"},
		{"explicit after-seq 0", []string{"--peer", p2, "--after-seq", "0"}, true, "revoked after its op 0"},
		{"not a peer id", []string{"--peer", "nope", "--after-seq", "1"}, false, "not a peer id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := rfMain(append([]string{"federation", "revoke", "--dir", fed}, tc.args...)...)
			if (code == 0) != tc.ok {
				t.Fatalf("exit %d, want ok=%v\nstdout: %s\nstderr: %s", code, tc.ok, out, errOut)
			}
			if !strings.Contains(out+errOut, tc.outputs) {
				t.Fatalf("output lacks %q\nstdout: %s\nstderr: %s", tc.outputs, out, errOut)
			}
		})
	}
	f, err := node.OpenFederation(fed, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v := f.State().Venues[vs[0].Key]; !v.Revoked || v.RevokedAfter != 2 {
		t.Fatalf("venue 0 after the revocations: %+v", v)
	}
}

// TestFederationShow: `federation show` prints a table of the venues
// (name, peer id, admitted, state) and `--json` the same as JSON.
func TestFederationShow(t *testing.T) {
	root := t.TempDir()
	vs, err := node.PrepareDemo(root, 2)
	if err != nil {
		t.Fatal(err)
	}
	fed := filepath.Join(root, "federation")
	ids := make([]string, len(vs))
	for i := range vs {
		out := rfRun0(t, "node", "init", "--data", vs[i].Dir)
		ids[i] = regexp.MustCompile(`peer id: (\S+)`).FindStringSubmatch(out)[1]
	}
	rfRun0(t, "federation", "revoke", "--dir", fed, "--peer", ids[1], "--after-seq", "3", "--reason", "lost")
	out := rfRun0(t, "federation", "show", "--dir", fed)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	header := regexp.MustCompile(`^VENUE\s+PEER ID\s+ADMITTED\s+STATE$`)
	i := 0
	for i < len(lines) && !header.MatchString(lines[i]) {
		i++
	}
	if i == len(lines) {
		t.Fatalf("no venue table:\n%s", out)
	}
	rows := lines[i+1:]
	if len(rows) != 2 ||
		!regexp.MustCompile(`^`+regexp.QuoteMeta(vs[0].Name)+`\s+`+ids[0]+`\s+\d{4}-\d\d-\d\d \d\d:\d\d UTC \(op 2\)\s+member$`).MatchString(rows[0]) ||
		!regexp.MustCompile(`^`+regexp.QuoteMeta(vs[1].Name)+`\s+`+ids[1]+`\s+.*\(op 3\)\s+revoked after op 3 \(lost\)$`).MatchString(rows[1]) {
		t.Fatalf("venue table:\n%s", out)
	}
	var js struct {
		Name   string                 `json:"name"`
		Key    string                 `json:"key"`
		Venues []node.FederationVenue `json:"venues"`
	}
	if err := json.Unmarshal([]byte(rfRun0(t, "federation", "show", "--dir", fed, "--json")), &js); err != nil {
		t.Fatal(err)
	}
	if js.Name != "Demo federation" || len(js.Key) != 64 || len(js.Venues) != 2 || js.Venues[0].PeerID != ids[0] || js.Venues[0].Revoked ||
		!js.Venues[1].Revoked || js.Venues[1].RevokedAfter != 3 || js.Venues[1].AdmittedSeq != 3 {
		t.Fatalf("federation show --json: %+v", js)
	}
}

// rfRun0 runs Main in-process and fails the test unless it exits 0.
func rfRun0(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := rfMain(args...)
	if code != 0 {
		t.Fatalf("%v: exit %d: %s", args, code, errOut)
	}
	return out
}

func rfQuietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
