package crdt

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// OpReader reads an author's chain from wherever the caller keeps ops (a
// store, a memory log). fn is called for each op of author with from <= seq
// <= to, in seq order; returning an error stops the read.
type OpReader interface {
	ReadRange(author PublicKey, from, to uint64, fn func(Op) error) error
}

// AuthorState is what the op set knows of one author's chain.
type AuthorState struct {
	Key  PublicKey
	Role role
	// Seq and Head are the author's contiguous chain: ops 1..Seq are in the
	// set and Head is the id of op Seq.
	Seq  uint64
	Head OpID
	// Revoked venues count only ops up to RevokedAfter.
	Revoked      bool
	RevokedAfter uint64
	// Fork is the lowest seq where the author was caught signing two ops;
	// ops from Fork on do not count. 0 means none.
	Fork uint64
	// Counted and CountedHead are the last op folded into the views.
	Counted     uint64
	CountedHead OpID
}

// limit is the highest seq that counts for the author.
func (a *AuthorState) limit() uint64 {
	l := ^uint64(0)
	if a.Revoked {
		l = a.RevokedAfter
	}
	if a.Fork != 0 {
		l = min(l, a.Fork-1)
	}
	return l
}

// Outcome says what Add did with a valid op.
type Outcome uint8

// Outcomes of Add.
const (
	// Added: the op extends its author's chain.
	Added Outcome = iota + 1
	// Evidence: the op conflicts with one already held at its (author,
	// seq) or breaks its author's chain; it was kept as evidence.
	Evidence
)

// Config configures an OpSet.
type Config struct {
	// Federation is the federation's public key: the author of the genesis,
	// admissions, revocations and settings. Required.
	Federation PublicKey
	// Log reads ops already in the set. Optional: without it, an op at a seq
	// the set already covers, other than the head, is refused with ErrStale
	// instead of being compared for equivocation.
	Log OpReader
}

// OpSet is the grow-only set of valid ops and the views folded from it.
// It does not keep op bytes: the caller stores ops it accepts. It is not
// safe for concurrent use.
type OpSet struct {
	cfg     Config
	Authors map[PublicKey]*AuthorState
	// EvidenceOps are valid ops outside the chains (equivocations), by id.
	EvidenceOps map[OpID]Op
	State       *State
	// Stale is set when a revocation or a fork voids ops that were already
	// folded: views are wrong until Refold runs.
	Stale    bool
	ops      uint64
	verified *verifiedCache
}

// NewOpSet returns an empty op set for a federation.
func NewOpSet(cfg Config) *OpSet {
	s := &OpSet{cfg: cfg, verified: &verifiedCache{}}
	s.reset()
	return s
}

func (s *OpSet) reset() {
	s.Authors = map[PublicKey]*AuthorState{
		s.cfg.Federation: {Key: s.cfg.Federation, Role: roleFederation},
	}
	s.EvidenceOps = map[OpID]Op{}
	s.State = newState()
	s.ops = 0
	s.Stale = false
}

// Federation returns the federation key.
func (s *OpSet) Federation() PublicKey { return s.cfg.Federation }

// Len returns the number of ops in the chains.
func (s *OpSet) Len() uint64 { return s.ops }

// Head returns the author's contiguous seq and head id.
func (s *OpSet) Head(author PublicKey) (uint64, OpID) {
	if a := s.Authors[author]; a != nil {
		return a.Seq, a.Head
	}
	return 0, OpID{}
}

// IsMember reports whether key may author ops now: the federation key or an
// admitted, unrevoked venue.
func (s *OpSet) IsMember(key PublicKey) bool {
	a := s.Authors[key]
	return a != nil && !a.Revoked
}

// Check runs every test Add runs, without adding: decoding, author,
// signature, chain position. It returns nil for an op Add would accept (in
// its author's chain or as evidence) and ErrDuplicate for one already held.
// Pubsub validators use it: an op ahead of its author's head (ErrGap) is
// also decoded and its signature verified, so that a forged op is refused
// rather than relayed as "early".
func (s *OpSet) Check(op *Op) error {
	a, body, err := s.check(op, true)
	if errors.Is(err, ErrGap) {
		if _, derr := op.Decode(); derr != nil {
			return opErr(op, derr)
		}
		if kindRoles(op.Kind)&a.Role == 0 {
			return opErr(op, fmt.Errorf("%w: %s", ErrNotAllowed, op.Kind))
		}
		if verr := s.verify(op); verr != nil {
			return opErr(op, verr)
		}
		return err
	}
	if err != nil {
		_, _, err = s.proves(a, op, body, err)
	}
	return err
}

// check validates op against the set. It returns the author, the decoded
// body and an error; ErrStale and ErrBrokenChain come with a body so the
// caller can look for evidence.
func (s *OpSet) check(op *Op, verify bool) (*AuthorState, Body, error) {
	if op.Seq == 0 {
		return nil, nil, opErr(op, ErrBadSeq)
	}
	a := s.Authors[op.Author]
	if a == nil {
		return nil, nil, opErr(op, ErrUnknownAuthor)
	}
	if a.Revoked && op.Seq > a.RevokedAfter {
		return nil, nil, opErr(op, ErrRevoked)
	}
	if op.Seq > a.Seq+1 {
		return a, nil, opErr(op, ErrGap)
	}
	if op.Seq == a.Seq && op.ID() == a.Head {
		return a, nil, opErr(op, ErrDuplicate)
	}
	if len(op.Body) > MaxBodySize {
		return a, nil, opErr(op, ErrTooLarge)
	}
	body, err := op.Decode()
	if err != nil {
		return a, nil, opErr(op, err)
	}
	if kindRoles(op.Kind)&a.Role == 0 {
		return a, nil, opErr(op, fmt.Errorf("%w: %s", ErrNotAllowed, op.Kind))
	}
	if a.Role == roleFederation && (op.Seq == 1) != (op.Kind == KindGenesis) {
		return a, nil, opErr(op, fmt.Errorf("%w: genesis is the federation's first op and only that", ErrNotAllowed))
	}
	if op.Seq == 1 && !op.Prev.IsZero() || op.Seq > 1 && op.Prev.IsZero() {
		return a, nil, opErr(op, ErrBrokenChain)
	}
	if verify {
		if err := s.verify(op); err != nil {
			return a, nil, opErr(op, err)
		}
	}
	if op.Seq <= a.Seq {
		return a, body, opErr(op, ErrStale)
	}
	if op.Prev != a.Head {
		return a, body, opErr(op, ErrBrokenChain)
	}
	return a, body, nil
}

// Add verifies op and adds it to the set. It returns Added when the op
// extends its author's chain and Evidence when the op is a valid second op
// at a seq already held (or signed on top of an op the set does not hold):
// the op is kept as evidence of equivocation. Any error leaves the set
// unchanged; test it with errors.Is (ErrDuplicate, ErrGap and
// ErrUnknownAuthor are normal when ops arrive out of order).
func (s *OpSet) Add(op Op) (Outcome, error) {
	a, body, err := s.check(&op, true)
	if err != nil {
		return s.evidence(a, &op, body, err)
	}
	s.append(a, &op, op.ID(), body)
	return Added, nil
}

// evidence turns a refused but correctly signed op into evidence when it
// proves its author forked its chain.
func (s *OpSet) evidence(a *AuthorState, op *Op, body Body, err error) (Outcome, error) {
	f, atF, err := s.proves(a, op, body, err)
	if err != nil {
		return 0, err
	}
	s.fork(a, f, *op, atF...)
	return Evidence, nil
}

// proves reports whether an op check refused proves that its author forked
// its chain: the fork seq and the ids held there. Only an op whose
// signature (or chain, in AddRange) was checked comes with a body and can
// prove anything. Otherwise it returns err, or ErrDuplicate for evidence
// already held. It does not change the set.
func (s *OpSet) proves(a *AuthorState, op *Op, body Body, err error) (uint64, []OpID, error) {
	if body == nil {
		return 0, nil, err
	}
	switch {
	case errors.Is(err, ErrStale):
		id := op.ID()
		// The op held at the head is known without the log (and the log
		// may not have it yet: callers persist after Add).
		heldID := a.Head
		if op.Seq != a.Seq {
			if s.cfg.Log == nil {
				return 0, nil, err
			}
			var held *Op
			rerr := s.cfg.Log.ReadRange(op.Author, op.Seq, op.Seq, func(o Op) error { held = &o; return nil })
			if rerr != nil || held == nil {
				return 0, nil, err
			}
			heldID = held.ID()
		}
		if heldID == id {
			return 0, nil, opErr(op, ErrDuplicate)
		}
		if _, ok := s.EvidenceOps[id]; ok {
			return 0, nil, opErr(op, ErrDuplicate)
		}
		return op.Seq, []OpID{heldID, id}, nil
	case errors.Is(err, ErrBrokenChain) && op.Seq == a.Seq+1 && op.Seq > 1:
		// Signed on top of another op at Seq-1: the author forked there.
		if _, ok := s.EvidenceOps[op.ID()]; ok {
			return 0, nil, opErr(op, ErrDuplicate)
		}
		return op.Seq - 1, []OpID{a.Head}, nil
	}
	return 0, nil, err
}

