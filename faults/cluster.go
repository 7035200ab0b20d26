package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ClusterConfig configures a Cluster of real `cagnotte node` processes,
// one per host of a Lab.
type ClusterConfig struct {
	// Bin is the cagnotte binary (required).
	Bin string
	// Dir holds the federation, the venues' data dirs and their logs
	// (required).
	Dir string
	// Lab is where the nodes run, one per host (required).
	Lab *Lab
	// DiskVenue, when ≥ 0, is the venue whose data dir is a tmpfs of
	// DiskSize bytes (for the disk-full fault); -1 for none. The zero
	// value is venue 0.
	DiskVenue int
	// DiskSize is the tmpfs size. Default 512 MiB (the node keeps 128 MiB
	// of headroom by default).
	DiskSize int64
	// FederationArgs are extra `federation init` flags. Default: offline
	// caps wide enough that an isolated venue keeps selling all along
	// (the suite checks what happens to the money, not the caps).
	FederationArgs []string
	// APIPort and P2PPort are the ports every node listens on, on its
	// own address. Defaults 8080 and 4001.
	APIPort, P2PPort int
	// StopTimeout bounds a SIGINT stop before SIGKILL. Default 15 s.
	StopTimeout time.Duration
	// Log receives the harness's own log lines. Default slog.Default().
	Log *slog.Logger
}

func (c ClusterConfig) withDefaults() ClusterConfig {
	if c.DiskSize == 0 {
		c.DiskSize = 512 << 20
	}
	if c.FederationArgs == nil {
		c.FederationArgs = []string{"--offline-card-count", "1000000", "--offline-card-max", "15000", "--offline-venue-budget", "100000000"}
	}
	if c.APIPort == 0 {
		c.APIPort = 8080
	}
	if c.P2PPort == 0 {
		c.P2PPort = 4001
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = 15 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return c
}

// Cluster is a federation of venues, each a `cagnotte node` process in
// its own namespace of the Lab.
type Cluster struct {
	cfg    ClusterConfig
	Venues []*Venue
}

// Venue is one venue of the cluster.
type Venue struct {
	Index  int
	Name   string
	Data   string // data dir
	Peer   string // peer id
	Token  string // staff token
	API    string // host:port, inside the venue's namespace
	P2P    string // listen multiaddr
	bundle string
	log    string // log file
	client *http.Client

	mu   sync.Mutex
	proc *proc
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // after done
}

// BuildBinary builds ./cmd/cagnotte of the module rooted at moduleDir
// into dir and returns its path.
func BuildBinary(ctx context.Context, moduleDir, dir string) (string, error) {
	bin := filepath.Join(dir, "cagnotte")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/cagnotte")
	cmd.Dir = moduleDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("faults: go build: %w\n%s", err, out)
	}
	return bin, nil
}

