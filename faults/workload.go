package faults

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"sync"
	"time"
)

// WorkloadConfig configures the payments the suite makes during the
// faults.
type WorkloadConfig struct {
	// CardsPerVenue is how many cards each venue tops up and then charges
	// (a venue charges only its own cards, so no fault makes a double
	// spend). Default 4.
	CardsPerVenue int
	// TopUp is each card's cash top-up, in cents. Default 15000 (the
	// federation's default balance ceiling).
	TopUp int64
	// Interval is the pause between two payments of one venue. Default
	// 200 ms.
	Interval time.Duration
	// MinCents and MaxCents bound a payment's amount. Defaults 5 and 25.
	MinCents, MaxCents int64
	// RetryFor is how long one payment is retried with its idempotency
	// key (transport errors, 503, 507) before it is abandoned as
	// unknown. Default 20 s.
	RetryFor time.Duration
	// Seed seeds the amounts and card choices.
	Seed uint64
}

func (c WorkloadConfig) withDefaults() WorkloadConfig {
	if c.CardsPerVenue == 0 {
		c.CardsPerVenue = 4
	}
	if c.TopUp == 0 {
		c.TopUp = 15000
	}
	if c.Interval == 0 {
		c.Interval = 200 * time.Millisecond
	}
	if c.MinCents == 0 {
		c.MinCents = 5
	}
	if c.MaxCents == 0 {
		c.MaxCents = 25
	}
	if c.RetryFor == 0 {
		c.RetryFor = 20 * time.Second
	}
	return c
}

// Ack is a write a venue acknowledged (answered 200).
type Ack struct {
	Key    string
	Card   string
	Venue  int
	Amount int64
	OpID   string
	TopUp  bool
}

// Workload charges cards at every venue and records what was
// acknowledged.
type Workload struct {
	cfg   WorkloadConfig
	c     *Cluster
	cards [][]string // per venue

	mu      sync.Mutex
	acked   map[string]Ack // by idempotency key
	unknown map[string]Ack // abandoned after retries: charged or not
	codes   map[string]int // answers other than 200, by venue and code
	seq     int

	cancel context.CancelFunc
	wg     sync.WaitGroup
	pause  sync.RWMutex // the paying loops hold it for reading around each payment
}

// Pause waits for the payments in flight and holds the paying loops until
// Resume.
func (w *Workload) Pause() { w.pause.Lock() }

// Resume lets the paying loops go on after Pause.
func (w *Workload) Resume() { w.pause.Unlock() }

// NewWorkload prepares the cards of each venue of c.
func NewWorkload(c *Cluster, cfg WorkloadConfig) *Workload {
	cfg = cfg.withDefaults()
	w := &Workload{cfg: cfg, c: c, acked: map[string]Ack{}, unknown: map[string]Ack{}, codes: map[string]int{}}
	for i := range c.Venues {
		var cards []string
		for k := 0; k < cfg.CardsPerVenue; k++ {
			cards = append(cards, fmt.Sprintf("04FA%02X%02XB2C3D4", i, k))
		}
		w.cards = append(w.cards, cards)
	}
	return w
}

// Cards returns every card of the workload.
func (w *Workload) Cards() []string {
	var all []string
	for _, cs := range w.cards {
		all = append(all, cs...)
	}
	return all
}

// TopUpAll tops every card up at its venue.
func (w *Workload) TopUpAll(ctx context.Context) error {
	for i, cards := range w.cards {
		for _, card := range cards {
			key := "topup-" + card
			a := Ack{Key: key, Card: card, Venue: i, Amount: w.cfg.TopUp, TopUp: true}
			if err := w.write(ctx, a); err != nil {
				return err
			}
		}
	}
	return nil
}

// Pay makes one payment at venue i on card and returns its answer's
// error (nil when acknowledged). It retries with the same key on
// transport errors, 503 and 507 until RetryFor.
func (w *Workload) Pay(ctx context.Context, i int, card string, amount int64) error {
	w.mu.Lock()
	w.seq++
	key := fmt.Sprintf("pay-%d-%d", i, w.seq)
	w.mu.Unlock()
	return w.write(ctx, Ack{Key: key, Card: card, Venue: i, Amount: amount})
}

