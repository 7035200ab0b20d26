package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
)

// downloadBackupFile fetches GET /api/v1/backup into a file.
func downloadBackupFile(t *testing.T, v *testVenue, path string) {
	t.Helper()
	req, err := http.NewRequest("GET", v.api+"/api/v1/backup", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+v.token)
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("backup: %d %s", resp.StatusCode, b)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		t.Fatal(err)
	}
}

// TestBackupWhilePayingRestoreDoesNotFork: a backup is taken through the
// API while payments go on; more payments follow; the venue's machine is
// replaced and the older backup restored into a fresh data dir. Every
// payment acknowledged before the backup started is in it, the restored
// node signs nothing until its peer gave its newer ops back, then its
// chain continues: no equivocation anywhere.
func TestBackupWhilePayingRestoreDoesNotFork(t *testing.T) {
	settings := crdt.DefaultSettings()
	settings.HeartbeatInterval = 100
	settings.IsolationAfter = 2000
	nodes := startNetworked(t, 2, settings)
	a, b := nodes[0], nodes[1]
	// In sync before paying: a venue that has not heard its peer yet sells
	// offline, within the offline caps, which the payments below exceed.
	waitUntil(t, 10*time.Second, "a in sync", func() bool { return !a.node.Isolation().Isolated })
	card := "04AABBCCDD1600"
	if st, r := a.post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 10000, "method": "cash", "idempotency_key": "t1"}); st != 200 {
		t.Fatal(st, r)
	}
	// Payments keep going at a while the backup is taken.
	var acked atomic.Uint64 // a's own seq acknowledged before the backup started
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			a.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 1, "idempotency_key": fmt.Sprintf("during-%d", i)})
		}
	}()
	waitUntil(t, 10*time.Second, "payments under way", func() bool { return a.node.VersionVector()[a.node.Key()] >= 5 })
	acked.Store(a.node.VersionVector()[a.node.Key()])
	file := filepath.Join(t.TempDir(), "a.backup")
	downloadBackupFile(t, a, file)
	close(stop)
	wg.Wait()

	// After the backup: more payments, which only the peers will hold.
	for i := range 3 {
		if st, r := a.post("/api/v1/payments", map[string]any{"card": card, "amount_cents": 10, "idempotency_key": fmt.Sprintf("after-%d", i)}); st != 200 {
			t.Fatal(st, r)
		}
	}
	waitUntil(t, 10*time.Second, "b to hold everything", func() bool { return a.digest() == b.digest() })
	seq := b.node.VersionVector()[a.node.Key()]
	bAddrs := b.node.Network().P2PAddrs()
	oldDir, token := a.dir, a.token
	a.stop()

	// A new machine: restore the older backup into a fresh data dir.
	dir := filepath.Join(t.TempDir(), "restored")
	h, err := Restore(context.Background(), RestoreConfig{
		Backup: file, DataDir: dir, Logger: quietLogger(),
		KeyFile: filepath.Join(oldDir, KeyFile), TokensFile: filepath.Join(oldDir, TokensFile),
	})
	if err != nil {
		t.Fatal(err)
	}
	if h.OwnSeq < acked.Load() || h.OwnSeq >= seq {
		t.Fatalf("backup header: own seq %d, want between %d and %d", h.OwnSeq, acked.Load(), seq)
	}
	// Offline first: what the backup holds, before any peer is heard.
	off, err := New(Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	got := off.VersionVector()[off.Key()]
	if err := off.Close(); err != nil {
		t.Fatal(err)
	}
	if got < acked.Load() || got >= seq {
		t.Fatalf("restored store holds own seq %d: want every payment acknowledged before the backup (%d) and not the later ones (%d)", got, acked.Load(), seq)
	}

	a = startNetworkedAt(t, dir, token, bAddrs)
	restoredNodeContinues(t, a, b, seq, "/api/v1/payments", map[string]any{"card": card, "amount_cents": 1, "idempotency_key": "after-restore"})
}

// TestRestoreRefuses: restore checks the file whole and the place it
// restores into before writing anything.
func TestRestoreRefuses(t *testing.T) {
	v := newTestVenue(t)
	if st, r := v.post("/api/v1/topups", map[string]any{"card": "04AABBCCDD1601", "amount_cents": 100, "method": "cash", "idempotency_key": "t"}); st != 200 {
		t.Fatal(st, r)
	}
	good := filepath.Join(t.TempDir(), "good.backup")
	downloadBackupFile(t, v, good)
	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flipped := append([]byte(nil), raw...)
	flipped[len(flipped)/2] ^= 1
	otherKey := filepath.Join(t.TempDir(), "k")
	if _, _, err := LoadOrCreateKey(otherKey); err != nil {
		t.Fatal(err)
	}
	used := t.TempDir()
	if err := os.MkdirAll(filepath.Join(used, StoreDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(used, StoreDir, "MANIFEST"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		cfg     RestoreConfig
		wantErr error
	}{
		{"truncated", RestoreConfig{Backup: write("cut", raw[:len(raw)-100]), DataDir: t.TempDir()}, ErrBadBackup},
		{"cut at the trailer", RestoreConfig{Backup: write("cut2", raw[:len(raw)-backupTrailer]), DataDir: t.TempDir()}, ErrBadBackup},
		{"altered", RestoreConfig{Backup: write("flip", flipped), DataDir: t.TempDir()}, ErrBadBackup},
		{"not a backup", RestoreConfig{Backup: write("junk", []byte("hello, world, this is not a backup at all, nope, not at all, really not a backup file")), DataDir: t.TempDir()}, ErrBadBackup},
		{"store in use", RestoreConfig{Backup: good, DataDir: used}, ErrDataDirInUse},
		{"another venue's key", RestoreConfig{Backup: good, DataDir: t.TempDir(), KeyFile: otherKey}, ErrWrongKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Logger = quietLogger()
			_, err := Restore(context.Background(), tc.cfg)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != ErrDataDirInUse {
				if _, err := os.Stat(filepath.Join(tc.cfg.DataDir, StoreDir)); err == nil {
					t.Fatal("a refused restore wrote a store")
				}
			}
		})
	}
	// And the good one restores, with the venue's key.
	dir := t.TempDir()
	if _, err := Restore(context.Background(), RestoreConfig{Backup: good, DataDir: dir, KeyFile: dataPath(v, KeyFile), Logger: quietLogger()}); err != nil {
		t.Fatal(err)
	}
}

// TestBackupNeedsStaffToken: the backup holds every card's history.
func TestBackupNeedsStaffToken(t *testing.T) {
	v := newTestVenue(t)
	for _, tok := range []string{"", "wrong"} {
		if st, _ := v.do("GET", "/api/v1/backup", tok, nil); st != 401 {
			t.Fatalf("backup with token %q: %d, want 401", tok, st)
		}
	}
}
