package crdt

import (
	"errors"
	"fmt"
)

// Errors returned when an op or a body is refused. Callers test them with
// errors.Is; the op set is unchanged whenever one is returned.
var (
	ErrTruncated     = errors.New("crdt: truncated encoding")
	ErrTooLarge      = errors.New("crdt: encoding too large")
	ErrNonCanonical  = errors.New("crdt: non-canonical encoding")
	ErrBadVersion    = errors.New("crdt: unknown encoding version")
	ErrUnknownKind   = errors.New("crdt: unknown op kind")
	ErrInvalidBody   = errors.New("crdt: invalid body")
	ErrBadSignature  = errors.New("crdt: bad signature")
	ErrBadSeq        = errors.New("crdt: seq must start at 1")
	ErrBrokenChain   = errors.New("crdt: prev does not match the author's previous op")
	ErrUnknownAuthor = errors.New("crdt: author is not an admitted venue")
	ErrRevoked       = errors.New("crdt: author is revoked")
	ErrNotAllowed    = errors.New("crdt: op kind not allowed for this author")
	ErrDuplicate     = errors.New("crdt: op already in the set")
	ErrGap           = errors.New("crdt: seq is ahead of the author's head")
	ErrEquivocation  = errors.New("crdt: second op at the same author and seq")
	ErrStale         = errors.New("crdt: seq already covered by the author's chain")
	ErrBadClock      = errors.New("crdt: op timestamp is zero or before its author's admission")
	ErrFuture        = errors.New("crdt: op timestamp is too far in the future")
)

// OpError tells which op was refused and why.
type OpError struct {
	Author PublicKey
	Seq    uint64
	Err    error
}

func (e *OpError) Error() string {
	return fmt.Sprintf("op %s#%d: %v", e.Author.Short(), e.Seq, e.Err)
}

func (e *OpError) Unwrap() error { return e.Err }

func opErr(op *Op, err error) error {
	return &OpError{Author: op.Author, Seq: op.Seq, Err: err}
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }
