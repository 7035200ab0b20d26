// Package stripetest starts stripe-mock (github.com/stripe/stripe-mock,
// Stripe's API served from its OpenAPI spec and fixtures) on a free
// loopback port for tests. .ci/run installs it; elsewhere a test skips
// when it is not installed, and fails when CI=true.
package stripetest

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Install is the command that installs the stripe-mock the tests use (as
// in .ci/run).
const Install = "go install github.com/stripe/stripe-mock@v0.203.0"

// binary finds stripe-mock on PATH or in GOBIN / GOPATH/bin.
func binary() string {
	if p, err := exec.LookPath("stripe-mock"); err == nil {
		return p
	}
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if d := os.Getenv("GOPATH"); d != "" {
		dirs = append(dirs, filepath.Join(d, "bin"))
	}
	if h, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(h, "go", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "stripe-mock")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return ""
}

// Start runs stripe-mock on 127.0.0.1 (a port the system picks) until the
// test ends, and returns its base URL.
func Start(t testing.TB) string {
	t.Helper()
	bin := binary()
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("stripe-mock is not installed; .ci/run installs it (%s)", Install)
		}
		t.Skipf("stripe-mock is not installed: %s", Install)
	}
	ctx, cancel := context.WithCancel(context.Background())
	// HTTPS too on a free loopback port: by default it takes :12112 on
	// every interface, and two tests would collide.
	cmd := exec.CommandContext(ctx, bin, "-http-addr", "127.0.0.1:", "-https-addr", "127.0.0.1:")
	out, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("stripe-mock: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "Listening for HTTP at address: "); ok {
				addr <- strings.TrimSpace(a)
			}
		}
	}()
	var base string
	select {
	case a := <-addr:
		host, port, err := net.SplitHostPort(a)
		if err != nil || port == "" {
			t.Fatalf("stripe-mock address %q", a)
		}
		if host == "" || host == "::" {
			host = "127.0.0.1"
		}
		base = "http://" + net.JoinHostPort(host, port)
	case <-time.After(30 * time.Second):
		t.Fatal("stripe-mock did not start within 30 s")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, _ := http.NewRequest("GET", base+"/v1/balance", nil)
		req.SetBasicAuth("sk_test_mock", "")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("stripe-mock at %s does not answer: %v", base, err)
		}
		time.Sleep(20 * time.Millisecond) // polling for readiness with a deadline
	}
}
