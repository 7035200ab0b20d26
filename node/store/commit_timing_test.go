package store

import (
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

// TestCommitReportsItsPhases: Batch.Timing receives the phases of the
// commit (the durable phase includes the fsync, so it is never zero), and
// an empty batch reports nothing.
func TestCommitReportsItsPhases(t *testing.T) {
	gen, ops := benchPrepare(t, 3)
	st := openStore(t, t.TempDir(), 0)
	defer st.Close()
	cases := []struct {
		name    string
		ops     []crdt.Op
		durable bool
	}{
		{"genesis", gen, true},
		{"ops", ops[:3], true},
		{"empty", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var tm CommitTiming
			if err := st.Commit(Batch{Ops: c.ops, Timing: &tm}); err != nil {
				t.Fatal(err)
			}
			if got := tm.Durable > 0; got != c.durable {
				t.Fatalf("durable phase %s, want non-zero: %v", tm.Durable, c.durable)
			}
			if tm.Fill < 0 || tm.Wait < 0 {
				t.Fatalf("negative phase: %+v", tm)
			}
		})
	}
}
