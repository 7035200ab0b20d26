// Command fsynclat measures how long a small durable write waits while
// other files are written, the way a node's payment commit waits behind
// Badger's compactions. It writes 1,300 bytes (one payment's records) 200
// times a second into a 32 MiB log and makes each durable, in one of three
// ways:
//
//   - mmap: through a memory map of a file created by truncating it
//     (sparse), made durable by msync: what Badger does with its
//     memtable's write-ahead log;
//   - prealloc: pwrite into a file whose blocks were written and synced
//     beforehand, made durable by fdatasync;
//   - sparse: pwrite into a sparse file, fdatasync.
//
// Meanwhile (-load) it writes 2 MiB files through memory maps as fast as
// it can, syncing one in 16 (a compaction's tables, and the kernel's
// write-back of the rest). It prints the latency quantiles of the durable
// writes.
//
//	go run ./bench/fsynclat -mode mmap -d 20s -dir /var/tmp/fsynclat
//
// On ext4 a sync that must allocate blocks commits the journal, and in
// data=ordered mode that commit first writes the data of every file with
// newly allocated blocks, the compaction's included; a write into blocks
// already allocated and written needs no journal commit.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	mode := flag.String("mode", "mmap", "how each write is made durable: mmap, prealloc or sparse")
	dur := flag.Duration("d", 20*time.Second, "how long to write")
	load := flag.Bool("load", true, "write other files meanwhile")
	dir := flag.String("dir", filepath.Join(os.TempDir(), "fsynclat"), "directory for the files (created, then removed)")
	flag.Parse()
	if err := run(*mode, *dur, *load, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "fsynclat:", err)
		os.Exit(1)
	}
}

const (
	logSize   = 32 << 20
	record    = 1300
	interval  = 5 * time.Millisecond
	tableSize = 2 << 20
)

func run(mode string, dur time.Duration, load bool, dir string) error {
	if mode != "mmap" && mode != "prealloc" && mode != "sparse" {
		return fmt.Errorf("-mode %q: want mmap, prealloc or sparse", mode)
	}
	if _, err := os.Stat(dir); err == nil {
		return fmt.Errorf("-dir %s exists: give a new directory (it is removed at the end)", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	f, err := os.OpenFile(filepath.Join(dir, "log"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	var m []byte
	switch mode {
	case "mmap":
		if err := f.Truncate(logSize); err != nil {
			return err
		}
		if m, err = unix.Mmap(int(f.Fd()), 0, logSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
			return err
		}
		defer unix.Munmap(m)
	case "prealloc":
		zero := make([]byte, 1<<20)
		for range logSize / len(zero) {
			if _, err := f.Write(zero); err != nil {
				return err
			}
		}
		if err := f.Sync(); err != nil {
			return err
		}
	case "sparse":
		if err := f.Truncate(logSize); err != nil {
			return err
		}
	}

	var stop atomic.Bool
	var written atomic.Int64
	loadErr := make(chan error, 1)
	if load {
		go func() { loadErr <- writeTables(dir, &stop, &written) }()
		time.Sleep(2 * time.Second) // let the load reach its pace
	} else {
		loadErr <- nil
	}
	rec := make([]byte, record)
	var lat []time.Duration
	off := 0
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for end := time.Now().Add(dur); time.Now().Before(end); {
		<-tick.C
		t := time.Now()
		if mode == "mmap" {
			copy(m[off:], rec)
			err = unix.Msync(m, unix.MS_SYNC)
		} else if _, err = f.WriteAt(rec, int64(off)); err == nil {
			err = unix.Fdatasync(int(f.Fd()))
		}
		if err != nil {
			stop.Store(true)
			return err
		}
		lat = append(lat, time.Since(t))
		if off += record; off+record > logSize {
			off = 0
		}
	}
	stop.Store(true)
	if err := <-loadErr; err != nil {
		return fmt.Errorf("load: %w", err)
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))].Round(time.Microsecond) }
	fmt.Printf("mode=%s load=%v writes=%d p50=%v p90=%v p99=%v max=%v load_written=%d MiB\n",
		mode, load, len(lat), q(.5), q(.9), q(.99), lat[len(lat)-1].Round(time.Microsecond), written.Load()>>20)
	return nil
}

// writeTables writes 2 MiB files through memory maps until stop, syncing
// one in 16 and keeping the last 400.
func writeTables(dir string, stop *atomic.Bool, written *atomic.Int64) error {
	buf := make([]byte, tableSize)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for i := 0; !stop.Load(); i++ {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("t%06d.sst", i)), os.O_CREATE|os.O_RDWR|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		err = f.Truncate(tableSize)
		var m []byte
		if err == nil {
			m, err = unix.Mmap(int(f.Fd()), 0, tableSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		}
		if err == nil {
			copy(m, buf)
			if i%16 == 0 {
				err = unix.Msync(m, unix.MS_SYNC)
			}
			err = errors.Join(err, unix.Munmap(m))
		}
		if err = errors.Join(err, f.Close()); err != nil {
			return err
		}
		written.Add(tableSize)
		if i >= 400 {
			if err := os.Remove(filepath.Join(dir, fmt.Sprintf("t%06d.sst", i-400))); err != nil {
				return err
			}
		}
	}
	return nil
}
