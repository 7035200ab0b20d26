package crdt

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// writer appends the canonical encoding of body fields. Integers are
// unsigned LEB128 varints (minimal by construction), strings and byte
// strings are a varint length then the bytes.
type writer struct{ b []byte }

func (w *writer) uvarint(v uint64) { w.b = binary.AppendUvarint(w.b, v) }
func (w *writer) varint(v int64)   { w.b = binary.AppendVarint(w.b, v) }
func (w *writer) bytes(p []byte)   { w.uvarint(uint64(len(p))); w.b = append(w.b, p...) }
func (w *writer) str(s string)     { w.uvarint(uint64(len(s))); w.b = append(w.b, s...) }
func (w *writer) fixed(p []byte)   { w.b = append(w.b, p...) }
func (w *writer) boolean(v bool) {
	if v {
		w.b = append(w.b, 1)
	} else {
		w.b = append(w.b, 0)
	}
}

// reader decodes what writer wrote and refuses anything writer could not
// have written (non-minimal varints, bad booleans, invalid UTF-8, trailing
// bytes), so that every value has exactly one encoding.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n == 0 {
		r.fail(ErrTruncated)
		return 0
	}
	if n < 0 { // more than 64 bits: no writer wrote it
		r.fail(ErrNonCanonical)
		return 0
	}
	if n > 1 && r.b[n-1] == 0 { // a trailing zero group: not minimal
		r.fail(ErrNonCanonical)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	u := r.uvarint()
	v := int64(u >> 1)
	if u&1 != 0 {
		v = ^v
	}
	return v
}

func (r *reader) take(n uint64, max int) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(max) {
		r.fail(fmt.Errorf("%w: field of %d bytes, max %d", ErrTooLarge, n, max))
		return nil
	}
	if uint64(len(r.b)) < n {
		r.fail(ErrTruncated)
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) bytes(max int) []byte { return r.take(r.uvarint(), max) }

func (r *reader) str(max int) string {
	p := r.bytes(max)
	if r.err == nil && !utf8.Valid(p) {
		r.fail(fmt.Errorf("%w: string is not UTF-8", ErrInvalidBody))
	}
	return string(p)
}

func (r *reader) fixed(dst []byte) {
	p := r.take(uint64(len(dst)), len(dst))
	copy(dst, p)
}

func (r *reader) boolean() bool {
	p := r.take(1, 1)
	if r.err != nil {
		return false
	}
	switch p[0] {
	case 0:
		return false
	case 1:
		return true
	}
	r.fail(ErrNonCanonical)
	return false
}

func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail(fmt.Errorf("%w: %d trailing bytes", ErrNonCanonical, len(r.b)))
	}
	return r.err
}
