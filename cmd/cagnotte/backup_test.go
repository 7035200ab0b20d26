package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer safe for the node's concurrent logging.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type demoOut struct {
	Venues []struct {
		Name, API, Token, Data string
	} `json:"venues"`
}

// startDemo runs `cagnotte demo --json` with its logs in logs, and stops
// it at the end of the test (or when stop is called).
func startDemo(t *testing.T, logs io.Writer, args ...string) (demoOut, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, append([]string{"demo", "--json"}, args...), pw, logs)
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
					t.Errorf("demo exited %d", code)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("demo did not stop")
			}
		})
	}
	t.Cleanup(stop)
	sc := bufio.NewScanner(pr)
	sc.Buffer(nil, 1<<20)
	if !sc.Scan() {
		t.Fatal("demo printed nothing")
	}
	var out demoOut
	if err := json.Unmarshal(sc.Bytes(), &out); err != nil {
		t.Fatalf("demo output %q: %v", sc.Text(), err)
	}
	return out, stop
}

func call(t *testing.T, method, url, token, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestBackupAndRestoreCommands: `cagnotte backup` takes a backup of a
// running node through its API, `cagnotte restore` puts it in an empty data
// dir (and refuses a data dir in use).
func TestBackupAndRestoreCommands(t *testing.T) {
	out, stop := startDemo(t, io.Discard, "--venues", "1", "--data", t.TempDir(), "--log-level", "error")
	v := out.Venues[0]
	file := filepath.Join(t.TempDir(), "venue.backup")
	got := run(t, "backup", "--api", v.API, "--token-file", filepath.Join(v.Data, "staff-tokens"), "--out", file)
	if !strings.Contains(got, "written to "+file) {
		t.Fatalf("backup said %q", got)
	}
	var errb bytes.Buffer
	if code := Main(context.Background(), []string{"backup", "--api", v.API, "--token", "wrong", "--out", file + ".2"}, io.Discard, &errb); code == 0 || !strings.Contains(errb.String(), "401") {
		t.Fatalf("backup with a wrong token: exit %d, %s", code, errb.String())
	}
	if _, err := os.Stat(file + ".2"); err == nil {
		t.Fatal("a refused backup left a file")
	}
	stop()
	dir := filepath.Join(t.TempDir(), "restored")
	got = run(t, "restore", "--from", file, "--data", dir, "--key", filepath.Join(v.Data, "node.key"), "--tokens", filepath.Join(v.Data, "staff-tokens"))
	if !strings.Contains(got, "restored") {
		t.Fatalf("restore said %q", got)
	}
	for _, f := range []string{"node.key", "staff-tokens", "federation.ops", "store"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("restored data dir: %v", err)
		}
	}
	errb.Reset()
	if code := Main(context.Background(), []string{"restore", "--from", file, "--data", dir}, io.Discard, &errb); code == 0 || !strings.Contains(errb.String(), "empty") {
		t.Fatalf("restore over a store: exit %d, %s", code, errb.String())
	}
}

// TestVersionCommand: `cagnotte version` names the binary's version, Go
// and platform; -ldflags "-X main.version=..." sets the version.
func TestVersionCommand(t *testing.T) {
	got := run(t, "version")
	if !regexp.MustCompile(`^cagnotte \S+ .*go1\.\d+.* \w+/\w+\n$`).MatchString(got) {
		t.Fatalf("version: %q", got)
	}
	version = "v9.9.9-test"
	t.Cleanup(func() { version = "" })
	if got := run(t, "version"); !strings.HasPrefix(got, "cagnotte v9.9.9-test ") {
		t.Fatalf("version with -X main.version: %q", got)
	}
}

// secretForms lists how a secret may show up in a log line.
func secretForms(b []byte) []string {
	return []string{
		hex.EncodeToString(b), strings.ToUpper(hex.EncodeToString(b)),
		base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b),
	}
}

// TestNoSecretInDemoLogs runs the demo at debug level, uses it as a till,
// a thief and a card holder would (payments with the staff token, wrong
// tokens, holder token and page, a backup) and looks for every staff
// token, holder token and node key (seed and private key, in hex and
// base64) in its logs.
func TestNoSecretInDemoLogs(t *testing.T) {
	var logs lockedBuffer
	data := t.TempDir()
	out, stop := startDemo(t, &logs, "--venues", "2", "--data", data, "--log-level", "debug")
	v := out.Venues[0]
	card := "04A1B2C3D4E5F6"
	if st, b := call(t, "POST", v.API+"/api/v1/payments", v.Token, `{"card":"`+card+`","amount_cents":100,"idempotency_key":"nosecret-1"}`); st != 200 {
		t.Fatalf("payment: %d %s", st, b)
	}
	for range 3 {
		call(t, "POST", v.API+"/api/v1/payments", v.Token+"x", `{"card":"`+card+`","amount_cents":100,"idempotency_key":"nosecret-2"}`)
	}
	st, b := call(t, "POST", v.API+"/api/v1/cards/"+card+"/holder-token", v.Token, "")
	if st != 200 {
		t.Fatalf("holder token: %d %s", st, b)
	}
	var ht struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(b, &ht); err != nil || ht.Token == "" {
		t.Fatalf("holder token answer %s: %v", b, err)
	}
	call(t, "GET", v.API+"/api/v1/holder/"+ht.Token, "", "")
	call(t, "GET", v.API+"/c/"+ht.Token, "", "")
	call(t, "GET", v.API+"/api/v1/cards/"+card, ht.Token, "")
	call(t, "GET", v.API+"/api/v1/holder/"+ht.Token[:len(ht.Token)-2]+"AA", "", "")
	run(t, "backup", "--api", v.API, "--token", v.Token, "--out", filepath.Join(t.TempDir(), "b"))
	stop()

	text := logs.String()
	if !strings.Contains(text, "level=DEBUG") {
		t.Fatalf("no debug logs captured: %q", text)
	}
	secrets := map[string]string{"holder token": ht.Token}
	for _, v := range out.Venues {
		secrets[v.Name+" staff token"] = v.Token
		seedHex, err := os.ReadFile(filepath.Join(v.Data, "node.key"))
		if err != nil {
			t.Fatal(err)
		}
		seed, err := hex.DecodeString(strings.TrimSpace(string(seedHex)))
		if err != nil || len(seed) != ed25519.SeedSize {
			t.Fatalf("node.key of %s: %v", v.Name, err)
		}
		for i, f := range append(secretForms(seed), secretForms(ed25519.NewKeyFromSeed(seed))...) {
			secrets[v.Name+" node key form "+string(rune('a'+i))] = f
		}
	}
	for what, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("the logs hold the %s", what)
		}
	}
}
