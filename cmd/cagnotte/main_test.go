package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
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
	stop := func() {
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
	if out := run(t, "federation", "show", "--dir", fed); !strings.Contains(out, "Le Test") || !strings.Contains(out, "OfflineCardMax:3000") {
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
