package node

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testVenue is a venue node set up in a temp dir: federation, key, token.
type testVenue struct {
	t     testing.TB
	dir   string
	token string
	node  *Node
	api   string
	now   func() time.Time // nil: the wall clock
}

func quietLogger() *slog.Logger {
	if os.Getenv("CAGNOTTE_TEST_LOG") != "" { // debugging a test: see the nodes' logs
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newTestVenue prepares a one-venue federation and starts its node.
func newTestVenue(t testing.TB) *testVenue {
	t.Helper()
	root := t.TempDir()
	vs, err := PrepareDemo(root, 1)
	if err != nil {
		t.Fatal(err)
	}
	v := &testVenue{t: t, dir: vs[0].Dir, token: vs[0].Token}
	v.start()
	t.Cleanup(func() { v.stop() })
	return v
}

func (v *testVenue) start() {
	v.t.Helper()
	n, err := New(Config{DataDir: v.dir, HTTPAddr: "127.0.0.1:0", Logger: quietLogger(), Now: v.now})
	if err != nil {
		v.t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		v.t.Fatal(err)
	}
	v.node, v.api = n, "http://"+n.Addr()
}

func (v *testVenue) stop() {
	if v.node != nil {
		if err := v.node.Close(); err != nil {
			v.t.Error(err)
		}
		v.node = nil
	}
}

func (v *testVenue) restart() {
	v.stop()
	v.start()
}

// do sends a request and decodes the JSON answer into a map (or slice).
func (v *testVenue) do(method, path, token string, body any) (int, map[string]any) {
	v.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewReader([]byte(b))
	case []byte:
		rd = bytes.NewReader(b)
	default:
		p, _ := json.Marshal(b)
		rd = bytes.NewReader(p)
	}
	req, err := http.NewRequest(method, v.api+path, rd)
	if err != nil {
		v.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		v.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &out); err != nil {
			v.t.Fatalf("%s %s: bad JSON %q: %v", method, path, raw, err)
		}
	} else {
		out["raw"] = string(raw)
	}
	return resp.StatusCode, out
}

func (v *testVenue) post(path string, body any) (int, map[string]any) {
	return v.do("POST", path, v.token, body)
}

func (v *testVenue) digest() string {
	return v.node.Status().Digest
}

func dataPath(v *testVenue, name string) string { return filepath.Join(v.dir, name) }

// doRaw sends a request with the given Content-Type (none if empty) and raw
// body, and returns the status, the headers and the decoded JSON object.
func (v *testVenue) doRaw(method, path, token, contentType string, body []byte) (int, http.Header, map[string]any) {
	v.t.Helper()
	req, err := http.NewRequest(method, v.api+path, bytes.NewReader(body))
	if err != nil {
		v.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		v.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &out); err != nil {
			v.t.Fatalf("%s %s: bad JSON %q: %v", method, path, raw, err)
		}
	} else {
		out["raw"] = string(raw)
	}
	return resp.StatusCode, resp.Header, out
}
