package simulations

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/cagnotte/cagnotte/crdt"
)

// Duration is a TOML string such as "90s", "15m" or "2h30m"
// (time.ParseDuration).
type Duration struct{ time.Duration }

// UnmarshalText parses a duration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("not a duration (e.g. \"90s\", \"2h30m\"): %q", b)
	}
	d.Duration = v
	return nil
}

// Ms returns the duration in milliseconds.
func (d Duration) Ms() int64 { return d.Milliseconds() }

// Scenario is a scenario file (TOML), as docs/simulate.md describes it.
// Zero fields take the defaults ParseScenario documents.
type Scenario struct {
	// Name labels the report; Seed makes the run reproducible.
	Name string `toml:"name"`
	Seed uint64 `toml:"seed"`
	// Duration is the simulated time (required). Start is the time of day
	// the run starts ("18:00", default "18:00"); opening hours refer to it.
	Duration Duration `toml:"duration"`
	Start    string   `toml:"start"`
	// Step is the virtual clock's tick (default "1m"): traffic, scheduled
	// events and the progress line advance by it.
	Step       Duration            `toml:"step"`
	Venues     ScenarioVenues      `toml:"venues"`
	Cards      ScenarioCards       `toml:"cards"`
	TopUps     ScenarioTopUps      `toml:"topups"`
	Partitions []ScenarioPartition `toml:"partitions"`
	Random     ScenarioRandom      `toml:"random_partitions"`
	Crashes    []ScenarioCrash     `toml:"crashes"`
	Clones     ScenarioClones      `toml:"clones"`
	Federation ScenarioFederation  `toml:"federation"`
	Libp2p     ScenarioLibp2p      `toml:"libp2p"`
	// Refunds are card holders asking for their balance back.
	Refunds ScenarioRefunds `toml:"refunds"`
	// Events are the agenda: venues publish events as ops.
	Events ScenarioEvents `toml:"events"`
	// RandomCrashes kills nodes at random moments (kill -9).
	RandomCrashes ScenarioRandomCrashes `toml:"random_crashes"`
	// Store is "memory" (default) or "badger": each venue's ops also go to
	// a real node/store Badger database in a temporary directory,
	// committed before the venue acknowledges what it made, and a crash
	// reopens the database from the files as the killed process left
	// them.
	Store string `toml:"store"`
	// Network is the transport the venues' ops travel on: "auto" (the
	// default: "libp2p" up to 30 venues, "mocknet" beyond), "memory" (the
	// harness delivers each op directly to the replicas of its side),
	// "libp2p" (a p2p.Network per venue on a real libp2p host, TCP on
	// 127.0.0.1) or "mocknet" (p2p.Networks on go-libp2p's mocknet, each
	// link with the latency and bandwidth of its two venues' uplinks).
	Network string `toml:"network"`
	// Transport tunes the venues' networks on the libp2p and mocknet
	// transports (ignored on memory).
	Transport ScenarioTransport `toml:"transport"`

	src []byte
}

// ScenarioTransport tunes the venues' p2p.Networks when the ops travel
// on libp2p or mocknet. Zero fields keep the defaults.
type ScenarioTransport struct {
	// TimeScale runs the mocknet links that many times faster than the
	// venues' uplinks: latency / TimeScale, bandwidth × TimeScale. The
	// networks' own timers (p2p's heartbeat, periodic sync, gap delay)
	// keep their wall-clock values (Heartbeat sets the first). Measured
	// delays (visibility, heals) are reported multiplied back by it, as
	// times on the scenario's uplinks (an upper bound: the nodes' own
	// work and timers are counted TimeScale times too); the raw wall
	// times are kept beside them. Default 1 (real time); 1..1000;
	// mocknet only (real hosts on loopback have no link to scale).
	TimeScale float64 `toml:"time_scale"`
	// Heartbeat is each venue network's heartbeat interval in wall time
	// (p2p.Config.HeartbeatInterval): every heartbeat is verified by every
	// other venue, so its cost grows with the square of the venues.
	// Default: federation.heartbeat if under 2 s, else 2 s. 100ms..10m.
	Heartbeat Duration `toml:"heartbeat"`
	// MeshDegree is the GossipSub mesh each venue's network aims at
	// (p2p.Config.MeshDegree; a venue's own ops go to every connected
	// venue anyway). Default p2p's (4); 2..venues.count−1.
	MeshDegree int `toml:"mesh_degree"`
	// PeerScoring, if false, turns GossipSub's peer scoring off in every
	// venue's network (p2p.Config.NoPeerScoring: honest venues in one
	// process, where rescoring every peer every second is CPU the
	// simulation does not need; nothing is graylisted). Default true,
	// as on a node.
	PeerScoring *bool `toml:"peer_scoring"`
}