// fork records that author a signed two different ops at seq f: ev is the
// op kept as evidence, atF the ids held at seq f. One conflict per author
// names its lowest known fork and the ops seen there.
func (s *OpSet) fork(a *AuthorState, f uint64, ev Op, atF ...OpID) {
	s.EvidenceOps[ev.ID()] = ev
	key := (&Conflict{Kind: ConflictEquivocation, Author: a.Key}).Key()
	c := s.State.Conflicts[key]
	if c == nil || f < c.Seq {
		c = &Conflict{Kind: ConflictEquivocation, Author: a.Key, Seq: f}
		s.State.Conflicts[key] = c
		for id, o := range s.EvidenceOps {
			if o.Author == a.Key && o.Seq == f {
				c.addOps(id)
			}
		}
	}
	if f == c.Seq {
		c.addOps(atF...)
	}
	if a.Fork == 0 || f < a.Fork {
		a.Fork = f
		if a.Counted > a.limit() {
			s.Stale = true
		}
	}
}

// AddEvidence records an equivocation proof received from a peer: an op
// that conflicts with the one held at its (author, seq). It verifies the
// signature; ops that prove nothing are refused.
func (s *OpSet) AddEvidence(op Op) (Outcome, error) {
	if _, ok := s.EvidenceOps[op.ID()]; ok {
		return 0, opErr(&op, ErrDuplicate)
	}
	a, body, err := s.check(&op, true)
	if err == nil {
		s.append(a, &op, op.ID(), body)
		return Added, nil
	}
	return s.evidence(a, &op, body, err)
}

// append extends a's chain with op and folds it.
func (s *OpSet) append(a *AuthorState, op *Op, id OpID, body Body) {
	a.Seq, a.Head = op.Seq, id
	s.ops++
	s.fold(a, op, id, body)
}

func (s *OpSet) fold(a *AuthorState, op *Op, id OpID, body Body) {
	if op.Seq > a.limit() {
		return
	}
	a.Counted, a.CountedHead = op.Seq, id
	switch b := body.(type) {
	case *Admit:
		if v := s.Authors[b.Venue]; v == nil && b.Venue != s.cfg.Federation {
			s.Authors[b.Venue] = &AuthorState{Key: b.Venue, Role: roleVenue}
		}
	case *Revoke:
		if v := s.Authors[b.Venue]; v != nil && v.Role == roleVenue && !v.Revoked {
			v.Revoked, v.RevokedAfter = true, b.AfterSeq
			if v.Counted > v.limit() {
				s.Stale = true
			}
		}
	}
	s.State.apply(op, id, body)
}

// AddRange adds a contiguous run of one author's ops, as received in
// catch-up. The links between them are checked by hashing and only the
// newest op's signature is verified: it covers its prev, which covers the
// op before, and so on. Each op's body and author rights are still checked.
// It returns how many ops were added; on error, the ops before the bad one
// stay added only if the newest signature verified.
func (s *OpSet) AddRange(ops []Op) (int, error) {
	if len(ops) == 0 {
		return 0, nil
	}
	last := &ops[len(ops)-1]
	for i := range ops {
		if ops[i].Author != ops[0].Author || ops[i].Seq != ops[0].Seq+uint64(i) {
			return 0, opErr(&ops[i], fmt.Errorf("%w: range is not contiguous", ErrBrokenChain))
		}
	}
	ids := make([]OpID, len(ops))
	for i := range ops {
		ids[i] = ops[i].ID()
		if i > 0 && ops[i].Prev != ids[i-1] {
			return 0, opErr(&ops[i], ErrBrokenChain)
		}
	}
	if err := last.Verify(); err != nil {
		return 0, opErr(last, err)
	}
	for i := range ops {
		a, body, err := s.check(&ops[i], false)
		if err != nil {
			if errors.Is(err, ErrDuplicate) {
				continue
			}
			if errors.Is(err, ErrStale) || errors.Is(err, ErrBrokenChain) {
				// The signature chain is authentic: this is real evidence.
				if out, eerr := s.evidence(a, &ops[i], body, err); eerr == nil && out == Evidence {
					return i, opErr(&ops[i], ErrEquivocation)
				}
				if errors.Is(err, ErrStale) {
					continue
				}
			}
			return i, err
		}
		s.append(a, &ops[i], ids[i], body)
	}
	return len(ops), nil
}

// VersionVector maps each author to the highest seq of its contiguous chain
// held (revoked venues: at most their cut-off).
type VersionVector map[PublicKey]uint64

