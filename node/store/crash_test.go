//go:build unix

package store

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
)

var crashCycles = flag.Int("store.crashcycles", 10, "kill cycles of TestCrash")

// crashEnv names the store directory of the crash helper process.
const crashEnv = "CAGNOTTE_STORE_CRASH_DIR"

// crashBatchSize is the size of batch k, 1 to 50 ops: a deterministic
// sequence (splitmix64) the parent recomputes.
func crashBatchSize(k int) int {
	z := uint64(k)*0x9e3779b97f4a7c15 + 0x632be59bd9b4e5d9
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return 1 + int(z%50)
}

// crashBoundary is the venue's seq after batches 0..k-1.
func crashBoundary(k int) uint64 {
	var seq uint64
	for i := range k {
		seq += uint64(crashBatchSize(i))
	}
	return seq
}

// crashBatchAt returns k such that the venue's seq after batches 0..k-1 is
// seq, or -1 if seq is not a batch boundary.
func crashBatchAt(seq uint64) int {
	var b uint64
	for k := 0; ; k++ {
		if b == seq {
			return k
		}
		if b > seq {
			return -1
		}
		b += uint64(crashBatchSize(k))
	}
}

func crashKeys(t testing.TB) (fed, venue *crdt.Signer) {
	return signer(t, 1), signer(t, 10)
}

// TestCrashHelper is the child process of TestCrash: it loads the store,
// continues the venue's chain in batches and prints "durable <batch>
// <seq>" after each Commit returns, until it is killed.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("helper process of TestCrash")
	}
	fail := func(format string, a ...any) {
		fmt.Printf("error "+format+"\n", a...)
		os.Exit(2)
	}
	// The parent holds our stdin: if it dies, stop.
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(3)
	}()
	fedS, venS := crashKeys(t)
	st, err := Open(Config{Dir: dir, Logger: quietLogger()})
	if err != nil {
		fail("open: %v", err)
	}
	set, err := st.Load(fedS.Public())
	if err != nil {
		fail("load: %v", err)
	}
	clock := crdt.NewClock(func() int64 { return time.Now().UnixMilli() })
	if seq, _ := set.Head(fedS.Public()); seq == 0 {
		fed := crdt.NewAuthor(fedS, clock, 0, crdt.OpID{})
		ops := []crdt.Op{
			fed.Make(&crdt.Genesis{Name: "Crash", Currency: "EUR", Settings: crdt.DefaultSettings()}),
			fed.Make(&crdt.Admit{Venue: venS.Public(), Name: "Bar"}),
		}
		for _, op := range ops {
			if _, err := set.Add(op); err != nil {
				fail("add setup: %v", err)
			}
		}
		if err := st.Commit(Batch{Ops: ops, State: set}); err != nil {
			fail("commit setup: %v", err)
		}
	}
	seq, head := set.Head(venS.Public())
	k := crashBatchAt(seq)
	if k < 0 {
		fail("loaded seq %d is not a batch boundary", seq)
	}
	fmt.Printf("ready %d %d\n", k, seq)
	ven := crdt.NewAuthor(venS, clock, seq, head)
	cards := []crdt.CardID{"04000001", "04000002", "04000003", "04000004", "04000005"}
	for ; ; k++ {
		n := crashBatchSize(k)
		b := Batch{State: set, Idem: []IdemRecord{{Key: fmt.Sprintf("batch-%d", k), Status: 200, Body: []byte(strconv.Itoa(n))}}}
		for range n {
			card := cards[int(ven.Seq())%len(cards)]
			var op crdt.Op
			if c := set.State.Card(card); c == nil || c.Balance < 300 {
				op = ven.Make(&crdt.TopUp{Card: card, Amount: 1000, Method: crdt.MethodCash})
			} else {
				op = ven.Make(&crdt.Payment{Card: card, Amount: 100, Counter: c.Counter + 1})
			}
			if out, err := set.Add(op); err != nil || out != crdt.Added {
				fail("add %d: %v %v", op.Seq, out, err)
			}
			b.Ops = append(b.Ops, op)
		}
		if err := st.Commit(b); err != nil {
			fail("commit batch %d: %v", k, err)
		}
		fmt.Printf("durable %d %d\n", k, ven.Seq())
	}
}

