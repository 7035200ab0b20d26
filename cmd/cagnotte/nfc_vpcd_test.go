//go:build cgo

package main

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/nfc"
	"github.com/cagnotte/cagnotte/nfc/vpcd"
)

// The installer's first commands, against pcscd with the vpcd reader and
// an emulated NTAG215: readers, format, read.
func TestNFCCommandsThroughPCSC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := vpcd.Start(ctx)
	if errors.Is(err, vpcd.ErrUnavailable) && os.Getenv("CI") == "" {
		t.Skipf("the PC/SC stack is not available here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	out, errs, code := runMain(t, "nfc", "readers")
	if code != 0 || !strings.Contains(out, d.Reader) {
		t.Fatalf("readers: %d %s %s", code, out, errs)
	}
	tag, _ := nfc.NewSimTag("04A1B2C3D4E5F6", nfc.NTAG215)
	card, err := vpcd.Insert(ctx, d.Addr, tag)
	if err != nil {
		t.Fatal(err)
	}
	defer card.Remove()
	const link = "https://bar.example.org/c/AQcEobLD1OX2"
	if out, errs, code := runMain(t, "nfc", "format", "--reader", d.Reader, "--link", link, "--timeout", "15s"); code != 0 {
		t.Fatalf("format: %s %s", out, errs)
	}
	out, errs, code = runMain(t, "nfc", "read", "--reader", d.Reader, "--timeout", "15s")
	for _, want := range []string{"UID:    04A1B2C3D4E5F6", "type:   NTAG215", "link:   " + link} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("read: missing %q in\n%s%s", want, out, errs)
		}
	}
}
