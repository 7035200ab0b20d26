package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/cagnotte/cagnotte/p2p"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pubsubpb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"
)

// Issue 16 at the level of a node: payments over HTTP at an honest venue
// while rogue peers attack it (the p2p-level tests are p2p/rogue_test.go).

// rogueNodeHost is a raw libp2p host on loopback with key, without
// resource limits of its own.
func rogueNodeHost(t *testing.T, key *crdt.Signer) host.Host {
	t.Helper()
	priv, err := p2p.PrivKey(key)
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(libp2p.Identity(priv), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.DisableRelay(), libp2p.ResourceManager(&network.NullResourceManager{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// payLatencies makes n payments of 1 cent at v, on the cards in turn, and
// returns their latencies, sorted.
func payLatencies(t *testing.T, v *testVenue, cards []string, prefix string, n int) []time.Duration {
	t.Helper()
	out := make([]time.Duration, 0, n)
	for i := range n {
		start := time.Now()
		st, r := v.post("/api/v1/payments", map[string]any{"card": cards[i%len(cards)], "amount_cents": 1, "idempotency_key": fmt.Sprintf("%s-%d", prefix, i)})
		if st != 200 {
			t.Fatalf("payment %d: %d %v", i, st, r)
		}
		out = append(out, time.Since(start))
	}
	slices.Sort(out)
	return out
}

func pct(ds []time.Duration, p float64) time.Duration {
	return ds[min(len(ds)-1, int(float64(len(ds))*p))]
}

// rogueFlood is a running rogueLoad: wait on wg after ctx ends; tried
// counts the streams asked for, opened those the rogue's host opened
// (the target may reset them at once).
type rogueFlood struct {
	wg            sync.WaitGroup
	tried, opened atomic.Int64
}

// rogueLoad floods target from h until ctx ends: garbage and forged
// messages on the ops topic on raw GossipSub streams, and streams on
// every protocol (garbage on sync), as fast as they are refused.
func rogueLoad(ctx context.Context, h host.Host, target peer.AddrInfo, fed crdt.PublicKey, key *crdt.Signer) *rogueFlood {
	topic := p2p.OpsTopic(fed)
	junk := make([]byte, 2048)
	_, _ = rand.Read(junk)
	clock := crdt.NewClock(func() int64 { return time.Now().UnixMilli() })
	forged := crdt.NewAuthor(key, clock, 1000, crdt.OpID{}).Make(&crdt.TopUp{Card: "04A1B2C3D4E5F6", Amount: 99999, Method: crdt.MethodCash})
	forged.Sig[0] ^= 1
	rpc := &pubsubpb.RPC{Publish: []*pubsubpb.Message{
		{Data: junk, Topic: &topic},
		{Data: p2p.EncodeOpsMessage([]crdt.Op{forged}), Topic: &topic},
	}}
	b, _ := proto.Marshal(rpc)
	frame := append(binary.AppendUvarint(nil, uint64(len(b))), b...)
	f := &rogueFlood{}
	for _, pr := range []protocol.ID{pubsub.GossipSubID_v11, p2p.SyncProtocol, p2p.JoinProtocol, p2p.ReserveProtocol, p2p.CheckpointProtocol} {
		for range 4 {
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				for ctx.Err() == nil {
					_ = h.Connect(ctx, target)
					f.tried.Add(1)
					s, err := h.NewStream(ctx, target.ID, pr)
					if err != nil {
						select {
						case <-ctx.Done():
						case <-time.After(5 * time.Millisecond): // pacing a refused peer's retries
						}
						continue
					}
					f.opened.Add(1)
					_ = s.SetDeadline(time.Now().Add(time.Second))
					if pr == pubsub.GossipSubID_v11 {
						_, _ = s.Write(frame)
						_ = s.Close() // delivered, then closed: read in full by A
						continue
					}
					_, _ = s.Write(junk[:64])
					_ = s.Reset()
				}
			}()
		}
	}
	return f
}

// rogueLoadFlag runs TestHonestPaymentsServedUnderRogueLoad, whose p99
// bound is not met reliably yet (see docs/benchmarks.md).
var rogueLoadFlag = flag.Bool("node.rogue", false, "run the node-level rogue peer load test (issue 16)")

// rogueProcessEnv, set, makes this test binary the rogue process of
// TestHonestPaymentsServedUnderRogueLoad (TestRogueProcess), with its
// rogueSpec in JSON.
const rogueProcessEnv = "CAGNOTTE_ROGUE_PROCESS"

// rogueSpec is what the rogue process attacks with.
type rogueSpec struct {
	Target  []string // A's multiaddrs, ending in /p2p/<id>
	Fed     string   // the federation key, hex
	KeyFile string   // the key file of the admitted venue gone rogue
}

// rogueCounts is what the rogue process reports: per rogue (the venue,
// the stranger), the streams tried and opened.
type rogueCounts struct {
	Tried, Opened [2]int64
}

// rogueReport prefixes the rogue process's report on its stdout, and
// rogueReady is the line it prints once it floods.
const (
	rogueReport = "ROGUE-COUNTS "
	rogueReady  = "ROGUE-READY"
)

// TestRogueProcess is the rogue process of
// TestHonestPaymentsServedUnderRogueLoad, not a test of its own: that
// test runs this binary with rogueProcessEnv set, and without it this
// returns at once. It floods the target from the admitted venue's key and
// from an unadmitted one (rogueLoad) until its stdin closes, then prints
// its counts.
func TestRogueProcess(t *testing.T) {
	raw := os.Getenv(rogueProcessEnv)
	if raw == "" {
		return
	}
	var spec rogueSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		t.Fatal(err)
	}
	target, err := peer.AddrInfosFromP2pAddrs(mustMultiaddrs(t, spec.Target)...)
	if err != nil || len(target) != 1 {
		t.Fatalf("rogue target %v: %v", spec.Target, err)
	}
	fed, err := crdt.ParsePublicKey(spec.Fed)
	if err != nil {
		t.Fatal(err)
	}
	rogueKey, _, err := LoadOrCreateKey(spec.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	strangerKey, err := crdt.SignerFromSeed(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // the parent closes stdin to stop the flood
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	var floods [2]*rogueFlood
	for i, k := range []*crdt.Signer{rogueKey, strangerKey} {
		floods[i] = rogueLoad(ctx, rogueNodeHost(t, k), target[0], fed, k)
	}
	for ctx.Err() == nil && floods[0].tried.Load()+floods[1].tried.Load() == 0 {
		time.Sleep(time.Millisecond) // a rogue process waiting for its first stream
	}
	fmt.Println(rogueReady)
	var c rogueCounts
	for i, f := range floods {
		f.wg.Wait()
		c.Tried[i], c.Opened[i] = f.tried.Load(), f.opened.Load()
	}
	b, _ := json.Marshal(c)
	fmt.Println(rogueReport + string(b))
}

func mustMultiaddrs(t *testing.T, addrs []string) []ma.Multiaddr {
	t.Helper()
	out := make([]ma.Multiaddr, 0, len(addrs))
	for _, a := range addrs {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// rogueProcess is a running rogue process.
type rogueProcess struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	ready chan struct{} // closed when it prints rogueReady
	mu    sync.Mutex
	out   bytes.Buffer
}

// Write implements io.Writer: the rogue process's output.
func (rp *rogueProcess) Write(b []byte) (int, error) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.out.Write(b)
	if bytes.Contains(rp.out.Bytes(), []byte(rogueReady)) {
		select {
		case <-rp.ready:
		default:
			close(rp.ready)
		}
	}
	return len(b), nil
}

func (rp *rogueProcess) output() string {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.out.String()
}

// startRogues starts the rogue process (TestRogueProcess) against spec, at
// the lowest CPU priority (nice 19) where nice is installed: the rogues
// stand for other machines, and sharing this one's two cores with the
// honest venue is the test's doing, not the attack's (what A spends on
// them is what the test measures).
func startRogues(t *testing.T, spec rogueSpec) *rogueProcess {
	t.Helper()
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{os.Args[0], "-test.run=^TestRogueProcess$", "-test.count=1"}
	if nice, err := exec.LookPath("nice"); err == nil {
		args = append([]string{nice, "-n", "19"}, args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	rp := &rogueProcess{cmd: exec.CommandContext(ctx, args[0], args[1:]...), ready: make(chan struct{})}
	rp.cmd.Env = append(os.Environ(), rogueProcessEnv+"="+string(b))
	rp.cmd.Stdout, rp.cmd.Stderr = rp, rp
	if rp.stdin, err = rp.cmd.StdinPipe(); err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := rp.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = rp.stdin.Close()
		cancel() // kills it if stop was not called
		_ = rp.cmd.Wait()
	})
	select {
	case <-rp.ready:
	case <-time.After(30 * time.Second):
		t.Fatalf("the rogue process did not start flooding:\n%s", rp.output())
	}
	return rp
}

// stop ends the flood and returns the rogue process's counts.
func (rp *rogueProcess) stop(t *testing.T) rogueCounts {
	t.Helper()
	_ = rp.stdin.Close()
	if err := rp.cmd.Wait(); err != nil {
		t.Fatalf("rogue process: %v\n%s", err, rp.output())
	}
	var c rogueCounts
	for _, line := range strings.Split(rp.output(), "\n") {
		if rest, ok := strings.CutPrefix(line, rogueReport); ok {
			if err := json.Unmarshal([]byte(rest), &c); err != nil {
				t.Fatal(err)
			}
			return c
		}
	}
	t.Fatalf("rogue process reported nothing:\n%s", rp.output())
	return c
}

// TestHonestPaymentsServedUnderRogueLoad: two honest venues, A and B, on
// real nodes (Badger, HTTP API, libp2p on loopback, default limits). An
// admitted venue gone rogue and a host with an unadmitted key flood A
// (forged and garbage gossip, streams on every protocol, garbage sync
// sessions, redialing whenever they are cut off) in six bouts, each
// while 50 payments are made at A, with 50 payments before each bout
// and none of the rogues' traffic for the baseline: 300 payments each
// way, interleaved, so that the load of the machine (shared with other
// work) weighs on both alike. A bans the rogue venue in the first bout
// (p2p: Limits.PeerStreamBurst, PeerRefusalBurst) and refuses the
// stranger, and the payments' p99 under the rogues stays within the
// target of 10 ms, or 3 × the baseline's p99 when the machine is so
// loaded that the baseline itself is slow. A stores nothing of either
// rogue, and B receives every payment. The scores are logged (the
// p2p-level tests check that they fall).
func TestHonestPaymentsServedUnderRogueLoad(t *testing.T) {
	if !*rogueLoadFlag {
		t.Skip("issue 16: a latency bound, run alone with -args -node.rogue: it holds when the node has its cores (17 of 17 runs on a quiet machine) but not beside other heavy jobs, as in the parallel default run (docs/benchmarks.md, \"Rogue peers\")")
	}
	vs, err := PrepareDemo(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	a := startNetworkedAt(t, vs[0].Dir, vs[0].Token, nil)
	b := startNetworkedAt(t, vs[1].Dir, vs[1].Token, a.node.Network().P2PAddrs())
	waitUntil(t, 10*time.Second, "A and B connected", func() bool { return len(a.node.Network().Connected()) > 0 })
	var cards []string
	for i := range 20 {
		c := fmt.Sprintf("04A1B2C3D4E5%02X", i)
		if st, r := a.post("/api/v1/topups", map[string]any{"card": c, "amount_cents": 10000, "method": "cash", "idempotency_key": "top-" + c}); st != 200 {
			t.Fatal(st, r)
		}
		cards = append(cards, c)
	}
	waitUntil(t, 20*time.Second, "A in sync (not isolated)", func() bool { return !a.node.Isolation().Isolated })
	payLatencies(t, a, cards, "warm", 20)

	rogueKey, _, err := LoadOrCreateKey(filepath.Join(vs[2].Dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	strangerKey, err := crdt.SignerFromSeed(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	rid, err := p2p.PeerID(rogueKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	sid, err := p2p.PeerID(strangerKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	spec := rogueSpec{Target: a.node.Network().P2PAddrs(), Fed: a.node.Federation().String(), KeyFile: filepath.Join(vs[2].Dir, KeyFile)}
	const bouts, n = 6, 50
	var base, under []time.Duration
	var flooded time.Duration
	var tried, opened [2]int64
	var score, strangerScore float64
	var banAfter time.Duration
	for k := range bouts {
		base = append(base, payLatencies(t, a, cards, fmt.Sprintf("base%d", k), n)...)
		floodStart := time.Now()
		rp := startRogues(t, spec)
		if k == 0 {
			waitUntil(t, 10*time.Second, "the rogues' streams refused by A", func() bool {
				ls := a.node.Network().LimitStats()
				return a.node.Network().SyncPenalized(rid) || ls.Streams+ls.Memory+ls.Bans > 0 || len(ls.Protocols) > 0
			})
		}
		start := time.Now()
		under = append(under, payLatencies(t, a, cards, fmt.Sprintf("rogue%d", k), n)...)
		if k == 0 {
			score, strangerScore = a.node.Network().Scores()[rid], a.node.Network().Scores()[sid]
			if st := a.node.Network().Conduct(rid); st.Bans > 0 {
				banAfter = st.BannedUntil.Add(-p2p.DefaultLimits().BanBase).Sub(floodStart) // a first ban lasts BanBase
			}
		}
		c := rp.stop(t)
		flooded += time.Since(start)
		for i := range 2 {
			tried[i], opened[i] = tried[i]+c.Tried[i], opened[i]+c.Opened[i]
		}
	}
	ls := a.node.Network().LimitStats()
	slices.Sort(base)
	slices.Sort(under)
	bp99, rp99 := pct(base, 0.99), pct(under, 0.99)
	t.Logf("payments at A: baseline p50 %s p99 %s; under the rogues p50 %s p99 %s; rogue venue's score %.1f, stranger's %.0f (graylist %d); A refused %d connections, %d streams, by protocol %v, %d memory reservations; %d bans, %d connections of banned peers refused at the handshake, %d before it (rogue venue banned %v, stranger %v, %d join refused); sync %+v",
		pct(base, 0.5).Round(time.Microsecond), bp99.Round(time.Microsecond), pct(under, 0.5).Round(time.Microsecond), rp99.Round(time.Microsecond),
		score, strangerScore, p2p.ScoreGraylistThreshold, ls.Conns, ls.Streams, ls.Protocols, ls.Memory, ls.Bans, ls.BannedConns, ls.AcceptRefused,
		a.node.Network().Banned(rid), a.node.Network().Banned(sid), a.node.Network().Stats().JoinsRefused, a.node.Network().SyncStats())
	t.Logf("the rogues flooded for %s in %d bouts: rogue venue %d streams tried, %d opened, banned %s after it started; stranger %d tried, %d opened",
		flooded.Round(time.Millisecond), bouts, tried[0], opened[0], banAfter.Round(time.Millisecond), tried[1], opened[1])
	if bound := max(10*time.Millisecond, 3*bp99); rp99 > bound {
		t.Errorf("p99 under the rogues %s, over max(10 ms, 3 × baseline %s)", rp99, bp99)
	}
	if ls.Bans == 0 || !a.node.Network().Banned(rid) {
		t.Errorf("A did not ban the rogue venue: %+v", ls)
	}
	waitUntil(t, 15*time.Second, "B to hold every payment", func() bool { return a.digest() == b.digest() })
	for name, v := range map[string]*testVenue{"A": a, "B": b} {
		vv := v.node.VersionVector()
		if vv[rogueKey.Public()] != 0 || vv[strangerKey.Public()] != 0 {
			t.Fatalf("%s holds ops of a rogue: %d, %d", name, vv[rogueKey.Public()], vv[strangerKey.Public()])
		}
	}
}
