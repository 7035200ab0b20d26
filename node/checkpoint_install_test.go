package node

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/node/store"
)

// refCount counts the external references a venue's index holds.
func refCount(v *testVenue) int {
	n := 0
	v.node.View(func(set *crdt.OpSet) {
		set.State.Index().EachRef(func(string, crdt.RefEntry) { n++ })
	})
	return n
}

// A new venue whose install of a checkpoint stops after the k-th chunk of
// references (as a crash would) is left with no checkpoint: no card of
// it, no reference, no saved checkpoint, no sale on it; restarted, it
// installs the whole checkpoint (in chunks too), sells and reaches the
// others' digest with every reference.
func TestCheckpointInstallCrashMidwayStartsOver(t *testing.T) {
	root := t.TempDir()
	cp := CheckpointConfig{Every: 300 * time.Millisecond, QuietFor: 400 * time.Millisecond, JoinDeadline: 30 * time.Second}
	_, nodes, _ := checkpointedFederation(t, root, 3, 3, 10, cp)
	// External references: top-ups by card terminal.
	const refs = 150
	for i := range refs {
		card := fmt.Sprintf("04CC00%08X", i%10)
		if st, r := nodes[0].post("/api/v1/topups", map[string]any{"card": card, "amount_cents": 10, "method": "card_terminal",
			"reference": fmt.Sprintf("TERM-%05d", i), "idempotency_key": fmt.Sprintf("r%d", i)}); st != 200 {
			t.Fatalf("top-up with a reference: %d %v", st, r)
		}
	}
	var ops uint64
	nodes[0].node.View(func(set *crdt.OpSet) { ops = set.Len() })
	waitUntil(t, 30*time.Second, "every venue to keep a checkpoint of the references", func() bool {
		for _, v := range nodes {
			if v.digest() != nodes[0].digest() {
				return false
			}
			info, err := v.node.Store().CheckpointInfo()
			if err != nil || len(info.Attestations) < len(nodes) || info.Attestations[0].Ops < ops {
				return false
			}
		}
		return true
	})
	want := refCount(nodes[0])
	if want < refs {
		t.Fatalf("the venues hold %d references, want at least %d", want, refs)
	}
	vs, err := PrepareFederation(root, 4, checkpointSettings()) // admits the new venue
	if err != nil {
		t.Fatal(err)
	}
	fed := nodes[0].node.fed
	boot := nodes[0].node.Network().P2PAddrs()

	errCrash := errors.New("crash in the middle of the install")
	const k = 3
	var chunks atomic.Int32
	crashing := cp
	crashing.NoHistory = true
	crashing.refChunkBytes = 512
	crashing.afterRefChunk = func(i int) error {
		chunks.Store(int32(i))
		if i == k {
			return errCrash
		}
		return nil
	}
	log := &lockedLog{}
	d := startCheckpointVenue(t, vs[3], boot, crashing, slog.New(slog.NewTextHandler(log, nil)))
	waitUntil(t, 30*time.Second, "the install to stop after chunk 3", func() bool {
		return len(log.lines("checkpoint refused", "crash in the middle")) > 0
	})
	if got := chunks.Load(); got != k {
		t.Fatalf("the install wrote %d chunks of references, want it stopped at %d", got, k)
	}
	if st := d.node.CheckpointStatus(); st.Installed || st.Saved {
		t.Fatalf("after the stopped install: %+v", st)
	}
	var cards int
	d.node.View(func(set *crdt.OpSet) { cards = len(set.State.Cards) })
	if n := refCount(d); cards != 0 || n != 0 {
		t.Fatalf("after the stopped install the venue holds %d cards and %d references, want none", cards, n)
	}
	if st, r := d.post("/api/v1/payments", map[string]any{"card": fmt.Sprintf("04CC00%08X", 0), "amount_cents": 10, "idempotency_key": "half"}); st == 200 {
		t.Fatalf("the venue sold on a half-installed checkpoint: %v", r)
	}
	d.stop()

	// What a restart finds on disk.
	st, err := store.Open(store.Config{Dir: filepath.Join(vs[3].Dir, StoreDir), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	set, err := st.Load(fed)
	if err != nil {
		t.Fatal(err)
	}
	onDisk := 0
	set.State.Index().EachRef(func(string, crdt.RefEntry) { onDisk++ })
	_, infoErr := st.CheckpointInfo()
	cards = len(set.State.Cards)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if cards != 0 || onDisk != 0 || !errors.Is(infoErr, store.ErrNoCheckpoint) {
		t.Fatalf("reopened after the stopped install: %d cards, %d references, checkpoint %v; want none", cards, onDisk, infoErr)
	}

	// Started again, it installs the whole checkpoint.
	chunks.Store(0)
	again := crashing
	again.afterRefChunk = func(i int) error { chunks.Store(int32(i)); return nil }
	d = startCheckpointVenue(t, vs[3], boot, again, nil)
	waitUntil(t, 30*time.Second, "the new venue to install the checkpoint", func() bool { return d.node.CheckpointStatus().Installed })
	if got := chunks.Load(); got <= k {
		t.Fatalf("the install wrote %d chunks of references, want more than %d", got, k)
	}
	waitUntil(t, 15*time.Second, "the new venue to sell", func() bool {
		st, _ := d.post("/api/v1/payments", map[string]any{"card": fmt.Sprintf("04CC00%08X", 0), "amount_cents": 10, "idempotency_key": "whole"})
		return st == 200
	})
	waitUntil(t, 15*time.Second, "the same digest everywhere", func() bool { return d.digest() == nodes[0].digest() })
	if got := refCount(d); got != want {
		t.Fatalf("the new venue holds %d references, the others %d", got, want)
	}
	if st := d.node.CheckpointStatus(); !st.Saved {
		t.Fatalf("the installed checkpoint is not kept: %+v", st)
	}
}