// PayOnce makes one payment at venue i with no retry and returns the
// API's error (the disk-full fault's probe).
func (w *Workload) PayOnce(ctx context.Context, i int, card string, amount int64) error {
	w.mu.Lock()
	w.seq++
	key := fmt.Sprintf("probe-%d-%d", i, w.seq)
	w.mu.Unlock()
	a := Ack{Key: key, Card: card, Venue: i, Amount: amount}
	err := w.attempt(ctx, a)
	if err != nil {
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status >= 500 {
			w.mu.Lock()
			w.unknown[key] = a
			w.mu.Unlock()
		}
	}
	return err
}

// write sends a until it is acknowledged, refused (4xx) or RetryFor runs
// out.
func (w *Workload) write(ctx context.Context, a Ack) error {
	deadline := time.Now().Add(w.cfg.RetryFor)
	for {
		err := w.attempt(ctx, a)
		if err == nil {
			return nil
		}
		var ae *APIError
		if errors.As(err, &ae) && ae.Status < 500 {
			return err // refused: nothing charged
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			w.mu.Lock()
			w.unknown[a.Key] = a
			w.mu.Unlock()
			return fmt.Errorf("faults: %s abandoned: %w", a.Key, err)
		}
		t := time.NewTimer(250 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}

// attempt sends a once and records the answer.
func (w *Workload) attempt(ctx context.Context, a Ack) error {
	var out struct {
		OpID string `json:"op_id"`
	}
	var err error
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if a.TopUp {
		err = w.c.Do(rctx, a.Venue, http.MethodPost, "/api/v1/topups", map[string]any{
			"card": a.Card, "amount_cents": a.Amount, "method": "cash", "idempotency_key": a.Key}, &out)
	} else {
		err = w.c.Do(rctx, a.Venue, http.MethodPost, "/api/v1/payments", map[string]any{
			"card": a.Card, "amount_cents": a.Amount, "idempotency_key": a.Key, "label": a.Key}, &out)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		a.OpID = out.OpID
		w.acked[a.Key] = a
		delete(w.unknown, a.Key)
		return nil
	}
	code := "transport"
	var ae *APIError
	if errors.As(err, &ae) {
		code = fmt.Sprintf("%d %s", ae.Status, ae.Code)
	}
	w.codes[fmt.Sprintf("venue %d: %s", a.Venue, code)]++
	return err
}

// Start starts one paying loop per venue; Stop ends them.
func (w *Workload) Start(ctx context.Context) {
	ctx, w.cancel = context.WithCancel(ctx)
	for i := range w.cards {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			rng := rand.New(rand.NewPCG(w.cfg.Seed, uint64(i)))
			t := time.NewTicker(w.cfg.Interval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				card := w.cards[i][rng.IntN(len(w.cards[i]))]
				amount := w.cfg.MinCents + rng.Int64N(w.cfg.MaxCents-w.cfg.MinCents+1)
				w.pause.RLock()
				_ = w.Pay(ctx, i, card, amount)
				w.pause.RUnlock()
			}
		}()
	}
}

// Stop ends the paying loops and waits for them.
func (w *Workload) Stop() {
	if w.cancel != nil {
		w.cancel()
	}
	w.wg.Wait()
}

// Counts returns how many payments were acknowledged and abandoned.
func (w *Workload) Counts() (acked, unknown int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range w.acked {
		if !a.TopUp {
			acked++
		}
	}
	return acked, len(w.unknown)
}

// AckedAt returns how many payments venue i acknowledged so far.
func (w *Workload) AckedAt(i int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, a := range w.acked {
		if a.Venue == i && !a.TopUp {
			n++
		}
	}
	return n
}

// Codes returns the answers other than 200, by venue and code, sorted.
func (w *Workload) Codes() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for k, n := range w.codes {
		out = append(out, fmt.Sprintf("%s × %d", k, n))
	}
	sort.Strings(out)
	return out
}

// Verdict is what Check found.
type Verdict struct {
	// Acked and Unknown count the payments acknowledged and abandoned.
	Acked, Unknown int
	// Lost counts acknowledged writes missing at some venue; Duplicated
	// writes present more than once (by idempotency key) at some venue.
	Lost, Duplicated int
	// UnknownCharged counts abandoned payments that were charged after all
	// (once).
	UnknownCharged int
	// Ops is the op count every venue holds.
	Ops uint64
	// Problems lists every check that failed.
	Problems []string
}

