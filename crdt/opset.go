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
	// AdmittedAt is the HLC of the venue's admission: its ops may not be
	// older.
	AdmittedAt HLC
	// Revoked venues count only their pinned history: chain ops up to
	// PinLimit and the evidence ops in Pinned. RevokedHead, when not zero,
	// is the id of the op at RevokedAfter the revocation pinned.
	Revoked      bool
	RevokedAfter uint64
	RevokedHead  OpID
	PinLimit     uint64
	Pinned       map[OpID]bool
	// PinSeq and PinID are where the pinned history is expected to meet
	// the chain: a chain op there with another id makes the set Stale.
	PinSeq uint64
	PinID  OpID
	// Fork is the lowest seq where the author was caught signing two ops;
	// 0 means none. A venue's ops count on every branch; the federation's
	// from Fork on do not count (its ops fold in seq order).
	Fork uint64
	// EvidenceMax is the highest seq of the author's ops held as evidence.
	EvidenceMax uint64
	// Counted and CountedHead are the last chain op folded into the views.
	Counted     uint64
	CountedHead OpID
	// NCounted and Acc are the number and the sum (mod 2^256) of the ids
	// of the author's counted ops, chain and branches: the digest's input,
	// the same whichever branch a replica holds as its chain.
	NCounted uint64
	Acc      OpID
}

// limit is the highest chain seq that counts for the author.
func (a *AuthorState) limit() uint64 {
	l := ^uint64(0)
	if a.Revoked {
		l = a.PinLimit
	}
	if a.Role == roleFederation && a.Fork != 0 {
		l = min(l, a.Fork-1)
	}
	return l
}

// checkClock refuses an op stamped 0 or, for a venue, before its
// admission (by wall-clock millisecond: a node's clock observes its
// admission, so only a forged or broken clock is older).
func (a *AuthorState) checkClock(op *Op) error {
	if op.HLC == 0 || a.Role == roleVenue && op.HLC.Millis() < a.AdmittedAt.Millis() {
		return opErr(op, ErrBadClock)
	}
	return nil
}

// countsBranch reports whether an op of a held outside the chain counts.
func (a *AuthorState) countsBranch(id OpID) bool {
	return a.Role == roleVenue && (!a.Revoked || a.Pinned[id])
}

// count adds id to the author's counted ops.
func (a *AuthorState) count(id OpID) {
	a.NCounted++
	var carry uint16
	for i := len(id) - 1; i >= 0; i-- {
		carry += uint16(a.Acc[i]) + uint16(id[i])
		a.Acc[i] = byte(carry)
		carry >>= 8
	}
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
	// Index holds the views that grow with history. Default: a new
	// MemIndex.
	Index Index
	// Events holds the agenda's events. Default: the Index's own event
	// index if it has one (an EventIndexer, as a store's index does),
	// else a new MemEvents.
	Events EventIndex
	// TrackChanges makes the set list what changed, for TakeChanges.
	TrackChanges bool
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
	// dirtyAuthors lists the authors changed since TakeChanges; reseted
	// says the set was refolded since.
	dirtyAuthors map[PublicKey]bool
	reseted      bool
}