// ScenarioVenues describes the venues.
type ScenarioVenues struct {
	// Count is the number of venues (2..200); Names optionally names the
	// first len(Names) of them (the rest are "venue-N").
	Count int      `toml:"count"`
	Names []string `toml:"names"`
	// Open and Close are the opening hours ("18:00", "02:00"; default
	// always open). Card holders pay only while their venue is open.
	Open  string `toml:"open"`
	Close string `toml:"close"`
	// Uplink is every venue's link.
	Uplink ScenarioUplink `toml:"uplink"`
	// Override gives some venues their own opening hours or uplink; a
	// zero field keeps the value above.
	Override []ScenarioVenueOverride `toml:"override"`
}

// ScenarioVenueOverride is one venue's own opening hours and uplink.
type ScenarioVenueOverride struct {
	// Venue is a name or a 0-based index as a string.
	Venue string `toml:"venue"`
	// Open and Close are the venue's hours ("HH:MM"), or "always" in Open
	// for a venue that never closes.
	Open  string `toml:"open"`
	Close string `toml:"close"`
	// Latency, BandwidthKbps, Loss, FlapsPerHour and FlapDuration are
	// the venue's uplink (see ScenarioUplink).
	Latency       Duration `toml:"latency"`
	BandwidthKbps int      `toml:"bandwidth_kbps"`
	Loss          float64  `toml:"loss"`
	FlapsPerHour  float64  `toml:"flaps_per_hour"`
	FlapDuration  Duration `toml:"flap_duration"`
}

// ScenarioRefunds describes refunds.
type ScenarioRefunds struct {
	// Share of the card holders ask, once, at a random moment of the run,
	// for their balance back in cash at one of their venues (default 0);
	// a refund refused (the venue isolated, or without a quorum now) is
	// asked again at the next visit. The card then leaves the traffic.
	Share float64 `toml:"share"`
	// Clones also ask every venue they reach on the far side of a
	// partition, after their payments, for the card's balance in cash.
	Clones bool `toml:"clones"`
}

// ScenarioEvents describes the agenda's traffic.
type ScenarioEvents struct {
	// PerVenuePerDay is how many events a venue publishes per simulated
	// day (Poisson; default 0), each an event_upsert op with a title, a
	// time and a description of DescriptionBytes (default 300); UpdateShare
	// of the publications update an event the venue published before
	// (default 0.3).
	PerVenuePerDay   float64 `toml:"per_venue_per_day"`
	DescriptionBytes int     `toml:"description_bytes"`
	UpdateShare      float64 `toml:"update_share"`
}

// ScenarioRandomCrashes describes random node crashes.
type ScenarioRandomCrashes struct {
	// PerVenuePerDay is how often a venue's node is killed (kill -9), per
	// simulated day (Poisson; default 0); it restarts MinDown..MaxDown
	// later (default "1m".."10m").
	PerVenuePerDay float64  `toml:"per_venue_per_day"`
	MinDown        Duration `toml:"min_down"`
	MaxDown        Duration `toml:"max_down"`
}

// ScenarioUplink is a venue's internet link.
type ScenarioUplink struct {
	// Latency (default "30ms"), BandwidthKbps (default 2000) and Loss (a
	// packet loss share, 0..0.9, default 0) estimate the time an op takes
	// to reach the other venues (latency of both ends + bytes / bandwidth)
	// and the catch-up time after each heal (3 × latency + bytes /
	// bandwidth), both divided by 1 − loss (retransmissions).
	Latency       Duration `toml:"latency"`
	BandwidthKbps int      `toml:"bandwidth_kbps"`
	Loss          float64  `toml:"loss"`
	// FlapsPerHour is how often, on average, one venue's uplink drops
	// (each venue independently; 0: never), for FlapDuration (default
	// "2m"): the venue is alone for that time (a flaky uplink).
	FlapsPerHour float64  `toml:"flaps_per_hour"`
	FlapDuration Duration `toml:"flap_duration"`
}

