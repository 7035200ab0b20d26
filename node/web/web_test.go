package web

import (
	"slices"
	"strings"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

func TestUIDCandidates(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []crdt.CardID
	}{
		{"04A1B2C3D4E5F6", []crdt.CardID{"04A1B2C3D4E5F6", "F6E5D4C3B2A104"}},
		{"04:a1:b2:c3:d4:e5:f6", []crdt.CardID{"04A1B2C3D4E5F6", "F6E5D4C3B2A104"}},
		{"1303689068602870", []crdt.CardID{"04A1B2C3D4E5F6", "F6E5D4C3B2A104", "1303689068602870", "7028606890680313"}},
		{"69495546249912580", []crdt.CardID{"F6E5D4C3B2A104", "04A1B2C3D4E5F6"}},
		{"3735928559", []crdt.CardID{"DEADBEEF", "EFBEADDE", "3735928559", "5985923537"}}, // 4-byte UID in decimal
		{"0012345678", []crdt.CardID{"00BC614E", "4E61BC00", "0012345678", "7856341200"}},
		{"", nil},
		{"xyz", nil},
		{"0102", nil},
		{strings.Repeat("1", 65), nil},
	} {
		if got := UIDCandidates(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("UIDCandidates(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestNegotiateLanguage(t *testing.T) {
	for _, tc := range []struct {
		choice, cookie, accept string
		want                   Lang
	}{
		{"", "", "", English},
		{"", "", "fr-FR,fr;q=0.9,en;q=0.8", French},
		{"", "", "de-DE,en;q=0.5,fr;q=0.7", French},
		{"", "", "de-DE", English},
		{"", "fr", "en", French},
		{"en", "fr", "fr", English},
		{"xx", "", "fr", French},
		{"", "", "fr;q=0", English},
	} {
		if got := Negotiate(tc.choice, tc.cookie, tc.accept); got != tc.want {
			t.Errorf("Negotiate(%q, %q, %q) = %s, want %s", tc.choice, tc.cookie, tc.accept, got, tc.want)
		}
	}
}

func TestMoneyFormat(t *testing.T) {
	for _, tc := range []struct {
		lang  Lang
		cur   string
		cents int64
		want  string
	}{
		{English, "EUR", 1150, "€11.50"},
		{French, "EUR", 1150, "11,50\u00a0€"},
		{English, "EUR", 123456789, "€1,234,567.89"},
		{French, "EUR", 123456789, "1\u202f234\u202f567,89\u00a0€"},
		{English, "CHF", 5, "CHF\u00a00.05"},
		{French, "EUR", -250, "−2,50\u00a0€"},
	} {
		if got := Money(tc.lang, tc.cur, tc.cents); got != tc.want {
			t.Errorf("Money(%s, %s, %d) = %q, want %q", tc.lang, tc.cur, tc.cents, got, tc.want)
		}
	}
}
