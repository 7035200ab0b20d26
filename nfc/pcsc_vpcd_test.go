//go:build cgo

package nfc_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/nfc"
	"github.com/cagnotte/cagnotte/nfc/vpcd"
)

// startVPCD starts (or finds) pcscd with the vpcd reader. Without it the
// test skips, except in CI, which installs it (.ci/run).
func startVPCD(t *testing.T, ctx context.Context) *vpcd.Daemon {
	t.Helper()
	d, err := vpcd.Start(ctx)
	if errors.Is(err, vpcd.ErrUnavailable) && os.Getenv("CI") == "" {
		t.Skipf("the PC/SC stack is not available here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	return d
}

func signer(t *testing.T) *crdt.Signer {
	t.Helper()
	s, err := crdt.SignerFromSeed(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func stampFor(t *testing.T, s *crdt.Signer, card crdt.CardID, counter uint64) []byte {
	t.Helper()
	st := crdt.CardStamp{Card: card, Counter: counter, Balance: int64(2000 - counter), Time: time.Now().Unix()}
	if err := s.SignStamp(&st); err != nil {
		t.Fatal(err)
	}
	return st.Encode()
}

func waitCard(t *testing.T, ctx context.Context, r nfc.Reader) nfc.Card {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := r.Wait(wctx)
	if err != nil {
		t.Fatalf("wait for the card on %s: %v", r.Name(), err)
	}
	return c
}

// TestPCSCThroughVPCD drives nfc's PC/SC reader through the real pcscd and
// vsmartcard's vpcd driver, with a Go NTAG215 emulator behind it: UID and
// type, format with the holder's link, stamps written and read back,
// wrong-page errors, a card pulled mid-write, removal, a pcscd restart.
func TestPCSCThroughVPCD(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	step := func(what string) { t.Logf("%6.2fs %s", time.Since(start).Seconds(), what) }
	d := startVPCD(t, ctx)
	step("pcscd")
	names, err := nfc.ListReaders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("readers: %q (pcscd started here: %v)", names, d.Started)
	r, err := nfc.OpenPCSC(nfc.PCSCConfig{Reader: d.Reader, Poll: 100 * time.Millisecond, Retry: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	tag, _ := nfc.NewSimTag("04A1B2C3D4E5F6", nfc.NTAG215)
	card, err := vpcd.Insert(ctx, d.Addr, tag)
	if err != nil {
		t.Fatal(err)
	}
	c := waitCard(t, ctx, r)
	step("first card")
	if c.UID() != "04A1B2C3D4E5F6" || c.Type() != nfc.NTAG215 {
		t.Fatalf("card %s %s", c.UID(), c.Type())
	}
	const link = "https://bar.example.org/c/AQcEobLD1OX2"
	if err := nfc.Format(ctx, c, link); err != nil {
		t.Fatal(err)
	}
	s := signer(t)
	st1 := stampFor(t, s, c.UID(), 1)
	if err := nfc.WriteStamp(ctx, c, st1); err != nil {
		t.Fatal(err)
	}
	data, err := nfc.ReadCard(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := data.Stamp()
	if data.URI != link || err != nil || !bytes.Equal(got, st1) {
		t.Fatalf("read back: uri %q stamp %v", data.URI, err)
	}

	step("format+stamp")
	// A page beyond the card: the status word comes back through pcscd.
	var se *nfc.StatusError
	if _, err := c.Read(ctx, 200, 1); !errors.As(err, &se) || se.SW != 0x6A82 {
		t.Fatalf("read page 200: %v", err)
	}

	// Pulled in the middle of the next stamp: the write fails, and the
	// card shows the first stamp when it comes back.
	tag.PullAfterWrites(10)
	if err := nfc.WriteStamp(ctx, c, stampFor(t, s, c.UID(), 2)); !errors.Is(err, nfc.ErrCardRemoved) {
		t.Fatalf("write while the card is pulled: %v", err)
	}
	step("pulled write")
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	if err := c.Removed(rctx); err != nil {
		t.Fatalf("removal not reported: %v", err)
	}
	rcancel()
	c.Close()
	step("removed")
	tag.PutBack()
	card, err = vpcd.Insert(ctx, d.Addr, tag)
	if err != nil {
		t.Fatal(err)
	}
	c = waitCard(t, ctx, r)
	step("second card")
	if got, err := nfc.ReadStamp(ctx, c); err != nil || !bytes.Equal(got, st1) {
		t.Fatalf("after the pulled write: %v", err)
	}
	st3 := stampFor(t, s, c.UID(), 3)
	if err := nfc.WriteStamp(ctx, c, st3); err != nil {
		t.Fatal(err)
	}
	card.Remove()
	c.Close()

	step("written, removed")
	if !d.Started {
		t.Log("pcscd was running already: its restart is not tested here")
		return
	}
	// pcscd restarts: the reader waits, and finds the card again.
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	step("restarted")
	var ins *vpcd.Card
	deadline := time.Now().Add(10 * time.Second)
	for ins == nil {
		ins, err = vpcd.Insert(ctx, d.Addr, tag)
		if err != nil && time.Now().After(deadline) {
			t.Fatalf("vpcd after the restart: %v", err)
		}
		if err != nil {
			<-time.After(50 * time.Millisecond)
		}
	}
	defer ins.Remove()
	c = waitCard(t, ctx, r)
	defer c.Close()
	if got, err := nfc.ReadStamp(ctx, c); err != nil || !bytes.Equal(got, st3) {
		t.Fatalf("after the pcscd restart: %v", err)
	}
}