// Check reads every card's history at every venue and checks: one digest
// everywhere; every acknowledged write present exactly once, with the op
// id it was answered with; no write present twice; conservation (each
// balance is its counted credits minus debits, the same at every venue,
// and the total is the top-ups minus the payments); conflicts only those
// expected says the scenario made.
func (w *Workload) Check(ctx context.Context, expected func(Conflict) bool) (Verdict, error) {
	w.mu.Lock()
	acked := make(map[string]Ack, len(w.acked))
	for k, a := range w.acked {
		acked[k] = a
	}
	unknown := make(map[string]Ack, len(w.unknown))
	for k, a := range w.unknown {
		unknown[k] = a
	}
	w.mu.Unlock()
	var v Verdict
	v.Unknown = len(unknown)
	for _, a := range acked {
		if !a.TopUp {
			v.Acked++
		}
	}
	problem := func(format string, args ...any) { v.Problems = append(v.Problems, fmt.Sprintf(format, args...)) }

	digest := ""
	for i := range w.c.Venues {
		s, err := w.c.Status(ctx, i)
		if err != nil {
			return v, err
		}
		if digest == "" {
			digest, v.Ops = s.Digest, s.Ops
		} else if s.Digest != digest {
			problem("venue %d digest %s, venue 0 %s", i, s.Digest, digest)
		}
		cs, err := w.c.Conflicts(ctx, i)
		if err != nil {
			return v, err
		}
		for _, cf := range cs {
			if expected == nil || !expected(cf) {
				problem("venue %d reports an unexpected %s conflict (card %q, ops %v)", i, cf.Kind, cf.Card, cf.Ops)
			}
		}
	}
	lostKeys, dupKeys := map[string]bool{}, map[string]bool{}
	charged := map[string]bool{}
	for i := range w.c.Venues {
		var total, credits, debits, unknownDebits int64
		for _, card := range w.Cards() {
			cv, err := w.c.Card(ctx, i, card)
			if err != nil {
				return v, fmt.Errorf("venue %d card %s: %w", i, card, err)
			}
			seen := map[string]int{}
			var cr, db int64
			for _, e := range cv.History {
				key := e.Label
				switch e.Kind {
				case "topup":
					key = "topup-" + card
					if e.Counted {
						cr += e.Amount
					}
				case "payment":
					if e.Counted {
						db += e.Amount
					}
				default:
					problem("venue %d card %s: unexpected %s entry %s", i, card, e.Kind, e.OpID)
				}
				seen[key]++
				if a, ok := acked[key]; ok && a.OpID != e.OpID {
					problem("venue %d card %s: %s present as op %s, acknowledged as %s", i, card, key, e.OpID, a.OpID)
				}
				if a, ok := unknown[key]; ok {
					charged[key] = true
					if e.Counted && e.Kind == "payment" {
						unknownDebits += a.Amount
					}
				}
			}
			for key, n := range seen {
				if n > 1 {
					dupKeys[key] = true
					problem("venue %d card %s: %s present %d times", i, card, key, n)
				}
			}
			for key, a := range acked {
				if a.Card == card && seen[key] == 0 {
					lostKeys[key] = true
					problem("venue %d card %s: acknowledged %s (op %s at venue %d) missing", i, card, key, a.OpID, a.Venue)
				}
			}
			if cv.Balance != cr-db {
				problem("venue %d card %s: balance %d, counted credits %d − debits %d = %d", i, card, cv.Balance, cr, db, cr-db)
			}
			if cv.Blocked {
				problem("venue %d card %s is blocked", i, card)
			}
			total += cv.Balance
			credits += cr
			debits += db
		}
		if total != credits-debits {
			problem("venue %d: total balance %d, credits %d − debits %d", i, total, credits, debits)
		}
		var ackedDebits int64
		for _, a := range acked {
			if !a.TopUp {
				ackedDebits += a.Amount
			}
		}
		if debits != ackedDebits+unknownDebits {
			problem("venue %d: debits %d, acknowledged payments %d + abandoned ones charged after all %d", i, debits, ackedDebits, unknownDebits)
		}
		if want := int64(len(w.Cards())) * w.cfg.TopUp; credits != want {
			problem("venue %d: credits %d, the top-ups made %d", i, credits, want)
		}
	}
	v.Lost, v.Duplicated, v.UnknownCharged = len(lostKeys), len(dupKeys), len(charged)
	return v, nil
}
