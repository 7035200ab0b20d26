//go:build linux

package store

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

func TestParseRssFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want int64
		ok   bool
	}{
		{"linux", "Name:\tcagnotte\nVmRSS:\t  4096 kB\nRssAnon:\t  3000 kB\nRssFile:\t  1096 kB\n", 1096 << 10, true},
		{"missing", "Name:\tcagnotte\nVmRSS:\t  4096 kB\n", 0, false},
		{"garbage", "RssFile:\tlots kB\n", 0, false},
		{"empty value", "RssFile:\n", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseRssFile([]byte(tc.in))
			if got != tc.want || ok != tc.ok {
				t.Errorf("parseRssFile = %d, %v; want %d, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestTableMappings(t *testing.T) {
	maps := strings.Join([]string{
		"00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/cagnotte",
		"7f0000000000-7f0000400000 r--s 00000000 08:02 1001 /data/store/000012.sst",
		"7f0000400000-7f0000800000 r--s 00000000 08:02 1002 /data/store/000013.sst (deleted)",
		"7f0000800000-7f0002800000 rw-s 00000000 08:02 1003 /data/store/00001.mem",
		"7f0002800000-7f0002c00000 r--s 00000000 08:02 1004 /other/store/000012.sst",
		"7f0002c00000-7f0003000000 r--s 00000000 08:02 1005 /data/store/sub dir/000014.sst",
		"7f0003000000-7f0003001000 rw-p 00000000 00:00 0",
		"garbage",
	}, "\n")
	f, err := os.CreateTemp(t.TempDir(), "maps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(maps); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	got, err := tableMappings(f, "/data/store")
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]uintptr{{0x7f0000000000, 0x7f0000400000}, {0x7f0002c00000, 0x7f0003000000}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("tableMappings = %x, want %x", got, want)
	}
}

// TestMappedTablePagesTrimmed: past the budget, the store hands its
// tables' resident pages back to the kernel, and reads still see the
// same data.
func TestMappedTablePagesTrimmed(t *testing.T) {
	dir := t.TempDir()
	w, st, _ := storeWithHistory(t, dir, 40, 50)
	var err error
	if err := st.Close(); err != nil { // flushes the memtable into a table
		t.Fatal(err)
	}

	st, err = Open(Config{Dir: dir, Logger: testLogger(t), MappedBudget: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	readAll := func() int {
		n := 0
		if err := st.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.DefaultIteratorOptions)
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				if _, err := it.Item().ValueCopy(nil); err != nil {
					return err
				}
				n++
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	keys := readAll()
	before := tablesResident(t, dir)
	if before == 0 {
		t.Fatal("no table page resident after reading every key")
	}
	advised := st.trimMapped(false)
	if advised == 0 {
		t.Fatal("trimMapped advised nothing past a budget of 1 byte")
	}
	after := tablesResident(t, dir)
	t.Logf("%d keys; tables resident %d kB before, %d kB after, %d kB advised", keys, before>>10, after>>10, advised>>10)
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err == nil && fs.Type != 0x01021994 { // not tmpfs (no swap to page out to)
		if after >= before {
			t.Errorf("tables resident %d bytes after trimMapped, %d before", after, before)
		}
	}
	if got := readAll(); got != keys {
		t.Errorf("read %d keys after trimMapped, %d before", got, keys)
	}
	loaded, err := st.Load(w.fedKey())
	if err != nil {
		t.Fatal(err)
	}
	sameSet(t, loaded, w.ref.Set)

	off, err := Open(Config{Dir: t.TempDir(), Logger: testLogger(t), MappedBudget: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer off.Close()
	if n := off.trimMapped(false); n != 0 {
		t.Errorf("trimMapped with the budget off advised %d bytes", n)
	}
}

// TestMappedBurstCheck: between the budget's own checks (every 5 s), the
// store pages the tables out only past twice the budget, checked at every
// tick, so that a compaction's burst is caught within a quarter of a
// second without paging out (and emptying the page cache of) tables in
// steady state.
func TestMappedBurstCheck(t *testing.T) {
	for _, tc := range []struct {
		tick  uint64
		burst bool
	}{
		{1, true}, {3, true}, {4, true}, {19, true}, {20, false}, {21, true}, {40, false},
	} {
		if burst := mappedCheck(tc.tick); burst != tc.burst {
			t.Errorf("mappedCheck(%d) = %v, want %v", tc.tick, burst, tc.burst)
		}
	}
	dir := t.TempDir()
	_, st, _ := storeWithHistory(t, dir, 40, 50)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	resident, ok := residentFileBytes()
	if !ok {
		t.Skip("no RssFile in /proc/self/status")
	}
	// Between the budget and twice it: only the budget's own check acts.
	st, err := Open(Config{Dir: dir, Logger: testLogger(t), MappedBudget: resident * 3 / 4})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if n := st.trimMapped(true); n != 0 {
		t.Errorf("a burst check paged out %d bytes with %d resident against a budget of %d", n, resident, resident*3/4)
	}
	if n := st.trimMapped(false); n == 0 {
		t.Errorf("the budget's check paged nothing out with %d resident against a budget of %d", resident, resident*3/4)
	}
	// Past twice the budget: the burst check acts too.
	st.cfg.MappedBudget = resident / 4
	if n := st.trimMapped(true); n == 0 {
		t.Errorf("a burst check paged nothing out with %d resident against a budget of %d", resident, resident/4)
	}
}

// tablesResident sums the Rss of the process's mappings of dir's tables
// (/proc/self/smaps).
func tablesResident(t *testing.T, dir string) int64 {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var total int64
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			in = len(fields) >= 6 && strings.HasPrefix(fields[5], abs+"/") && strings.HasSuffix(fields[5], ".sst")
			continue
		}
		if in && len(fields) >= 2 && fields[0] == "Rss:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err == nil {
				total += kb << 10
			}
		}
	}
	return total
}
