package nfc

import (
	"bytes"
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
)

// Fuzz targets for what is read off a card or typed by a reader (issue
// 16): a card's memory is whatever its last writer put there, a rogue's
// included. Run one with
//
//	go test ./nfc -run '^$' -fuzz '^FuzzReadCard$' -fuzztime 10m -parallel 1

// fuzzTypes are the card types a fuzzed memory is laid on.
var fuzzTypes = []CardType{NTAG213, NTAG215, NTAG216, UltralightC, UltralightEV1_128}

const fuzzUID = crdt.CardID("04A1B2C3D4E5F6")

// FuzzReadCard lays any bytes on a card's memory (from page 3: the UID
// pages stay the card's) and reads it through the simulated reader's APDUs
// as a point of sale does. A slot is chosen only with a stamp that
// verifies and is the card's; after writing a new stamp, the card shows
// exactly it.
func FuzzReadCard(f *testing.F) {
	signer := testSigner(f, 9)
	old := testStamp(f, signer, fuzzUID, 5, 1200)
	other := testStamp(f, signer, "04FFFFFFFFFFFF", 6, 1)
	fresh := testStamp(f, signer, fuzzUID, math.MaxUint32, 700)
	slot := func(gen byte, stamp []byte) []byte {
		return append([]byte{slotMagic0, slotMagic1, slotVer, gen}, stamp...)
	}
	tlv, err := ndefURITLV("https://www.cagnotte.example/c/AQdhYmNkZWZn")
	if err != nil {
		f.Fatal(err)
	}
	for ti, typ := range fuzzTypes {
		l := LayoutOf(typ)
		mem := make([]byte, 4*(typ.UserEnd-3))
		copy(mem, []byte{0xE1, 0x10, byte(typ.UserBytes() / 8), 0})
		copy(mem[4:], tlv)
		for i, p := range l.Slots {
			s := slot(byte(i), old)
			if i == 1 {
				s = slot(7, other)
			}
			copy(mem[4*(p-3):], s)
		}
		f.Add(uint8(ti), mem)
	}
	f.Add(uint8(1), []byte{0xE1, 0x10, 0x3F, 0, 0x03, 0xFF, 0xFF, 0xFF})
	f.Fuzz(func(t *testing.T, ti uint8, mem []byte) {
		typ := fuzzTypes[int(ti)%len(fuzzTypes)]
		tag, err := NewSimTag(fuzzUID, typ)
		if err != nil {
			t.Fatal(err)
		}
		for i := 3; i < len(tag.mem) && 4*(i-3) < len(mem); i++ {
			copy(tag.mem[i][:], mem[4*(i-3):])
		}
		r := NewSimReader("fuzz")
		defer r.Close()
		r.Present(tag)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := r.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		d, err := ReadCard(ctx, c)
		if err != nil {
			t.Fatalf("read a card in the field: %v", err)
		}
		for i, s := range d.Slots {
			if s.Stamp != nil && (s.Err != nil || s.Stamp.Card != fuzzUID) {
				t.Fatalf("slot %d: stamp kept with error %v for card %s", i, s.Err, s.Stamp.Card)
			}
		}
		if raw, err := d.Stamp(); err == nil {
			st, derr := crdt.DecodeStamp(raw)
			if derr != nil || st.Card != fuzzUID {
				t.Fatalf("the card shows a stamp that does not verify: %v", derr)
			}
		} else if !errors.Is(err, ErrNoStamp) {
			t.Fatalf("no stamp: %v", err)
		}
		if len(d.URI) > 4*typ.UserEnd+len("https://www.") {
			t.Fatalf("link of %d bytes from a card of %d", len(d.URI), typ.UserBytes())
		}
		if len(d.Layout.Slots) == 0 {
			return
		}
		if _, err := WriteStampOver(ctx, c, d.Slots, fresh); err != nil {
			t.Fatalf("write a stamp over what the card held: %v", err)
		}
		got, err := ReadStamp(ctx, c)
		if err != nil || !bytes.Equal(got, fresh) {
			t.Fatalf("after writing a stamp, the card shows %x, %v", got, err)
		}
	})
}

// FuzzNDEFURI parses any NDEF area (phones and the holder's link read it)
// without fault, and a link written by ndefURITLV reads back the same.
func FuzzNDEFURI(f *testing.F) {
	for _, u := range []string{"https://www.cagnotte.example/c/AQdhYmNkZWZn", "http://x", "mailto:a@b", "", strings.Repeat("é", 120)} {
		tlv, err := ndefURITLV(u)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(tlv, u)
	}
	f.Add([]byte{0x01, 0x03, 0xA0, 0x0C, 0x34, 0x03, 0x00, 0xFE}, "")
	f.Add([]byte{0x03, 0xFF, 0x01}, "")
	f.Fuzz(func(t *testing.T, area []byte, uri string) {
		if got, err := parseNDEFURI(area); err == nil && len(got) > len(area)+len("https://www.") {
			t.Fatalf("a %d-byte link from %d bytes", len(got), len(area))
		}
		tlv, err := ndefURITLV(uri)
		if err != nil {
			return // too long for a record
		}
		if uri == "" {
			if _, err := parseNDEFURI(tlv); !errors.Is(err, errNoURI) {
				t.Fatalf("empty message reads as a link: %v", err)
			}
			return
		}
		got, err := parseNDEFURI(tlv)
		if err != nil || got != uri {
			t.Fatalf("link %q reads back as %q, %v", uri, got, err)
		}
	})
}

// FuzzParseWedgeUID parses what a keyboard-wedge reader types (the point
// of sale page sends it); a UID that parses formats back to a text that
// parses to the same UID.
func FuzzParseWedgeUID(f *testing.F) {
	for _, s := range []struct {
		in           string
		decimal, rev bool
		bytes        uint8
	}{
		{"04A1B2C3D4E5F6", false, false, 0},
		{"04:a1:b2:c3:d4:e5:f6\n", false, true, 0},
		{"0x04A1B2C3", false, false, 0},
		{"3281289732", true, false, 0},
		{"3281289732", true, true, 7},
		{"-1", true, false, 0},
		{"99999999999999999999999999", true, false, 10},
	} {
		f.Add(s.in, s.decimal, s.rev, s.bytes)
	}
	f.Fuzz(func(t *testing.T, in string, decimal, reversed bool, size uint8) {
		wf := WedgeFormat{Decimal: decimal, Reversed: reversed, Bytes: int(size % 16)}
		id, err := ParseWedgeUID(in, wf)
		if err != nil {
			return
		}
		if _, err := crdt.ParseCardID(string(id)); err != nil {
			t.Fatalf("%q parsed as %q, not a card id: %v", in, id, err)
		}
		out, err := FormatWedgeUID(id, wf)
		if err != nil {
			t.Fatalf("format %s: %v", id, err)
		}
		back, err := ParseWedgeUID(out, wf)
		if err != nil || back != id {
			t.Fatalf("%q → %s → %q → %s, %v", in, id, out, back, err)
		}
	})
}