// VersionVector returns the set's version vector.
func (s *OpSet) VersionVector() VersionVector {
	vv := make(VersionVector, len(s.Authors))
	for k, a := range s.Authors {
		seq := a.Seq
		if a.Revoked {
			seq = min(seq, a.RevokedAfter)
		}
		if seq > 0 {
			vv[k] = seq
		}
	}
	return vv
}

// Range is a run of one author's seqs, inclusive.
type Range struct {
	Author   PublicKey
	From, To uint64
}

// Len is the number of ops in the range.
func (r Range) Len() uint64 { return r.To - r.From + 1 }

// Missing lists the ranges this set holds and a replica with version vector
// remote lacks, ordered with the federation first (admissions before the
// ops they admit) then by author.
func (s *OpSet) Missing(remote VersionVector) []Range {
	var out []Range
	for k, seq := range s.VersionVector() {
		if have := remote[k]; have < seq {
			out = append(out, Range{Author: k, From: have + 1, To: seq})
		}
	}
	fed := s.cfg.Federation
	slices.SortFunc(out, func(a, b Range) int {
		if (a.Author == fed) != (b.Author == fed) {
			if a.Author == fed {
				return -1
			}
			return 1
		}
		return cmp.Compare(string(a.Author[:]), string(b.Author[:]))
	})
	return out
}

// Digest summarises the counted state: for each author, in key order, its
// counted seq and the id of its op there (which commits to the whole chain
// through prev links), then each equivocating author's lowest fork seq and
// the ops seen there. Two sets give the same digest iff they count the same
// ops and know the same forks.
func (s *OpSet) Digest() [32]byte {
	keys := make([]PublicKey, 0, len(s.Authors))
	for k, a := range s.Authors {
		if a.Counted > 0 {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b PublicKey) int { return cmp.Compare(string(a[:]), string(b[:])) })
	h := sha256.New()
	h.Write([]byte("cagnotte/digest/v1"))
	var buf [8]byte
	for _, k := range keys {
		a := s.Authors[k]
		h.Write(k[:])
		binary.BigEndian.PutUint64(buf[:], a.Counted)
		h.Write(buf[:])
		h.Write(a.CountedHead[:])
	}
	for _, c := range s.State.SortedConflicts() {
		if c.Kind != ConflictEquivocation {
			continue
		}
		h.Write(c.Author[:])
		binary.BigEndian.PutUint64(buf[:], c.Seq)
		h.Write(buf[:])
		for _, id := range c.Ops {
			h.Write(id[:])
		}
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// Refold rebuilds the views from the chains held, reading ops from r: the
// federation's chain first (admissions, revocations, settings), then every
// venue's up to its limit. It must give the state incremental adds gave;
// after a revocation or fork voided folded ops (Stale), it is how the views
// are made right again. A venue whose admission no longer counts (the
// federation forked before it) is dropped with its chain. On error (r does
// not hold the chains the set holds) the set is unchanged.
func (s *OpSet) Refold(r OpReader) error {
	n := NewOpSet(s.cfg)
	n.EvidenceOps = s.EvidenceOps
	// Forks are facts about ops outside the chains: keep them.
	for _, c := range s.State.Conflicts {
		if c.Kind == ConflictEquivocation {
			n.State.Conflicts[c.Key()] = c
		}
	}
	replay := func(a *AuthorState, to uint64) error {
		err := r.ReadRange(a.Key, a.Seq+1, to, func(op Op) error {
			body, err := op.Decode()
			if err != nil {
				return fmt.Errorf("refold %s#%d: %w", op.Author.Short(), op.Seq, err)
			}
			n.append(a, &op, op.ID(), body)
			return nil
		})
		if err == nil && a.Seq != to {
			err = fmt.Errorf("refold: the log holds %s up to seq %d, the set up to %d", a.Key.Short(), a.Seq, to)
		}
		return err
	}
	old := s.Authors
	fed := n.Authors[s.cfg.Federation]
	fed.Fork = old[s.cfg.Federation].Fork
	if err := replay(fed, old[s.cfg.Federation].Seq); err != nil {
		return err
	}
	keys := make([]PublicKey, 0, len(old))
	for k := range old {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b PublicKey) int { return cmp.Compare(string(a[:]), string(b[:])) })
	for _, k := range keys {
		if k == s.cfg.Federation {
			continue
		}
		a := n.Authors[k]
		if a == nil {
			continue // admitted by a federation op that no longer counts
		}
		a.Fork = old[k].Fork
		if err := replay(a, old[k].Seq); err != nil {
			return err
		}
	}
	*s = *n
	return nil
}