// TestCrash kills a process committing batches with SIGKILL at random
// moments, then checks that every batch it reported durable is there, that
// no half batch is visible and that the loaded set is the set of the ops
// on disk. The next child resumes the chain from what was loaded.
func TestCrash(t *testing.T) {
	if os.Getenv(crashEnv) != "" {
		t.Skip("in the helper process")
	}
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d cycles", seed, *crashCycles)
	rng := rand.New(rand.NewPCG(seed, 0))
	fedS, venS := crashKeys(t)
	var seq uint64     // the venue's seq loaded after the last kill
	lastBatch := -1    // the last batch reported durable
	var killedIn []int // batches committed per cycle, for the log
	for cycle := range *crashCycles {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		killAfter := time.Duration(20+rng.IntN(281)) * time.Millisecond
		var kill <-chan time.Time // armed once the child is ready
		deadline := time.After(30 * time.Second)
		killed, batches := false, 0
	read:
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					break read // the child is gone and its output drained
				}
				f := strings.Fields(line)
				switch {
				case len(f) == 3 && f[0] == "ready":
					k, _ := strconv.Atoi(f[1])
					got, _ := strconv.ParseUint(f[2], 10, 64)
					if got != seq || k != lastBatch+1 {
						t.Fatalf("cycle %d: child resumed at batch %d seq %d, want batch %d seq %d", cycle, k, got, lastBatch+1, seq)
					}
					if !killed {
						kill = time.After(killAfter)
					}
				case len(f) == 3 && f[0] == "durable":
					k, _ := strconv.Atoi(f[1])
					got, _ := strconv.ParseUint(f[2], 10, 64)
					if k != lastBatch+1 || got != crashBoundary(k+1) {
						t.Fatalf("cycle %d: child reported batch %d at seq %d after batch %d, want seq %d", cycle, k, got, lastBatch, crashBoundary(k+1))
					}
					lastBatch = k
					batches++
				default:
					_ = cmd.Process.Kill()
					t.Fatalf("cycle %d: child said %q; stderr:\n%s", cycle, line, stderr.String())
				}
			case <-kill:
				if err := cmd.Process.Kill(); err != nil {
					t.Fatal(err)
				}
				killed, kill = true, nil
			case <-deadline:
				_ = cmd.Process.Kill()
				t.Fatalf("cycle %d: child still running after 30 s; stderr:\n%s", cycle, stderr.String())
			}
		}
		_ = stdin.Close()
		werr := cmd.Wait()
		ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !killed || !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("cycle %d: child ended by itself (%v); stderr:\n%s", cycle, werr, stderr.String())
		}
		killedIn = append(killedIn, batches)
		seq = checkCrashed(t, dir, fedS.Public(), venS.Public(), lastBatch)
		if k := crashBatchAt(seq); k == lastBatch+2 {
			lastBatch++ // committed, killed before it said so
		}
	}
	t.Logf("batches committed per cycle before the kill: %v; venue seq %d", killedIn, seq)
}

// checkCrashed opens the store a killed child left, loads it and checks it
// against what the child reported: lastBatch is the last batch it said was
// durable. It returns the venue's seq.
func checkCrashed(t *testing.T, dir string, fed, venue crdt.PublicKey, lastBatch int) uint64 {
	t.Helper()
	st, err := Open(Config{Dir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
	}()
	set, err := st.Load(fed)
	if err != nil {
		t.Fatal(err)
	}
	fedSeq, _ := set.Head(fed)
	seq, _ := set.Head(venue)
	if fedSeq != 0 && fedSeq != 2 || fedSeq == 0 && (seq != 0 || lastBatch >= 0) {
		t.Fatalf("federation at seq %d, venue at %d after batch %d", fedSeq, seq, lastBatch)
	}
	k := crashBatchAt(seq)
	if k != lastBatch+1 && k != lastBatch+2 {
		t.Fatalf("venue at seq %d (batch boundary %d) after batch %d was reported durable at seq %d",
			seq, k, lastBatch, crashBoundary(lastBatch+1))
	}
	stats := st.Stats()
	if stats.OpsStored != fedSeq+seq {
		t.Fatalf("%d ops counted, %d in the chains", stats.OpsStored, fedSeq+seq)
	}
	// Load read the state's records, no op (they are written in the same
	// transactions as the ops).
	if stats.LoadedOps != 0 {
		t.Fatalf("loaded %d ops with %d stored: a restart reads no op", stats.LoadedOps, stats.OpsStored)
	}
	err = st.ReadRange(venue, seq+1, seq+100, func(op crdt.Op) error {
		return fmt.Errorf("op %d stored past the loaded head %d", op.Seq, seq)
	})
	if err != nil {
		t.Fatal(err)
	}
	if k > 0 {
		r, ok, err := st.Idempotency(fmt.Sprintf("batch-%d", k-1))
		if err != nil || !ok || string(r.Body) != strconv.Itoa(crashBatchSize(k-1)) {
			t.Fatalf("record of batch %d: %+v %v %v", k-1, r, ok, err)
		}
	}
	if _, ok, err := st.Idempotency(fmt.Sprintf("batch-%d", k)); ok || err != nil {
		t.Fatalf("record of batch %d, not committed: %v %v", k, ok, err)
	}
	fresh := rebuild(t, st, fed)
	if fresh.Digest() != set.Digest() {
		t.Fatalf("loaded digest %x, ops on disk give %x", set.Digest(), fresh.Digest())
	}
	sameSet(t, set, fresh)
	return seq
}
