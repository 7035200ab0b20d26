package store

import (
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/cagnotte/cagnotte/crdt"
)

// TestGobCardRecordsRewrittenAtLoad: a store whose card records are still
// gob (as the first format-2 stores wrote them) loads the same state, and
// its records are binary afterwards, so that later starts decode them
// quickly. (Old event records, gob or binary, are moved to the event
// index: TestOldStoreEventsMigrate.)
func TestGobCardRecordsRewrittenAtLoad(t *testing.T) {
	dir := t.TempDir()
	w, st, _ := storeWithHistory(t, dir, 20, 10)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// Every card record back to gob.
	db, err := badger.Open(badgerOptions(Config{Dir: dir}, quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	err = db.Update(func(txn *badger.Txn) error {
		var cards []*crdt.Card
		if err := eachCard(txn, func(c *crdt.Card, _ bool) { cards = append(cards, c) }); err != nil {
			return err
		}
		for _, c := range cards {
			b, err := gobBytes(c)
			if err != nil {
				return err
			}
			if err := txn.Set(recordKey(prefixCard, []byte(c.ID)), b); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatalf("the history made %d cards", n)
	}

	for _, tc := range []struct {
		name    string
		wantGob int
	}{
		{"first load reads gob", n},
		{"second load reads binary", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := openStore(t, dir, 0)
			defer st.Close()
			var gobs int
			if err := st.db.View(func(txn *badger.Txn) error {
				return eachCard(txn, func(_ *crdt.Card, wasGob bool) {
					if wasGob {
						gobs++
					}
				})
			}); err != nil {
				t.Fatal(err)
			}
			if gobs != tc.wantGob {
				t.Errorf("%d gob card records before Load, want %d", gobs, tc.wantGob)
			}
			loaded, err := st.Load(w.fedKey())
			if err != nil {
				t.Fatal(err)
			}
			sameSet(t, loaded, w.ref.Set)
		})
	}
}
