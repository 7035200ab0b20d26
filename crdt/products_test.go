package crdt_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

// A venue's product list is one op, last writer wins, the same on every
// replica; bad lists are refused.
func TestProductsLastWriterWins(t *testing.T) {
	f := newFixture(t)
	p1 := f.a.make(1, &crdt.Products{Items: []crdt.Product{{Name: "Bière", Price: 350}, {Name: "Café", Price: 150}}})
	p2 := f.a.make(5, &crdt.Products{Items: []crdt.Product{{Name: "Bière", Price: 400}}})
	r := sameEverywhere(t, f, nil, []crdt.Op{p1, p2})
	v := r.Set.State.Venues[f.a.key()]
	if len(v.Products) != 1 || v.Products[0].Price != 400 {
		t.Fatalf("products %+v, want the later list", v.Products)
	}
}

func TestProductsRefused(t *testing.T) {
	long := strings.Repeat("x", crdt.MaxProductName+1)
	many := make([]crdt.Product, crdt.MaxProducts+1)
	for i := range many {
		many[i] = crdt.Product{Name: strings.Repeat("p", 1+i%20) + string(rune('a'+i%26)), Price: 1}
	}
	for name, items := range map[string][]crdt.Product{
		"empty name":  {{Name: " ", Price: 1}},
		"zero price":  {{Name: "a", Price: 0}},
		"long name":   {{Name: long, Price: 1}},
		"twice":       {{Name: "a", Price: 1}, {Name: "a", Price: 2}},
		"too many":    many,
		"huge amount": {{Name: "a", Price: crdt.MaxAmount + 1}},
	} {
		if _, err := crdt.DecodeBody(crdt.KindProducts, crdt.EncodeBody(&crdt.Products{Items: items})); !errors.Is(err, crdt.ErrInvalidBody) && !errors.Is(err, crdt.ErrTooLarge) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
