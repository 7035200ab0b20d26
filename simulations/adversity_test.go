package simulations

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cagnotte/cagnotte/crdt"
)

// TestOfflineRefundRefusedWhileIsolated: holders ask for cash refunds at
// random venues and every clone asks each venue it reaches on the far side
// of a partition for the card's balance in cash. Refunds are decided by
// crdt.State.DecideRefund with the same isolation and quorum input as
// payments: none is accepted at an isolated venue, nor in the detection
// window when the venue pings the quorum first. Without the ping, the
// window lets clones cash out (the test shows the check is what closes it).
func TestOfflineRefundRefusedWhileIsolated(t *testing.T) {
	for _, tc := range []struct {
		name          string
		lag, noPing   bool
		clonesCashOut bool
	}{
		{name: "instant isolation"},
		{name: "detection lag, quorum ping", lag: true},
		{name: "detection lag, no ping", lag: true, noPing: true, clonesCashOut: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultOfflineConfig()
			cfg.RefundShare = 0.05
			cfg.CloneStamps = StampPerGroup
			cfg.AttackerTopUpCents = 15000
			cfg.DetectionLag, cfg.NoQuorumCheck = tc.lag, tc.noPing
			if tc.lag {
				cfg.AttackAfterMs = 0
			}
			rs := runSeeds(t, cfg, 4)
			var honest, attack RefundStats
			for i := range rs {
				r := &rs[i]
				checkRun(t, r)
				addRefunds(&honest, &r.HonestRefunds)
				addRefunds(&attack, &r.AttackRefunds)
			}
			if honest.AcceptedIsolated+attack.AcceptedIsolated != 0 {
				t.Errorf("refunds accepted while isolated: %d honest, %d clones", honest.AcceptedIsolated, attack.AcceptedIsolated)
			}
			if attack.Attempted == 0 || honest.Accepted == 0 {
				t.Fatalf("the scenario asked no clone refund (%d) or accepted no honest one (%d)", attack.Attempted, honest.Accepted)
			}
			if tc.clonesCashOut {
				if attack.Accepted == 0 {
					t.Error("without the quorum ping no clone cashed out in the detection window: the test cannot tell the check works")
				}
			} else if attack.Accepted != 0 {
				t.Errorf("%d clone refunds accepted (%s)", attack.Accepted, euros(attack.Cents))
			}
			t.Logf("honest refunds %+v\nclone refunds %+v\n%s", honest, attack, FormatOfflineRuns(rs))
		})
	}
}

// TestDoubleSigningVenueConvergesAndKeepsMoney: in each partition a
// random venue's data dir is copied to a second till that opens on
// another side: two authors with one key (crdt.NewAuthor twice from the
// same seq and head) sign two ops at one seq. After the heal every replica
// has the same digest, the equivocation is a conflict on every replica,
// and no payment, refund or top-up of either branch is erased: money
// counts both.
func TestDoubleSigningVenueConvergesAndKeepsMoney(t *testing.T) {
	for _, policy := range []StampPolicy{StampFrozen, StampPerGroup} {
		t.Run(string(policy), func(t *testing.T) {
			cfg := DefaultOfflineConfig()
			cfg.CloneStamps = policy
			cfg.DoubleSigners = cfg.Episodes
			cfg.RefundShare = 0.03
			rs := runSeeds(t, cfg, 4)
			forks := 0
			for i := range rs {
				r := &rs[i]
				checkRun(t, r)
				if r.ForksDetected != r.Forks || r.ErasedOps != 0 {
					t.Errorf("seed %d: %d/%d forks detected everywhere, %d money ops erased", r.Config.Seed, r.ForksDetected, r.Forks, r.ErasedOps)
				}
				forks += r.Forks
			}
			if forks == 0 {
				t.Fatal("no venue signed on two tills")
			}
			t.Logf("%d venues signed on two tills\n%s", forks, FormatOfflineRuns(rs))
		})
	}
}

