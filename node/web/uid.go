package web

import (
	"encoding/hex"
	"math/big"
	"slices"
	"strings"

	"github.com/cagnotte/cagnotte/crdt"
)

// maxUIDInput bounds what a reader or a cashier may type as a card id.
const maxUIDInput = 64

// UIDCandidates returns the card ids a typed or keyboard-wedge-read UID may
// stand for, most likely first. Readers that type the UID as hex may use
// either case, separators (":", "-", spaces) and either byte order;
// readers that type it as a decimal number may read the bytes in either
// order. Eight digits or more are read as decimal first (what such
// readers type), then as hex. The caller picks the first candidate it knows.
func UIDCandidates(input string) []crdt.CardID {
	s := strings.TrimSpace(input)
	if len(s) > maxUIDInput {
		return nil
	}
	s = strings.NewReplacer(":", "", "-", "", " ", "").Replace(s)
	var out []crdt.CardID
	add := func(b []byte) {
		if len(b) < 4 || len(b) > 10 {
			return
		}
		c, err := crdt.ParseCardID(hex.EncodeToString(b))
		if err == nil && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	digitsOnly := s != "" && strings.Trim(s, "0123456789") == ""
	if digitsOnly && len(s) >= 8 && len(s) <= 25 {
		v, ok := new(big.Int).SetString(s, 10)
		if ok {
			b := v.Bytes()
			for _, size := range []int{4, 7, 10} {
				if len(b) <= size {
					be := make([]byte, size)
					copy(be[size-len(b):], b)
					add(be)
					add(reversed(be))
					break
				}
			}
		}
	}
	if b, err := hex.DecodeString(s); err == nil {
		add(b)
		add(reversed(b))
	}
	return out
}

func reversed(b []byte) []byte {
	r := slices.Clone(b)
	slices.Reverse(r)
	return r
}