// ScenarioCards describes the card holders and their habits.
type ScenarioCards struct {
	// Count is the number of cards, each issued with a first top-up
	// before the traffic starts.
	Count int `toml:"count"`
	// HomeVenues is how many venues a holder goes to (default 2, each
	// holder's chosen at random).
	HomeVenues int `toml:"home_venues"`
	// VisitsPerEvening is the payments a holder makes per 6 open hours
	// (default 3), as a Poisson process.
	VisitsPerEvening float64 `toml:"visits_per_evening"`
	// BasketMinCents and BasketMaxCents bound a payment (default 200 and
	// 1500, uniform).
	BasketMinCents uint64 `toml:"basket_min_cents"`
	BasketMaxCents uint64 `toml:"basket_max_cents"`
}

// ScenarioTopUps describes the top-ups.
type ScenarioTopUps struct {
	// InitialCents is each card's first top-up (default 3000).
	InitialCents uint64 `toml:"initial_cents"`
	// RefillCents is what a holder adds when the basket exceeds what they
	// know is left (default 2000).
	RefillCents uint64 `toml:"refill_cents"`
	// OnlineShare is the share of refills made online (recorded by a
	// random venue in sync, as the online shop's node does) rather than
	// in cash at the till (default 0).
	OnlineShare float64 `toml:"online_share"`
}

// ScenarioPartition is a scheduled partition.
type ScenarioPartition struct {
	// At is its start from the beginning of the run; For its length.
	At  Duration `toml:"at"`
	For Duration `toml:"for"`
	// Isolate lists venues (names or 0-based indexes as strings) cut off
	// alone, each on its own; Groups splits the venues into groups (the
	// venues not listed form one more group). Exactly one of them is set.
	Isolate []string   `toml:"isolate"`
	Groups  [][]string `toml:"groups"`
}

// ScenarioRandom describes random partitions.
type ScenarioRandom struct {
	// Count partitions start at uniformly random times; each splits the
	// venues into 2..MaxGroups random groups (default 3) for MinFor..MaxFor
	// (default "10m".."45m").
	Count     int      `toml:"count"`
	MaxGroups int      `toml:"max_groups"`
	MinFor    Duration `toml:"min_for"`
	MaxFor    Duration `toml:"max_for"`
}

// ScenarioCrash is a node crash (kill -9) and its restart.
type ScenarioCrash struct {
	// Venue crashes at At and restarts For later. A node acknowledges a
	// payment once it is in its store, so everything it acknowledged
	// survives; while down it takes no payment and exchanges nothing.
	Venue string   `toml:"venue"`
	At    Duration `toml:"at"`
	For   Duration `toml:"for"`
}

// ScenarioClones describes cloned cards and their attacks.
type ScenarioClones struct {
	// Count cards are cloned at random moments before the first partition
	// they attack in; TopUpCents, if set, has the attacker top the card up
	// to that balance first.
	Count      int    `toml:"count"`
	TopUpCents uint64 `toml:"topup_cents"`
	// AttackAfter is how long after each partition starts the clones
	// strike (default "1m"): the original spends all it can on the side
	// that stays in sync, the clone at every venue of the other sides.
	AttackAfter Duration `toml:"attack_after"`
	// Stamps is the clone's stamp policy: "frozen" (default) or
	// "per_group".
	Stamps string `toml:"stamps"`
}

// ScenarioFederation is the federation's settings (crdt.Settings); zero
// fields keep crdt.DefaultSettings.
type ScenarioFederation struct {
	OfflinePaymentMaxCents  uint64   `toml:"offline_payment_max_cents"`
	OfflineCardMaxCents     uint64   `toml:"offline_card_max_cents"`
	OfflineCardCount        uint64   `toml:"offline_card_count"`
	OfflineVenueBudgetCents uint64   `toml:"offline_venue_budget_cents"`
	BalanceMaxCents         uint64   `toml:"balance_max_cents"`
	MinPeersPercent         uint64   `toml:"min_peers_percent"`
	Heartbeat               Duration `toml:"heartbeat"`
	IsolationAfter          Duration `toml:"isolation_after"`
}