// NewOpSet returns an empty op set for a federation.
func NewOpSet(cfg Config) *OpSet {
	if cfg.Index == nil {
		cfg.Index = NewMemIndex()
	}
	if cfg.Events == nil {
		if ei, ok := cfg.Index.(EventIndexer); ok {
			cfg.Events = ei.Events()
		} else {
			cfg.Events = NewMemEvents()
		}
	}
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
	s.State.Fed = s.cfg.Federation
	s.State.index = s.cfg.Index
	s.State.events = s.cfg.Events
	if s.cfg.TrackChanges {
		s.State.dirty = newDirty()
		s.dirtyAuthors = map[PublicKey]bool{}
	}
	s.reseted = true
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
		// An op signed on top of a branch op held as evidence is a
		// branch op too: evidence, not a gap.
		if ev, ok := s.EvidenceOps[op.Prev]; !ok || ev.Author != op.Author || ev.Seq+1 != op.Seq {
			return a, nil, opErr(op, ErrGap)
		}
		body, err := op.Decode()
		if err != nil {
			return a, nil, opErr(op, err)
		}
		if kindRoles(op.Kind)&a.Role == 0 {
			return a, nil, opErr(op, fmt.Errorf("%w: %s", ErrNotAllowed, op.Kind))
		}
		if verify {
			if err := s.verify(op); err != nil {
				return a, nil, opErr(op, err)
			}
		}
		if err := a.checkClock(op); err != nil {
			return a, nil, err
		}
		return a, body, opErr(op, errBranch)
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
	if err := a.checkClock(op); err != nil {
		return a, nil, err
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
	s.fork(a, f, *op, body, atF...)
	return Evidence, nil
}

// errBranch marks an op whose prev is a branch op held as evidence.
var errBranch = errors.New("crdt: op extends a branch held as evidence")

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
	case errors.Is(err, errBranch):
		if _, ok := s.EvidenceOps[op.ID()]; ok {
			return 0, nil, opErr(op, ErrDuplicate)
		}
		return 0, nil, nil
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

// fork records that author a signed two different ops at seq f (0: ev
// extends a branch already known): ev is the op kept as evidence, atF the
// ids held at seq f. One conflict per author names its lowest known fork
// and the ops seen there. A venue's evidence op counts like its chain ops
// (both branches are signed facts of that venue) unless the venue is
// revoked and the op is not in its pinned history.
func (s *OpSet) fork(a *AuthorState, f uint64, ev Op, body Body, atF ...OpID) {
	id := ev.ID()
	s.EvidenceOps[id] = ev
	a.EvidenceMax = max(a.EvidenceMax, ev.Seq)
	s.authorChanged(a)
	if f != 0 {
		key := (&Conflict{Kind: ConflictEquivocation, Author: a.Key}).Key()
		c := s.State.Conflicts[key]
		if s.State.dirty != nil {
			s.State.dirty.conflicts[key] = true
		}
		if c == nil || f < c.Seq {
			c = &Conflict{Kind: ConflictEquivocation, Author: a.Key, Seq: f}
			s.State.Conflicts[key] = c
			for eid, o := range s.EvidenceOps {
				if o.Author == a.Key && o.Seq == f {
					c.addOps(eid)
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
	switch {
	case a.Role != roleVenue:
	case a.Revoked:
		// It may be the pinned head or one of its ancestors, or show that
		// the chain counted up to the cut-off is one branch of several.
		if ev.Seq <= a.RevokedAfter {
			s.Stale = true
		}
	default:
		if body == nil {
			if b, err := ev.Decode(); err == nil {
				body = b
			}
		}
		if body != nil {
			a.count(id)
			s.State.apply(&ev, id, body)
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
	s.authorChanged(a)
	s.ops++
	s.fold(a, op, id, body)
}

func (s *OpSet) fold(a *AuthorState, op *Op, id OpID, body Body) {
	if op.Seq > a.limit() {
		return
	}
	if a.Revoked && op.Seq == a.PinSeq && !a.PinID.IsZero() && id != a.PinID {
		// The chain here is not the pinned history: Refold finds it.
		s.Stale = true
		return
	}
	a.Counted, a.CountedHead = op.Seq, id
	a.count(id)
	switch b := body.(type) {
	case *Admit:
		if v := s.Authors[b.Venue]; v == nil && b.Venue != s.cfg.Federation {
			v = &AuthorState{Key: b.Venue, Role: roleVenue, AdmittedAt: op.HLC}
			s.Authors[b.Venue] = v
			s.authorChanged(v)
		}
	case *Revoke:
		if v := s.Authors[b.Venue]; v != nil && v.Role == roleVenue && !v.Revoked {
			s.authorChanged(v)
			v.Revoked, v.RevokedAfter, v.RevokedHead = true, b.AfterSeq, b.Head
			v.PinLimit, v.PinSeq, v.PinID = b.AfterSeq, b.AfterSeq, b.Head
			if v.Counted > v.limit() || v.NCounted > v.Counted || v.EvidenceMax > 0 ||
				!b.Head.IsZero() && v.Seq >= b.AfterSeq {
				s.Stale = true
			}
		}
	}
	s.State.apply(op, id, body)
}

// pin computes a revoked venue's pinned history from its head: the
// evidence ops that lead to it and the chain seq where they meet the
// chain (chain ops up to there count). r reads the chain held.
func (s *OpSet) pin(a *AuthorState, r OpReader, chainSeq uint64) error {
	a.PinLimit, a.Pinned, a.PinSeq, a.PinID = a.RevokedAfter, nil, 0, OpID{}
	if a.RevokedHead.IsZero() {
		// Pinned by seq alone: with a fork below the cut-off, only what
		// every branch shares counts, whichever branch this set holds.
		if a.Fork > 0 {
			a.PinLimit = min(a.PinLimit, a.Fork-1)
		}
		return nil
	}
	id, seq := a.RevokedHead, a.RevokedAfter
	for seq > 0 {
		ev, ok := s.EvidenceOps[id]
		if !ok || ev.Author != a.Key || ev.Seq != seq {
			break
		}
		if a.Pinned == nil {
			a.Pinned = map[OpID]bool{}
		}
		a.Pinned[id] = true
		id, seq = ev.Prev, seq-1
	}
	if seq == 0 {
		a.PinLimit = 0
		return nil
	}
	if seq > chainSeq {
		// Not held yet: the chain counts up to there, and an op that
		// arrives there with another id makes the set Stale.
		a.PinLimit, a.PinSeq, a.PinID = seq, seq, id
		return nil
	}
	var held OpID
	if err := r.ReadRange(a.Key, seq, seq, func(o Op) error { held = o.ID(); return nil }); err != nil {
		return err
	}
	if held == id {
		a.PinLimit = seq
		return nil
	}
	// The pinned op is on a branch this set does not hold yet: count
	// only what every branch shares until it arrives (as evidence, which
	// makes the set Stale again).
	a.PinLimit = seq - 1
	if a.Fork > 0 {
		a.PinLimit = min(a.PinLimit, a.Fork-1)
	}
	return nil
}

// AddRange adds a contiguous run of one author's ops, as received in
// catch-up. The links between them are checked by hashing and only the
// newest op's signature is verified: it covers its prev, which covers the
// op before, and so on. Each op's body and author rights are still checked.
// It returns how many ops were added; on error, the ops before the bad one
// stay added only if the newest signature verified. A run that leaves the
// set's chain (the author forked) is kept as evidence: see
// AddRangeEvidence.
func (s *OpSet) AddRange(ops []Op) (int, error) {
	n, _, err := s.AddRangeEvidence(ops)
	return n, err
}

// AddRangeEvidence is AddRange that also returns the ops it kept as
// evidence: once a run leaves the set's chain, the rest of the run is a
// branch of a forked author, authenticated by its links, and kept (and,
// for a venue, counted) as evidence. The error then wraps ErrEquivocation
// and the count is 0 (callers compare heads to see what the chain gained).
func (s *OpSet) AddRangeEvidence(ops []Op) (int, []Op, error) {
	if len(ops) == 0 {
		return 0, nil, nil
	}
	last := &ops[len(ops)-1]
	for i := range ops {
		if ops[i].Author != ops[0].Author || ops[i].Seq != ops[0].Seq+uint64(i) {
			return 0, nil, opErr(&ops[i], fmt.Errorf("%w: range is not contiguous", ErrBrokenChain))
		}
	}
	ids := make([]OpID, len(ops))
	for i := range ops {
		ids[i] = ops[i].ID()
		if i > 0 && ops[i].Prev != ids[i-1] {
			return 0, nil, opErr(&ops[i], ErrBrokenChain)
		}
	}
	if err := last.Verify(); err != nil {
		return 0, nil, opErr(last, err)
	}
	var evidence []Op
	var eqErr error
	for i := range ops {
		a, body, err := s.check(&ops[i], false)
		if err != nil {
			if errors.Is(err, ErrDuplicate) {
				continue
			}
			if errors.Is(err, ErrStale) || errors.Is(err, ErrBrokenChain) || errors.Is(err, errBranch) {
				// The signature chain is authentic: this is real evidence.
				out, eerr := s.evidence(a, &ops[i], body, err)
				if eerr == nil && out == Evidence {
					evidence = append(evidence, ops[i])
					if eqErr == nil {
						eqErr = opErr(&ops[i], ErrEquivocation)
					}
					continue
				}
				if errors.Is(eerr, ErrDuplicate) || errors.Is(err, ErrStale) {
					continue
				}
			}
			if eqErr != nil {
				err = errors.Join(eqErr, err)
			}
			return i, evidence, err
		}
		s.append(a, &ops[i], ids[i], body)
	}
	if eqErr != nil {
		return 0, evidence, eqErr
	}
	return len(ops), evidence, nil
}

// VersionVector maps each author to the highest seq of its contiguous chain
// held (revoked venues: at most their cut-off). For an author that forked,
// it is the highest seq held on any branch: which branch a replica holds as
// its chain is an accident of arrival, and the sync protocol exchanges the
// branches themselves.
type VersionVector map[PublicKey]uint64

// VersionVector returns the set's version vector.
func (s *OpSet) VersionVector() VersionVector {
	vv := make(VersionVector, len(s.Authors))
	for k, a := range s.Authors {
		seq := max(a.Seq, a.EvidenceMax)
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
	for k, a := range s.Authors {
		seq := a.Seq
		if a.Revoked {
			seq = min(seq, a.RevokedAfter)
		}
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

// Digest summarises the counted state: for each author, in key order, the
// number and the sum of the ids of its counted ops (chain and branches: an
// op id commits to the op's whole history through prev links), then each
// equivocating author's lowest fork seq and the ops seen there. Two sets
// give the same digest iff they count the same ops and know the same forks,
// whichever branch of a forked author each holds as its chain.
func (s *OpSet) Digest() [32]byte {
	keys := make([]PublicKey, 0, len(s.Authors))
	for k, a := range s.Authors {
		if a.NCounted > 0 {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b PublicKey) int { return cmp.Compare(string(a[:]), string(b[:])) })
	h := sha256.New()
	h.Write([]byte("cagnotte/digest/v2"))
	var buf [8]byte
	for _, k := range keys {
		a := s.Authors[k]
		h.Write(k[:])
		binary.BigEndian.PutUint64(buf[:], a.NCounted)
		h.Write(buf[:])
		h.Write(a.Acc[:])
	}
	// Only equivocations enter the digest: sorted alone (in key order, as
	// SortedConflicts would), not with every double spend the set holds.
	eqs := s.State.sortedConflicts(func(c *Conflict) bool { return c.Kind == ConflictEquivocation })
	for _, c := range eqs {
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
	cfg := s.cfg
	if rb, ok := s.cfg.Index.(Rebuilder); ok {
		cfg.Index = rb.Scratch()
	} else {
		s.cfg.Index.Reset()
	}
	if eb, ok := s.cfg.Events.(EventRebuilder); ok {
		cfg.Events = eb.Scratch()
	} else {
		s.cfg.Events.Reset()
	}
	n := NewOpSet(cfg)
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
	// Evidence ops in id order, so the fold is the same everywhere.
	evIDs := make([]OpID, 0, len(s.EvidenceOps))
	for id := range s.EvidenceOps {
		evIDs = append(evIDs, id)
	}
	slices.SortFunc(evIDs, func(a, b OpID) int { return cmp.Compare(string(a[:]), string(b[:])) })
	for _, k := range keys {
		if k == s.cfg.Federation {
			continue
		}
		a := n.Authors[k]
		if a == nil {
			continue // admitted by a federation op that no longer counts
		}
		a.Fork, a.EvidenceMax = old[k].Fork, old[k].EvidenceMax
		if a.Revoked {
			if err := n.pin(a, r, old[k].Seq); err != nil {
				return fmt.Errorf("refold: pin %s: %w", k.Short(), err)
			}
		}
		if err := replay(a, old[k].Seq); err != nil {
			return err
		}
		for _, id := range evIDs {
			ev := s.EvidenceOps[id]
			if ev.Author != k || !a.countsBranch(id) {
				continue
			}
			body, err := ev.Decode()
			if err != nil {
				return fmt.Errorf("refold evidence %s#%d: %w", k.Short(), ev.Seq, err)
			}
			a.count(id)
			n.State.apply(&ev, id, body)
		}
	}
	n.Stale = false
	if rb, ok := s.cfg.Index.(Rebuilder); ok {
		rb.Adopt(cfg.Index)
		n.cfg.Index = s.cfg.Index
		n.State.index = s.cfg.Index
	}
	if eb, ok := s.cfg.Events.(EventRebuilder); ok {
		eb.Adopt(cfg.Events)
		n.cfg.Events = s.cfg.Events
		n.State.events = s.cfg.Events
	}
	*s = *n
	return nil
}
