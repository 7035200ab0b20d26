// Package simulations runs Cagnotte scenarios in one process and checks
// their invariants: many venues, partitions, card traffic, cloned cards.
//
// # The harness
//
// A [Harness] holds N venues of one federation. Each venue is a
// [crdt.Replica] (op set, memory log, pending buffer) with its own
// [crdt.Author], whose key is derived from the run's seed, and the state a
// node keeps beside its replica: whether it is isolated and its
// [crdt.OfflineLedger]. The federation key makes a genesis (the settings of
// the scenario, [crdt.DefaultSettings] unless it says otherwise) and one
// admission per venue, delivered to every replica.
//
// Time is a virtual clock in Unix milliseconds that the harness moves
// forward: no time.Now, no sleeps. Randomness is math/rand/v2's PCG seeded
// from the run's seed, so a seed always gives the same run, the same ops
// and the same digests.
//
// The network is a partition: each venue is in one group. An op a venue
// makes is added to its own replica and delivered at once ([crdt.Replica]
// Deliver, as gossip does) to every venue of its group, and to no other.
// Heal puts every venue back in one group and runs anti-entropy: each
// replica pulls from every other the ranges its version vector lacks
// ([crdt.OpSet] Missing, added with AddRange as catch-up does) and, for a
// venue that forked, the ops of the branch it lacks (which version vectors
// cannot show), so all replicas end with the same op set and the same
// Digest. HoldGossip makes ops wait until Flush before they reach the
// rest of their group: the gossip delay, inside which venues in sync
// decide on views that miss each other's newest payments.
//
// CopyVenue copies a venue's data dir to a second till: a new venue index
// with a copy of the replica and a [crdt.Author] made by crdt.NewAuthor
// from the same key and the same (seq, head). Placed on another side of a
// partition, the two tills sign two ops at one seq; Retire switches the
// copy off.
//
// Isolation is the nodes' rule, [crdt.Settings.Quorum]: a venue is in sync
// when it hears at least MinPeersPercent of the other admitted, unrevoked
// venues it knows; otherwise it is isolated. By default a venue hears exactly the venues of
// its group, from the moment of the split (instant detection). With
// DetectionLag it hears a venue for IsolationAfter ms after they were last
// connected, as a node counting heartbeats does. On every change of state
// the venue's ledger is Reset (to the moment it lost sync, or to 0 when it
// regains it), and each offline payment is recorded in it.
//
// Every decision is the crdt rule the node calls, never a copy of it
// ("one rule, one place"). Before a payment or refund, a venue that
// believes itself in sync checks that it reaches a quorum now (else the
// caps apply, counting the card's payments there over the last
// IsolationAfter, [crdt.CardLedger]) and, above the floor limit
// ([crdt.NeedsReservation]), reserves the card with a majority of its
// coordinators ([crdt.Coordinators]; each venue keeps a
// [crdt.ReservationTable], released when it sees the payment; the outcome
// is [crdt.ReservationOutcome]): a card another venue holds is refused
// (ErrCardBusy), unreachable coordinators put the payment under the caps,
// as node/quorum.go does. Payments then go through
// [crdt.State.DecidePayment] with the venue's isolation state and ledger;
// an accepted payment becomes a signed [crdt.Payment] with the decision's
// Counter, StampCounter and StampVenue, and the card gets a new stamp
// signed by the venue ([crdt.Signer.SignStamp]). Cards carry that stamp
// and present it, decoded with [crdt.DecodeStamp], at their next payment
// (at a venue whose readers read the UID only, the card neither presents
// nor gets a stamp). Refunds go through [crdt.State.DecideRefund] with
// the same isolation and quorum input; top-ups through
// [crdt.State.DecideTopUp] (blocked cards, balance ceiling). With
// AutoBlock, a venue blocks a card with a [crdt.CardBlock] op when
// [crdt.Card.NeedsAutoBlock] says so after its ledger changed (money
// actually missing), and after a refusal when [crdt.BlockAfterRefusal]
// says so (a stale stamp presented while isolated).
//
// # Scenarios over real networks
//
// [RunScenario] plays a scenario file on the harness above; its
// Scenario.Network (or ScenarioOptions.Network, `cagnotte simulate
// --network`) says how the ops travel. "memory" is the harness's direct
// delivery. "libp2p" and "mocknet" hand the carriage to real networks
// (netcarry.go): every venue runs a [p2p.Network] (GossipSub, heartbeats,
// the node's anti-entropy, its connection gater) whose [p2p.Replica] is the
// venue's own crdt.Replica, the one the harness decides on, behind a
// [p2p.MemReplica] (p2p.WrapReplica). "libp2p" puts each network on a real
// libp2p host (TCP, Noise, yamux on 127.0.0.1); "mocknet" on go-libp2p's
// mocknet, each link with mocknet.LinkOptions from its two venues'
// uplinks: latency the sum of both uplinks' latencies, bandwidth the
// narrower one (loss is not modelled: mocknet links are reliable). "auto",
// the default, is libp2p up to 30 venues and mocknet beyond. The networks
// start after the cards are issued (the issuing stays the harness's
// catch-up run), are connected in a full mesh (TargetPeers = venues − 1:
// a venue's own ops reach every other venue in one hop) and the run waits
// until every venue has heard every other's heartbeat.
//
// The decisions stay the harness's (crdt rules, quorum and isolation from
// the layout); only the carriage changes. One world lock (sync.RWMutex)
// separates them: the harness holds it for writing while it plays a step,
// and every replica method the networks call takes it for reading, so
// nothing touches a replica while the harness decides and the venues'
// networks ingest in parallel between steps. Membership (IsMember,
// Members) is read once when a network starts (a scenario admits and
// revokes nobody after its genesis) and answered without the lock: the
// gater, GossipSub's peer filter and the validators ask it on every
// connection and message.
//
// An op a venue makes is added to its replica and kept until the step's
// end ([Harness.SetCarrier], [Carrier]); then the world lock is released,
// each venue's network is given the step's own ops as one commit (it
// publishes them as a node publishes its commits, in GossipSub messages
// of up to 128 ops), and the run waits, on the networks' commit hooks
// with a deadline (ScenarioOptions.ConvergeTimeout, 60 s by default;
// never a sleep), until every venue of each side holds the same ops (one
// digest per side). The virtual clock does not move meanwhile. The ops a
// venue received are then handed to the harness (the reservations they
// settle released, the automatic blocks they call for made and carried
// in turn). Each op's measured visibility delay is the wall time from the
// release to its commit at the last venue of its side.
//
// The scenario's cuts go to the networks as well: every pair of venues on
// different sides blocks each other (p2p.Network.Block: the gater on real
// hosts, closed connections on mocknet), and the run waits until no
// connection crosses sides; venues brought to one side are unblocked and
// connected, and the run waits for their own anti-entropy (sync on
// connect, periodic sync, gap sync) to merge them. A heal of the whole
// network is that, timed from the unblocking until one digest
// everywhere: HealRecord.MeasuredConvergeMs, next to the model's
// estimate. Past the deadline the run stops on "one digest everywhere
// after each heal", listing the ops each venue lacks. The broken rule
// NoAntiEntropy starts every network with its anti-entropy held
// (p2p.Config.HoldCatchUp, never resumed), so that invariant bites on the
// network too. A crash (kill -9) closes the venue's network and host; the
// node restarts over its durable replica with a new network, cut off
// while it is down, and catches up by the real sync when its cut ends.
// The wire bytes each venue's hosts sent, per protocol, come from a
// [WireCounter] per host (libp2p only: mocknet hosts count nothing).
//
// On mocknet, Scenario.Transport.TimeScale runs every link that many
// times faster (latency / scale, bandwidth × scale) and multiplies the
// measured delays back by it (HealRecord.MeasuredWallMs keeps a heal's
// wall time); p2p's own timers are not scaled, so the scaled figures are
// upper bounds. Each venue replica's digest, asked on every heartbeat a
// network receives and by every convergence check, is cached between
// changes (venueReplica.digest).
//
// # The offline-risk scenario
//
// [RunOffline] plays an evening: cards are issued (topped up at a random
// venue) while the network is whole; then come Episodes partitions, each
// splitting the venues into 2 to MaxGroups random groups for a random
// time, followed by a heal and a random time whole. Honest cards pay
// random amounts at random venues all along (a Poisson process), topping
// up when their holder knows the balance is short. Some cards are cloned at
// random moments: the attacker then holds the card and its clone (a copy of
// its UID and of its stamp at that moment). At each partition, a little
// after the split, every clone pair strikes: the original spends all it
// can in the group that stays in sync (or a random group when none does),
// and the clone, at every venue of every other group, pays the largest
// amount the rules accept, again and again, until they accept nothing
// more. A frozen clone presents the copied stamp every time; a per-group
// clone carries the stamps it gets within a group and presents the copied
// one again in the next group.
//
// Options add the adversity of issue 9: RefundShare turns some holder
// events into cash refunds of the rest of the balance, and has every clone
// ask each venue it reaches on the far side for the card's balance in
// cash; DoubleSigners copies a random venue's data dir to a second till
// that opens on another side of the first partitions (both sign with one
// key until the heal retires the copy); UIDOnlyShare gives some venues
// readers that read the UID only; NoReservations turns reservations off.
//
// After the final heal the run checks, on every replica: same Digest;
// Σ balances = Credits − Debits, and these equal what the run topped up,
// paid and refunded; every payment, refund and top-up the run made counts
// in its card's history (none erased by a fork); every venue that signed
// on two tills is one equivocation conflict; every (card, counter) paid
// twice or more is exactly one double_spend conflict holding exactly those
// payments, every payment made on a stale stamp is in its card's
// stale_stamp conflict, and there is no other conflict (with stamp-writing
// readers, none on honest cards); no refund was accepted at an isolated
// venue; no honest card is overdrawn or blocked; every overdrawn card is
// blocked on every replica and carries a conflict (unless a refund, which
// has no counter, overdrew it); and the loss stays within the bound below.
//
// # The synchronized in-sync clone attack
//
// [RunSimultaneous] taps each cloned card at K venues of a whole network
// within a few milliseconds, inside the gossip delay, asking for the whole
// balance and, if refused, for the floor limit. Without reservations each
// venue decides on its own view and the card loses (K − 1) × its balance;
// with them one venue holds the card and the others may take at most the
// floor limit each: the run checks loss ≤ (K − 1) × OfflinePaymentMax per
// card, detection of every double spend and the block of every overdrawn
// card on every replica.
//
// # The bound
//
// Loss is Σ over cards of max(0, −balance) in the converged ledger: money
// spent that was never credited. Only cloned cards can cause it: a genuine
// card carries its latest stamp, so every payment of it takes a fresh
// counter and a venue never trusts more than the card says it holds.
//
// Take one card c and one partition. At the split the ledger is whole (the
// previous heal exchanged everything), so every venue sees the same
// balance B0. During the partition the venues of a group G see exactly the
// ops made before the split and those made in G. Let C_G be the credits
// and S_G the payments of c made in G.
//
//  1. Every payment needs balance ≥ amount, where the balance DecidePayment
//     uses is the venue's view B0 + C_G − S_G so far, or lower when the
//     card's stamp is newer. So the view never goes below min(B0, 0):
//     B0 + C_G − S_G ≥ min(B0, 0) for every group. (This needs c known to
//     the venue; the scenario issues every card before the first split. A
//     card unknown to a venue is judged on its stamp alone, a case this
//     derivation and this simulation leave out.)
//
//  2. At most one group holds venues in sync: a venue is in sync when its
//     group has at least 1 + ⌈p·(N−1)/100⌉ venues, and with p =
//     MinPeersPercent ≥ 50 two disjoint groups of that size would need
//     N + 1 venues. Call it R (any group if none is in sync). In every
//     other group, c paid offline only: C_G − S_G ≥ −O_G, where O_G is what
//     c paid offline there.
//
//  3. The balance after the partition is B1 = B0 + Σ_G (C_G − S_G)
//     ≥ min(B0, 0) − Σ_{G≠R} O_G ≥ min(B0, 0) − O, O being all that c paid
//     offline during the partition. While the network is whole, every venue
//     sees everything and a balance never goes below min(B, 0). By
//     induction over the evening, loss(c) ≤ Σ of c's offline payments.
//
//  4. A venue's offline ledger lasts one isolation period (from losing sync
//     to regaining it). Within one, c pays at most min(OfflineCardMax,
//     OfflineCardCount × OfflinePaymentMax) there (each payment is at most
//     the floor limit), and all cards together at most OfflineVenueBudget.
//     Summing over the overdrawn cards (the others lose nothing):
//
//     Loss ≤ Σ over (venue, isolation period) of min(OfflineVenueBudget,
//     n × min(OfflineCardMax, OfflineCardCount × OfflinePaymentMax))
//
//     where n is the number of overdrawn cards that paid offline at that
//     venue in that period. This is OfflineReport.BoundCents.
//
// Refunds change nothing here: a refund needs the ledger's balance to
// cover it, like a payment in step 1, and is refused while isolated, so
// it never adds to O. A copied till is one more venue for the caps (it
// keeps its own offline ledger), and its key counts once in the quorum of
// either side, so step 2 still holds.
//
// Step 2 fails in two cases, and the run measures both: when isolation is
// detected late (a node counts a peer as heard for IsolationAfter after
// its last heartbeat, so during the first IsolationAfter of a split every
// group is still "in sync" and sells without caps on a stale view), and
// when MinPeersPercent is below 50. If c paid in sync in s groups of one
// partition, each of the s − 1 extra groups adds C_G − S_G ≥ min(B0, 0) −
// B0 by step 1, so Loss ≤ Bound + Σ (s − 1)·max(B0, 0), the second term being
// OfflineReport.SyncExposureCents. The run always checks this; with instant
// detection and p ≥ 50 it also checks that the exposure is 0.
//
// docs/offline.md explains the rules and their defaults and gives the
// figures; docs/benchmarks.md has the command and the full-size output.
package simulations