// ScenarioLibp2p asks for a measurement on real libp2p hosts (loopback
// TCP) after the virtual run: a partition of the cluster in two halves,
// OpsPerSide ops on each, then the heal, timed (RunReconvergence).
type ScenarioLibp2p struct {
	// Nodes is the cluster's size (0: no measurement; at most 30).
	Nodes      int `toml:"nodes"`
	OpsPerSide int `toml:"ops_per_side"`
}

// ScenarioError is a validation error with the line of the field.
type ScenarioError struct {
	Line  int // 1-based; 0 when unknown
	Field string
	Msg   string
}

func (e *ScenarioError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", e.Line, e.Field, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Field, e.Msg)
}

// ErrScenario is wrapped by every scenario validation error.
var ErrScenario = errors.New("invalid scenario")

// ParseScenario decodes and validates a scenario file. Errors wrap
// ErrScenario and carry the line and field (*ScenarioError), or the
// TOML parser's position.
func ParseScenario(src []byte) (*Scenario, error) {
	var sc Scenario
	md, err := toml.Decode(string(src), &sc)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%w: line %d: %s", ErrScenario, pe.Position.Line, pe.Message)
		}
		return nil, fmt.Errorf("%w: %w", ErrScenario, err)
	}
	sc.src = src
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0]
		return nil, sc.errf(k.String(), "unknown field")
	}
	if err := sc.defaults(); err != nil {
		return nil, err
	}
	return &sc, nil
}

// errf returns a *ScenarioError for field (dotted, with [i] for arrays of
// tables), wrapped with ErrScenario.
func (sc *Scenario) errf(field, format string, a ...any) error {
	return fmt.Errorf("%w: %w", ErrScenario, &ScenarioError{Line: findLine(sc.src, field), Field: field, Msg: fmt.Sprintf(format, a...)})
}

// findLine finds the line of a dotted field such as "venues.uplink.loss"
// or "crashes[1].at" in a TOML source: the key's line inside its table,
// else the table header's line, else 0.
func findLine(src []byte, field string) int {
	parts := strings.Split(field, ".")
	// table path and index of [[array]] element
	var table []string
	idx := map[string]int{}
	for _, p := range parts[:len(parts)-1] {
		if i := strings.IndexByte(p, '['); i > 0 {
			n, _ := strconv.Atoi(strings.TrimSuffix(p[i+1:], "]"))
			idx[p[:i]] = n
			p = p[:i]
		}
		table = append(table, p)
	}
	key := parts[len(parts)-1]
	if i := strings.IndexByte(key, '['); i > 0 {
		key = key[:i]
	}
	want := strings.Join(table, ".")
	cur, headerLine := "", 0
	count := map[string]int{}
	inTable := want == ""
	for n, line := range bytes.Split(src, []byte("\n")) {
		l := strings.TrimSpace(string(line))
		switch {
		case strings.HasPrefix(l, "[["):
			name := strings.TrimSpace(strings.Trim(strings.SplitN(l, "#", 2)[0], "[] \t"))
			cur = name
			c := count[name]
			count[name]++
			inTable = cur == want && c == idx[lastPart(want)]
			if inTable {
				headerLine = n + 1
			}
			continue
		case strings.HasPrefix(l, "["):
			cur = strings.TrimSpace(strings.Trim(strings.SplitN(l, "#", 2)[0], "[] \t"))
			inTable = cur == want
			if inTable {
				headerLine = n + 1
			}
			continue
		}
		if !inTable {
			continue
		}
		if k, _, ok := strings.Cut(l, "="); ok && strings.TrimSpace(k) == key {
			return n + 1
		}
	}
	return headerLine
}

func lastPart(s string) string {
	if i := strings.LastIndexByte(s, '.'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// parseClock parses "HH:MM" into minutes after midnight.
func parseClock(s string) (int, error) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return 0, fmt.Errorf("not a time of day (HH:MM): %q", s)
	}
	return t.Hour()*60 + t.Minute(), nil
}

