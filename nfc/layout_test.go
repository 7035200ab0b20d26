package nfc

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
)

func TestLayoutFitsEveryType(t *testing.T) {
	for _, tc := range []struct {
		typ   CardType
		slots int
		ndef  int // bytes before the slots
	}{
		{NTAG213, 1, 20}, {NTAG215, 2, 256}, {NTAG216, 2, 640},
		{UltralightEV1_48, 0, 0}, {UltralightEV1_128, 1, 0}, {UltralightC, 1, 0}, {Ultralight, 0, 0},
	} {
		l := LayoutOf(tc.typ)
		if len(l.Slots) != tc.slots || 4*(l.NDEFEnd-l.NDEFStart) != tc.ndef {
			t.Errorf("%s: %d slots, %d NDEF bytes; want %d, %d", tc.typ, len(l.Slots), 4*(l.NDEFEnd-l.NDEFStart), tc.slots, tc.ndef)
		}
		for _, p := range l.Slots {
			if p < tc.typ.UserStart || p+slotPages > tc.typ.UserEnd || (l.NDEFEnd > l.NDEFStart && p < l.NDEFEnd) {
				t.Errorf("%s: slot at page %d outside the user memory or over the NDEF area", tc.typ, p)
			}
		}
	}
}

// simCardOn presents a new tag on a simulated reader and returns the card.
func simCardOn(t *testing.T, r *SimReader, tag *SimTag) Card {
	t.Helper()
	r.Present(tag)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := r.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestFormatWritesLinkPhonesRead(t *testing.T) {
	ctx := context.Background()
	const uri = "https://bar.example.org/c/AQcEobLD1OX2Zm9vYmFyYmF6cXV4cXV1eHh5enp5MTIzNDU2Nzg5MGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU2Nzg5LV8"
	for _, typ := range []CardType{NTAG215, NTAG216} {
		tag, _ := NewSimTag("04A1B2C3D4E5F6", typ)
		r := NewSimReader("sim")
		c := simCardOn(t, r, tag)
		if err := Format(ctx, c, uri); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		d, err := ReadCard(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if d.URI != uri || d.Current != -1 {
			t.Errorf("%s: uri %q current %d", typ, d.URI, d.Current)
		}
		// What a phone reads: the CC, then the NDEF TLV at page 4.
		mem := tag.Memory()
		if mem[12] != 0xE1 || mem[16] != 0x03 {
			t.Errorf("%s: CC % X, first TLV %#02x", typ, mem[12:16], mem[16])
		}
		if got, err := parseNDEFURI(mem[16:]); err != nil || got != uri {
			t.Errorf("%s: phone view %q %v", typ, got, err)
		}
	}
	// An NTAG213 has no room for the link beside its stamp slot.
	tag, _ := NewSimTag("04A1B2C3D4E5F6", NTAG213)
	c := simCardOn(t, NewSimReader("sim"), tag)
	if err := Format(ctx, c, uri); err == nil {
		t.Error("NTAG213 took a 200-byte link")
	}
	if err := Format(ctx, c, ""); err != nil {
		t.Errorf("NTAG213 without link: %v", err)
	}
}

func TestStampWriteReadVerify(t *testing.T) {
	ctx := context.Background()
	venue := testSigner(t, 1)
	for _, typ := range []CardType{NTAG213, NTAG215, NTAG216, UltralightEV1_128, UltralightC} {
		t.Run(typ.Name, func(t *testing.T) {
			tag, _ := NewSimTag("04A1B2C3D4E5F6", typ)
			c := simCardOn(t, NewSimReader("sim"), tag)
			if _, err := ReadStamp(ctx, c); !errors.Is(err, ErrNoStamp) {
				t.Fatalf("blank card: %v", err)
			}
			for i := uint64(1); i <= 3; i++ {
				st := testStamp(t, venue, c.UID(), i, int64(1000-100*i))
				if err := WriteStamp(ctx, c, st); err != nil {
					t.Fatal(err)
				}
				got, err := ReadStamp(ctx, c)
				if err != nil || !bytes.Equal(got, st) {
					t.Fatalf("stamp %d read back %v", i, err)
				}
			}
			// Another card's stamp is refused before anything is written.
			other := testStamp(t, venue, "04000000000001", 9, 1)
			if err := WriteStamp(ctx, c, other); !errors.Is(err, crdt.ErrBadStamp) {
				t.Errorf("another card's stamp: %v", err)
			}
		})
	}
	tag, _ := NewSimTag("04A1B2C3", UltralightEV1_48)
	c := simCardOn(t, NewSimReader("sim"), tag)
	if err := WriteStamp(ctx, c, testStamp(t, venue, "04A1B2C3", 1, 1)); !errors.Is(err, ErrNotWritable) {
		t.Errorf("48-byte card: %v", err)
	}
}

// A card pulled at every point of a stamp write never shows a half-written
// stamp: on two-slot cards it shows the previous one (or the new one once
// all its bytes are on the card), on one-slot cards the previous one, the
// new one or none.
func TestCardPulledMidWriteKeepsPreviousStamp(t *testing.T) {
	ctx := context.Background()
	venue := testSigner(t, 1)
	for _, typ := range []CardType{NTAG215, NTAG213} {
		for at := 1; at <= slotPages; at++ {
			tag, _ := NewSimTag("04A1B2C3D4E5F6", typ)
			r := NewSimReader("sim")
			c := simCardOn(t, r, tag)
			old := testStamp(t, venue, c.UID(), 1, 900)
			if err := WriteStamp(ctx, c, old); err != nil {
				t.Fatal(err)
			}
			tag.PullAfterWrites(at)
			nw := testStamp(t, venue, c.UID(), 2, 800)
			err := WriteStamp(ctx, c, nw)
			if err == nil && !tag.Pulled() {
				// Fewer page writes than at: unchanged pages are skipped.
				tag.PullAfterWrites(0)
				if got, err := ReadStamp(ctx, c); err != nil || !bytes.Equal(got, nw) {
					t.Fatalf("%s: complete write not shown: %v", typ, err)
				}
				continue
			}
			if !errors.Is(err, ErrCardRemoved) {
				t.Fatalf("%s pulled at write %d: %v", typ, at, err)
			}
			r.Remove()
			tag.PutBack()
			c = simCardOn(t, r, tag)
			got, err := ReadStamp(ctx, c)
			switch {
			case typ == NTAG215 && err != nil:
				t.Fatalf("%s pulled at write %d: previous stamp lost: %v", typ, at, err)
			case typ == NTAG215 && at < slotPages && !bytes.Equal(got, old):
				t.Fatalf("%s pulled at write %d: does not show the previous stamp", typ, at)
			case err == nil && !bytes.Equal(got, old) && !bytes.Equal(got, nw):
				t.Fatalf("%s pulled at write %d: shows a stamp that is neither the previous nor the new one", typ, at)
			case typ == NTAG213 && err != nil && !errors.Is(err, ErrNoStamp):
				t.Fatalf("%s pulled at write %d: %v", typ, at, err)
			}
		}
	}
}

func TestCorruptSlotNeverChosen(t *testing.T) {
	ctx := context.Background()
	venue := testSigner(t, 1)
	tag, _ := NewSimTag("04A1B2C3D4E5F6", NTAG215)
	c := simCardOn(t, NewSimReader("sim"), tag)
	s1 := testStamp(t, venue, c.UID(), 1, 900)
	s2 := testStamp(t, venue, c.UID(), 2, 800)
	for _, s := range [][]byte{s1, s2} {
		if err := WriteStamp(ctx, c, s); err != nil {
			t.Fatal(err)
		}
	}
	// Flip a byte of the newest stamp (in the second slot): the first one
	// is shown again.
	l := LayoutOf(NTAG215)
	p := l.Slots[1] + 5
	b, _ := c.Read(ctx, p, 1)
	b[0] ^= 0xFF
	if err := c.Write(ctx, p, b); err != nil {
		t.Fatal(err)
	}
	got, err := ReadStamp(ctx, c)
	if err != nil || !bytes.Equal(got, s1) {
		t.Fatalf("corrupt newest slot: %v", err)
	}
}
