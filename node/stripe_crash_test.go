package node

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/node/stripe/stripetest"
)

const stripeCrashDirEnv = "CAGNOTTE_STRIPE_CRASH_DIR"

// TestStripeCrashChild is the gateway process the crash test kills: it
// stops, forever, after a webhook's op is durable and before the answer.
// It only runs when re-executed by TestStripeGatewayKilledAfterDurableBeforeAnswer.
func TestStripeCrashChild(t *testing.T) {
	dir := os.Getenv(stripeCrashDirEnv)
	if dir == "" {
		t.Skip("run by TestStripeGatewayKilledAfterDurableBeforeAnswer as a subprocess")
	}
	sc := stripeCfg(os.Getenv(stripeCrashDirEnv + "_API"))
	sc.afterDurable = func() {
		fmt.Println("durable")
		select {} // until SIGKILL
	}
	n, err := New(Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", Logger: quietLogger(), Stripe: sc})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	if err := n.Start(context.Background()); err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	fmt.Println("listening", n.Addr())
	select {}
}

// TestStripeGatewayKilledAfterDurableBeforeAnswer kills a gateway process
// with SIGKILL once the webhook's credit is durable but before it answers:
// Stripe sees no 2xx and redelivers; the restarted gateway has the credit
// and the redelivery credits nothing more.
func TestStripeGatewayKilledAfterDurableBeforeAnswer(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	vs, err := PrepareDemo(t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	dir, token := vs[0].Dir, vs[0].Token
	api := deadURL(t)
	card := "04AABBCCDD1100"
	v := startStripeNode(t, dir, token, stripeCfg(api), nil, nil)
	v.knownCard(card, 1000)
	v.stop()

	cmd := exec.Command(os.Args[0], "-test.run=^TestStripeCrashChild$")
	cmd.Env = append(os.Environ(), stripeCrashDirEnv+"="+dir, stripeCrashDirEnv+"_API="+api)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func(what string) string {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("child exited before %s", what)
			}
			if strings.HasPrefix(l, "error") {
				t.Fatalf("child: %s", l)
			}
			return l
		case <-time.After(30 * time.Second):
			t.Fatalf("child: no %s within 30 s", what)
		}
		return ""
	}
	addr, ok := strings.CutPrefix(next("address"), "listening ")
	if !ok {
		t.Fatal("child did not say where it listens")
	}
	child := &testVenue{t: t, dir: dir, token: token, api: "http://" + addr}
	p := stripetest.CheckoutCompleted("evt_crash", "cs_crash", "pi_crash", card, 2000, "EUR", true)
	answered := make(chan int, 1)
	go func() {
		st, _ := child.webhook(p, "")
		answered <- st
	}()
	if l := next("durable"); l != "durable" {
		t.Fatalf("child said %q", l)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if st := <-answered; st == 200 {
		t.Fatal("the killed gateway answered 200")
	}
	// Restart: the credit is there; Stripe's redelivery counts nothing.
	v = startStripeNode(t, dir, token, stripeCfg(api), nil, nil)
	if b, online, _ := v.cardState(card); b != 3000 || online != 1 {
		t.Fatalf("after the crash: balance %d, online top-ups %d", b, online)
	}
	if st, r := v.webhook(p, ""); st != 200 || r["outcome"] != "duplicate" {
		t.Fatalf("redelivery: %d %v", st, r)
	}
	if b, online, _ := v.cardState(card); b != 3000 || online != 1 {
		t.Fatalf("after the redelivery: balance %d, online top-ups %d", b, online)
	}
}
