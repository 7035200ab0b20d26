package nfc

import (
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

func TestParseWedgeUID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		f    WedgeFormat
		want crdt.CardID
		bad  bool
	}{
		{"04a1b2c3d4e5f6", WedgeHex, "04A1B2C3D4E5F6", false},
		{"04:A1:B2:C3:D4:E5:F6\n", WedgeHex, "04A1B2C3D4E5F6", false},
		{"04-a1-b2-c3", WedgeHex, "04A1B2C3", false},
		{"04 A1 B2 C3", WedgeHex, "04A1B2C3", false},
		{"0x04A1B2C3", WedgeHex, "04A1B2C3", false},
		{"C3B2A104", WedgeHexReversed, "04A1B2C3", false},
		{"78754500", WedgeDecimal, "04B1B2C4", false},
		{"0078754500", WedgeDecimal, "04B1B2C4", false},
		// A reader printing the first 4 bytes as a little-endian integer.
		{"3283263748", WedgeDecimalReversed, "04A1B2C3", false},
		// Leading zero bytes of a reversed UID are restored by Bytes.
		{"11", WedgeFormat{Decimal: true, Reversed: true, Bytes: 4}, "0B000000", false},
		{"04A1B2", WedgeHex, "", true},                   // 3 bytes
		{"04A1B2C3D4E5F60708090A0B", WedgeHex, "", true}, // 12 bytes
		{"zz", WedgeHex, "", true},
		{"-5", WedgeDecimal, "", true},
		{"12a", WedgeDecimal, "", true},
		{"", WedgeHex, "", true},
		{"4294967296", WedgeFormat{Decimal: true, Bytes: 4}, "", true},
	} {
		got, err := ParseWedgeUID(tc.in, tc.f)
		if tc.bad {
			if err == nil {
				t.Errorf("%q %+v: accepted as %s", tc.in, tc.f, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q %+v: %s %v, want %s", tc.in, tc.f, got, err, tc.want)
		}
	}
}

func TestWedgeRoundTrip(t *testing.T) {
	for _, f := range []WedgeFormat{WedgeHex, WedgeHexReversed, WedgeDecimal, WedgeDecimalReversed} {
		for _, id := range []crdt.CardID{"04A1B2C3", "04A1B2C3D4E5F6", "12345678"} {
			s, err := FormatWedgeUID(id, f)
			if err != nil {
				t.Fatal(err)
			}
			if f.Decimal {
				f.Bytes = len(id) / 2
			}
			got, err := ParseWedgeUID(s, f)
			if err != nil || got != id {
				t.Errorf("%s %+v: typed %q, parsed %s %v", id, f, s, got, err)
			}
		}
	}
}