// TestSimultaneousCloneTapsInSyncBoundedByReservations: a cloned card
// tapped at k in-sync venues within a few ms for its whole balance. With
// reservations (crdt.NeedsReservation, Coordinators, ReservationTable) a
// card loses at most (k−1) × floor limit; without, each venue takes the
// whole balance on its own view: (k−1) × balance.
func TestSimultaneousCloneTapsInSyncBoundedByReservations(t *testing.T) {
	var all []SimultaneousReport
	for _, k := range []int{2, 3, 5} {
		for _, noRes := range []bool{false, true} {
			cfg := SimultaneousConfig{K: k, Cards: 30, NoReservations: noRes}
			rs, err := RunSimultaneousSeeds(cfg, seeds(2))
			if err != nil {
				t.Fatal(err)
			}
			for i := range rs {
				r := &rs[i]
				if err := r.Err(); err != nil {
					t.Error(err)
				}
				if !r.Converged || r.OverdrawnBlocked != r.Overdrawn || r.DoubleSpendsDetected != r.DoubleSpends || r.DoubleSpends == 0 {
					t.Errorf("k %d, reservations %v, seed %d: converged %v, blocked %d/%d, detected %d/%d", k, !noRes, r.Config.Seed,
						r.Converged, r.OverdrawnBlocked, r.Overdrawn, r.DoubleSpendsDetected, r.DoubleSpends)
				}
				if noRes {
					if r.LossCents <= r.BoundCents {
						t.Errorf("k %d without reservations: loss %d within (k−1) × floor %d: the attack is too weak to show anything", k, r.LossCents, r.BoundCents)
					}
				} else if r.LossCents > r.BoundCents || r.MaxCardLossCents > int64(k-1)*int64(crdt.DefaultSettings().OfflinePaymentMax) {
					t.Errorf("k %d with reservations: loss %d > bound %d (max per card %d)", k, r.LossCents, r.BoundCents, r.MaxCardLossCents)
				}
			}
			all = append(all, rs...)
		}
	}
	t.Log("\n" + FormatSimultaneous(all))
}

// honestConfig is the false-block scenario: honest cards only, paying and
// asking refunds at random venues through partitions, with the node's
// isolation timing (heartbeats and a quorum ping), readers of the given
// kind.
func honestConfig(uidOnly float64) OfflineConfig {
	cfg := DefaultOfflineConfig()
	cfg.Clones = 0
	cfg.Cards = 60
	cfg.Episodes = 4
	cfg.PaymentsPerCardHour = 2
	cfg.DetectionLag = true
	cfg.RefundShare = 0.02
	cfg.UIDOnlyShare = uidOnly
	return cfg
}

// TestHonestCardsNotBlockedWithoutStampWriters: every reader reads the
// UID only, so a card that paid at an isolated venue pays again elsewhere
// with the same counter: collisions (double_spend conflicts) that the
// balance covers. None may block a card: no money is missing.
func TestHonestCardsNotBlockedWithoutStampWriters(t *testing.T) {
	rs := runSeeds(t, honestConfig(1), 4)
	collisions := 0
	for i := range rs {
		r := &rs[i]
		checkRun(t, r)
		if r.Honest.FalseBlocks != 0 || r.BlockedCards != 0 {
			t.Errorf("seed %d: %d honest cards blocked, no money missing", r.Config.Seed, r.Honest.FalseBlocks)
		}
		collisions += r.Honest.Collisions
	}
	if collisions == 0 {
		t.Error("no honest card paid twice with one counter: the test cannot tell the rule works")
	}
	t.Logf("%d collisions, none blocking\n%s", collisions, FormatOfflineRuns(rs))
}

// TestHonestCardsNotBlockedWithStampWriters: every reader writes stamps:
// no collision, no block.
func TestHonestCardsNotBlockedWithStampWriters(t *testing.T) {
	for _, r := range runSeeds(t, honestConfig(0), 4) {
		checkRun(t, &r)
		if r.Honest.FalseBlocks != 0 || r.Honest.Collisions != 0 || r.BlockedCards != 0 {
			t.Errorf("seed %d: %d honest cards blocked, %d collisions", r.Config.Seed, r.Honest.FalseBlocks, r.Honest.Collisions)
		}
	}
}

