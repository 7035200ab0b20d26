package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"github.com/cagnotte/cagnotte/crdt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var crashCycles = flag.Int("node.crashcycles", 20, "kill/restart cycles of TestNodeCrash")

const crashDirEnv = "CAGNOTTE_NODE_CRASH_DIR"

// TestNodeCrashChild is the node process TestNodeCrash kills. It only runs
// when re-executed by it.
func TestNodeCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("run by TestNodeCrash as a subprocess")
	}
	n, err := New(Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", Logger: quietLogger()})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	if err := n.Start(context.Background()); err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	fmt.Println("listening", n.Addr())
	select {} // until SIGKILL
}

type ack struct {
	opID   string
	card   string
	amount int64
}

// TestNodeCrash SIGKILLs a node process under concurrent payment load at
// random moments and checks after each restart that every payment answered
// 200 is in its card's history exactly once and that money is conserved.
func TestNodeCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	root := t.TempDir()
	settings := crdt.DefaultSettings()
	settings.BalanceMax = 0 // large top-ups, so that no payment is refused for funds
	vs, err := PrepareFederation(root, 1, settings)
	if err != nil {
		t.Fatal(err)
	}
	dir, token := vs[0].Dir, vs[0].Token
	cards := []string{"04000000000001", "04000000000002", "04000000000003", "04000000000004"}
	rng := rand.New(rand.NewPCG(1, 2))
	var acked []ack
	topped := false
	client := &http.Client{Timeout: 5 * time.Second}
	post := func(api, path string, body any) (int, map[string]any, error) {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", api+path, bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		out := map[string]any{}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return resp.StatusCode, nil, err
		}
		return resp.StatusCode, out, nil
	}
	for cycle := 0; cycle < *crashCycles; cycle++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestNodeCrashChild$")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		api := ""
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				api = "http://" + a
				break
			}
			if strings.HasPrefix(sc.Text(), "error") {
				t.Fatalf("cycle %d: child: %s", cycle, sc.Text())
			}
		}
		if api == "" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("cycle %d: child did not start", cycle)
		}
		// The previous cycle's acknowledged payments must all be there.
		verify(t, api, token, cards, acked)
		if !topped {
			for _, c := range cards {
				if st, b, err := post(api, "/api/v1/topups", map[string]any{"card": c, "amount_cents": 10_000_000, "method": "cash", "idempotency_key": "top-" + c}); err != nil || st != 200 {
					t.Fatalf("top-up: %d %v %v", st, b, err)
				}
			}
			topped = true
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					c := cards[(w+i)%len(cards)]
					amt := int64(1 + (i*7+w)%500)
					st, b, err := post(api, "/api/v1/payments", map[string]any{"card": c, "amount_cents": amt, "idempotency_key": fmt.Sprintf("c%d-w%d-%d", cycle, w, i)})
					if err != nil {
						return // the node was killed
					}
					if st == 200 {
						mu.Lock()
						acked = append(acked, ack{opID: b["op_id"].(string), card: c, amount: amt})
						mu.Unlock()
					}
				}
			}(w)
		}
		time.Sleep(time.Duration(30+rng.IntN(250)) * time.Millisecond) // a random moment to crash at, not a wait
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		close(stop)
		wg.Wait()
	}
	// Final check on a last restart.
	n, err := New(Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	verify(t, "http://"+n.Addr(), token, cards, acked)
	if len(acked) < *crashCycles {
		t.Fatalf("only %d payments acknowledged over %d cycles", len(acked), *crashCycles)
	}
	t.Logf("%d cycles, %d acknowledged payments, all present once", *crashCycles, len(acked))
}

// verify checks acknowledged payments and conservation through the API.
func verify(t *testing.T, api, token string, cards []string, acked []ack) {
	t.Helper()
	want := map[string]ack{}
	for _, a := range acked {
		want[a.opID] = a
	}
	seen := map[string]int{}
	for _, c := range cards {
		v, status := readCard(t, api, token, c)
		if status == 404 {
			continue
		}
		if status != 200 {
			t.Fatalf("card %s: status %d", c, status)
		}
		var sum int64
		for _, e := range v.History {
			if !e.Counted {
				continue
			}
			switch e.Kind {
			case "topup":
				sum += e.Amount
			default:
				sum -= e.Amount
			}
			if e.Kind == "payment" {
				seen[e.OpID.String()]++
			}
		}
		if sum != v.Balance {
			t.Fatalf("card %s: balance %d but history sums to %d", c, v.Balance, sum)
		}
	}
	for id, a := range want {
		if seen[id] != 1 {
			t.Fatalf("acknowledged payment %s (card %s, %d cents) is in the history %d times", id, a.card, a.amount, seen[id])
		}
	}
}

// readCard reads a card's view with its whole history, page by page.
func readCard(t *testing.T, api, token, card string) (CardView, int) {
	t.Helper()
	var v CardView
	next := ""
	for {
		req, _ := http.NewRequest("GET", api+"/api/v1/cards/"+card+"?limit=500&before="+next, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var p CardPage
		err = json.NewDecoder(resp.Body).Decode(&p)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return v, resp.StatusCode
		}
		if err != nil {
			t.Fatal(err)
		}
		if next == "" {
			v = p.CardView
		} else {
			v.History = append(v.History, p.History...)
		}
		if next = p.Next; next == "" {
			return v, 200
		}
	}
}
