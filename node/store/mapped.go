package store

import "time"

// DefaultMappedBudget is the resident size of Badger's mapped tables above
// which the store hands their pages back to the kernel, when
// Config.MappedBudget is zero: 64 MiB.
//
// Badger reads and writes its tables (.sst) through memory maps: every
// page a read touches, and every page of a table a compaction writes,
// stays resident in the process until the kernel needs the memory. Those
// pages are clean and reclaimable, but they count in the node's RSS and
// grow with the history (a 1 M-op store reached 340 MiB of them after its
// first compaction), so the store keeps them under a budget: past it, it
// asks the kernel to reclaim the tables' pages (madvise MADV_PAGEOUT,
// Linux 5.4 or later; elsewhere the budget is not enforced). The pages a
// read needs again come back from the disk or the page cache.
const DefaultMappedBudget = 64 << 20

// mappedTick is how often the store may compare the process's resident
// file-mapped memory with the budget or its burst limit: a read of
// /proc/self/status, about 50 microseconds. Which comparison a tick makes
// is mappedCheck's.
const mappedTick = 250 * time.Millisecond

// mappedFullCheck is every how many ticks the budget itself applies (5
// s); at all the ticks in between (every 250 ms) the burst limit (twice
// the budget) does.
//
// A compaction of the lower levels reads and writes hundreds of megabytes
// of tables in a few seconds, all resident: with the budget checked every
// 5 s alone, an hour of payments at 10 M ops peaked at 949 MiB of RSS, 700
// of them mapped tables. Checking the budget itself every second instead
// paged the tables out five times as often, and each page-out empties the
// page cache of them too (reads then come from the disk: payment p99
// 83-263 ms against 48-108 in paired runs); the burst limit only acts on
// a burst. With the burst limit checked every second, a compaction still
// added 100+ MiB of tables to a new venue's high-water mark within the
// second (VmHWM 487-542 MiB, over the 512 a node may reach), and the big
// compaction near the end of an hour of payments at 10 M ops did the same
// to the loaded node (526 MiB, 278 of them mapped): so the burst limit is
// checked at every tick, for every node.
const mappedFullCheck = 20

// mappedCheck tells whether check number tick (counted from 1) applies
// the burst limit (true) or, every mappedFullCheck ticks, the budget.
func mappedCheck(tick uint64) (burst bool) {
	return tick%mappedFullCheck != 0
}

// mappedBudget is the budget in force: Config.MappedBudget, its default,
// or 0 when it is off.
func (s *Store) mappedBudget() int64 {
	switch v := s.cfg.MappedBudget; {
	case v < 0:
		return 0
	case v == 0:
		return DefaultMappedBudget
	default:
		return v
	}
}

// trimMapped reclaims the tables' mapped pages when the process holds more
// file-mapped memory than the budget, or than twice the budget when burst
// is true (see mappedCheck). It returns the bytes of mappings it advised
// (0 when under the limit or unsupported).
func (s *Store) trimMapped(burst bool) int64 {
	budget := s.mappedBudget()
	if budget == 0 {
		return 0
	}
	limit := budget
	if burst {
		limit = 2 * budget
	}
	resident, ok := residentFileBytes()
	if !ok || resident <= limit {
		return 0
	}
	start := time.Now()
	n, err := pageOutTables(s.cfg.Dir)
	if err != nil {
		s.log.Debug("reclaim mapped table pages", "err", err)
	}
	// Logged to tell whether a writer's slow commit coincides with it.
	s.log.Debug("mapped table pages reclaimed", "resident_bytes", resident, "advised_bytes", n, "took", time.Since(start))
	return n
}

// releaseValueLog hands the value log's resident pages back to the kernel
// after a checkpoint's chunks were written or read (80 MB at 10 M ops,
// resident otherwise until the next page-out of the tables: a venue that
// served its checkpoint to a joiner reached 424 MiB of RSS). Only big
// values live in the value log, so no payment reads them again.
func (s *Store) releaseValueLog() {
	if s.mappedBudget() == 0 {
		return
	}
	n, err := pageOutValueLog(s.cfg.Dir)
	if err != nil {
		s.log.Debug("reclaim value log pages", "err", err)
		return
	}
	s.log.Debug("value log pages reclaimed", "advised_bytes", n)
}
