//go:build linux

package store

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

// The mapped-pages budget covers the value-log files (where the saved
// checkpoint's chunks live) as well as the tables, and nothing else.
func TestTableMappingsIncludeValueLog(t *testing.T) {
	for _, tc := range []struct {
		name string
		line string
		want bool
	}{
		{"table", "7f0000000000-7f0000400000 r--s 00000000 08:02 1001 /data/store/000012.sst", true},
		{"value log", "7f0000000000-7f0000400000 rw-s 00000000 08:02 1001 /data/store/000001.vlog", true},
		{"memtable log", "7f0000000000-7f0000400000 rw-s 00000000 08:02 1001 /data/store/00001.mem", false},
		{"another store's value log", "7f0000000000-7f0000400000 rw-s 00000000 08:02 1001 /other/store/000001.vlog", false},
		{"manifest", "7f0000000000-7f0000400000 rw-s 00000000 08:02 1001 /data/store/MANIFEST", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := os.CreateTemp(t.TempDir(), "maps")
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteString(strings.Join([]string{"00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/cagnotte", tc.line}, "\n")); err != nil {
				t.Fatal(err)
			}
			if _, err := f.Seek(0, 0); err != nil {
				t.Fatal(err)
			}
			got, err := tableMappings(f, "/data/store")
			if err != nil {
				t.Fatal(err)
			}
			want := "[]"
			if tc.want {
				want = fmt.Sprint([][2]uintptr{{0x7f0000000000, 0x7f0000400000}})
			}
			if fmt.Sprint(got) != want {
				t.Errorf("tableMappings = %x, want %s", got, want)
			}
		})
	}
}

// residentValueLog returns the resident bytes of dir's value-log
// mappings, from /proc/self/smaps.
func residentValueLog(t *testing.T, dir string) int64 {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Skipf("no /proc/self/smaps: %v", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	in := false
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			in = len(f) >= 6 && strings.HasPrefix(f[5], abs+"/") && strings.HasSuffix(f[5], ".vlog")
			continue
		}
		if in && len(f) == 3 && f[0] == "Rss:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			n += kb << 10
		}
	}
	return n
}

// A venue that saves or serves its checkpoint (80 MB at 10 M ops) reads
// and writes its chunks through the value log's mappings: without their
// pages handed back, the whole checkpoint stayed resident in the serving
// venue's RSS, on top of everything else serving a joiner costs.
func TestCheckpointValueLogPagesReleased(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir, 0)
	t.Cleanup(func() { st.Close() })
	a := signer(t, 1)
	cp := make([]byte, 40*checkpointChunk)
	if _, err := rand.NewChaCha8([32]byte{1}).Read(cp); err != nil { // incompressible
		t.Fatal(err)
	}
	att := crdt.NewOpSet(crdt.Config{Federation: a.Public()}).Attest(a, cp)
	if err := st.SaveCheckpoint(cp, []crdt.Attestation{att}); err != nil {
		t.Fatal(err)
	}
	const most = 20 * checkpointChunk // half the checkpoint
	if n := residentValueLog(t, dir); n > most {
		t.Errorf("after saving a checkpoint of %d MiB: %d MiB of the value log resident, want at most %d", len(cp)>>20, n>>20, most>>20)
	}
	var peak int64
	sent := 0
	err := st.StreamLatestCheckpoint(func(uint64, []crdt.Attestation) error { return nil }, func(p []byte) error {
		sent += len(p)
		peak = max(peak, residentValueLog(t, dir))
		return nil
	})
	if err != nil || sent != len(cp) {
		t.Fatalf("streamed %d of %d bytes: %v", sent, len(cp), err)
	}
	if peak > most {
		t.Errorf("while streaming the checkpoint: up to %d MiB of the value log resident, want at most %d", peak>>20, most>>20)
	}
	if n := residentValueLog(t, dir); n > most {
		t.Errorf("after streaming the checkpoint: %d MiB of the value log resident, want at most %d", n>>20, most>>20)
	}
	got, _, err := st.LatestCheckpoint()
	if err != nil || !bytes.Equal(got, cp) {
		t.Fatalf("read back: %d bytes, %v", len(got), err)
	}
	if n := residentValueLog(t, dir); n > most {
		t.Errorf("after reading the checkpoint whole: %d MiB of the value log resident, want at most %d", n>>20, most>>20)
	}
}
