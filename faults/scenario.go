package faults

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// ScenarioConfig sets how long the faults last.
type ScenarioConfig struct {
	// Hold is how long a fault lasts (link cut, splits, a killed node
	// down, disk full). Default 5 s.
	Hold time.Duration
	// Isolation is how long one venue is isolated. Default 30 s (the
	// full form uses ≥ 3 min).
	Isolation time.Duration
	// Impaired is how long the lossy, delayed uplink lasts. Default 2 × Hold.
	Impaired time.Duration
	// Impairment is what the lossy uplink does. Default 10 % loss each way,
	// 100 ms ± 50 ms.
	Impairment Impairment
	// ConvergeBound is the longest a network heal may take to converge.
	// Default 5 s.
	ConvergeBound time.Duration
	// EnforceBound makes a network heal slower than ConvergeBound fail its
	// fault; otherwise it is only counted (Figures.OverBound) and logged.
	EnforceBound bool
	// ConvergeTimeout is how long the suite waits for any convergence
	// before failing. Default 2 min.
	ConvergeTimeout time.Duration
	// Kills is the number of nodes KillAndRestart SIGKILLs (one after
	// another, random). Default 1.
	Kills int
	// Seed chooses the venues each fault hits.
	Seed uint64
	// Log receives the scenario's progress. Default slog.Default().
	Log *slog.Logger
}

