//go:build linux

package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// madvPageout is MADV_PAGEOUT (Linux 5.4): reclaim the range's pages.
// Unlike MADV_DONTNEED it never changes what a mapping holds (file pages
// are written back if dirty and read again on the next access, anonymous
// pages would be swapped out), so advising a range that was unmapped and
// reused in the meantime is harmless.
const madvPageout = 21

// residentFileBytes returns the process's resident file-mapped memory
// (RssFile in /proc/self/status).
func residentFileBytes() (int64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	return parseRssFile(b)
}

func parseRssFile(status []byte) (int64, bool) {
	for _, line := range bytes.Split(status, []byte("\n")) {
		v, ok := bytes.CutPrefix(line, []byte("RssFile:"))
		if !ok {
			continue
		}
		f := strings.Fields(string(v))
		if len(f) == 0 {
			return 0, false
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, false
		}
		return kb << 10, true
	}
	return 0, false
}

// pageOutTables advises MADV_PAGEOUT on every mapping of a table (.sst) or
// value-log file (.vlog) of dir, as /proc/self/maps lists them, and returns the bytes advised.
func pageOutTables(dir string) (int64, error) { return pageOutFiles(dir, ".sst", ".vlog") }

// pageOutValueLog advises MADV_PAGEOUT on the mappings of dir's value-log
// files alone: the big values (a checkpoint's chunks), which no payment
// reads, so that paging them out costs the node's reads nothing.
func pageOutValueLog(dir string) (int64, error) { return pageOutFiles(dir, ".vlog") }

// pageOutFiles advises MADV_PAGEOUT on every mapping of a file of dir
// whose name ends in one of exts, and returns the bytes advised.
func pageOutFiles(dir string, exts ...string) (int64, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return 0, err
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	ranges, err := fileMappings(f, abs, exts...)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, r := range ranges {
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, r[0], r[1]-r[0], madvPageout); e != 0 {
			if errors.Is(e, syscall.EINVAL) {
				return n, fmt.Errorf("madvise MADV_PAGEOUT: %w (Linux before 5.4?)", e)
			}
			continue // ENOMEM: unmapped since /proc/self/maps was read
		}
		n += int64(r[1] - r[0])
	}
	return n, nil
}

// tableMappings returns the address ranges of the mappings of dir's .sst
// and .vlog files in a /proc/PID/maps listing.
func tableMappings(maps *os.File, dir string) ([][2]uintptr, error) {
	return fileMappings(maps, dir, ".sst", ".vlog")
}

// fileMappings returns the address ranges of the mappings of dir's files
// whose names end in one of exts, in a /proc/PID/maps listing.
func fileMappings(maps *os.File, dir string, exts ...string) ([][2]uintptr, error) {
	var out [][2]uintptr
	sc := bufio.NewScanner(maps)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	prefix := dir + string(filepath.Separator)
	for sc.Scan() {
		line := sc.Text()
		// start-end perms offset dev inode path
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		path := strings.Join(f[5:], " ")
		// Value-log files too: they hold the saved checkpoint's chunks
		// (tens of MB at a season's end), resident once written or served.
		if !strings.HasPrefix(path, prefix) || !slices.ContainsFunc(exts, func(e string) bool { return strings.HasSuffix(path, e) }) {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		a, err1 := strconv.ParseUint(lo, 16, 64)
		b, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || b <= a {
			continue
		}
		out = append(out, [2]uintptr{uintptr(a), uintptr(b)})
	}
	return out, sc.Err()
}