// defaults fills zero fields and validates the scenario.
func (sc *Scenario) defaults() error {
	if sc.Name == "" {
		sc.Name = "scenario"
	}
	if sc.Duration.Duration <= 0 || sc.Duration.Duration > 31*24*time.Hour {
		return sc.errf("duration", "required, between 1s and 31 days")
	}
	if sc.Start == "" {
		sc.Start = "18:00"
	}
	if _, err := parseClock(sc.Start); err != nil {
		return sc.errf("start", "%v", err)
	}
	if sc.Step.Duration == 0 {
		sc.Step.Duration = time.Minute
	}
	if sc.Step.Duration < time.Second || sc.Step.Duration > time.Hour {
		return sc.errf("step", "between 1s and 1h")
	}
	v := &sc.Venues
	if v.Count < 2 || v.Count > 200 {
		return sc.errf("venues.count", "between 2 and 200 (got %d)", v.Count)
	}
	if len(v.Names) > v.Count {
		return sc.errf("venues.names", "%d names for %d venues", len(v.Names), v.Count)
	}
	seen := map[string]bool{}
	for i, n := range v.Names {
		if n == "" || seen[n] {
			return sc.errf("venues.names", "name %d empty or repeated", i)
		}
		seen[n] = true
	}
	if (v.Open == "") != (v.Close == "") {
		return sc.errf("venues.open", "open and close go together")
	}
	if v.Open != "" {
		if _, err := parseClock(v.Open); err != nil {
			return sc.errf("venues.open", "%v", err)
		}
		if _, err := parseClock(v.Close); err != nil {
			return sc.errf("venues.close", "%v", err)
		}
	}
	u := &v.Uplink
	if u.Latency.Duration == 0 {
		u.Latency.Duration = 30 * time.Millisecond
	}
	if u.BandwidthKbps == 0 {
		u.BandwidthKbps = 2000
	}
	if u.FlapDuration.Duration == 0 {
		u.FlapDuration.Duration = 2 * time.Minute
	}
	switch {
	case u.Latency.Duration < 0 || u.Latency.Duration > time.Minute:
		return sc.errf("venues.uplink.latency", "between 0 and 1m")
	case u.BandwidthKbps < 1:
		return sc.errf("venues.uplink.bandwidth_kbps", "at least 1")
	case u.FlapsPerHour < 0 || u.FlapsPerHour > 60:
		return sc.errf("venues.uplink.flaps_per_hour", "between 0 and 60")
	case u.FlapDuration.Duration < 0:
		return sc.errf("venues.uplink.flap_duration", "not negative")
	case u.Loss < 0 || u.Loss > 0.9:
		return sc.errf("venues.uplink.loss", "between 0 and 0.9")
	}
	overridden := map[int]bool{}
	for i, o := range v.Override {
		f := fmt.Sprintf("venues.override[%d]", i)
		k, err := sc.VenueIndex(o.Venue)
		if err != nil {
			return sc.errf(f+".venue", "%v", err)
		}
		if overridden[k] {
			return sc.errf(f+".venue", "venue %q overridden twice", o.Venue)
		}
		overridden[k] = true
		switch {
		case o.Open == "always" && o.Close == "":
		case (o.Open == "") != (o.Close == ""):
			return sc.errf(f+".open", "open and close go together (or open = \"always\")")
		case o.Open != "":
			if _, err := parseClock(o.Open); err != nil {
				return sc.errf(f+".open", "%v", err)
			}
			if _, err := parseClock(o.Close); err != nil {
				return sc.errf(f+".close", "%v", err)
			}
		}
		switch {
		case o.Latency.Duration < 0 || o.Latency.Duration > time.Minute:
			return sc.errf(f+".latency", "between 0 and 1m")
		case o.BandwidthKbps < 0:
			return sc.errf(f+".bandwidth_kbps", "at least 1")
		case o.Loss < 0 || o.Loss > 0.9:
			return sc.errf(f+".loss", "between 0 and 0.9")
		case o.FlapsPerHour < 0 || o.FlapsPerHour > 60:
			return sc.errf(f+".flaps_per_hour", "between 0 and 60")
		case o.FlapDuration.Duration < 0:
			return sc.errf(f+".flap_duration", "not negative")
		}
	}
	c := &sc.Cards
	if c.Count < 1 || c.Count > 100_000 {
		return sc.errf("cards.count", "between 1 and 100000 (got %d)", c.Count)
	}
	if c.HomeVenues == 0 {
		c.HomeVenues = 2
	}
	if c.HomeVenues < 1 || c.HomeVenues > v.Count {
		return sc.errf("cards.home_venues", "between 1 and venues.count")
	}
	if c.VisitsPerEvening == 0 {
		c.VisitsPerEvening = 3
	}
	if c.VisitsPerEvening < 0 || c.VisitsPerEvening > 100 {
		return sc.errf("cards.visits_per_evening", "between 0 and 100")
	}
	if c.BasketMinCents == 0 {
		c.BasketMinCents = 200
	}
	if c.BasketMaxCents == 0 {
		c.BasketMaxCents = 1500
	}
	if c.BasketMaxCents < c.BasketMinCents || c.BasketMaxCents > crdt.MaxAmount {
		return sc.errf("cards.basket_max_cents", "at least basket_min_cents, at most %d", crdt.MaxAmount)
	}
	t := &sc.TopUps
	if t.InitialCents == 0 {
		t.InitialCents = 3000
	}
	if t.RefillCents == 0 {
		t.RefillCents = 2000
	}
	if t.OnlineShare < 0 || t.OnlineShare > 1 {
		return sc.errf("topups.online_share", "between 0 and 1")
	}
	if t.InitialCents > crdt.MaxAmount || t.RefillCents > crdt.MaxAmount {
		return sc.errf("topups.initial_cents", "at most %d", crdt.MaxAmount)
	}
	for i := range sc.Partitions {
		p := &sc.Partitions[i]
		f := fmt.Sprintf("partitions[%d]", i)
		if p.At.Duration < 0 || p.At.Duration >= sc.Duration.Duration {
			return sc.errf(f+".at", "within the duration")
		}
		if p.For.Duration <= 0 {
			return sc.errf(f+".for", "required, positive")
		}
		if (len(p.Isolate) == 0) == (len(p.Groups) == 0) {
			return sc.errf(f+".isolate", "set exactly one of isolate and groups")
		}
		for _, n := range p.Isolate {
			if _, err := sc.VenueIndex(n); err != nil {
				return sc.errf(f+".isolate", "%v", err)
			}
		}
		in := map[int]bool{}
		for _, g := range p.Groups {
			for _, n := range g {
				k, err := sc.VenueIndex(n)
				if err != nil {
					return sc.errf(f+".groups", "%v", err)
				}
				if in[k] {
					return sc.errf(f+".groups", "venue %q in two groups", n)
				}
				in[k] = true
			}
		}
	}
	r := &sc.Random
	if r.MaxGroups == 0 {
		r.MaxGroups = 3
	}
	if r.MinFor.Duration == 0 {
		r.MinFor.Duration = 10 * time.Minute
	}
	if r.MaxFor.Duration == 0 {
		r.MaxFor.Duration = 45 * time.Minute
	}
	switch {
	case r.Count < 0 || r.Count > 10_000:
		return sc.errf("random_partitions.count", "between 0 and 10000")
	case r.MaxGroups < 2 || r.MaxGroups > v.Count:
		return sc.errf("random_partitions.max_groups", "between 2 and venues.count")
	case r.MinFor.Duration <= 0 || r.MaxFor.Duration < r.MinFor.Duration:
		return sc.errf("random_partitions.max_for", "0 < min_for <= max_for")
	}
	for i, cr := range sc.Crashes {
		f := fmt.Sprintf("crashes[%d]", i)
		if _, err := sc.VenueIndex(cr.Venue); err != nil {
			return sc.errf(f+".venue", "%v", err)
		}
		if cr.At.Duration < 0 || cr.At.Duration >= sc.Duration.Duration {
			return sc.errf(f+".at", "within the duration")
		}
		if cr.For.Duration <= 0 {
			return sc.errf(f+".for", "required, positive")
		}
	}
	cl := &sc.Clones
	if cl.AttackAfter.Duration == 0 {
		cl.AttackAfter.Duration = time.Minute
	}
	if cl.Stamps == "" {
		cl.Stamps = string(StampFrozen)
	}
	switch {
	case cl.Count < 0 || cl.Count > c.Count:
		return sc.errf("clones.count", "between 0 and cards.count")
	case cl.Stamps != string(StampFrozen) && cl.Stamps != string(StampPerGroup):
		return sc.errf("clones.stamps", "\"frozen\" or \"per_group\" (got %q)", cl.Stamps)
	case cl.TopUpCents > crdt.MaxAmount:
		return sc.errf("clones.topup_cents", "at most %d", crdt.MaxAmount)
	case cl.Count > 0 && len(sc.Partitions) == 0 && r.Count == 0 && u.FlapsPerHour == 0:
		return sc.errf("clones.count", "clones attack during partitions: schedule some")
	}
	rf := &sc.Refunds
	if rf.Share < 0 || rf.Share > 1 {
		return sc.errf("refunds.share", "between 0 and 1")
	}
	ev := &sc.Events
	if ev.DescriptionBytes == 0 {
		ev.DescriptionBytes = 300
	}
	if ev.UpdateShare == 0 {
		ev.UpdateShare = 0.3
	}
	switch {
	case ev.PerVenuePerDay < 0 || ev.PerVenuePerDay > 1000:
		return sc.errf("events.per_venue_per_day", "between 0 and 1000")
	case ev.DescriptionBytes < 0 || ev.DescriptionBytes > crdt.MaxTextLen:
		return sc.errf("events.description_bytes", "between 0 and %d", crdt.MaxTextLen)
	case ev.UpdateShare < 0 || ev.UpdateShare > 1:
		return sc.errf("events.update_share", "between 0 and 1")
	}
	rc := &sc.RandomCrashes
	if rc.MinDown.Duration == 0 {
		rc.MinDown.Duration = time.Minute
	}
	if rc.MaxDown.Duration == 0 {
		rc.MaxDown.Duration = 10 * time.Minute
	}
	switch {
	case rc.PerVenuePerDay < 0 || rc.PerVenuePerDay > 100:
		return sc.errf("random_crashes.per_venue_per_day", "between 0 and 100")
	case rc.MinDown.Duration <= 0 || rc.MaxDown.Duration < rc.MinDown.Duration:
		return sc.errf("random_crashes.max_down", "0 < min_down <= max_down")
	}
	switch sc.Store {
	case "":
		sc.Store = StoreMemory
	case StoreMemory, StoreBadger:
	default:
		return sc.errf("store", "\"memory\" or \"badger\" (got %q)", sc.Store)
	}
	switch sc.Network {
	case "":
		sc.Network = NetworkAuto
	case NetworkAuto, NetworkMemory, NetworkLibp2p, NetworkMocknet:
	default:
		return sc.errf("network", "\"auto\", \"memory\", \"libp2p\" or \"mocknet\" (got %q)", sc.Network)
	}
	tr := &sc.Transport
	if tr.TimeScale == 0 {
		tr.TimeScale = 1
	}
	switch {
	case tr.TimeScale < 1 || tr.TimeScale > 1000 || math.IsNaN(tr.TimeScale):
		return sc.errf("transport.time_scale", "between 1 and 1000 (got %g)", tr.TimeScale)
	case tr.TimeScale != 1 && sc.Network == NetworkLibp2p:
		return sc.errf("transport.time_scale", "mocknet only: real hosts on loopback have no link to scale")
	case tr.Heartbeat.Duration != 0 && (tr.Heartbeat.Duration < 100*time.Millisecond || tr.Heartbeat.Duration > 10*time.Minute):
		return sc.errf("transport.heartbeat", "between 100ms and 10m (got %s)", tr.Heartbeat.Duration)
	case tr.MeshDegree != 0 && (tr.MeshDegree < 2 || tr.MeshDegree > v.Count-1):
		return sc.errf("transport.mesh_degree", "between 2 and venues.count-1 (got %d)", tr.MeshDegree)
	}
	fed := &sc.Federation
	if fed.MinPeersPercent > 100 {
		return sc.errf("federation.min_peers_percent", "at most 100")
	}
	if fed.Heartbeat.Duration < 0 || fed.IsolationAfter.Duration < 0 {
		return sc.errf("federation.heartbeat", "not negative")
	}
	if sc.Libp2p.Nodes != 0 && (sc.Libp2p.Nodes < 2 || sc.Libp2p.Nodes > 30) {
		return sc.errf("libp2p.nodes", "between 2 and 30 (real hosts on loopback)")
	}
	if sc.Libp2p.OpsPerSide < 0 || sc.Libp2p.OpsPerSide > 100_000 {
		return sc.errf("libp2p.ops_per_side", "between 0 and 100000")
	}
	if sc.Libp2p.Nodes > 0 && sc.Libp2p.OpsPerSide == 0 {
		sc.Libp2p.OpsPerSide = 200
	}
	return nil
}

