package crdt

import "fmt"

// MemLog keeps ops in memory by author and seq. It is the OpReader of
// tests and in-process simulations; nodes use node/store.
type MemLog struct {
	chains map[PublicKey][]Op
}

// NewMemLog returns an empty log.
func NewMemLog() *MemLog { return &MemLog{chains: map[PublicKey][]Op{}} }

// Append stores op, which must be the next of its author's chain.
func (l *MemLog) Append(op Op) error {
	c := l.chains[op.Author]
	if uint64(len(c))+1 != op.Seq {
		return fmt.Errorf("memlog: %s#%d after %d: %w", op.Author.Short(), op.Seq, len(c), ErrGap)
	}
	l.chains[op.Author] = append(c, op)
	return nil
}

// ReadRange implements OpReader.
func (l *MemLog) ReadRange(author PublicKey, from, to uint64, fn func(Op) error) error {
	c := l.chains[author]
	if from == 0 {
		from = 1
	}
	for seq := from; seq <= to && seq <= uint64(len(c)); seq++ {
		if err := fn(c[seq-1]); err != nil {
			return err
		}
	}
	return nil
}

var _ OpReader = (*MemLog)(nil)

// Replica is an op set with its memory log and a pending buffer: the
// smallest complete replica, used by tests and simulations to deliver ops in
// any order.
type Replica struct {
	Set     *OpSet
	Log     *MemLog
	Pending Pending
}

// NewReplica returns an empty replica of the federation fed.
func NewReplica(fed PublicKey) *Replica {
	log := NewMemLog()
	return &Replica{Set: NewOpSet(Config{Federation: fed, Log: log}), Log: log}
}

// Deliver offers one op. Ops that arrive early are held until they fit; an
// op the set refuses for good returns its error. Evidence is recorded.
func (r *Replica) Deliver(op Op) error {
	out, err := r.Set.Add(op)
	switch {
	case err == nil && out == Added:
		if err := r.Log.Append(op); err != nil {
			return err
		}
	case err == nil: // evidence
	case isEarly(err):
		r.Pending.Hold(op)
		return nil
	default:
		return err
	}
	for _, o := range r.Pending.Drain(r.Set) {
		if err := r.Log.Append(o); err != nil {
			return err
		}
	}
	if r.Set.Stale {
		return r.Set.Refold(r.Log)
	}
	return nil
}

func isEarly(err error) bool {
	return errorsIs(err, ErrGap) || errorsIs(err, ErrUnknownAuthor)
}
