//go:build linux

package node

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/node/store"
	"github.com/cagnotte/cagnotte/node/web"
)

// mountTmpfs mounts a tmpfs of size bytes on a fresh directory, unmounted
// at the end of the test (after every cleanup registered later). Without
// the right to mount it skips, unless CI is set.
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	opts := "size=" + strconv.FormatInt(size, 10)
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mount a tmpfs (root needed; CI runs as root): %v", err)
		}
		t.Skipf("cannot mount a tmpfs here (needs root): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func freeBytes(t *testing.T, dir string) uint64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Bavail * uint64(st.Bsize)
}

// TestDiskFullRefusesWritesAndRecovers fills the real tmpfs holding a
// node's data dir with a filler file until payments fail: every write is
// refused with 507 disk_full and changes nothing, reads go on, the status
// says so and the episode is logged once at error level. Once the filler
// is deleted, payments succeed again without a restart, and after a
// restart every acknowledged payment is there.
func TestDiskFullRefusesWritesAndRecovers(t *testing.T) {
	const minFree = 24 << 20
	mnt := mountTmpfs(t, 96<<20)
	vs, err := PrepareDemo(mnt, 1)
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedLog{}
	v := &testVenue{t: t, dir: vs[0].Dir, token: vs[0].Token}
	startNode := func() {
		n, err := New(Config{DataDir: v.dir, HTTPAddr: "127.0.0.1:0", MinFreeBytes: minFree,
			Logger: slog.New(slog.NewTextHandler(logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		v.node, v.api = n, "http://"+n.Addr()
	}
	startNode()
	t.Cleanup(v.stop)

	if st, body := v.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 15000, "method": "cash", "idempotency_key": "t1"}); st != 200 {
		t.Fatalf("top-up: %d %v", st, body)
	}
	filler, err := os.Create(filepath.Join(mnt, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer filler.Close()
	chunk := bytes.Repeat([]byte{0xA5}, 2<<20)
	acked := map[string]bool{} // op ids of the payments answered 200
	var refusedKey string
	for i := 0; refusedKey == ""; i++ {
		if i > 100 {
			t.Fatal("payments still succeed after 200 MiB of filler")
		}
		if _, err := filler.Write(chunk); err != nil {
			t.Fatalf("filler: %v (free %d)", err, freeBytes(t, mnt))
		}
		key := "p" + strconv.Itoa(i)
		st, body := v.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 1, "idempotency_key": key})
		switch {
		case st == 200:
			acked[body["op_id"].(string)] = true
		case st == 507:
			if body["error"] != "disk_full" || !strings.Contains(body["message"].(string), "disk is full") {
				t.Fatalf("refusal body %v", body)
			}
			if free := freeBytes(t, mnt); free >= minFree || free == 0 {
				t.Fatalf("refused with %d bytes free (keeps %d)", free, minFree)
			}
			refusedKey = key
		default:
			t.Fatalf("payment %d: %d %v", i, st, body)
		}
	}
	if len(acked) == 0 {
		t.Fatal("the first payment was already refused: the tmpfs is too small for the test")
	}
	t.Logf("%d payments acknowledged, then refused with %d MiB free on a 96 MiB tmpfs (keeps %d MiB)",
		len(acked), freeBytes(t, mnt)>>20, minFree>>20)
	balance := 15000.0 - float64(len(acked))
	digest := v.digest()

	// Every op-signing write is refused the same way and changes nothing.
	writes := []struct {
		name string
		path string
		body map[string]any
	}{
		{"payment again", "/api/v1/payments", map[string]any{"card": card, "amount_cents": 1, "idempotency_key": refusedKey}},
		{"top-up", "/api/v1/topups", map[string]any{"card": card, "amount_cents": 100, "method": "cash", "idempotency_key": "t2"}},
		{"refund", "/api/v1/refunds", map[string]any{"card": card, "amount_cents": 1, "idempotency_key": "r1", "reason": "test"}},
		{"block", "/api/v1/cards/" + card + "/block", map[string]any{"reason": "lost", "idempotency_key": "b1"}},
	}
	for _, w := range writes {
		st, body := v.post(w.path, w.body)
		if st != 507 || body["error"] != "disk_full" {
			t.Errorf("%s: %d %v, want 507 disk_full", w.name, st, body)
		}
	}
	if got := v.digest(); got != digest {
		t.Fatal("the refused writes changed the node's state")
	}
	// Reads go on.
	st, c := v.do("GET", "/api/v1/cards/"+card, v.token, nil)
	if st != 200 || c["balance_cents"] != balance {
		t.Fatalf("card read while full: %d %v, want balance %v", st, c, balance)
	}
	s := v.node.Status()
	if !s.DiskFull || s.DiskFullSince.IsZero() {
		t.Fatalf("status while full: disk_full %v since %v", s.DiskFull, s.DiskFullSince)
	}
	if st, body := v.do("GET", "/api/v1/sync/status", "", nil); st != 200 || body["disk_full"] != true {
		t.Fatalf("GET sync/status while full: %d disk_full=%v", st, body["disk_full"])
	}
	if st, body := v.do("GET", "/readyz", "", nil); st != 503 || !strings.Contains(body["message"].(string), "disk is full") {
		t.Fatalf("readyz while full: %d %v", st, body)
	}
	wc := newWebClient(t, v)
	for _, lang := range web.Langs {
		resp, page := wc.do("GET", "/dashboard?lang="+string(lang), nil, "")
		if resp.StatusCode != 200 || !strings.Contains(page, `id="disk-full"`) {
			t.Fatalf("dashboard in %s while full: %s, banner shown %v", lang, resp.Status, strings.Contains(page, `id="disk-full"`))
		}
	}
	if n := len(logs.lines("level=ERROR", "disk full")); n != 1 {
		t.Fatalf("%d error lines for one disk-full episode, want 1:\n%s", n, logs.String())
	}

	// Space comes back: the node notices by itself (no write needed), then
	// the refused payment goes through with its key.
	if err := filler.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filler.Name()); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	waitUntil(t, 10*time.Second, "the status to leave disk_full", func() bool { return !v.node.Status().DiskFull })
	t.Logf("the node saw the space back %s after the filler was deleted (no write meanwhile)", time.Since(freed).Round(time.Millisecond))
	// diskBack clears the flag, then logs: wait for the line too.
	waitUntil(t, 5*time.Second, "the recovery line", func() bool { return len(logs.lines("level=INFO", "disk space is back")) > 0 })
	if len(logs.lines("level=INFO", "disk space is back")) != 1 {
		t.Fatalf("not one recovery line:\n%s", logs.String())
	}
	st, body := v.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 1, "idempotency_key": refusedKey})
	if st != 200 {
		t.Fatalf("payment after space came back: %d %v", st, body)
	}
	acked[body["op_id"].(string)] = true
	balance--

	// Every acknowledged payment survives a restart.
	v.stop()
	startNode()
	st, c = v.do("GET", "/api/v1/cards/"+card+"?limit=500", v.token, nil)
	if st != 200 || c["balance_cents"] != balance {
		t.Fatalf("card after restart: %d balance %v, want %v", st, c["balance_cents"], balance)
	}
	seen := 0
	for _, e := range c["history"].([]any) {
		if acked[e.(map[string]any)["op_id"].(string)] {
			seen++
		}
	}
	if seen != len(acked) {
		t.Fatalf("%d of the %d acknowledged payments are in the history after a restart", seen, len(acked))
	}
}

