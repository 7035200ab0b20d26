package nfc

import (
	"context"
	"encoding/hex"
	"encoding/json"

	"fmt"
	"os"
	"sync"

	"github.com/cagnotte/cagnotte/crdt"
)

// SimTag is a card in memory: an NTAG21x or MIFARE Ultralight that answers
// the APDUs a PC/SC reader sends for it (FF CA, FF B0, FF D6, GET_VERSION
// through the ACR122U's direct transmit or PC/SC part 3's transparent
// exchange), with the status words real readers answer. The simulated
// reader and the vpcd card emulator (nfc/vpcd) both use it. It is safe for
// concurrent use.
type SimTag struct {
	mu      sync.Mutex
	uid     []byte
	typ     CardType
	mem     [][4]byte
	path    string
	pullIn  int  // > 0: the card leaves after this many more page writes
	pulled  bool // the card left mid-write: it answers nothing
	session bool // a PC/SC part 3 transparent session is open
}

// totalPages is the whole memory of each type (user memory plus the
// configuration pages after it).
func totalPages(t CardType) int {
	switch t {
	case NTAG213:
		return 45
	case NTAG215:
		return 135
	case NTAG216:
		return 231
	case UltralightEV1_48:
		return 20
	case UltralightEV1_128:
		return 41
	case UltralightC:
		return 48
	case Ultralight:
		return 16
	}
	return 0
}

// NewSimTag returns a factory-fresh card of type t: its UID in pages 0-2
// and, for NTAG21x, the capability container in page 3.
func NewSimTag(uid crdt.CardID, t CardType) (*SimTag, error) {
	b, err := hex.DecodeString(string(uid))
	if err != nil || len(b) < crdt.MinCardBytes || len(b) > crdt.MaxCardBytes {
		return nil, fmt.Errorf("nfc: simulated card: bad UID %q", uid)
	}
	n := totalPages(t)
	if n == 0 {
		return nil, fmt.Errorf("nfc: simulated card: unsupported type %q", t.Name)
	}
	s := &SimTag{uid: b, typ: t, mem: make([][4]byte, n)}
	var head [12]byte
	if len(b) == 7 {
		head = [12]byte{b[0], b[1], b[2], 0x88 ^ b[0] ^ b[1] ^ b[2], b[3], b[4], b[5], b[6], b[3] ^ b[4] ^ b[5] ^ b[6], 0x48}
	} else {
		copy(head[:], b)
	}
	for i := range 3 {
		copy(s.mem[i][:], head[4*i:])
	}
	if t.NDEF {
		s.mem[3] = [4]byte{0xE1, 0x10, byte(t.UserBytes() / 8), 0x00}
	}
	return s, nil
}

// UID returns the card's UID.
func (s *SimTag) UID() crdt.CardID { return crdt.CardID(fmt.Sprintf("%X", s.uid)) }

// Type returns the card's type.
func (s *SimTag) Type() CardType { return s.typ }

// PullAfterWrites makes the card leave the field after n more page writes
// (a card pulled mid-write): later commands fail as if it were gone.
// n ≤ 0 cancels.
func (s *SimTag) PullAfterWrites(n int) {
	s.mu.Lock()
	s.pullIn = max(n, 0)
	s.mu.Unlock()
}

// Pulled reports whether the card left mid-write; PutBack returns it.
func (s *SimTag) Pulled() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pulled
}

// PutBack puts a pulled card back in the field.
func (s *SimTag) PutBack() {
	s.mu.Lock()
	s.pulled, s.pullIn = false, 0
	s.mu.Unlock()
}

// Transmit answers one command APDU (Transmitter). A pulled card returns
// ErrCardRemoved.
func (s *SimTag) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := s.APDU(cmd)
	if r == nil {
		return nil, ErrCardRemoved
	}
	return r, s.persist()
}

func sw(hi, lo byte) []byte { return []byte{hi, lo} }

