package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
)

// TestEvidenceIngestedDurably: the ops a peer sends in the fork
// comparison of anti-entropy (p2p.Replica.IngestEvidence) are verified
// one by one, kept as evidence of the venue's equivocation, committed
// with the node's writes, and still there after a restart; an op with a
// bad signature among them is refused with a *crdt.OpError and does not
// keep the valid ones out.
func TestEvidenceIngestedDurably(t *testing.T) {
	vs, err := PrepareFederation(t.TempDir(), 2, crdt.DefaultSettings())
	if err != nil {
		t.Fatal(err)
	}
	v := &testVenue{t: t, dir: vs[0].Dir, token: vs[0].Token}
	v.start()
	t.Cleanup(v.stop)
	x, _, err := LoadOrCreateKey(filepath.Join(vs[1].Dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	// Venue 1's key signs three ops, then two branches from the same head.
	clock := crdt.NewClock(func() int64 { return time.Now().UnixMilli() })
	au := crdt.NewAuthor(x, clock, 0, crdt.OpID{})
	var common []crdt.Op
	for i := range 3 {
		common = append(common, au.Make(&crdt.TopUp{Card: "04A1B2C3D4E5F6", Amount: uint64(100 + i), Method: crdt.MethodCash}))
	}
	branch := func(base int) []crdt.Op {
		bu := crdt.NewAuthor(x, clock, 3, common[2].ID())
		var out []crdt.Op
		for i := range 2 {
			out = append(out, bu.Make(&crdt.TopUp{Card: crdt.CardID(fmt.Sprintf("04A1B2C3D4E5%02X", base+i)), Amount: uint64(base + i), Method: crdt.MethodCash}))
		}
		return out
	}
	a, b := branch(10), branch(40)
	ctx := context.Background()
	if err := v.node.Ingest(ctx, append(append([]crdt.Op{}, common...), a...)); err != nil {
		t.Fatal(err)
	}
	forged := b[1]
	forged.Body = append([]byte{}, forged.Body...)
	forged.Sig[0] ^= 1
	err = v.node.IngestEvidence(ctx, []crdt.Op{b[0], forged, b[1], common[1]})
	var oe *crdt.OpError
	if !errors.As(err, &oe) || !errors.Is(err, crdt.ErrBadSignature) {
		t.Fatalf("forged evidence: %v, want a bad signature", err)
	}
	check := func(when string) {
		t.Helper()
		ev := map[crdt.OpID]bool{}
		for _, op := range v.node.Evidence() {
			ev[op.ID()] = true
		}
		if len(ev) != 2 || !ev[b[0].ID()] || !ev[b[1].ID()] {
			t.Fatalf("%s: evidence %d ops, want the other branch's 2", when, len(ev))
		}
		c := v.node.Chains()[x.Public()]
		if c.Seq != 5 || c.Head != a[1].ID() || c.Fork != 4 {
			t.Fatalf("%s: chain %+v, want seq 5, head of branch A, fork at 4", when, c)
		}
	}
	check("after ingest")
	v.restart()
	check("after restart")
}
