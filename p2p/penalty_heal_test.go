package p2p

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

// A partition that cuts a sync session midway makes the peer look "too
// slow" and puts it on penalty for SyncPenalty (1 min): the heal's
// catch-up then waited for the penalty (the fault suite saw 24-44 s after
// an isolation). Signs that the link is back lift a penalty for slowness;
// a penalty for a malformed frame stays.
func TestSlowPenaltyFromAPartitionLiftedOnReconnect(t *testing.T) {
	for _, tc := range []struct {
		name   string
		why    string
		lifted bool
	}{
		{"too slow", whySlow, true},
		{"malformed frame", "malformed frame", false},
		{"too slow then malformed", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, v := seedSigner(t, 10), seedSigner(t, 11)
			fed := testFederation(t, s, v)
			na := loopNet(t, memRep(t, fed, s), s, func(c *Config) { c.SyncPenalty = time.Hour })
			nb := loopNet(t, memRep(t, fed, v), v, func(c *Config) { c.SyncPenalty = time.Hour })
			link(t, na, nb)
			err := errors.New("i/o deadline reached")
			switch tc.why {
			case "":
				na.penalize(nb.ID(), whySlow, err)
				na.penalize(nb.ID(), "malformed frame", err)
			default:
				na.penalize(nb.ID(), tc.why, err)
			}
			if !na.SyncPenalized(nb.ID()) {
				t.Fatal("not on penalty")
			}
			// The link goes down and comes back: a new connection.
			if err := na.host.Network().ClosePeer(nb.ID()); err != nil {
				t.Fatal(err)
			}
			connected := func() bool { return na.host.Network().Connectedness(nb.ID()) == network.Connected }
			waitUntil(t, 5*time.Second, "disconnected", func() bool { return !connected() })
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := na.Connect(ctx, nb.AddrInfo()); err != nil {
				t.Fatal(err)
			}
			if tc.lifted {
				waitUntil(t, 5*time.Second, "the penalty lifted on reconnect", func() bool { return !na.SyncPenalized(nb.ID()) })
				return
			}
			waitUntil(t, 5*time.Second, "reconnected", connected)
			na.onConnected(nb.ID()) // what the swarm's notifier runs: done when it returns
			if !na.SyncPenalized(nb.ID()) {
				t.Fatal("a penalty for a malformed frame was lifted by a reconnection")
			}
		})
	}
}

// A link that drops packets without closing the connection: no new
// connection comes, but the peer's heartbeat arrives after a silence of
// more than two heartbeats, and that lifts a penalty for slowness.
func TestSlowPenaltyLiftedWhenHeardAgainAfterSilence(t *testing.T) {
	s, v := seedSigner(t, 10), seedSigner(t, 11)
	fed := testFederation(t, s, v)
	na := loopNet(t, memRep(t, fed, s), s, func(c *Config) { c.SyncPenalty = time.Hour; c.HeartbeatInterval = 100 * time.Millisecond })
	nb := loopNet(t, memRep(t, fed, v), v, nil)
	link(t, na, nb)
	// Heartbeat times an hour ahead: a real heartbeat arriving meanwhile is
	// older and ignored, so only the calls below count.
	at := time.Now().Add(time.Hour)
	heard := func(ago time.Duration) {
		na.peersMu.Lock()
		na.peer(nb.ID()).lastSeen = time.Now().Add(-ago)
		na.peersMu.Unlock()
		at = at.Add(time.Millisecond)
		na.onHeartbeat(nb.ID(), &Heartbeat{Time: at})
	}
	na.penalize(nb.ID(), whySlow, errors.New("i/o deadline reached"))
	heard(50 * time.Millisecond) // no silence: stays
	if !na.SyncPenalized(nb.ID()) {
		t.Fatal("a heartbeat without a silence lifted the penalty")
	}
	heard(time.Second) // ten heartbeats of silence
	if na.SyncPenalized(nb.ID()) {
		t.Fatal("heard again after a silence, the penalty for slowness stayed")
	}
	na.penalize(nb.ID(), "malformed frame", errors.New("bad frame"))
	heard(time.Second)
	if !na.SyncPenalized(nb.ID()) {
		t.Fatal("a heartbeat after a silence lifted a penalty for a malformed frame")
	}
}