// APDU returns the response APDU to cmd, or nil when the card has left.
func (s *SimTag) APDU(cmd []byte) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pulled {
		return nil
	}
	if len(cmd) < 4 {
		return sw(0x67, 0x00)
	}
	if cmd[0] != 0xFF {
		return sw(0x6E, 0x00)
	}
	switch cmd[1] {
	case 0xCA: // GET DATA: UID
		if cmd[2] != 0 {
			return sw(0x6A, 0x81)
		}
		return append(append([]byte(nil), s.uid...), 0x90, 0x00)
	case 0xB0: // READ BINARY: pages from P2
		if len(cmd) != 5 {
			return sw(0x67, 0x00)
		}
		page, n := int(cmd[3]), int(cmd[4])
		if n == 0 {
			n = 16
		}
		if n > 16 {
			return sw(0x6C, 0x10)
		}
		if cmd[2] != 0 || page+(n+3)/4 > len(s.mem) {
			return sw(0x6A, 0x82)
		}
		out := make([]byte, 0, n+2)
		for i := 0; len(out) < n; i++ {
			out = append(out, s.mem[page+i][:]...)
		}
		return append(out[:n], 0x90, 0x00)
	case 0xD6: // UPDATE BINARY: one page
		if len(cmd) != 9 || cmd[4] != 4 {
			return sw(0x67, 0x00)
		}
		page := int(cmd[3])
		if cmd[2] != 0 || page >= len(s.mem) {
			return sw(0x6A, 0x82)
		}
		if page < 3 || page >= s.typ.UserEnd {
			return sw(0x63, 0x00) // the card NAKs: UID and configuration pages are not written here
		}
		if s.pullIn > 0 {
			s.pullIn--
			if s.pullIn == 0 {
				// The card leaves while this page is being written:
				// half of it reaches the memory.
				copy(s.mem[page][:2], cmd[5:7])
				s.pulled = true
				return nil
			}
		}
		if page == 3 { // capability container: one-time programmable bits
			for i := range 4 {
				s.mem[3][i] |= cmd[5+i]
			}
		} else {
			copy(s.mem[page][:], cmd[5:9])
		}
		return sw(0x90, 0x00)
	case 0x00: // direct transmit (ACR122U: PN532 command)
		if len(cmd) < 7 || cmd[4] != byte(len(cmd)-5) || cmd[5] != 0xD4 {
			return sw(0x6A, 0x81)
		}
		if cmd[6] == 0x42 && len(cmd) == 8 && cmd[7] == 0x60 {
			v := versionOf(s.typ)
			if v == nil {
				return []byte{0xD5, 0x43, 0x01, 0x90, 0x00} // timeout: the card NAKs
			}
			return append(append([]byte{0xD5, 0x43, 0x00}, v...), 0x90, 0x00)
		}
		return []byte{0xD5, cmd[6] + 1, 0x27, 0x90, 0x00} // PN532: command not acceptable
	case 0xC2: // PC/SC part 3 transparent exchange
		ok := []byte{0xC0, 0x03, 0x00, 0x90, 0x00}
		switch {
		case cmd[3] == 0x00 && len(cmd) == 7 && cmd[5] == 0x81:
			s.session = true
			return append(ok, 0x90, 0x00)
		case cmd[3] == 0x00 && len(cmd) == 7 && cmd[5] == 0x82:
			s.session = false
			return append(ok, 0x90, 0x00)
		case cmd[3] == 0x01 && s.session && len(cmd) >= 8 && cmd[5] == 0x95 && int(cmd[6]) == len(cmd)-7:
			if cmd[6] == 1 && cmd[7] == 0x60 {
				if v := versionOf(s.typ); v != nil {
					return append(append(append(ok, 0x97, byte(len(v))), v...), 0x90, 0x00)
				}
			}
			return []byte{0xC0, 0x03, 0x01, 0x64, 0x01, 0x90, 0x00} // no answer from the card
		}
		return sw(0x6A, 0x81)
	}
	return sw(0x6D, 0x00)
}

// Memory returns a copy of the card's memory.
func (s *SimTag) Memory() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]byte, 0, 4*len(s.mem))
	for _, p := range s.mem {
		out = append(out, p[:]...)
	}
	return out
}

type simTagFile struct {
	UID    string `json:"uid"`
	Type   string `json:"type"`
	Memory string `json:"memory"`
}

// SaveTo keeps the card in a file from now on: every command that changes
// it rewrites the file.
func (s *SimTag) SaveTo(path string) error {
	s.mu.Lock()
	s.path = path
	s.mu.Unlock()
	return s.persist()
}

func (s *SimTag) persist() error {
	s.mu.Lock()
	path := s.path
	s.mu.Unlock()
	if path == "" {
		return nil
	}
	f := simTagFile{UID: string(s.UID()), Type: s.typ.Name, Memory: hex.EncodeToString(s.Memory())}
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("nfc: save simulated card: %w", err)
	}
	return os.Rename(tmp, path)
}

