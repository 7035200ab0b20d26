//go:build cgo

package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/nfc"
	"github.com/cagnotte/cagnotte/nfc/vpcd"
)

// vpcdVenue starts pcscd with the vpcd reader (or skips, outside CI, when
// this machine cannot), a node whose reader is nfc's PC/SC reader on it,
// and inserts an emulated NTAG215 holding 20.00.
func vpcdVenue(t testing.TB) (*testVenue, *vpcd.Daemon, *nfc.SimTag) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := vpcd.Start(ctx)
	if errors.Is(err, vpcd.ErrUnavailable) && os.Getenv("CI") == "" {
		t.Skipf("the PC/SC stack is not available here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	r, err := nfc.OpenPCSC(nfc.PCSCConfig{Reader: d.Reader, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	v := newTapVenue(t, r)
	v.topUp(tapCard, 2000)
	tag, _ := nfc.NewSimTag(tapCard, nfc.NTAG215)
	card, err := vpcd.Insert(ctx, d.Addr, tag)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(card.Remove)
	return v, d, tag
}

// The card emulator behind pcscd drives a tap on a running node and a
// payment end to end: the tap carries the UID and type read through PC/SC,
// the payment's stamp is written back onto the emulated card and read back.
func TestTapThroughPCSCPaysEndToEnd(t *testing.T) {
	v, _, tag := vpcdVenue(t)
	tap := v.waitTap(true)
	if tap["card"] != tapCard || tap["card_type"] != "NTAG215" {
		t.Fatalf("tap %v", tap)
	}
	pay, st, wb := v.payTap(tap, 350, "vpcd-1")
	if st != http.StatusOK || wb["written"] != true {
		t.Fatalf("stamp write: %d %v", st, wb)
	}
	// The emulated card's memory holds the stamp (read without PC/SC).
	sr := nfc.NewSimReader("check")
	sr.Present(tag)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := sr.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := nfc.ReadStamp(ctx, c)
	if err != nil || string(got) != string(b64(t, pay["stamp"])) {
		t.Fatalf("stamp on the emulated card: %v", err)
	}
}

// tapToApproved measures n rounds of the point of sale's path through the
// vpcd reader: read the card's stamp (PC/SC), pay through the HTTP API with
// it, write the answered stamp (PC/SC), read it back and verify it.
func tapToApproved(t testing.TB, v *testVenue, n int) (total, payment []time.Duration) {
	t.Helper()
	tap := v.waitTap(true) // the card is on the reader
	tap["stamp"] = nil
	ctx := context.Background()
	pc := v.node.findPresent(tapCard)
	if pc == nil {
		t.Fatal("the card is not on the node's reader")
	}
	for i := range n {
		start := time.Now()
		pc.mu.Lock()
		stamp, err := nfc.ReadStamp(ctx, pc.card)
		pc.mu.Unlock()
		if err != nil && !errors.Is(err, nfc.ErrNoStamp) {
			t.Fatal(err)
		}
		if stamp != nil {
			tap["stamp"] = stamp
		}
		req := map[string]any{"card": tapCard, "amount_cents": 1, "idempotency_key": fmt.Sprintf("lat-%d-%d", time.Now().UnixNano(), i), "stamp": tap["stamp"]}
		p0 := time.Now()
		st, pay := v.post("/api/v1/payments", req)
		payment = append(payment, time.Since(p0))
		if st != http.StatusOK {
			t.Fatalf("round %d: payment %d %v", i, st, pay)
		}
		if st, wb := v.post("/api/v1/taps/stamp", map[string]any{"card": tapCard, "stamp": pay["stamp"]}); st != http.StatusOK {
			t.Fatalf("round %d: stamp write %d %v", i, st, wb)
		}
		total = append(total, time.Since(start))
	}
	return total, payment
}

func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func TestTapToApprovedLatencyThroughPCSC(t *testing.T) {
	v, _, _ := vpcdVenue(t)
	ds, pay := tapToApproved(t, v, 20)
	t.Logf("tap to approved through pcscd+vpcd, 20 rounds: p50 %v p99 %v (payment alone: p50 %v p99 %v)",
		quantile(ds, 0.5), quantile(ds, 0.99), quantile(pay, 0.5), quantile(pay, 0.99))
}

// BenchmarkTapToApproved: go test -run '^$' -bench TapToApproved -benchtime 200x ./node
func BenchmarkTapToApproved(b *testing.B) {
	v, _, _ := vpcdVenue(b)
	b.ResetTimer()
	ds, pay := tapToApproved(b, v, b.N)
	b.StopTimer()
	b.ReportMetric(float64(quantile(pay, 0.5).Microseconds())/1000, "pay_p50_ms")
	b.ReportMetric(float64(quantile(pay, 0.99).Microseconds())/1000, "pay_p99_ms")
	b.ReportMetric(float64(quantile(ds, 0.5).Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(quantile(ds, 0.99).Microseconds())/1000, "p99_ms")
	b.ReportMetric(float64(slices.Max(ds).Microseconds())/1000, "max_ms")
}
