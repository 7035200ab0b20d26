package node

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// A full disk: the store refuses to commit (store.ErrDiskFull) once its
// disk has less than store.Config.MinFreeBytes free, writing nothing. The
// writer then refuses every write of the batch with ErrDiskFull (507
// disk_full) without touching the op set, so the in-memory state never
// runs ahead of the disk; a commit that fails anyway is rolled back by
// reloading the set from disk. Reads, the status and replication as
// responder go on. Ops from peers that could not be committed are not
// kept: anti-entropy fetches them again once space is back.
//
// The episode is logged once at error level when it starts and once at
// info level when it ends. It ends by itself: every batch of writes checks
// the space again, and a watcher probes it with backoff (diskProbeMin to
// diskProbeMax) while no write comes, then asks a peer for anti-entropy at
// once.

const (
	diskProbeMin = 500 * time.Millisecond
	diskProbeMax = 10 * time.Second
)

// diskState is the node's disk-full episode.
type diskState struct {
	mu       sync.Mutex
	full     bool
	since    time.Time
	refused  uint64 // writes refused in this episode
	watching bool
}

// DiskStatus is what the node knows of its disk.
type DiskStatus struct {
	// Full is true while writes are refused because the disk is full.
	Full bool
	// Since is when the episode started (zero when not full).
	Since time.Time
	// Refused counts the writes refused in the episode.
	Refused uint64
}

// Disk returns the node's disk-full status.
func (n *Node) Disk() DiskStatus {
	n.disk.mu.Lock()
	defer n.disk.mu.Unlock()
	return DiskStatus{Full: n.disk.full, Since: n.disk.since, Refused: n.disk.refused}
}

// diskFull records that a write was refused for lack of space (cause is
// the store's error): the first refusal of an episode is logged at error
// level and starts the watcher. It returns the error to answer with.
func (n *Node) diskFull(cause error, writes int) error {
	d := &n.disk
	d.mu.Lock()
	first := !d.full
	if first {
		d.full, d.since, d.refused = true, n.cfg.Now(), 0
	}
	d.refused += uint64(writes)
	watch := !d.watching
	d.watching = true
	d.mu.Unlock()
	if first {
		n.log.Error("disk full: writes (payments, top-ups, every signed op) are refused until space is freed; reads and replication go on",
			"err", cause)
	}
	if watch {
		n.wg.Add(1) // called from the writer, itself counted in wg
		go func() {
			defer n.wg.Done()
			n.watchDisk()
		}()
	}
	return fmt.Errorf("node: write refused: %w (%w)", ErrDiskFull, cause)
}

// diskBack ends the episode, if any, once a check or a commit found space.
func (n *Node) diskBack() {
	d := &n.disk
	d.mu.Lock()
	was, since, refused := d.full, d.since, d.refused
	d.full, d.since, d.refused = false, time.Time{}, 0
	d.mu.Unlock()
	if was {
		n.log.Info("disk space is back: writes are taken again",
			"full_for", n.cfg.Now().Sub(since).Round(time.Millisecond), "writes_refused", refused)
		n.resyncAfterDiskFull()
	}
}

// checkDisk asks the store whether it has room to commit, and ends or
// starts the episode accordingly. It returns the store's error when full.
func (n *Node) checkDisk() error {
	err := n.store.CheckSpace()
	if err == nil {
		if n.diskIsFull() {
			n.diskBack()
		}
		return nil
	}
	return err
}

func (n *Node) diskIsFull() bool {
	n.disk.mu.Lock()
	defer n.disk.mu.Unlock()
	return n.disk.full
}

// watchDisk probes the space with backoff while the episode lasts, and
// ends it when space is back even if no write comes. It stops when the
// writer does.
func (n *Node) watchDisk() {
	wait := diskProbeMin
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-n.stopped:
			n.disk.mu.Lock()
			n.disk.watching = false
			n.disk.mu.Unlock()
			return
		case <-t.C:
		}
		if n.diskIsFull() {
			_ = n.checkDisk()
		}
		n.disk.mu.Lock()
		if !n.disk.full {
			n.disk.watching = false
			n.disk.mu.Unlock()
			return
		}
		n.disk.mu.Unlock()
		wait = min(2*wait, diskProbeMax)
		t.Reset(wait)
	}
}

// resyncAfterDiskFull asks a connected peer for anti-entropy at once: ops
// that arrived while the disk was full were not kept.
func (n *Node) resyncAfterDiskFull() {
	nw := n.net
	if nw == nil {
		return
	}
	peers := nw.Connected()
	if len(peers) == 0 {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		go func() {
			select {
			case <-n.stopped:
				cancel()
			case <-ctx.Done():
			}
		}()
		for _, p := range peers {
			if err := nw.SyncWith(ctx, p); err == nil {
				return
			} else if ctx.Err() != nil {
				return
			}
		}
	}()
}