// TestDiskFullIngestKeepsNothing checks the replication side: ops from a
// peer that arrive while the disk is full are refused (not held: the
// version vector does not move, so anti-entropy fetches them again), and
// the same ops are taken once space is back.
func TestDiskFullIngestKeepsNothing(t *testing.T) {
	const minFree = 24 << 20
	mnt := mountTmpfs(t, 64<<20)
	vs, err := PrepareDemo(mnt, 2)
	if err != nil {
		t.Fatal(err)
	}
	// Venue 1 pays (on the ordinary disk); venue 0 (on the tmpfs) ingests.
	src := &testVenue{t: t, dir: vs[1].Dir, token: vs[1].Token}
	srcDir := filepath.Join(t.TempDir(), "src")
	if err := os.CopyFS(srcDir, os.DirFS(src.dir)); err != nil {
		t.Fatal(err)
	}
	src.dir = srcDir
	src.start()
	t.Cleanup(src.stop)
	if st, body := src.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 500, "method": "cash", "idempotency_key": "t1"}); st != 200 {
		t.Fatalf("top-up: %d %v", st, body)
	}
	var ops []crdt.Op
	if err := src.node.Store().ReadRange(src.node.Key(), 1, 1<<62, func(op crdt.Op) error {
		ops = append(ops, op)
		return nil
	}); err != nil || len(ops) == 0 {
		t.Fatalf("source ops: %d, %v", len(ops), err)
	}

	dst, err := New(Config{DataDir: vs[0].Dir, HTTPAddr: "127.0.0.1:0", MinFreeBytes: minFree, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dst.Close() })
	free := freeBytes(t, mnt)
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, free-minFree/2), 0o600); err != nil {
		t.Fatal(err)
	}
	before := dst.Status()
	err = dst.Ingest(context.Background(), ops)
	if !errors.Is(err, ErrDiskFull) || !store.IsDiskFull(err) {
		t.Fatalf("ingest on a full disk: %v", err)
	}
	after := dst.Status()
	if after.Digest != before.Digest || after.Pending != 0 {
		t.Fatalf("a refused ingest changed the state (digest %v, pending %d)", after.Digest != before.Digest, after.Pending)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := dst.Ingest(context.Background(), ops); err != nil {
		t.Fatalf("ingest once space is back: %v", err)
	}
	if got, want := dst.Status().VersionVector[src.node.Key().String()], uint64(len(ops)); got != want {
		t.Fatalf("venue 1's seq on venue 0: %d, want %d", got, want)
	}
}
