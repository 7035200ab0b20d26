package nfc

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cagnotte/cagnotte/crdt"
)

// SimCards is the wallet of simulated cards the demo and tests tap on
// simulated readers: one SimTag per UID, kept in memory or, with a
// directory, in one file per card (<UID>.json) so a demo's cards keep their
// stamps across runs. It is safe for concurrent use.
type SimCards struct {
	dir  string
	typ  CardType
	mu   sync.Mutex
	tags map[crdt.CardID]*SimTag
}

// NewSimCards returns a wallet whose new cards are of type t (NTAG215 if
// t is unknown), kept in dir ("" for memory only).
func NewSimCards(dir string, t CardType) (*SimCards, error) {
	if !t.Known() {
		t = NTAG215
	}
	if dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("nfc: simulated cards: %w", err)
		}
	}
	return &SimCards{dir: dir, typ: t, tags: map[crdt.CardID]*SimTag{}}, nil
}

// Tag returns the card with that UID, loading it from the directory or
// making a new factory-fresh one.
func (w *SimCards) Tag(uid crdt.CardID) (*SimTag, error) {
	id, err := crdt.ParseCardID(string(uid))
	if err != nil {
		return nil, fmt.Errorf("nfc: simulated card: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if t := w.tags[id]; t != nil {
		return t, nil
	}
	var t *SimTag
	path := ""
	if w.dir != "" {
		path = filepath.Join(w.dir, string(id)+".json")
		if _, err := os.Stat(path); err == nil {
			if t, err = LoadSimTag(path); err != nil {
				return nil, err
			}
		}
	}
	if t == nil {
		if t, err = NewSimTag(id, w.typ); err != nil {
			return nil, err
		}
		if path != "" {
			if err := t.SaveTo(path); err != nil {
				return nil, err
			}
		}
	}
	w.tags[id] = t
	return t, nil
}
