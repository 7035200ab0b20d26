package store

import (
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/dgraph-io/badger/v4"
)

// TestIdempotencyAnswersExpire: an API answer stays under its key for the
// configured retention (7 days by default, forever when negative) and is
// gone after it, so a season of API payments does not keep one answer per
// payment on disk.
func TestIdempotencyAnswersExpire(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ttl      time.Duration
		wantLife time.Duration // 0: no expiry
	}{
		{"default is seven days", 0, DefaultIdempotencyTTL},
		{"configured", 36 * time.Hour, 36 * time.Hour},
		{"negative keeps forever", -1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, st, set := storeWithGenesis(t, Config{Dir: t.TempDir(), IdempotencyTTL: tc.ttl})
			defer st.Close()
			before := time.Now()
			commitAnswer(t, w, st, set, "k1")
			if r, ok, err := st.Idempotency("k1"); err != nil || !ok || string(r.Body) != "ok" {
				t.Fatalf("fresh answer: %+v %v %v", r, ok, err)
			}
			var expires uint64
			if err := st.db.View(func(txn *badger.Txn) error {
				item, err := txn.Get(idemKey("k1"))
				if err != nil {
					return err
				}
				expires = item.ExpiresAt()
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if tc.wantLife == 0 {
				if expires != 0 {
					t.Fatalf("expires at %d, want never", expires)
				}
				return
			}
			lo, hi := before.Add(tc.wantLife).Unix()-1, time.Now().Add(tc.wantLife).Unix()+1
			if int64(expires) < lo || int64(expires) > hi {
				t.Fatalf("expires at %d, want within [%d, %d]", expires, lo, hi)
			}
		})
	}
}

// TestIdempotencyAnswerGoneAfterTTL: past its retention, a key is unknown
// again (a retry then is a new request, as with Stripe's keys).
func TestIdempotencyAnswerGoneAfterTTL(t *testing.T) {
	w, st, set := storeWithGenesis(t, Config{Dir: t.TempDir(), IdempotencyTTL: time.Second})
	defer st.Close()
	commitAnswer(t, w, st, set, "k1")
	if _, ok, err := st.Idempotency("k1"); err != nil || !ok {
		t.Fatalf("fresh answer missing: %v %v", ok, err)
	}
	// Badger's expiry has a one-second grain: wait on the condition.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, ok, err := st.Idempotency("k1")
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the answer is still there 10 s after its 1 s retention")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// commitAnswer commits one venue op with an API answer stored under key.
func commitAnswer(t *testing.T, w *world, st *Store, set *crdt.OpSet, key string) {
	t.Helper()
	op := w.venueOp(0)
	w.deliver(op)
	addCommit(t, st, set, []crdt.Op{op}, IdemRecord{Key: key, Status: 200, Body: []byte("ok")})
}
