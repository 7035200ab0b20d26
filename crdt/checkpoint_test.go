package crdt_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
	"pgregory.net/rapid"
)

// TestPropertyCheckpointThenLaterOps: a replica restored from a checkpoint
// taken at any point of a scenario, then given the later ops, reaches the
// same digest and the same balances and counters as a replica that folded
// every op. (Scenarios with a revocation after the checkpoint are left out:
// a revocation can void folded ops, and a replica without the history
// before its checkpoint cannot refold them; it fetches a new checkpoint.)
func TestPropertyCheckpointThenLaterOps(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		sc := genScenario(t, genOptions{minSteps: 20, maxSteps: 150})
		k := rapid.IntRange(1, len(sc.ops)).Draw(t, "checkpoint after")
		for _, op := range sc.ops[k:] {
			if op.Kind == crdt.KindRevoke {
				t.Skip("revocation after the checkpoint")
			}
		}
		early := crdt.NewReplica(sc.fedKey())
		for _, op := range sc.ops[:k] {
			deliverChecked(t, sc, early, op, true)
		}
		if early.Pending.Len() != 0 || early.Set.Stale {
			t.Skip("checkpoint of an incomplete state")
		}
		cp, err := early.Set.EncodeCheckpoint()
		if errors.Is(err, crdt.ErrCheckpointFork) {
			t.Skip("fork")
		}
		if err != nil {
			t.Fatal(err)
		}
		d, err := crdt.DecodeCheckpoint(cp)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		restored := crdt.CheckpointSet(crdt.Config{Federation: sc.fedKey()}, d)
		if restored.Digest() != early.Set.Digest() {
			t.Fatal("restored checkpoint: digest differs")
		}
		again, err := restored.EncodeCheckpoint()
		if err != nil || !bytes.Equal(again, cp) {
			t.Fatalf("the restored set encodes another checkpoint (%v)", err)
		}
		var pending crdt.Pending
		for _, op := range sc.ops[k:] {
			out, err := restored.Add(op)
			switch {
			case err == nil && out == crdt.Added:
				pending.Drain(restored)
			case err == nil:
			case errors.Is(err, crdt.ErrGap), errors.Is(err, crdt.ErrUnknownAuthor):
				pending.Hold(op)
			case errors.Is(err, crdt.ErrDuplicate), errors.Is(err, crdt.ErrRevoked):
			default:
				t.Fatalf("later op %s#%d: %v", op.Author.Short(), op.Seq, err)
			}
		}
		ref := referenceReplica(t, sc)
		if restored.Digest() != ref.Set.Digest() {
			t.Fatal("checkpoint + later ops: digest differs from every op folded")
		}
		for id, c := range ref.Set.State.Cards {
			rc := restored.State.Cards[id]
			if rc == nil || rc.Balance != c.Balance || rc.Counter != c.Counter || rc.Blocked != c.Blocked {
				t.Fatalf("card %s: %+v, want %+v", id, rc, c)
			}
		}
	})
}

// attestedWorld is a federation of five venues with a checkpoint of its
// state and every venue's attestation of it.
func attestedWorld(t *testing.T) (f *fixture, venues []*actor, r *crdt.Replica, cp []byte, atts []crdt.Attestation) {
	t.Helper()
	f = newFixture(t)
	venues = []*actor{f.a, f.b}
	for i := byte(3); i <= 5; i++ {
		v := newActor(signerFromBytes(t, i))
		f.base = append(f.base, f.fed.make(1, &crdt.Admit{Venue: v.key(), Name: string('A' + i)}))
		venues = append(venues, v)
	}
	r = f.replica(t)
	mustDeliver(t, r, f.a.make(1, &crdt.TopUp{Card: advCard, Amount: 5000, Method: crdt.MethodCash}),
		f.b.make(1, &crdt.Payment{Card: advCard, Amount: 100, Counter: 1}))
	cp, err := r.Set.EncodeCheckpoint()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range venues {
		atts = append(atts, r.Set.Attest(v.signer, cp))
	}
	return f, venues, r, cp, atts
}

func members(r *crdt.Replica) map[crdt.PublicKey]bool {
	m := map[crdt.PublicKey]bool{}
	for k, v := range r.Set.State.Venues {
		if !v.Revoked {
			m[k] = true
		}
	}
	return m
}

// A checkpoint attested by a quorum of current venues is accepted; forged
// ones are refused: too few attestations, attestations by a revoked venue
// or by a key that is no venue, a checkpoint changed after it was attested,
// attestations of another state.
func TestForgedCheckpointRefused(t *testing.T) {
	f, venues, r, cp, atts := attestedWorld(t)
	need := r.Set.State.Settings.CheckpointQuorum(len(venues))
	if need != 3 {
		t.Fatalf("quorum of 5 venues: %d", need)
	}
	if _, err := crdt.VerifyCheckpoint(cp, atts[:3], members(r), need); err != nil {
		t.Fatalf("attested by 3 of 5: %v", err)
	}
	for _, a := range atts {
		got, err := crdt.DecodeAttestation(a.Encode())
		if err != nil || got != a {
			t.Fatalf("attestation round trip: %v", err)
		}
	}
	outsider := newActor(signerFromBytes(t, 99))
	byOutsider := r.Set.Attest(outsider.signer, cp)
	// Venue A revoked (as the joiner's own federation chain says).
	notA := members(r)
	delete(notA, venues[0].key())
	tampered := append([]byte(nil), cp...)
	tampered[len(tampered)-1] ^= 1 // the last evidence count... or any byte
	other := f.replica(t)
	otherCP, err := other.Set.EncodeCheckpoint()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		cp      []byte
		atts    []crdt.Attestation
		members map[crdt.PublicKey]bool
	}{
		{"two of five", cp, atts[:2], members(r)},
		{"the same venue three times", cp, []crdt.Attestation{atts[0], atts[0], atts[0]}, members(r)},
		{"one by a key that is no venue", cp, []crdt.Attestation{atts[0], atts[1], byOutsider}, members(r)},
		{"one by a revoked venue", cp, atts[:3], notA},
		{"checkpoint changed after it was attested", tampered, atts, members(r)},
		{"attestations of another state", otherCP, atts, members(r)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := crdt.VerifyCheckpoint(tc.cp, tc.atts, tc.members, need); !errors.Is(err, crdt.ErrNoQuorum) && !errors.Is(err, crdt.ErrCheckpoint) {
				t.Fatalf("accepted: %v", err)
			}
		})
	}
	forged := atts[2]
	forged.Sig[0] ^= 1
	if _, err := crdt.DecodeAttestation(forged.Encode()); !errors.Is(err, crdt.ErrCheckpoint) {
		t.Fatalf("forged signature: %v", err)
	}
	if _, err := crdt.VerifyCheckpoint(cp, []crdt.Attestation{atts[0], atts[1], forged}, members(r), need); !errors.Is(err, crdt.ErrNoQuorum) {
		t.Fatalf("a forged signature counted: %v", err)
	}
}