// Store kinds (Scenario.Store).
const (
	StoreMemory = "memory"
	StoreBadger = "badger"
)

// Uplink is one venue's link, with the overrides applied.
type Uplink struct {
	LatencyMs     int64
	BandwidthKbps int
	Loss          float64
	FlapsPerHour  float64
	FlapMs        int64
}

// TransferMs estimates the time to send bytes over the link after rtts
// round trips: (rtts × latency + bytes / bandwidth) / (1 − loss).
func (u Uplink) TransferMs(rtts int, bytes int64) int64 {
	ms := float64(int64(rtts)*u.LatencyMs) + float64(bytes)*8/float64(u.BandwidthKbps)
	return int64(math.Ceil(ms / (1 - u.Loss)))
}

// override returns venue i's override, or nil.
func (sc *Scenario) override(i int) *ScenarioVenueOverride {
	for k := range sc.Venues.Override {
		if j, _ := sc.VenueIndex(sc.Venues.Override[k].Venue); j == i {
			return &sc.Venues.Override[k]
		}
	}
	return nil
}

// VenueUplink returns venue i's uplink: venues.uplink with its override.
func (sc *Scenario) VenueUplink(i int) Uplink {
	u := sc.Venues.Uplink
	out := Uplink{LatencyMs: u.Latency.Ms(), BandwidthKbps: u.BandwidthKbps, Loss: u.Loss, FlapsPerHour: u.FlapsPerHour, FlapMs: u.FlapDuration.Ms()}
	if o := sc.override(i); o != nil {
		if o.Latency.Duration > 0 {
			out.LatencyMs = o.Latency.Ms()
		}
		if o.BandwidthKbps > 0 {
			out.BandwidthKbps = o.BandwidthKbps
		}
		if o.Loss > 0 {
			out.Loss = o.Loss
		}
		if o.FlapsPerHour > 0 {
			out.FlapsPerHour = o.FlapsPerHour
		}
		if o.FlapDuration.Duration > 0 {
			out.FlapMs = o.FlapDuration.Ms()
		}
	}
	return out
}