// NewCluster sets the federation up through the binary as the README
// says (federation init; then per venue node init, federation admit
// --out), without starting the nodes.
func NewCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	cfg = cfg.withDefaults()
	if cfg.Bin == "" || cfg.Dir == "" || cfg.Lab == nil {
		return nil, errors.New("faults: ClusterConfig needs Bin, Dir and Lab")
	}
	c := &Cluster{cfg: cfg}
	fed := filepath.Join(cfg.Dir, "fed")
	args := append([]string{"federation", "init", "--dir", fed, "--name", "Fault suite", "--currency", "EUR"}, cfg.FederationArgs...)
	if _, err := c.run(ctx, args...); err != nil {
		return nil, err
	}
	peerRE := regexp.MustCompile(`peer id: (\S+)`)
	for i := 0; i < cfg.Lab.Hosts(); i++ {
		v := &Venue{
			Index:  i,
			Name:   fmt.Sprintf("Venue %d", i),
			Data:   filepath.Join(cfg.Dir, fmt.Sprintf("venue-%d", i)),
			API:    net.JoinHostPort(cfg.Lab.IP(i), strconv.Itoa(cfg.APIPort)),
			P2P:    fmt.Sprintf("/ip4/%s/tcp/%d", cfg.Lab.IP(i), cfg.P2PPort),
			bundle: filepath.Join(cfg.Dir, fmt.Sprintf("venue-%d.ops", i)),
			log:    filepath.Join(cfg.Dir, fmt.Sprintf("venue-%d.log", i)),
		}
		if i == cfg.DiskVenue {
			mnt, err := cfg.Lab.MountTmpfs(fmt.Sprintf("venue-%d", i), cfg.DiskSize)
			if err != nil {
				return nil, err
			}
			v.Data = filepath.Join(mnt, "data")
		}
		out, err := c.run(ctx, "node", "init", "--data", v.Data)
		if err != nil {
			return nil, err
		}
		m := peerRE.FindStringSubmatch(out)
		if m == nil {
			return nil, fmt.Errorf("faults: node init printed no peer id: %s", out)
		}
		v.Peer = m[1]
		tok, err := os.ReadFile(filepath.Join(v.Data, "staff-tokens"))
		if err != nil {
			return nil, fmt.Errorf("faults: %w", err)
		}
		v.Token = strings.TrimSpace(strings.SplitN(string(tok), "\n", 2)[0])
		if _, err := c.run(ctx, "federation", "admit", "--dir", fed, "--peer", v.Peer, "--name", v.Name, "--out", v.bundle); err != nil {
			return nil, err
		}
		lab, idx := cfg.Lab, i
		v.client = &http.Client{
			Timeout: 15 * time.Second, // requests carry their own, shorter deadlines
			Transport: &http.Transport{
				DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					return lab.DialContext(ctx, idx, network, addr)
				},
				MaxIdleConnsPerHost: 4,
				IdleConnTimeout:     30 * time.Second,
			},
		}
		c.Venues = append(c.Venues, v)
	}
	return c, nil
}

// run runs the binary in the cluster's dir and returns its stdout.
func (c *Cluster) run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, c.cfg.Bin, args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = c.cfg.Dir, &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("faults: cagnotte %s: %w\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String(), nil
}

// Start starts venue i's node in its namespace: its API and p2p address on
// its own address, mDNS off, bootstrapping from venues 0 and 1 (but
// itself). The federation bundle is given on the first start only.
func (c *Cluster) Start(i int) error {
	v := c.Venues[i]
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.proc != nil {
		select {
		case <-v.proc.done:
		default:
			return fmt.Errorf("faults: %s is running", v.Name)
		}
	}
	args := []string{c.cfg.Bin, "node", "--data", v.Data, "--http", v.API, "--listen", v.P2P, "--mdns=false"}
	if _, err := os.Stat(filepath.Join(v.Data, "federation.ops")); err != nil {
		args = append(args, "--federation", v.bundle)
	}
	for _, b := range c.Venues[:min(2, len(c.Venues))] {
		if b != v {
			args = append(args, "--bootstrap", b.P2P+"/p2p/"+b.Peer)
		}
	}
	logf, err := os.OpenFile(v.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("faults: %w", err)
	}
	fmt.Fprintf(logf, "=== faults: start %s at %s\n", v.Name, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := c.cfg.Lab.Command(i, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("faults: start %s: %w", v.Name, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	v.proc = p
	return nil
}

// Running says whether venue i's process is running, and if not, how it
// ended.
func (c *Cluster) Running(i int) (bool, error) {
	v := c.Venues[i]
	v.mu.Lock()
	p := v.proc
	v.mu.Unlock()
	if p == nil {
		return false, nil
	}
	select {
	case <-p.done:
		return false, p.err
	default:
		return true, nil
	}
}

// Kill sends SIGKILL to venue i's node and waits for it to end.
func (c *Cluster) Kill(ctx context.Context, i int) error {
	return c.signal(ctx, i, syscall.SIGKILL)
}

// Stop stops venue i's node with SIGINT (SIGKILL after StopTimeout).
func (c *Cluster) Stop(ctx context.Context, i int) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.StopTimeout)
	defer cancel()
	err := c.signal(ctx, i, syscall.SIGINT)
	if errors.Is(err, context.DeadlineExceeded) {
		c.cfg.Log.Warn("node did not stop on SIGINT; killing it", "venue", c.Venues[i].Name)
		return c.signal(context.WithoutCancel(ctx), i, syscall.SIGKILL)
	}
	return err
}

func (c *Cluster) signal(ctx context.Context, i int, sig syscall.Signal) error {
	v := c.Venues[i]
	v.mu.Lock()
	p := v.proc
	v.mu.Unlock()
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("faults: signal %s: %w", v.Name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("faults: waiting for %s to end: %w", v.Name, ctx.Err())
	}
}

// StopAll stops every node.
func (c *Cluster) StopAll(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range c.Venues {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Stop(ctx, i); err != nil {
				c.cfg.Log.Warn("stop", "venue", c.Venues[i].Name, "err", err)
			}
		}()
	}
	wg.Wait()
}