// LoadSimTag reads a card saved with SaveTo, and keeps saving it there.
func LoadSimTag(path string) (*SimTag, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("nfc: load simulated card: %w", err)
	}
	var f simTagFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("nfc: load simulated card %s: %w", path, err)
	}
	t, ok := TypeByName(f.Type)
	if !ok {
		return nil, fmt.Errorf("nfc: load simulated card %s: unknown type %q", path, f.Type)
	}
	s, err := NewSimTag(crdt.CardID(f.UID), t)
	if err != nil {
		return nil, err
	}
	mem, err := hex.DecodeString(f.Memory)
	if err != nil || len(mem) != 4*len(s.mem) {
		return nil, fmt.Errorf("nfc: load simulated card %s: bad memory", path)
	}
	for i := range s.mem {
		copy(s.mem[i][:], mem[4*i:])
	}
	s.path = path
	return s, nil
}

// TypeByName returns the card type with that name (case-sensitive, as
// CardType.Name; "NTAG215" etc.).
func TypeByName(name string) (CardType, bool) {
	for _, t := range []CardType{NTAG213, NTAG215, NTAG216, UltralightEV1_48, UltralightEV1_128, UltralightC, Ultralight} {
		if t.Name == name {
			return t, true
		}
	}
	return UnknownCard, false
}

// SimReader is a simulated reader: cards are presented and removed by
// the demo's terminal, the API or a test. It answers through the same APDU
// layer as a PC/SC reader. It is safe for concurrent use.
type SimReader struct {
	name string

	mu        sync.Mutex
	cur       *SimTag
	epoch     uint64 // counts presentations
	delivered uint64 // the last presentation Wait returned
	changed   chan struct{}
	closed    bool
}

// NewSimReader returns an empty simulated reader.
func NewSimReader(name string) *SimReader {
	return &SimReader{name: name, changed: make(chan struct{})}
}

// Name returns the reader's name.
func (r *SimReader) Name() string { return r.name }

// Present puts a card on the reader (replacing any other).
func (r *SimReader) Present(t *SimTag) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cur = t
	r.epoch++
	r.broadcast()
}

// Remove takes the card off the reader.
func (r *SimReader) Remove() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur != nil {
		r.cur = nil
		r.epoch++
		r.broadcast()
	}
}

// Current returns the card on the reader, or nil.
func (r *SimReader) Current() *SimTag {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

func (r *SimReader) broadcast() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// Close releases the reader: waits in progress return ErrClosed.
func (r *SimReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.closed = true
		r.broadcast()
	}
	return nil
}

// Wait returns the next card presented (or the one on the reader, if it
// was not returned yet).
func (r *SimReader) Wait(ctx context.Context) (Card, error) {
	for {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return nil, ErrClosed
		}
		if r.cur != nil && r.delivered != r.epoch {
			r.delivered = r.epoch
			tag, epoch := r.cur, r.epoch
			r.mu.Unlock()
			c := &simCard{r: r, epoch: epoch}
			c.t = &simLink{r: r, epoch: epoch, tag: tag}
			uid, typ, err := Identify(ctx, c.t, GenericCCID, ATRUltralight, nil)
			if err != nil {
				return nil, err
			}
			c.uid, c.typ = uid, typ
			return c, nil
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// present reports whether presentation epoch is still on the reader.
func (r *SimReader) present(epoch uint64) (bool, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.epoch == epoch && r.cur != nil && !r.closed, r.changed
}

// simLink sends APDUs to the card while it stays on the reader.
type simLink struct {
	r     *SimReader
	epoch uint64
	tag   *SimTag
}

func (l *simLink) Transmit(ctx context.Context, cmd []byte) ([]byte, error) {
	if ok, _ := l.r.present(l.epoch); !ok {
		return nil, ErrCardRemoved
	}
	return l.tag.Transmit(ctx, cmd)
}

type simCard struct {
	apduCard
	r     *SimReader
	epoch uint64
}

func (c *simCard) Removed(ctx context.Context) error {
	for {
		ok, ch := c.r.present(c.epoch)
		if !ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *simCard) Close() error { return nil }

var _ Reader = (*SimReader)(nil)
