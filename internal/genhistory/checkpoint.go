package genhistory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/node"
	"github.com/cagnotte/cagnotte/node/store"
)

// CheckpointInfo describes the checkpoint SaveAttestedCheckpoint saved.
type CheckpointInfo struct {
	// Ops is the number of ops the checkpoint summarizes.
	Ops uint64
	// Bytes is the size of its canonical encoding.
	Bytes int
	// Attestations is the number of venues that attested it (a quorum).
	Attestations int
	// Events is the number of events (the agenda) in the state, which
	// the node holds in memory.
	Events int
	// Took is how long loading, encoding, signing and saving took.
	Took time.Duration
}

// SaveAttestedCheckpoint saves, in the store of the generated data
// directory dir, a checkpoint of its whole state attested by a quorum of
// the generated federation's venues, signed with their seed-derived keys:
// what the node of venue 0 would hold if the other venues ran and reached
// the same state (one node alone never gathers a quorum). A new venue can
// then join from it ([node.CheckpointConfig]). The store must not be open
// elsewhere; ctx is checked before the work starts.
func SaveAttestedCheckpoint(ctx context.Context, dir string, logger *slog.Logger) (CheckpointInfo, error) {
	var info CheckpointInfo
	if err := ctx.Err(); err != nil {
		return info, err
	}
	start := time.Now()
	m, err := ReadManifest(dir)
	if err != nil {
		return info, fmt.Errorf("genhistory: checkpoint: %w", err)
	}
	keys, err := DeriveKeys(m.Seed, m.Venues)
	if err != nil {
		return info, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	st, err := store.Open(store.Config{Dir: filepath.Join(dir, node.StoreDir), Logger: logger})
	if err != nil {
		return info, fmt.Errorf("genhistory: checkpoint: %w", err)
	}
	err = func() error {
		set, err := st.Load(m.Federation)
		if err != nil {
			return err
		}
		cp, err := set.EncodeCheckpoint()
		if err != nil {
			return err
		}
		// A joiner counts the generated venues and itself.
		need := set.State.Settings.CheckpointQuorum(m.Venues + 1)
		if need > len(keys.Venues) {
			return fmt.Errorf("a quorum of %d venues, %d generated", need, len(keys.Venues))
		}
		atts := make([]crdt.Attestation, 0, need)
		for _, k := range keys.Venues[:need] {
			atts = append(atts, set.Attest(k, cp))
		}
		if err := st.SaveCheckpoint(cp, atts); err != nil {
			return err
		}
		events := 0
		set.State.Events().EachEvent(func(crdt.Event) bool { events++; return true })
		info = CheckpointInfo{Ops: set.Len(), Bytes: len(cp), Attestations: need, Events: events}
		return nil
	}()
	if cerr := st.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if err != nil {
		return CheckpointInfo{}, fmt.Errorf("genhistory: checkpoint: %w", err)
	}
	info.Took = time.Since(start)
	return info, nil
}
