package crdt

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"math"
)

// A CardStamp is what a venue writes back onto a writable card (NTAG21x,
// MIFARE) with each payment: the card's counter and balance as that venue
// saw them, signed with the venue's node key. The next venue learns the
// card's state from the card itself, even when neither venue can reach the
// network. It is a fixed StampSize bytes, to fit the 144-byte user memory of
// an NTAG213.
type CardStamp struct {
	Card    CardID
	Counter uint64    // the counter of the last payment, at most 2^32-1
	Balance int64     // cents after that payment, within ±2^31
	Time    int64     // Unix seconds when the stamp was made
	Venue   PublicKey // the venue that signed it
	Sig     [ed25519.SignatureSize]byte
}

// StampSize is the encoded size of a card stamp: version, UID length, UID
// padded to 10 bytes, counter, balance, time, venue key, signature.
const StampSize = 1 + 1 + MaxCardBytes + 4 + 4 + 4 + 32 + ed25519.SignatureSize

const (
	stampVersion = 1
	stampDomain  = "cagnotte/stamp/v1\x00"
)

// ErrBadStamp is returned for a stamp that does not decode, is not signed
// by its venue, or is not for the card presented.
var ErrBadStamp = fmt.Errorf("%w: bad card stamp", ErrInvalidBody)

func (st *CardStamp) unsigned(dst []byte) []byte {
	uid, _ := decodeHex(string(st.Card))
	dst = append(dst, stampVersion, byte(len(uid)))
	var pad [MaxCardBytes]byte
	copy(pad[:], uid)
	dst = append(dst, pad[:]...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(st.Counter))
	dst = binary.BigEndian.AppendUint32(dst, uint32(int32(st.Balance)))
	dst = binary.BigEndian.AppendUint32(dst, uint32(st.Time))
	return append(dst, st.Venue[:]...)
}

// Encode returns the StampSize bytes to write on the card.
func (st *CardStamp) Encode() []byte {
	return append(st.unsigned(make([]byte, 0, StampSize)), st.Sig[:]...)
}

// SignStamp fills in the venue and signature of a stamp. It refuses values
// that do not fit the stamp's fixed fields.
func (s *Signer) SignStamp(st *CardStamp) error {
	if st.Counter > math.MaxUint32 || st.Balance > math.MaxInt32 || st.Balance < math.MinInt32 || st.Time < 0 || st.Time > math.MaxUint32 {
		return fmt.Errorf("%w: value out of range", ErrBadStamp)
	}
	if _, err := ParseCardID(string(st.Card)); err != nil {
		return fmt.Errorf("%w: %v", ErrBadStamp, err)
	}
	st.Venue = s.pub
	msg := append([]byte(stampDomain), st.unsigned(nil)...)
	copy(st.Sig[:], s.sign(msg))
	return nil
}

// DecodeStamp parses a stamp read from a card and checks its signature
// against the venue key it names. Whether that venue is a member is the
// caller's check (see State.CheckStamp).
func DecodeStamp(p []byte) (CardStamp, error) {
	var st CardStamp
	if len(p) != StampSize {
		return st, fmt.Errorf("%w: %d bytes, want %d", ErrBadStamp, len(p), StampSize)
	}
	if p[0] != stampVersion {
		return st, fmt.Errorf("%w: version %d", ErrBadStamp, p[0])
	}
	n := int(p[1])
	if n < MinCardBytes || n > MaxCardBytes {
		return st, fmt.Errorf("%w: UID length %d", ErrBadStamp, n)
	}
	for _, b := range p[2+n : 2+MaxCardBytes] {
		if b != 0 {
			return st, fmt.Errorf("%w: non-canonical padding", ErrBadStamp)
		}
	}
	st.Card = CardID(encodeHexUpper(p[2 : 2+n]))
	q := p[2+MaxCardBytes:]
	st.Counter = uint64(binary.BigEndian.Uint32(q[0:4]))
	st.Balance = int64(int32(binary.BigEndian.Uint32(q[4:8])))
	st.Time = int64(binary.BigEndian.Uint32(q[8:12]))
	copy(st.Venue[:], q[12:44])
	copy(st.Sig[:], q[44:])
	msg := append([]byte(stampDomain), p[:StampSize-ed25519.SignatureSize]...)
	if !ed25519.Verify(st.Venue[:], msg, st.Sig[:]) {
		return st, fmt.Errorf("%w: signature", ErrBadStamp)
	}
	return st, nil
}
