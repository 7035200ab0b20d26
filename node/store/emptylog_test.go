package store

import (
	"os"
	"path/filepath"
	"testing"
)

// A crash between Badger creating a memtable or value log file and writing
// its header leaves an empty file; the store must still open.
func TestOpenAfterCrashLeftEmptyLogFiles(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, 0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"000099.mem", "000099.vlog"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s = openStore(t, dir, 0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"000099.mem", "000099.vlog"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Fatalf("%s still there: %v", name, err)
		}
	}
}
