package store

import (
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/cagnotte/cagnotte/crdt"
)

// rawRecords returns the stored meta and author records, by key.
func rawRecords(t *testing.T, db *badger.DB) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(keyMeta)
		if err != nil {
			return err
		}
		if out[string(keyMeta)], err = item.ValueCopy(nil); err != nil {
			return err
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixAuthor}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[string(it.Item().Key())] = v
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestGobMetaAndAuthorRecordsRead: a store whose meta and author records
// are gob (as every store wrote them before the binary records) loads the
// same state; the records a commit rewrites are binary, and the others
// still read back.
func TestGobMetaAndAuthorRecordsRead(t *testing.T) {
	dir := t.TempDir()
	w, st, _ := storeWithHistory(t, dir, 20, 10)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// The meta and every author record back to gob.
	db, err := badger.Open(badgerOptions(Config{Dir: dir}, quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	var binSize, gobSize int
	err = db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(keyMeta)
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		var m crdt.Meta
		if err := decodeMeta(v, &m); err != nil {
			return err
		}
		g, err := gobBytes(m)
		if err != nil {
			return err
		}
		binSize, gobSize = binSize+len(v), gobSize+len(g)
		if err := txn.Set(keyMeta, g); err != nil {
			return err
		}
		var authors []*crdt.AuthorState
		if err := eachAuthor(txn, func(a *crdt.AuthorState) { authors = append(authors, a) }); err != nil {
			return err
		}
		for _, a := range authors {
			g, err := gobBytes(a)
			if err != nil {
				return err
			}
			binSize, gobSize = binSize+len(a.AppendBinary(nil)), gobSize+len(g)
			if err := txn.Set(recordKey(prefixAuthor, a.Key[:]), g); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("meta and author records: %d bytes binary, %d gob", binSize, gobSize)
	if binSize*2 > gobSize {
		t.Errorf("binary records take %d bytes, gob %d: want less than half", binSize, gobSize)
	}

	st = openStore(t, dir, 0)
	set, err := st.Load(w.fedKey())
	if err != nil {
		t.Fatal(err)
	}
	sameSet(t, set, w.ref.Set)
	// One more op of venue 0: its author record and the meta are
	// rewritten binary, venue 1's and the federation's stay gob.
	op := w.venueOp(0)
	w.deliver(op)
	addCommit(t, st, set, []crdt.Op{op})
	authorKey := func(a *crdt.Author) []byte { k := a.Signer.Public(); return recordKey(prefixAuthor, k[:]) }
	isBinary := func(v []byte) bool { return len(v) > 0 && (v[0] == 0xA1 || v[0] == 0xD1) }
	recs := rawRecords(t, st.db)
	for _, tc := range []struct {
		name       string
		key        []byte
		wantBinary bool
	}{
		{"meta", keyMeta, true},
		{"venue 0", authorKey(w.venues[0]), true},
		{"venue 1", authorKey(w.venues[1]), false},
		{"federation", authorKey(w.fed), false},
	} {
		v, ok := recs[string(tc.key)]
		if !ok {
			t.Errorf("%s: no record", tc.name)
			continue
		}
		if isBinary(v) != tc.wantBinary {
			t.Errorf("%s: binary %v, want %v", tc.name, isBinary(v), tc.wantBinary)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = openStore(t, dir, 0)
	defer st.Close()
	set, err = st.Load(w.fedKey())
	if err != nil {
		t.Fatal(err)
	}
	sameSet(t, set, w.ref.Set)
}
