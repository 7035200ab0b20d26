package node

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/nfc"
)

// newTapVenue starts a one-venue node with the given readers.
func newTapVenue(t testing.TB, readers ...nfc.Reader) *testVenue {
	t.Helper()
	vs, err := PrepareDemo(t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	v := &testVenue{t: t, dir: vs[0].Dir, token: vs[0].Token}
	n, err := New(Config{DataDir: v.dir, HTTPAddr: "127.0.0.1:0", Logger: quietLogger(), Readers: readers})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	v.node, v.api = n, "http://"+n.Addr()
	t.Cleanup(v.stop)
	return v
}

// topUp credits a card through the API.
func (v *testVenue) topUp(card string, cents int64) {
	v.t.Helper()
	st, body := v.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": cents, "method": "cash", "idempotency_key": "topup-" + card + fmt.Sprint(cents)})
	if st != http.StatusOK {
		v.t.Fatalf("top-up: %d %v", st, body)
	}
}

// waitTap waits for the next tap through POST /api/v1/taps/wait.
func (v *testVenue) waitTap(current bool) map[string]any {
	v.t.Helper()
	st, body := v.post("/api/v1/taps/wait", map[string]any{"timeout_ms": 8000, "current": current})
	if st != http.StatusOK {
		v.t.Fatalf("taps/wait: %d %v", st, body)
	}
	return body
}

// payTap pays amount with the tap's stamp and writes the answered stamp
// back: the point of sale's path from tap to approved. It returns the
// payment answer and the stamp write's status and body.
func (v *testVenue) payTap(tap map[string]any, amount int64, key string) (map[string]any, int, map[string]any) {
	v.t.Helper()
	req := map[string]any{"card": tap["card"], "amount_cents": amount, "idempotency_key": key}
	if s, ok := tap["stamp"].(string); ok {
		req["stamp"] = s
	}
	st, pay := v.post("/api/v1/payments", req)
	if st != http.StatusOK {
		v.t.Fatalf("payment: %d %v", st, pay)
	}
	wst, wb := v.post("/api/v1/taps/stamp", map[string]any{"card": tap["card"], "stamp": pay["stamp"]})
	return pay, wst, wb
}

func b64(t testing.TB, s any) []byte {
	t.Helper()
	str, _ := s.(string)
	b, err := base64.StdEncoding.DecodeString(str)
	if err != nil {
		t.Fatalf("base64 %q: %v", str, err)
	}
	return b
}

// eventually polls cond until it holds or 5 s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
