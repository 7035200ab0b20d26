package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/nfc"
	"github.com/cagnotte/cagnotte/node"
)

func runMain(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := Main(ctx, args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestNFCFormatAndReadSimulatedCard(t *testing.T) {
	file := filepath.Join(t.TempDir(), "card.json")
	const link = "https://bar.example.org/c/AQcEobLD1OX2"
	out, errs, code := runMain(t, "nfc", "format", "--sim", file, "--sim-type", "NTAG216", "--link", link)
	if code != 0 || !strings.Contains(out, "formatted with the link "+link) {
		t.Fatalf("format: %d %s %s", code, out, errs)
	}
	out, errs, code = runMain(t, "nfc", "read", "--sim", file)
	for _, want := range []string{"type:   NTAG216", "link:   " + link, "slot 0 ", "slot 1 ", "stamp:  none valid"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("read: %d, missing %q in\n%s%s", code, want, out, errs)
		}
	}
	if _, _, code := runMain(t, "nfc", "read", "--sim", file, "--sim-type", "bogus"); code != 0 {
		t.Fatal("an existing simulated card is read whatever --sim-type says")
	}
	if _, errs, code := runMain(t, "nfc", "format", "--sim", filepath.Join(t.TempDir(), "x.json"), "--sim-type", "bogus"); code == 0 || !strings.Contains(errs, "bogus") {
		t.Fatalf("bad type: %d %s", code, errs)
	}
}

// format --api asks the node for the card holder's token and writes the
// holder page's link; the link opens the card's view.
func TestNFCFormatLinksTheHolderPage(t *testing.T) {
	vs, err := node.PrepareDemo(t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.New(node.Config{DataDir: vs[0].Dir, HTTPAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	api := "http://" + n.Addr()
	file := filepath.Join(t.TempDir(), "card.json")
	tag, _ := nfc.NewSimTag("04A1B2C3D4E5F6", nfc.NTAG215)
	if err := tag.SaveTo(file); err != nil {
		t.Fatal(err)
	}
	// Unknown card: the node refuses a token.
	if _, errs, code := runMain(t, "nfc", "format", "--sim", file, "--api", api, "--token", vs[0].Token); code == 0 || !strings.Contains(errs, "holder token") {
		t.Fatalf("unknown card: %d %s", code, errs)
	}
	body, _ := json.Marshal(map[string]any{"card": "04A1B2C3D4E5F6", "amount_cents": 500, "method": "cash", "idempotency_key": "k"})
	req, _ := http.NewRequest("POST", api+"/api/v1/topups", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+vs[0].Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("top-up: %v %v", err, resp)
	}
	resp.Body.Close()
	out, errs, code := runMain(t, "nfc", "format", "--sim", file, "--api", api, "--token", vs[0].Token, "--base", "https://bar.example.org")
	if code != 0 {
		t.Fatalf("format: %s %s", out, errs)
	}
	i := strings.Index(out, "https://bar.example.org/c/")
	if i < 0 {
		t.Fatalf("no link in %s", out)
	}
	tok := strings.Fields(out[i+len("https://bar.example.org/c/"):])[0]
	if card, err := n.VerifyHolderToken(tok); err != nil || card != "04A1B2C3D4E5F6" {
		t.Fatalf("the link's token: %v %v", card, err)
	}
}

func TestDemoTerminalTaps(t *testing.T) {
	rs, cards, err := demoReaders(t.TempDir(), []string{"A", "B"})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	terminalTaps(context.Background(), strings.NewReader("tap 2 04a1b2c3\nbogus\ntap 9 04A1B2C3\n"), &out, rs, cards)
	if c := rs[1].Current(); c == nil || c.UID() != "04A1B2C3" || rs[0].Current() != nil {
		t.Fatalf("venue 2's reader: %v\n%s", c, out.String())
	}
	if !strings.Contains(out.String(), "tap 1 04A1B2C3D4E5F6") || !strings.Contains(out.String(), "venue number 1 to 2") {
		t.Fatalf("help and errors: %s", out.String())
	}
	terminalTaps(context.Background(), strings.NewReader("remove 2\n"), &out, rs, cards)
	if rs[1].Current() != nil {
		t.Fatal("card still on the reader")
	}
}
