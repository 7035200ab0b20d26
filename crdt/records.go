package crdt

import "fmt"

// Binary records of the set's state for a store (node/store), in the
// checkpoint's canonical encoding: a store rewrites the meta record and
// the committing author's record at every commit, so they are written
// compactly (a gob encoding, with its type descriptions, was 3 to 5
// times larger). Each record starts with a version byte that no gob
// stream starts with, so a store can tell the two apart.

// authorRecordVersion starts an author's binary record
// (AuthorState.AppendBinary).
const authorRecordVersion = 0xA1

// metaRecordVersion starts the meta record (Meta.AppendBinary).
const metaRecordVersion = 0xD1

// AppendBinary appends the author's record, for a store to keep.
func (a *AuthorState) AppendBinary(b []byte) []byte {
	w := &writer{b: append(b, authorRecordVersion)}
	encodeAuthor(w, a)
	return w.b
}

// DecodeAuthorRecord reads a record written by AuthorState.AppendBinary;
// ok is false when p is not such a record.
func DecodeAuthorRecord(p []byte) (a *AuthorState, ok bool, err error) {
	return decodeRecord(p, authorRecordVersion, "author", decodeAuthor)
}

// AppendBinary appends the meta record, for a store to keep.
func (m *Meta) AppendBinary(b []byte) []byte {
	w := &writer{b: append(b, metaRecordVersion)}
	w.key(m.Federation)
	w.str(m.Name)
	w.str(m.Currency)
	m.Settings.encode(w)
	w.varint(m.Credits)
	w.varint(m.Debits)
	w.uvarint(m.Counted)
	w.uvarint(m.Ops)
	w.boolean(m.Stale)
	return w.b
}

// DecodeMetaRecord reads a record written by Meta.AppendBinary; ok is
// false when p is not such a record.
func DecodeMetaRecord(p []byte) (m Meta, ok bool, err error) {
	if len(p) == 0 || p[0] != metaRecordVersion {
		return Meta{}, false, nil
	}
	r := &reader{b: p[1:]}
	m.Federation = r.key()
	m.Name = r.str(MaxNameLen)
	m.Currency = r.str(8)
	m.Settings.decode(r)
	m.Credits = r.varint()
	m.Debits = r.varint()
	m.Counted = r.uvarint()
	m.Ops = r.uvarint()
	m.Stale = r.boolean()
	if err := r.done(); err != nil {
		return Meta{}, true, fmt.Errorf("%w: meta record: %v", ErrCheckpoint, err)
	}
	return m, true, nil
}