// LogTail returns the last n lines of venue i's log.
func (c *Cluster) LogTail(i, n int) string {
	b, err := os.ReadFile(c.Venues[i].log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// LogContains says whether venue i's log holds s.
func (c *Cluster) LogContains(i int, s string) bool {
	b, err := os.ReadFile(c.Venues[i].log)
	return err == nil && bytes.Contains(b, []byte(s))
}

// APIError is a non-2xx answer of a node's API.
type APIError struct {
	Status  int
	Code    string `json:"error"`
	Message string `json:"message"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// Do sends a request to venue i's API (with its staff token) and decodes
// a 200 answer into out; another status is an *APIError.
func (c *Cluster) Do(ctx context.Context, i int, method, path string, body, out any) error {
	v := c.Venues[i]
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("faults: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+v.API+path, rd)
	if err != nil {
		return fmt.Errorf("faults: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+v.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return fmt.Errorf("faults: %s %s at %s: %w", method, path, v.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("faults: %s %s at %s: %w", method, path, v.Name, err)
	}
	if resp.StatusCode != http.StatusOK {
		e := &APIError{Status: resp.StatusCode}
		_ = json.Unmarshal(b, e)
		return e
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("faults: %s %s at %s: %w", method, path, v.Name, err)
		}
	}
	return nil
}

// Status is the part of GET /api/v1/sync/status the suite reads.
type Status struct {
	Digest        string            `json:"digest"`
	Ops           uint64            `json:"ops"`
	VersionVector map[string]uint64 `json:"version_vector"`
	Isolated      bool              `json:"isolated"`
	Conflicts     int               `json:"conflicts"`
	Peers         []struct {
		Venue     string `json:"venue"`
		Connected bool   `json:"connected"`
	} `json:"peers"`
}

// Status reads venue i's sync status.
func (c *Cluster) Status(ctx context.Context, i int) (*Status, error) {
	var s Status
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Do(ctx, i, http.MethodGet, "/api/v1/sync/status", nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Conflict is one entry of GET /api/v1/conflicts.
type Conflict struct {
	Kind string   `json:"kind"`
	Card string   `json:"card"`
	Ops  []string `json:"ops"`
}

// Conflicts reads venue i's conflicts.
func (c *Cluster) Conflicts(ctx context.Context, i int) ([]Conflict, error) {
	var cs []Conflict
	err := c.Do(ctx, i, http.MethodGet, "/api/v1/conflicts", nil, &cs)
	return cs, err
}

// Entry is one entry of a card's history.
type Entry struct {
	OpID    string `json:"op_id"`
	Kind    string `json:"kind"`
	Amount  int64  `json:"amount_cents"`
	VenueID string `json:"venue_id"`
	Label   string `json:"label"`
	Counted bool   `json:"counted"`
}

// Card is a card's view with its whole history.
type Card struct {
	Card    string  `json:"card"`
	Balance int64   `json:"balance_cents"`
	Blocked bool    `json:"blocked"`
	History []Entry `json:"history"`
}

// Card reads card's whole history at venue i, page by page.
func (c *Cluster) Card(ctx context.Context, i int, card string) (*Card, error) {
	var all *Card
	before := ""
	for pages := 0; pages < 10000; pages++ {
		var page struct {
			Card
			Next string `json:"next"`
		}
		path := "/api/v1/cards/" + card + "?limit=500"
		if before != "" {
			path += "&before=" + url.QueryEscape(before)
		}
		if err := c.Do(ctx, i, http.MethodGet, path, nil, &page); err != nil {
			return nil, err
		}
		if all == nil {
			cp := page.Card
			all = &cp
		} else {
			all.History = append(all.History, page.History...)
		}
		if page.Next == "" {
			return all, nil
		}
		before = page.Next
	}
	return nil, fmt.Errorf("faults: card %s: too many pages", card)
}
