package node

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cagnotte/cagnotte/node/store"
)

// A venue's first start (an empty store that will catch up, compacting all
// the time) builds small tables; once its store holds data, the default
// ones, which cost a node under payments fewer compactions.
func TestStoreTableSizeByStoreAge(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{DataDir: dir}
	sc, err := storeConfig(cfg, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	if sc.TableSize != store.NewStoreTableSize {
		t.Fatalf("new store: table size %d, want %d", sc.TableSize, store.NewStoreTableSize)
	}
	st, err := store.Open(sc)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if sc, err = storeConfig(cfg, quietLogger()); err != nil {
		t.Fatal(err)
	}
	if sc.TableSize != 0 {
		t.Fatalf("existing store: table size %d, want the default (0)", sc.TableSize)
	}
	cfg.storeTableSize = 4 << 20
	if sc, err = storeConfig(cfg, quietLogger()); err != nil || sc.TableSize != 4<<20 {
		t.Fatalf("override: table size %d, %v", sc.TableSize, err)
	}
	// A store directory that cannot be read is an error, not a new store.
	t.Run("unreadable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root reads any directory: permissions cannot make it unreadable")
		}
		locked := filepath.Join(t.TempDir(), "locked")
		if err := os.MkdirAll(filepath.Join(locked, StoreDir), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(locked, StoreDir), 0); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(filepath.Join(locked, StoreDir), 0o700) })
		if _, err := storeConfig(Config{DataDir: locked}, quietLogger()); err == nil {
			t.Fatal("an unreadable store directory taken for a new store")
		}
	})
}