func (c ScenarioConfig) withDefaults() ScenarioConfig {
	if c.Hold == 0 {
		c.Hold = 5 * time.Second
	}
	if c.Isolation == 0 {
		c.Isolation = 30 * time.Second
	}
	if c.Impaired == 0 {
		c.Impaired = 2 * c.Hold
	}
	if c.Impairment == (Impairment{}) {
		c.Impairment = Impairment{Loss: 0.10, Delay: 100 * time.Millisecond, Jitter: 50 * time.Millisecond}
	}
	if c.ConvergeBound == 0 {
		c.ConvergeBound = 5 * time.Second
	}
	if c.ConvergeTimeout == 0 {
		c.ConvergeTimeout = 2 * time.Minute
	}
	if c.Kills == 0 {
		c.Kills = 1
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return c
}

// Heal is one convergence measured after a fault ended.
type Heal struct {
	Fault string
	// Network says the fault was a network fault (the ConvergeBound
	// applies); otherwise a restart, whose time includes the start.
	Network bool
	// Down is how long the fault lasted.
	Down time.Duration
	// Converge is the time from the heal until every running venue
	// held every op any venue held at the heal.
	Converge time.Duration
}

// Figures are one run's measurements.
type Figures struct {
	Run        int
	Seed       uint64
	Duration   time.Duration
	Ops        uint64
	Acked      int
	Unknown    int
	Partitions int
	Kills      int
	Heals      []Heal
	// OverBound counts the network heals slower than ConvergeBound.
	OverBound int
	// DiskFullRefused counts the payments the full disk refused with 507;
	// DiskFullAnswer is the answer a payment got while it was full;
	// DiskRecovery the time from freeing the disk to the first payment
	// acknowledged there.
	DiskFullRefused int
	DiskFullAnswer  string
	DiskRecovery    time.Duration
	Impairment      string
	Lost, Dup       int
	Codes           []string
}

// MaxConverge returns the longest convergence after a network heal and
// after a restart.
func (f *Figures) MaxConverge() (network, restart time.Duration) {
	for _, h := range f.Heals {
		if h.Network {
			network = max(network, h.Converge)
		} else {
			restart = max(restart, h.Converge)
		}
	}
	return network, restart
}

// String is the run's figures on a few lines.
func (f *Figures) String() string {
	var b strings.Builder
	nw, rs := f.MaxConverge()
	fmt.Fprintf(&b, "run %d (seed %d): %s, ops %d, payments acknowledged %d (abandoned %d), partitions %d, kills %d, lost %d, duplicated %d\n",
		f.Run, f.Seed, f.Duration.Round(time.Second), f.Ops, f.Acked, f.Unknown, f.Partitions, f.Kills, f.Lost, f.Dup)
	fmt.Fprintf(&b, "  converge max: after a network heal %s (%d of the heals over the bound), after a restart %s\n", nw.Round(time.Millisecond), f.OverBound, rs.Round(time.Millisecond))
	for _, h := range f.Heals {
		fmt.Fprintf(&b, "  %-22s down %-8s converged in %s\n", h.Fault, h.Down.Round(100*time.Millisecond), h.Converge.Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "  uplink impairment: %s\n", f.Impairment)
	fmt.Fprintf(&b, "  disk full: %d payments refused (%s), first payment %s after space returned\n", f.DiskFullRefused, f.DiskFullAnswer, f.DiskRecovery.Round(time.Millisecond))
	if len(f.Codes) > 0 {
		fmt.Fprintf(&b, "  answers other than 200: %s\n", strings.Join(f.Codes, "; "))
	}
	return b.String()
}

// Scenario runs the faults on a cluster while its workload pays.
type Scenario struct {
	cfg     ScenarioConfig
	lab     *Lab
	c       *Cluster
	w       *Workload
	rng     *rand.Rand
	Figures Figures
	oldCopy string // a stopped copy of oldVenue's data dir
	oldAt   int    // venue of oldCopy
}

// Step is one named fault of a scenario.
type Step struct {
	Name string
	Run  func(ctx context.Context) error
}

// NewScenario prepares the faults for a started cluster and workload.
func NewScenario(lab *Lab, c *Cluster, w *Workload, cfg ScenarioConfig) *Scenario {
	cfg = cfg.withDefaults()
	return &Scenario{cfg: cfg, lab: lab, c: c, w: w, rng: rand.New(rand.NewPCG(cfg.Seed, 16)), oldAt: -1,
		Figures: Figures{Seed: cfg.Seed}}
}

// Steps returns the faults in the order they run. The disk venue (the
// cluster's DiskVenue) is spared by the random choices, except the kills.
func (s *Scenario) Steps() []Step {
	return []Step{
		{"LinkCutAndRestored", s.linkCut},
		{"SplitInTwo", s.splitInTwo},
		{"SplitThreeOneOne", s.splitThreeOneOne},
		{"IsolatedVenue", s.isolated},
		{"LossDelayReorder", s.lossDelay},
		{"KillAndRestart", s.killAndRestart},
		{"RestartFromOldCopy", s.restartFromOldCopy},
		{"DiskFull", s.diskFull},
	}
}

// pick returns a random venue that is not the disk venue nor in not.
func (s *Scenario) pick(not ...int) int {
	for {
		i := s.rng.IntN(len(s.c.Venues))
		if i != s.c.cfg.DiskVenue && !slices.Contains(not, i) {
			return i
		}
	}
}

// sleep lets a fault last its scheduled time.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// TakeOldCopy stops a venue, copies its data dir aside (the old copy
// RestartFromOldCopy restarts it from) and starts it again.
func (s *Scenario) TakeOldCopy(ctx context.Context) error {
	i := s.pick()
	v := s.c.Venues[i]
	if err := s.c.Stop(ctx, i); err != nil {
		return err
	}
	s.oldCopy, s.oldAt = v.Data+".old", i
	if err := copyDir(ctx, v.Data, s.oldCopy); err != nil {
		return err
	}
	if err := s.c.Start(i); err != nil {
		return err
	}
	s.cfg.Log.Info("old copy of a data dir taken", "venue", v.Name)
	return s.waitUp(ctx, i)
}

func copyDir(ctx context.Context, from, to string) error {
	if err := os.RemoveAll(to); err != nil {
		return fmt.Errorf("faults: %w", err)
	}
	if out, err := exec.CommandContext(ctx, "cp", "-a", from, to).CombinedOutput(); err != nil {
		return fmt.Errorf("faults: cp -a %s %s: %w: %s", from, to, err, out)
	}
	return nil
}

// waitUp waits until venue i's API answers.
func (s *Scenario) waitUp(ctx context.Context, i int) error {
	return poll(ctx, 30*time.Second, fmt.Sprintf("%s's API", s.c.Venues[i].Name), func() (bool, error) {
		if ok, err := s.c.Running(i); !ok {
			return false, fmt.Errorf("%s exited: %v\n%s", s.c.Venues[i].Name, err, s.c.LogTail(i, 30))
		}
		_, err := s.c.Status(ctx, i)
		return err == nil, nil
	})
}

// poll checks cond every 50 ms until it holds, it fails, or timeout.
func poll(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("faults: waiting for %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}

// vvs reads the version vectors of the running venues.
func (s *Scenario) vvs(ctx context.Context) (map[int]map[string]uint64, error) {
	out := map[int]map[string]uint64{}
	for i := range s.c.Venues {
		if ok, _ := s.c.Running(i); !ok {
			continue
		}
		st, err := s.c.Status(ctx, i)
		if err != nil {
			return nil, err
		}
		out[i] = st.VersionVector
	}
	return out, nil
}

// converge measures, from start, the time until every running venue holds
// every op that any running venue held when converge was called (their
// version vectors dominate the union read then), and records it.
func (s *Scenario) converge(ctx context.Context, fault string, network bool, start time.Time, down time.Duration) error {
	// A loaded machine may be slow to answer: the first read is retried.
	var first map[int]map[string]uint64
	err := poll(ctx, 30*time.Second, fault+": the version vectors at the heal", func() (bool, error) {
		var err error
		first, err = s.vvs(ctx)
		return err == nil, nil
	})
	if err != nil {
		return err
	}
	target := map[string]uint64{}
	for _, vv := range first {
		for k, n := range vv {
			target[k] = max(target[k], n)
		}
	}
	var behind string
	err = poll(ctx, s.cfg.ConvergeTimeout, fault+": every venue holding every op", func() (bool, error) {
		now, err := s.vvs(ctx)
		if err != nil {
			return false, nil // a restarted node may not answer yet
		}
		for i, vv := range now {
			for k, n := range target {
				if vv[k] < n {
					behind = fmt.Sprintf("%s has %d of author %s's ops, want %d", s.c.Venues[i].Name, vv[k], k, n)
					return false, nil
				}
			}
		}
		return len(now) == len(s.c.Venues), nil
	})
	h := Heal{Fault: fault, Network: network, Down: down, Converge: time.Since(start)}
	s.Figures.Heals = append(s.Figures.Heals, h)
	s.cfg.Log.Info("converged", "fault", fault, "down", h.Down.Round(time.Millisecond), "converge", h.Converge.Round(time.Millisecond))
	if err != nil {
		return fmt.Errorf("%w (%s)", err, behind)
	}
	if network && h.Converge > s.cfg.ConvergeBound {
		s.Figures.OverBound++
		if !s.cfg.EnforceBound {
			s.cfg.Log.Warn("converged slower than the bound after a network heal", "fault", fault, "converge", h.Converge.Round(time.Millisecond), "bound", s.cfg.ConvergeBound)
			return nil
		}
		return fmt.Errorf("%s: converged in %s after the heal, more than %s", fault, h.Converge.Round(time.Millisecond), s.cfg.ConvergeBound)
	}
	return nil
}

// partitionFor partitions the lab, lets it last, heals and measures.
func (s *Scenario) partitionFor(ctx context.Context, fault string, d time.Duration, groups ...[]int) error {
	s.cfg.Log.Info("partition", "fault", fault, "groups", groups, "for", d)
	if err := s.lab.Partition(ctx, groups...); err != nil {
		return err
	}
	s.Figures.Partitions++
	start := time.Now()
	if err := sleep(ctx, d); err != nil {
		return err
	}
	if err := s.lab.Heal(ctx); err != nil {
		return err
	}
	healed := time.Now()
	return s.converge(ctx, fault, true, healed, healed.Sub(start))
}

func (s *Scenario) linkCut(ctx context.Context) error {
	i := s.pick()
	s.cfg.Log.Info("link cut", "venue", s.c.Venues[i].Name, "for", s.cfg.Hold)
	if err := s.lab.CutLink(ctx, i); err != nil {
		return err
	}
	s.Figures.Partitions++
	start := time.Now()
	if err := sleep(ctx, s.cfg.Hold); err != nil {
		return err
	}
	if err := s.lab.RestoreLink(ctx, i); err != nil {
		return err
	}
	healed := time.Now()
	return s.converge(ctx, "LinkCutAndRestored", true, healed, healed.Sub(start))
}

// shuffled returns the venues in a random order.
func (s *Scenario) shuffled() []int {
	p := s.rng.Perm(len(s.c.Venues))
	return p
}

func (s *Scenario) splitInTwo(ctx context.Context) error {
	p := s.shuffled()
	h := len(p) / 2
	return s.partitionFor(ctx, "SplitInTwo", s.cfg.Hold, p[:h], p[h:])
}

func (s *Scenario) splitThreeOneOne(ctx context.Context) error {
	if len(s.c.Venues) < 5 {
		return errors.New("faults: a 3|1|1 split needs 5 venues")
	}
	p := s.shuffled()
	return s.partitionFor(ctx, "SplitThreeOneOne", s.cfg.Hold, p[:3], p[3:4], p[4:5])
}

func (s *Scenario) isolated(ctx context.Context) error {
	i := s.pick()
	var rest []int
	for j := range s.c.Venues {
		if j != i {
			rest = append(rest, j)
		}
	}
	before := s.w.AckedAt(i)
	err := s.partitionFor(ctx, "IsolatedVenue", s.cfg.Isolation, []int{i}, rest)
	if err == nil && s.w.AckedAt(i) == before {
		err = fmt.Errorf("%s acknowledged no payment while isolated", s.c.Venues[i].Name)
	}
	return err
}

func (s *Scenario) lossDelay(ctx context.Context) error {
	i := s.pick()
	how, err := s.lab.Impair(ctx, i, s.cfg.Impairment)
	if err != nil {
		return err
	}
	s.Figures.Impairment = how
	s.cfg.Log.Info("uplink impaired", "venue", s.c.Venues[i].Name, "how", how, "for", s.cfg.Impaired)
	before := s.w.AckedAt(i)
	start := time.Now()
	if err := sleep(ctx, s.cfg.Impaired); err != nil {
		return err
	}
	// While impaired the venue keeps selling and the others get its ops.
	if s.w.AckedAt(i) == before {
		return fmt.Errorf("%s acknowledged no payment on its impaired uplink", s.c.Venues[i].Name)
	}
	if err := s.lab.ClearImpairments(ctx, i); err != nil {
		return err
	}
	healed := time.Now()
	return s.converge(ctx, "LossDelayReorder", true, healed, healed.Sub(start))
}

func (s *Scenario) killAndRestart(ctx context.Context) error {
	for k := 0; k < s.cfg.Kills; k++ {
		i := s.rng.IntN(len(s.c.Venues))
		s.cfg.Log.Info("SIGKILL", "venue", s.c.Venues[i].Name)
		if err := s.c.Kill(ctx, i); err != nil {
			return err
		}
		s.Figures.Kills++
		start := time.Now()
		if err := sleep(ctx, s.cfg.Hold/2); err != nil {
			return err
		}
		if err := s.c.Start(i); err != nil {
			return err
		}
		restarted := time.Now()
		if err := s.waitUp(ctx, i); err != nil {
			return err
		}
		if err := s.converge(ctx, "KillAndRestart", false, restarted, restarted.Sub(start)); err != nil {
			return err
		}
	}
	return nil
}

func (s *Scenario) restartFromOldCopy(ctx context.Context) error {
	if s.oldAt < 0 {
		return errors.New("faults: no old copy taken (TakeOldCopy)")
	}
	i, v := s.oldAt, s.c.Venues[s.oldAt]
	// The disk is replaced once its ops reached the others, as a day-old
	// copy is restored after a dead disk: a payment acknowledged a moment
	// before the kill and never passed on would go with the replaced disk
	// (docs/operations.md, "Backup and restore"), which is no test of the
	// node. The payments pause until every venue holds the same ops.
	s.w.Pause()
	err := poll(ctx, s.cfg.ConvergeTimeout, "every venue holding the same ops before the disk is replaced", func() (bool, error) {
		vvs, err := s.vvs(ctx)
		if err != nil {
			return false, nil
		}
		for _, vv := range vvs {
			for k, n := range vvs[i] {
				if vv[k] != n {
					return false, nil
				}
			}
		}
		return true, nil
	})
	if err != nil {
		s.w.Resume()
		return err
	}
	s.cfg.Log.Info("SIGKILL, then restart from the old copy of its data dir", "venue", v.Name)
	err = s.c.Kill(ctx, i)
	s.w.Resume()
	if err != nil {
		return err
	}
	s.Figures.Kills++
	start := time.Now()
	if err := copyDir(ctx, s.oldCopy, v.Data); err != nil {
		return err
	}
	if err := s.c.Start(i); err != nil {
		return err
	}
	restarted := time.Now()
	if err := s.waitUp(ctx, i); err != nil {
		return err
	}
	if err := s.converge(ctx, "RestartFromOldCopy", false, restarted, restarted.Sub(start)); err != nil {
		return err
	}
	// It signs again: a payment there is acknowledged (no equivocation is
	// checked at the end with the conflicts).
	before := s.w.AckedAt(i)
	return poll(ctx, 90*time.Second, v.Name+" acknowledging payments again", func() (bool, error) {
		return s.w.AckedAt(i) > before, nil
	})
}

// fill writes a file in dir until the file system is full.
func fill(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("faults: %w", err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return nil
			}
			return fmt.Errorf("faults: filling %s: %w", path, err)
		}
	}
}

func (s *Scenario) diskFull(ctx context.Context) error {
	d := s.c.cfg.DiskVenue
	if d < 0 {
		return errors.New("faults: the cluster has no disk venue")
	}
	v := s.c.Venues[d]
	filler := filepath.Join(filepath.Dir(v.Data), "filler")
	s.cfg.Log.Info("disk full", "venue", v.Name, "for", s.cfg.Hold)
	if err := fill(filler); err != nil {
		return err
	}
	card := s.w.cards[d][0]
	// The node must refuse writes clearly while its disk is full.
	var answer error
	err := poll(ctx, 20*time.Second, v.Name+" refusing a payment on its full disk", func() (bool, error) {
		if ok, err := s.c.Running(d); !ok {
			return false, fmt.Errorf("%s exited on a full disk: %v\n%s", v.Name, err, s.c.LogTail(d, 40))
		}
		answer = s.w.PayOnce(ctx, d, card, 5)
		var ae *APIError
		return errors.As(answer, &ae) && ae.Status >= 500, nil
	})
	if answer != nil {
		s.Figures.DiskFullAnswer = answer.Error()
	}
	if err != nil {
		os.Remove(filler)
		return fmt.Errorf("%w (last answer: %v)", err, answer)
	}
	var ae *APIError
	if errors.As(answer, &ae) && ae.Status != 507 {
		s.cfg.Log.Warn("the full disk's refusal is not 507 disk_full", "answer", answer)
	}
	refusedBefore := s.count507(d)
	if err := sleep(ctx, s.cfg.Hold); err != nil {
		os.Remove(filler)
		return err
	}
	running, exitErr := s.c.Running(d)
	s.Figures.DiskFullRefused = s.count507(d) - refusedBefore + 1
	if err := os.Remove(filler); err != nil {
		return fmt.Errorf("faults: %w", err)
	}
	if !running {
		return fmt.Errorf("%s exited while its disk was full: %v\n%s", v.Name, exitErr, s.c.LogTail(d, 40))
	}
	freed := time.Now()
	before := s.w.AckedAt(d)
	if err := poll(ctx, 60*time.Second, v.Name+" acknowledging a payment once space returned", func() (bool, error) {
		return s.w.AckedAt(d) > before, nil
	}); err != nil {
		return err
	}
	s.Figures.DiskRecovery = time.Since(freed)
	return s.converge(ctx, "DiskFull", false, freed, s.cfg.Hold)
}

// count507 counts the 507 answers venue i gave the workload.
func (s *Scenario) count507(i int) int {
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	n := 0
	prefix := fmt.Sprintf("venue %d: 507", i)
	for k, c := range s.w.codes {
		if strings.HasPrefix(k, prefix) {
			n += c
		}
	}
	return n
}

// Finish stops the workload, waits for one digest everywhere and checks
// the ledger; it fills the run's figures.
func (s *Scenario) Finish(ctx context.Context, started time.Time) (Verdict, error) {
	s.w.Stop()
	var last string
	err := poll(ctx, s.cfg.ConvergeTimeout, "one digest everywhere", func() (bool, error) {
		digests := map[string]bool{}
		for i := range s.c.Venues {
			st, err := s.c.Status(ctx, i)
			if err != nil {
				last = err.Error()
				return false, nil
			}
			digests[st.Digest] = true
		}
		last = fmt.Sprintf("%d digests", len(digests))
		return len(digests) == 1, nil
	})
	if err != nil {
		return Verdict{}, fmt.Errorf("%w (%s)", err, last)
	}
	v, err := s.w.Check(ctx, nil)
	s.Figures.Duration = time.Since(started)
	s.Figures.Ops, s.Figures.Acked, s.Figures.Unknown = v.Ops, v.Acked, v.Unknown
	s.Figures.Lost, s.Figures.Dup = v.Lost, v.Duplicated
	s.Figures.Codes = s.w.Codes()
	return v, err
}

// Repair undoes what a failed fault may have left: links up, no
// partition, no impairment, the disk filler removed, every node running.
func (s *Scenario) Repair(ctx context.Context) {
	for i := range s.c.Venues {
		_ = s.lab.RestoreLink(ctx, i)
		_ = s.lab.ClearImpairments(ctx, i)
	}
	_ = s.lab.Heal(ctx)
	if d := s.c.cfg.DiskVenue; d >= 0 {
		_ = os.Remove(filepath.Join(filepath.Dir(s.c.Venues[d].Data), "filler"))
	}
	for i := range s.c.Venues {
		if ok, _ := s.c.Running(i); !ok {
			if err := s.c.Start(i); err == nil {
				_ = s.waitUp(ctx, i)
			}
		}
	}
}

// Summary sums up several runs' figures.
func Summary(runs []*Figures) string {
	var b strings.Builder
	var ops uint64
	var acked, unknown, parts, kills, lost, dup, heals, over, netHeals int
	var nw, rs, disk time.Duration
	for _, f := range runs {
		ops += f.Ops
		acked += f.Acked
		unknown += f.Unknown
		parts += f.Partitions
		kills += f.Kills
		lost += f.Lost
		dup += f.Dup
		heals += len(f.Heals)
		over += f.OverBound
		for _, h := range f.Heals {
			if h.Network {
				netHeals++
			}
		}
		n, r := f.MaxConverge()
		nw, rs, disk = max(nw, n), max(rs, r), max(disk, f.DiskRecovery)
	}
	fmt.Fprintf(&b, "runs %d, ops %d, payments acknowledged %d (abandoned %d), partitions %d, kills %d, heals measured %d\n",
		len(runs), ops, acked, unknown, parts, kills, heals)
	fmt.Fprintf(&b, "converge max: after a network heal %s, after a restart %s; disk full: first payment %s after space returned (max)\n",
		nw.Round(time.Millisecond), rs.Round(time.Millisecond), disk.Round(time.Millisecond))
	fmt.Fprintf(&b, "network heals over the 5 s bound: %d of %d\n", over, netHeals)
	fmt.Fprintf(&b, "payments lost %d, duplicated %d\n", lost, dup)
	return b.String()
}
