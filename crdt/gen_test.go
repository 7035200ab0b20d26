package crdt_test

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"

	"github.com/cagnotte/cagnotte/crdt"
	"pgregory.net/rapid"
)

// scenario is a random but valid history of a federation: the ops in the
// order they were made (a causal order), and what a reference model needs
// to know about them.
type scenario struct {
	fed     *actor
	venues  []*actor
	ops     []crdt.Op
	revoked int    // index of the revoked venue, -1 if none
	cut     uint64 // its AfterSeq
	// forked is the index of an equivocating venue (-1 if none) and
	// forkSeq the lowest seq where it signed two ops.
	forked  int
	forkSeq uint64
}

func (sc *scenario) fedKey() crdt.PublicKey { return sc.fed.key() }

// refused reports whether a replica refuses op for good once it knows the
// revocation: the revoked venue's ops past the cut-off.
func (sc *scenario) refused(op crdt.Op) bool {
	return sc.revoked >= 0 && op.Author == sc.venues[sc.revoked].key() && op.Seq > sc.cut
}

// counted reports whether op counts in the views of a complete replica:
// every op but the revoked venue's past its cut-off. A forked venue's ops
// count on both branches: each is a signed fact of that venue.
func (sc *scenario) counted(op crdt.Op) bool {
	return !sc.refused(op)
}

type genOptions struct {
	minSteps, maxSteps int
	// equivocate makes one venue fork its chain.
	equivocate bool
}

// genScenario draws a scenario: a genesis, admissions of 2..6 venues (some
// later on), then steps where venues and the federation make ops.
func genScenario(t *rapid.T, o genOptions) *scenario {
	salt := rapid.Byte().Draw(t, "salt")
	nv := rapid.IntRange(2, 6).Draw(t, "venues")
	sc := &scenario{revoked: -1, forked: -1}
	sc.fed = newActor(signerFromBytes(t, 0xFE, salt))
	for i := range nv {
		sc.venues = append(sc.venues, newActor(signerFromBytes(t, byte(i+1), salt)))
	}
	g := &gen{t: t, sc: sc, counter: map[crdt.CardID]uint64{}}
	ncards := rapid.IntRange(1, 8).Draw(t, "cards")
	for i := range ncards {
		n := 4
		if i%3 == 1 {
			n = 7
		}
		id := bytes.Repeat([]byte{byte(i), salt}, 5)[:n]
		id[0] = 0x04
		g.cards = append(g.cards, crdt.CardID(fmt.Sprintf("%X", id)))
	}

	gen := &crdt.Genesis{Name: "Fédération " + string(rune('A'+salt%26)), Currency: "EUR", Settings: crdt.DefaultSettings()}
	if rapid.Bool().Draw(t, "custom settings") {
		gen.Settings = g.settings()
	}
	g.fedOp(gen)
	admitNow := rapid.IntRange(1, nv).Draw(t, "admitted at start")
	for range admitNow {
		g.admit()
	}

	steps := rapid.IntRange(o.minSteps, o.maxSteps).Draw(t, "steps")
	forkAt := -1
	if o.equivocate {
		forkAt = rapid.IntRange(0, steps/2).Draw(t, "fork step")
	}
	// About half the scenarios revoke a venue.
	revokeAt := rapid.IntRange(-steps, steps-1).Draw(t, "revoke step")
	for step := range steps {
		if forkAt >= 0 && step >= forkAt && sc.forked < 0 {
			g.fork()
		}
		if revokeAt >= 0 && step >= revokeAt && sc.revoked < 0 {
			g.revoke()
		}
		g.step()
	}
	return sc
}

// gen holds the state of a scenario being drawn.
type gen struct {
	t        *rapid.T
	sc       *scenario
	admitted int
	cards    []crdt.CardID
	counter  map[crdt.CardID]uint64 // highest counter used per card
	topupRef []string
	refunds  []string
	nref     int
	// branch is the second author of the equivocating venue.
	branch *actor
}

func (g *gen) dt() int64 { return int64(rapid.IntRange(0, 3).Draw(g.t, "dt")) }

func (g *gen) fedOp(b crdt.Body) {
	g.sc.ops = append(g.sc.ops, g.sc.fed.make(g.dt(), b))
}

func (g *gen) settings() crdt.Settings {
	s := crdt.DefaultSettings()
	s.OfflinePaymentMax = uint64(rapid.IntRange(0, 10000).Draw(g.t, "offline payment max"))
	s.OfflineCardMax = uint64(rapid.IntRange(0, 20000).Draw(g.t, "offline card max"))
	s.MinPeersPercent = uint64(rapid.IntRange(0, 100).Draw(g.t, "min peers"))
	s.AutoBlock = rapid.Bool().Draw(g.t, "autoblock")
	return s
}

func (g *gen) admit() {
	if g.admitted == len(g.sc.venues) {
		return
	}
	v := g.sc.venues[g.admitted]
	g.fedOp(&crdt.Admit{Venue: v.key(), Name: fmt.Sprintf("Venue %d", g.admitted)})
	g.admitted++
}

func (g *gen) card() crdt.CardID { return rapid.SampledFrom(g.cards).Draw(g.t, "card") }

func (g *gen) amount() uint64 { return uint64(rapid.IntRange(1, 5000).Draw(g.t, "amount")) }

// fork makes an admitted venue with at least one op equivocate: a second
// author signs from the same head, and both go on making ops.
func (g *gen) fork() {
	var cands []int
	for i := range g.admitted {
		if i != g.sc.revoked && g.sc.venues[i].author.Seq() > 0 {
			cands = append(cands, i)
		}
	}
	if len(cands) == 0 {
		return
	}
	i := rapid.SampledFrom(cands).Draw(g.t, "forked venue")
	v := g.sc.venues[i]
	// The head id is the id of the venue's last op.
	var head crdt.OpID
	for _, op := range slices.Backward(g.sc.ops) {
		if op.Author == v.key() {
			head = op.ID()
			break
		}
	}
	g.sc.forked, g.sc.forkSeq = i, v.author.Seq()+1
	g.branch = v.fork(v.author.Seq(), head)
	// Both branches sign an op at the fork seq, and the two differ.
	g.sc.ops = append(g.sc.ops, v.make(g.dt(), g.venueBody(i)), g.branch.make(g.dt(), &crdt.VenueInfo{Name: "branch"}))
}

func (g *gen) step() {
	t := g.t
	switch r := rapid.IntRange(0, 99).Draw(t, "actor"); {
	case r < 3:
		g.admit()
		return
	case r < 5:
		g.fedOp(&crdt.SettingsChange{Settings: g.settings()})
		return
	case r < 7:
		c := g.card()
		switch rapid.IntRange(0, 2).Draw(t, "fed card op") {
		case 0:
			g.fedOp(&crdt.CardBlock{Card: c, Reason: "fed block"})
		case 1:
			g.fedOp(&crdt.CardUnblock{Card: c, Reason: "fed unblock"})
		default:
			g.fedOp(&crdt.Correction{Card: c, Delta: g.delta(), Reason: "fed correction"})
		}
		return
	}
	if g.admitted == 0 {
		return
	}
	vi := rapid.IntRange(0, g.admitted-1).Draw(t, "venue")
	v := g.sc.venues[vi]
	if g.branch != nil && vi == g.sc.forked && rapid.Bool().Draw(t, "on branch") {
		v = g.branch
	}
	b := g.venueBody(vi)
	op := v.make(g.dt(), b)
	g.sc.ops = append(g.sc.ops, op)
}

func (g *gen) delta() int64 {
	d := int64(rapid.IntRange(1, 3000).Draw(g.t, "delta"))
	if rapid.Bool().Draw(g.t, "debit") {
		d = -d
	}
	return d
}

// revoke revokes one venue (once) after a seq below its current head, so
// that some of its ops stop counting.
func (g *gen) revoke() {
	if g.sc.revoked >= 0 {
		return
	}
	var cands []int
	for i := range g.admitted {
		if i != g.sc.forked && g.sc.venues[i].author.Seq() > 0 {
			cands = append(cands, i)
		}
	}
	if len(cands) == 0 {
		return
	}
	i := rapid.SampledFrom(cands).Draw(g.t, "revoked venue")
	seq := g.sc.venues[i].author.Seq()
	cut := uint64(rapid.IntRange(0, int(seq-1)).Draw(g.t, "after seq"))
	g.sc.revoked, g.sc.cut = i, cut
	rv := &crdt.Revoke{Venue: g.sc.venues[i].key(), AfterSeq: cut, Reason: "lost node"}
	if cut > 0 && rapid.Bool().Draw(g.t, "pin head") {
		for _, op := range g.sc.ops {
			if op.Author == rv.Venue && op.Seq == cut {
				rv.Head = op.ID()
			}
		}
	}
	g.fedOp(rv)
}

func (g *gen) venueBody(vi int) crdt.Body {
	t := g.t
	switch r := rapid.IntRange(0, 99).Draw(t, "kind"); {
	case r < 4:
		return &crdt.VenueInfo{Name: fmt.Sprintf("Café %d.%d", vi, r), Address: "1 rue X", URL: "https://example.org"}
	case r < 14:
		ev := &crdt.EventUpsert{EventID: fmt.Sprintf("ev%d", rapid.IntRange(0, 3).Draw(t, "event"))}
		ev.Fields = uint64(rapid.IntRange(1, 31).Draw(t, "fields"))
		ev.Title = fmt.Sprintf("Concert %d", r)
		ev.StartsAt = baseMillis + int64(rapid.IntRange(0, 10).Draw(t, "start"))*3_600_000
		ev.EndsAt = ev.StartsAt + int64(rapid.IntRange(0, 5).Draw(t, "length"))*3_600_000
		ev.Description = fmt.Sprintf("description %d", r)
		ev.Location = fmt.Sprintf("room %d", r%3)
		return ev
	case r < 17:
		return &crdt.EventCancel{EventID: fmt.Sprintf("ev%d", rapid.IntRange(0, 3).Draw(t, "event")), Reason: "rain"}
	case r < 21:
		return &crdt.CardRegister{Card: g.card()}
	case r < 24:
		return &crdt.CardLink{Card: g.card(), Holder: fmt.Sprintf("holder-%d", r)}
	case r < 27:
		return &crdt.CardBlock{Card: g.card(), Reason: "lost"}
	case r < 29:
		return &crdt.CardUnblock{Card: g.card(), Reason: "found"}
	case r < 45:
		return g.topUp()
	case r < 75:
		return g.payment()
	case r < 85:
		return g.refund()
	default:
		return &crdt.Correction{Card: g.card(), Delta: g.delta(), Reason: "till error"}
	}
}

func (g *gen) topUp() crdt.Body {
	t := g.t
	b := &crdt.TopUp{Card: g.card(), Amount: g.amount(), Method: crdt.MethodCash}
	switch rapid.IntRange(0, 3).Draw(t, "method") {
	case 1:
		b.Method = crdt.MethodCardTerminal
	case 2, 3:
		b.Method = crdt.MethodOnline
		if len(g.topupRef) > 0 && rapid.IntRange(0, 2).Draw(t, "reuse ref") == 0 {
			// A webhook redelivered to another venue: same reference,
			// usually the same card and amount.
			b.ExternalRef = rapid.SampledFrom(g.topupRef).Draw(t, "ref")
		} else {
			g.nref++
			b.ExternalRef = fmt.Sprintf("cs_test_%d", g.nref)
			g.topupRef = append(g.topupRef, b.ExternalRef)
		}
	}
	return b
}

func (g *gen) payment() crdt.Body {
	t := g.t
	b := &crdt.Payment{Card: g.card(), Amount: g.amount(), Label: "beer"}
	n := g.counter[b.Card]
	if n > 0 && rapid.IntRange(0, 5).Draw(t, "double spend") == 0 {
		// A cloned card, or a venue that had not heard of the last
		// payment: the same counter again.
		b.Counter = uint64(rapid.IntRange(1, int(n)).Draw(t, "reused counter"))
	} else {
		b.Counter = n + 1
		g.counter[b.Card] = b.Counter
	}
	if b.Counter > 1 && rapid.IntRange(0, 2).Draw(t, "stamp") == 0 {
		// The card showed a stamp, sometimes older than what the venue
		// knew: a stale stamp.
		b.StampCounter = uint64(rapid.IntRange(1, int(b.Counter-1)).Draw(t, "stamp counter"))
		b.StampVenue = g.sc.venues[0].key()
	}
	return b
}

func (g *gen) refund() crdt.Body {
	t := g.t
	b := &crdt.Refund{Card: g.card(), Amount: g.amount(), Reason: "leaving"}
	if rapid.Bool().Draw(t, "refund ref") {
		if len(g.refunds) > 0 && rapid.Bool().Draw(t, "reuse refund ref") {
			b.ExternalRef = rapid.SampledFrom(g.refunds).Draw(t, "refund ref id")
		} else {
			g.nref++
			b.ExternalRef = fmt.Sprintf("re_test_%d", g.nref)
			g.refunds = append(g.refunds, b.ExternalRef)
		}
	}
	return b
}

// model is the expected money state, computed directly from the ops that
// count, without the op set.
type model struct {
	balance map[crdt.CardID]int64
	credits int64
	debits  int64
	// doubleSpends maps "card/counter" to the ids of its counted payments.
	doubleSpends map[string][]crdt.OpID
	// dupRefs maps "kind/ref" to the ids of the counted ops carrying it.
	dupRefs map[string][]crdt.OpID
	// staleStamps maps a card to its counted payments made on a stamp
	// older than the counter the venue knew.
	staleStamps map[string][]crdt.OpID
}

func buildModel(sc *scenario) *model {
	m := &model{balance: map[crdt.CardID]int64{}, doubleSpends: map[string][]crdt.OpID{}, dupRefs: map[string][]crdt.OpID{},
		staleStamps: map[string][]crdt.OpID{}}
	type refOp struct {
		op     crdt.Op
		id     crdt.OpID
		card   crdt.CardID
		amount int64
	}
	refs := map[string][]refOp{}
	add := func(card crdt.CardID, a int64) {
		m.balance[card] += a
		if a > 0 {
			m.credits += a
		} else {
			m.debits -= a
		}
	}
	for _, op := range sc.ops {
		if !sc.counted(op) {
			continue
		}
		body, err := op.Decode()
		if err != nil {
			panic(err)
		}
		switch b := body.(type) {
		case *crdt.TopUp:
			if b.ExternalRef != "" {
				k := "topup/" + b.ExternalRef
				refs[k] = append(refs[k], refOp{op, op.ID(), b.Card, int64(b.Amount)})
				continue
			}
			add(b.Card, int64(b.Amount))
		case *crdt.Refund:
			if b.ExternalRef != "" {
				k := "refund/" + b.ExternalRef
				refs[k] = append(refs[k], refOp{op, op.ID(), b.Card, -int64(b.Amount)})
				continue
			}
			add(b.Card, -int64(b.Amount))
		case *crdt.Payment:
			add(b.Card, -int64(b.Amount))
			k := fmt.Sprintf("%s/%d", b.Card, b.Counter)
			m.doubleSpends[k] = append(m.doubleSpends[k], op.ID())
			if b.StampCounter > 0 && b.Counter > b.StampCounter+1 {
				m.staleStamps[string(b.Card)] = append(m.staleStamps[string(b.Card)], op.ID())
			}
		case *crdt.Correction:
			add(b.Card, b.Delta)
		case *crdt.CardRegister, *crdt.CardLink, *crdt.CardBlock, *crdt.CardUnblock:
			c, _ := cardOfBody(b)
			if _, ok := m.balance[c]; !ok {
				m.balance[c] = 0
			}
		}
	}
	// One op per reference counts: the first by (HLC, op id).
	for k, ops := range refs {
		w := slices.MinFunc(ops, func(a, b refOp) int {
			if c := cmp.Compare(a.op.HLC, b.op.HLC); c != 0 {
				return c
			}
			return bytes.Compare(a.id[:], b.id[:])
		})
		add(w.card, w.amount)
		for _, o := range ops {
			if _, ok := m.balance[o.card]; !ok {
				m.balance[o.card] = 0
			}
		}
		if len(ops) > 1 {
			for _, o := range ops {
				m.dupRefs[k] = append(m.dupRefs[k], o.id)
			}
		}
	}
	for k, ids := range m.doubleSpends {
		if len(ids) < 2 {
			delete(m.doubleSpends, k)
		}
	}
	return m
}

func cardOfBody(b crdt.Body) (crdt.CardID, bool) {
	switch v := b.(type) {
	case *crdt.CardRegister:
		return v.Card, true
	case *crdt.CardLink:
		return v.Card, true
	case *crdt.CardBlock:
		return v.Card, true
	case *crdt.CardUnblock:
		return v.Card, true
	}
	return "", false
}