// TestHonestCardsMixedReadersStaleStampBlocks measures a gap of today's
// rules: with half the venues reading the UID only, a card that paid
// through a UID-only reader still carries its older stamp; presented at an
// isolated stamp-writing venue that knows the later payment, it is refused
// as a stale stamp and blocked (crdt.BlockAfterRefusal), though no money
// is missing. The test checks that such refusals are the only cause of
// honest blocks (never crdt.Card.NeedsAutoBlock) and logs the rate; when
// the rule is fixed it must assert 0.
func TestHonestCardsMixedReadersStaleStampBlocks(t *testing.T) {
	rs := runSeeds(t, honestConfig(0.5), 4)
	blocked, cards := 0, 0
	for i := range rs {
		r := &rs[i]
		for _, v := range r.Violations {
			if !knownStaleStampGap(v) {
				t.Errorf("seed %d: %s", r.Config.Seed, v)
			}
		}
		blocked += r.Honest.FalseBlocks
		cards += r.Honest.Cards
	}
	t.Logf("mixed readers: %d of %d honest cards blocked (%.1f %%), all after a stale stamp refused while isolated", blocked, cards, 100*ratio(int64(blocked), int64(cards)))
}

// BenchmarkSimultaneousTaps runs the synchronized in-sync clone attack at
// full size (10 venues, 100 cloned cards per run, -sim.seeds seeds,
// default 3) for k = 2, 3, 5 and 10 venues, with and without
// reservations, and reports the in-sync exposure:
//
//	go test ./simulations/ -run '^$' -bench BenchmarkSimultaneousTaps -benchtime 1x -v
func BenchmarkSimultaneousTaps(b *testing.B) {
	var all []SimultaneousReport
	for _, k := range []int{2, 3, 5, 10} {
		for _, noRes := range []bool{false, true} {
			name := fmt.Sprintf("k%d/reservations", k)
			if noRes {
				name = fmt.Sprintf("k%d/none", k)
			}
			b.Run(name, func(b *testing.B) {
				var rs []SimultaneousReport
				for b.Loop() {
					var err error
					rs, err = RunSimultaneousSeeds(SimultaneousConfig{K: k, Cards: 100, NoReservations: noRes}, seeds(3))
					if err != nil {
						b.Fatal(err)
					}
				}
				var loss, balance, bound, maxCard int64
				for i := range rs {
					if err := rs[i].Err(); err != nil {
						b.Error(err)
					}
					loss += rs[i].LossCents
					balance += rs[i].BalanceCents
					bound += rs[i].BoundCents
					maxCard = max(maxCard, rs[i].MaxCardLossCents)
				}
				b.ReportMetric(float64(loss)/100, "loss-eur")
				b.ReportMetric(float64(bound)/100, "bound-eur")
				b.ReportMetric(100*ratio(loss, balance), "loss/balance-%")
				b.ReportMetric(float64(maxCard)/100, "max-card-loss-eur")
				all = append(all, rs...)
			})
		}
	}
	b.Log("\n" + FormatSimultaneous(all))
}

// knownStaleStampGap reports whether a violation is the false block
// TestHonestCardsMixedReadersStaleStampBlocks measures.
func knownStaleStampGap(v string) bool {
	return strings.HasPrefix(v, "honest card ") && strings.Contains(v, "stale stamp presented while isolated")
}

// BenchmarkHonestFalseBlocks runs honest cards only at full size (10
// venues, 20 partitions, 500 cards, node isolation timing, refunds) with
// stamp-writing readers everywhere, UID-only readers everywhere and half
// of each, and reports the share of honest cards blocked though no money
// is missing:
//
//	go test ./simulations/ -run '^$' -bench BenchmarkHonestFalseBlocks -benchtime 1x -v
func BenchmarkHonestFalseBlocks(b *testing.B) {
	for _, tc := range []struct {
		name    string
		uidOnly float64
	}{{"stamp_writers", 0}, {"uid_only", 1}, {"mixed", 0.5}} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := FullOfflineConfig()
			cfg.Clones = 0
			cfg.DetectionLag = true
			cfg.RefundShare = 0.02
			cfg.UIDOnlyShare = tc.uidOnly
			var rs []OfflineReport
			for b.Loop() {
				rs = runSeeds(b, cfg, 3)
			}
			for i := range rs {
				for _, v := range rs[i].Violations {
					if !knownStaleStampGap(v) {
						b.Errorf("seed %d: %s", rs[i].Config.Seed, v)
					}
				}
			}
			s := SummarizeOffline(rs)
			b.ReportMetric(s.FalseBlockPercent, "false-block-%")
			b.ReportMetric(float64(s.FalseBlocks), "false-blocks")
			b.ReportMetric(float64(s.Collisions), "collisions")
			b.Log("\n" + FormatOfflineRuns(rs))
		})
	}
}
