package nfc

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// recorded is a Transmitter that plays back exchanges recorded from a
// reader: each command must be the next one expected.
type recorded struct {
	t    *testing.T
	exch [][2]string // command, answer (hex, spaces allowed)
	i    int
}

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

func (r *recorded) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	r.t.Helper()
	if r.i >= len(r.exch) {
		r.t.Fatalf("unexpected command % X", cmd)
	}
	e := r.exch[r.i]
	r.i++
	if want := unhex(e[0]); !bytes.Equal(cmd, want) {
		r.t.Fatalf("command %d: % X, want % X", r.i, cmd, want)
	}
	return unhex(e[1]), nil
}

func (r *recorded) done() {
	r.t.Helper()
	if r.i != len(r.exch) {
		r.t.Fatalf("%d of %d recorded exchanges used", r.i, len(r.exch))
	}
}

// Exchanges in the form the ACR122U answers (its API manual: pseudo-APDUs
// and the PN532's InCommunicateThru through direct transmit) and a generic
// CCID reader answers (PC/SC part 3, transparent exchange data objects),
// written down from those documents: no physical reader was at hand to
// record them (see the report of issue 13).
func TestAPDURecorded(t *testing.T) {
	ctx := context.Background()
	ntagATR := unhex("3B 8F 80 01 80 4F 0C A0 00 00 03 06 03 00 03 00 00 00 00 68")
	tests := []struct {
		name    string
		kind    ReaderKind
		exch    [][2]string
		run     func(tr Transmitter) error
		wantErr string
		wantSW  uint16
	}{
		{
			name: "ACR122U identify NTAG215",
			kind: ACR122U,
			exch: [][2]string{
				{"FF CA 00 00 00", "04 A1 B2 C3 D4 E5 F6 90 00"},
				{"FF 00 00 00 03 D4 42 60", "D5 43 00 00 04 04 02 01 00 11 03 90 00"},
			},
			run: func(tr Transmitter) error {
				uid, typ, err := Identify(ctx, tr, ACR122U, ntagATR, nil)
				if err == nil && (uid != "04A1B2C3D4E5F6" || typ != NTAG215) {
					t.Errorf("uid %s type %s", uid, typ)
				}
				return err
			},
		},
		{
			name: "generic CCID identify NTAG213 by transparent exchange",
			kind: GenericCCID,
			exch: [][2]string{
				{"FF CA 00 00 00", "04 A1 B2 C3 D4 E5 F6 90 00"},
				{"FF C2 00 00 02 81 00", "C0 03 00 90 00 90 00"},
				{"FF C2 00 01 03 95 01 60", "C0 03 00 90 00 92 01 00 97 08 00 04 04 02 01 00 0F 03 90 00"},
				{"FF C2 00 00 02 82 00", "C0 03 00 90 00 90 00"},
			},
			run: func(tr Transmitter) error {
				_, typ, err := Identify(ctx, tr, GenericCCID, ntagATR, nil)
				if err == nil && typ != NTAG213 {
					t.Errorf("type %s", typ)
				}
				return err
			},
		},
		{
			name: "ACR122U Ultralight C: GET_VERSION times out, page 43 readable",
			kind: ACR122U,
			exch: [][2]string{
				{"FF CA 00 00 00", "04 11 22 33 44 55 66 90 00"},
				{"FF 00 00 00 03 D4 42 60", "D5 43 01 90 00"},
				{"FF B0 00 2B 04", "00 00 00 00 90 00"},
			},
			run: func(tr Transmitter) error {
				_, typ, err := Identify(ctx, tr, ACR122U, ntagATR, func() error { return nil })
				if err == nil && typ != UltralightC {
					t.Errorf("type %s", typ)
				}
				return err
			},
		},
		{
			name: "MIFARE Classic ATR: UID only",
			kind: GenericCCID,
			exch: [][2]string{{"FF CA 00 00 00", "DE AD BE EF 90 00"}},
			run: func(tr Transmitter) error {
				uid, typ, err := Identify(ctx, tr, GenericCCID, unhex("3B 8F 80 01 80 4F 0C A0 00 00 03 06 03 00 01 00 00 00 00 6A"), nil)
				if err == nil && (uid != "DEADBEEF" || typ.Known()) {
					t.Errorf("uid %s type %s", uid, typ)
				}
				return err
			},
		},
		{
			name: "read 5 pages: two APDUs, the second with Le 4",
			exch: [][2]string{
				{"FF B0 00 04 10", "01 02 03 04 05 06 07 08 09 0A 0B 0C 0D 0E 0F 10 90 00"},
				{"FF B0 00 08 04", "11 12 13 14 90 00"},
			},
			run: func(tr Transmitter) error {
				b, err := ReadPages(ctx, tr, 4, 5)
				if err == nil && !bytes.Equal(b, unhex("0102030405060708090A0B0C0D0E0F1011121314")) {
					t.Errorf("read % X", b)
				}
				return err
			},
		},
		{
			name: "write 2 pages: one APDU per page",
			exch: [][2]string{
				{"FF D6 00 10 04 CA FE BA BE", "90 00"},
				{"FF D6 00 11 04 00 11 22 33", "90 00"},
			},
			run: func(tr Transmitter) error { return WritePages(ctx, tr, 0x10, unhex("CAFEBABE00112233")) },
		},
		{
			name:    "ACR122U read out of the card: 63 00",
			exch:    [][2]string{{"FF B0 00 E6 10", "63 00"}},
			run:     func(tr Transmitter) error { _, err := ReadPages(ctx, tr, 0xE6, 4); return err },
			wantSW:  0x6300,
			wantErr: "operation failed",
		},
		{
			name:    "generic CCID read out of the card: 6A 82",
			exch:    [][2]string{{"FF B0 00 F0 10", "6A 82"}},
			run:     func(tr Transmitter) error { _, err := ReadPages(ctx, tr, 0xF0, 4); return err },
			wantSW:  0x6A82,
			wantErr: "out of the card's memory",
		},
		{
			name:    "write a locked page: 69 82",
			exch:    [][2]string{{"FF D6 00 02 04 00 00 00 00", "69 82"}},
			run:     func(tr Transmitter) error { return WritePages(ctx, tr, 2, make([]byte, 4)) },
			wantSW:  0x6982,
			wantErr: "locked",
		},
		{
			name:    "reader without transparent exchange: 6A 81",
			exch:    [][2]string{{"FF C2 00 00 02 81 00", "6A 81"}},
			run:     func(tr Transmitter) error { _, err := GetVersion(ctx, tr, GenericCCID); return err },
			wantSW:  0x6A81,
			wantErr: "not supported",
		},
		{
			name: "card gone during a read: 6F 00",
			exch: [][2]string{{"FF B0 00 04 10", "6F 00"}},
			run: func(tr Transmitter) error {
				_, err := ReadPages(ctx, tr, 4, 4)
				if !errors.Is(err, ErrCardRemoved) {
					t.Errorf("6F00 is not ErrCardRemoved: %v", err)
				}
				return err
			},
			wantSW: 0x6F00,
		},
		{
			name:    "UID answer too short",
			exch:    [][2]string{{"FF CA 00 00 00", "04 A1 90 00"}},
			run:     func(tr Transmitter) error { _, err := GetUID(ctx, tr); return err },
			wantErr: "get UID",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorded{t: t, exch: tc.exch}
			err := tc.run(r)
			r.done()
			if tc.wantErr == "" && tc.wantSW == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			if tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not say %q", err, tc.wantErr)
			}
			var se *StatusError
			if tc.wantSW != 0 && (!errors.As(err, &se) || se.SW != tc.wantSW) {
				t.Errorf("error %v is not status %04X", err, tc.wantSW)
			}
		})
	}
}

func TestTypeFromVersion(t *testing.T) {
	for _, tc := range []struct {
		v    []byte
		want CardType
	}{
		{VersionNTAG213, NTAG213}, {VersionNTAG215, NTAG215}, {VersionNTAG216, NTAG216},
		{VersionUL11, UltralightEV1_48}, {VersionUL21, UltralightEV1_128},
	} {
		got, err := TypeFromVersion(tc.v)
		if err != nil || got != tc.want {
			t.Errorf("% X: %v %v, want %v", tc.v, got, err, tc.want)
		}
	}
	if _, err := TypeFromVersion([]byte{0, 5, 4, 2, 1, 0, 0x11, 3}); err == nil {
		t.Error("non-NXP vendor accepted")
	}
}