// VenueHours returns venue i's opening hours in minutes after midnight;
// always is true for a venue that never closes.
func (sc *Scenario) VenueHours(i int) (open, close int, always bool) {
	o, c := sc.Venues.Open, sc.Venues.Close
	if ov := sc.override(i); ov != nil && ov.Open != "" {
		o, c = ov.Open, ov.Close
	}
	if o == "" || o == "always" {
		return 0, 0, true
	}
	open, _ = parseClock(o)
	close, _ = parseClock(c)
	return open, close, false
}

// VenueName returns venue i's name.
func (sc *Scenario) VenueName(i int) string {
	if i < len(sc.Venues.Names) {
		return sc.Venues.Names[i]
	}
	return fmt.Sprintf("venue-%d", i)
}

// VenueIndex resolves a venue name or 0-based index.
func (sc *Scenario) VenueIndex(s string) (int, error) {
	for i, n := range sc.Venues.Names {
		if n == s {
			return i, nil
		}
	}
	if i, err := strconv.Atoi(s); err == nil && i >= 0 && i < sc.Venues.Count {
		return i, nil
	}
	return 0, fmt.Errorf("no venue %q", s)
}

// Settings returns the federation settings of the scenario.
func (sc *Scenario) Settings() crdt.Settings {
	s := crdt.DefaultSettings()
	f := sc.Federation
	set := func(p *uint64, v uint64) {
		if v != 0 {
			*p = v
		}
	}
	set(&s.OfflinePaymentMax, f.OfflinePaymentMaxCents)
	set(&s.OfflineCardMax, f.OfflineCardMaxCents)
	set(&s.OfflineCardCount, f.OfflineCardCount)
	set(&s.OfflineVenueBudget, f.OfflineVenueBudgetCents)
	set(&s.BalanceMax, f.BalanceMaxCents)
	set(&s.MinPeersPercent, f.MinPeersPercent)
	set(&s.HeartbeatInterval, uint64(f.Heartbeat.Milliseconds()))
	set(&s.IsolationAfter, uint64(f.IsolationAfter.Milliseconds()))
	return s
}
