//go:build linux

package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

func TestIsDiskFull(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"ErrDiskFull", fmt.Errorf("store: commit: %w", ErrDiskFull), true},
		{"ENOSPC from a write", &fs.PathError{Op: "write", Path: "000001.vlog", Err: syscall.ENOSPC}, true},
		{"EDQUOT", fmt.Errorf("sync: %w", syscall.EDQUOT), true},
		{"EIO", &fs.PathError{Op: "write", Path: "000001.vlog", Err: syscall.EIO}, false},
		{"ErrFailed", ErrFailed, false},
		{"nil", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := IsDiskFull(c.err); got != c.want {
				t.Fatalf("IsDiskFull(%v) = %v, want %v", c.err, got, c.want)
			}
		})
	}
}

// TestCommitRefusedWhileDiskFull fills a real tmpfs holding the store below
// MinFreeBytes: Commit refuses with ErrDiskFull and writes nothing, the
// store does not fail (no reopen needed), and the same batch commits once
// the filler is gone.
func TestCommitRefusedWhileDiskFull(t *testing.T) {
	const minFree = 16 << 20
	mnt := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=48m"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mount a tmpfs (root needed; CI runs as root): %v", err)
		}
		t.Skipf("cannot mount a tmpfs here (needs root): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	dir := filepath.Join(mnt, "store")
	st, err := Open(Config{Dir: dir, Logger: testLogger(t), MinFreeBytes: minFree})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { st.Close() }()
	w := newWorld(t, 2)
	set, err := st.Load(w.fedKey())
	if err != nil {
		t.Fatal(err)
	}
	gen := w.genesis()
	w.deliver(gen...)
	addCommit(t, st, set, gen)

	var sfs syscall.Statfs_t
	if err := syscall.Statfs(mnt, &sfs); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, sfs.Bavail*uint64(sfs.Bsize)-minFree/2), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := st.CheckSpace(); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("CheckSpace with the filler: %v", err)
	}
	var ops []crdt.Op
	for range 5 {
		op := w.venueOp(0)
		w.deliver(op)
		ops = append(ops, op)
	}
	b := Batch{State: set}
	for _, op := range ops {
		if _, err := set.Add(op); err != nil {
			t.Fatal(err)
		}
		b.Ops = append(b.Ops, op)
	}
	err = st.Commit(b)
	if !errors.Is(err, ErrDiskFull) || errors.Is(err, ErrFailed) {
		t.Fatalf("commit on a full disk: %v", err)
	}
	// The caller drops what it added: the store holds the genesis only.
	if set, err = st.Load(w.fedKey()); err != nil {
		t.Fatal(err)
	}
	if set.Len() != uint64(len(gen)) {
		t.Fatalf("after a refused commit the store holds %d ops, want %d", set.Len(), len(gen))
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	addCommit(t, st, set, ops)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = openStore(t, dir, 0)
	loaded, err := st.Load(w.fedKey())
	if err != nil {
		t.Fatal(err)
	}
	sameSet(t, loaded, w.ref.Set)
}
