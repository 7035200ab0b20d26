package simulations

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/node/store"
)

// durable is one venue's Badger store (store = "badger"): a real
// node/store database in a temporary directory and the op set bound to it
// (its records and index), kept level with the venue's memory replica by
// commit.
type durable struct {
	fed crdt.PublicKey
	dir string
	log *slog.Logger
	st  *store.Store
	set *crdt.OpSet
	ev  map[crdt.OpID]bool // evidence ops committed
}

// commitChunk bounds the ops of one Commit (node/store wants batches of a
// few hundred ops).
const commitChunk = 256

func openDurable(dir string, fed crdt.PublicKey, log *slog.Logger) (*durable, error) {
	st, err := store.Open(store.Config{Dir: dir, Logger: log, NoSync: true})
	if err != nil {
		return nil, err
	}
	return &durable{fed: fed, dir: dir, log: log, st: st, set: st.NewSet(fed), ev: map[crdt.OpID]bool{}}, nil
}

// commit writes what the memory replica holds and the store does not: the
// chain ranges it lacks (read from the replica's log, added to the store's
// set with AddRange as catch-up does, the federation's first so that
// admissions come before the venues' ops) and the evidence, in batches of
// at most commitChunk ops. A node commits what it makes before it answers,
// and what it receives within milliseconds: the run commits every venue at
// the end of each step, and crashes fall between steps.
func (d *durable) commit(rep *crdt.Replica) error {
	ranges := rep.Set.Missing(d.set.VersionVector())
	slices.SortStableFunc(ranges, func(a, b crdt.Range) int {
		switch {
		case a.Author == b.Author:
			return 0
		case a.Author == d.fed:
			return -1
		case b.Author == d.fed:
			return 1
		}
		return bytes.Compare(a.Author[:], b.Author[:])
	})
	for _, r := range ranges {
		for from := r.From; from <= r.To; from += commitChunk {
			to := min(r.To, from+commitChunk-1)
			var ops []crdt.Op
			if err := rep.Log.ReadRange(r.Author, from, to, func(op crdt.Op) error {
				ops = append(ops, op)
				return nil
			}); err != nil {
				return err
			}
			if len(ops) == 0 {
				continue
			}
			before, _ := d.set.Head(r.Author)
			_, err := d.set.AddRange(ops)
			if err != nil && !errors.Is(err, crdt.ErrEquivocation) {
				return fmt.Errorf("simulations: store %s: add %s#%d..%d: %w", d.dir, r.Author.Short(), from, to, err)
			}
			after, _ := d.set.Head(r.Author)
			var added []crdt.Op
			for _, op := range ops {
				if op.Seq > before && op.Seq <= after {
					added = append(added, op)
				}
			}
			if err := d.st.Commit(store.Batch{Ops: added, State: d.set}); err != nil {
				return fmt.Errorf("simulations: store %s: commit: %w", d.dir, err)
			}
		}
	}
	var ev []crdt.Op
	for id, op := range rep.Set.EvidenceOps {
		if d.ev[id] {
			continue
		}
		if _, err := d.set.AddEvidence(op); err != nil && !errors.Is(err, crdt.ErrDuplicate) {
			return fmt.Errorf("simulations: store %s: evidence: %w", d.dir, err)
		}
		d.ev[id] = true
		ev = append(ev, op)
	}
	if len(ev) > 0 {
		if err := d.st.Commit(store.Batch{Evidence: ev, State: d.set}); err != nil {
			return fmt.Errorf("simulations: store %s: commit evidence: %w", d.dir, err)
		}
	}
	return nil
}

// kill is kill -9 and a restart: the database's files are copied as the
// process leaves them (what it wrote, fsync'd or not, is in the page
// cache; nothing is flushed or closed first) to a new directory, the old
// store is dropped, and the copy is opened and loaded (store.Load: the
// records, no op replayed). It returns the memory replica the node
// restarts with, rebuilt from the store's ops.
func (d *durable) kill(next string) (*crdt.Replica, error) {
	if err := copyDir(d.dir, next); err != nil {
		return nil, fmt.Errorf("simulations: kill: copy %s: %w", d.dir, err)
	}
	if err := d.st.Close(); err != nil {
		d.log.Warn("simulate: close the killed store", "err", err)
	}
	if err := os.RemoveAll(d.dir); err != nil {
		return nil, err
	}
	st, err := store.Open(store.Config{Dir: next, Logger: d.log, NoSync: true})
	if err != nil {
		return nil, fmt.Errorf("simulations: restart: %w", err)
	}
	set, err := st.Load(d.fed)
	if err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("simulations: restart: load: %w", err)
	}
	d.dir, d.st, d.set = next, st, set
	rep := crdt.NewReplica(d.fed)
	authors := make([]crdt.PublicKey, 0, len(set.Authors))
	for k := range set.Authors {
		authors = append(authors, k)
	}
	slices.SortFunc(authors, func(a, b crdt.PublicKey) int {
		switch {
		case a == d.fed:
			return -1
		case b == d.fed:
			return 1
		}
		return bytes.Compare(a[:], b[:])
	})
	for _, k := range authors {
		head, _ := set.Head(k)
		var ops []crdt.Op
		if err := st.ReadRange(k, 1, head, func(op crdt.Op) error {
			ops = append(ops, op)
			return nil
		}); err != nil {
			return nil, fmt.Errorf("simulations: restart: read %s: %w", k.Short(), err)
		}
		if err := ingestRange(rep, ops); err != nil {
			return nil, fmt.Errorf("simulations: restart: replay %s: %w", k.Short(), err)
		}
	}
	for _, op := range set.EvidenceOps {
		if err := deliverTo(rep, op); err != nil {
			return nil, fmt.Errorf("simulations: restart: evidence: %w", err)
		}
	}
	return rep, nil
}

// size is the database's size on disk.
func (d *durable) size() int64 {
	var n int64
	_ = filepath.WalkDir(d.dir, func(_ string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			if info, ierr := e.Info(); ierr == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// copyDir copies the regular files of src (not the directory lock) to a
// new directory dst.
func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || e.Name() == "LOCK" {
			continue
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
