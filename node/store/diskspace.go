package store

import (
	"errors"
	"fmt"
	"syscall"
)

// DefaultMinFreeBytes is the free space below which Commit refuses to
// write when Config.MinFreeBytes is zero: 128 MiB, room for Badger to fill
// its memtable log (16 MiB), flush it as a level-0 table and run a
// compaction.
const DefaultMinFreeBytes = 128 << 20

// ErrDiskFull is returned (wrapped) by Commit when the disk holding the
// store has less than Config.MinFreeBytes free, or when Badger met ENOSPC
// or EDQUOT. Nothing of the batch was written and the store stays usable:
// a later Commit succeeds once space is back.
//
// Badger writes its logs and tables through memory-mapped files, and a
// process that writes to a mapped page the full disk cannot back is killed
// (SIGBUS) rather than handed an error. That is why the store stops
// writing while headroom remains instead of waiting for ENOSPC.
var ErrDiskFull = errors.New("store: disk full")

// minFree is the headroom in force: Config.MinFreeBytes, its default, or
// 0 when the check is off.
func (s *Store) minFree() uint64 {
	switch v := s.cfg.MinFreeBytes; {
	case v < 0:
		return 0
	case v == 0:
		return DefaultMinFreeBytes
	default:
		return uint64(v)
	}
}

// FreeBytes returns the bytes available to the process on the file system
// holding the store.
func (s *Store) FreeBytes() (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.cfg.Dir, &st); err != nil {
		return 0, fmt.Errorf("store: statfs %s: %w", s.cfg.Dir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// CheckSpace returns nil when the store's disk has more than
// Config.MinFreeBytes free (or the check is off), else an error wrapping
// ErrDiskFull. A failed statfs is not taken for a full disk: the commit
// itself will tell.
func (s *Store) CheckSpace() error {
	want := s.minFree()
	if want == 0 {
		return nil
	}
	free, err := s.FreeBytes()
	if err != nil {
		return nil
	}
	if free < want {
		return fmt.Errorf("%w: %d MiB free on the store's disk, %d MiB kept free (store.Config.MinFreeBytes)",
			ErrDiskFull, free>>20, want>>20)
	}
	return nil
}

// IsDiskFull reports whether err says the disk is full: ErrDiskFull, or
// ENOSPC / EDQUOT from the file system.
func IsDiskFull(err error) bool {
	return errors.Is(err, ErrDiskFull) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
