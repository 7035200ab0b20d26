//go:build linux

package store

import (
	"fmt"
	"os"
	"strings"
	"testing"
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
