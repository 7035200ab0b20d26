package faults

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The namespace and link plumbing of the fault suite: one network namespace
// per host, each joined by a veth pair to a Linux bridge that lives in a
// namespace of its own, so that nothing of the lab touches the machine's
// own network namespace. Everything is named after NetConfig.Prefix, so a
// crashed run's leftovers are found and removed by name (Cleanup).

// ErrNoNetns is returned (wrapped) by NewLab when network namespaces
// cannot be made here (not root, no `ip`, no netns support).
var ErrNoNetns = errors.New("faults: network namespaces unavailable")

// NetConfig configures a Lab.
type NetConfig struct {
	// Prefix names every namespace ("<prefix>-br", "<prefix>-n0", ...)
	// and tmpfs mount point of the lab. Default "cgf".
	Prefix string
	// Hosts is the number of host namespaces. Default 5.
	Hosts int
	// Subnet is the first three bytes of the hosts' /24 (inside the lab's
	// namespaces only). Default "10.213.0"; host i is <Subnet>.(10+i).
	Subnet string
	// Timeout bounds each `ip`, `iptables` or `tc` command. Default 10 s.
	Timeout time.Duration
}

func (c NetConfig) withDefaults() NetConfig {
	if c.Prefix == "" {
		c.Prefix = "cgf"
	}
	if c.Hosts == 0 {
		c.Hosts = 5
	}
	if c.Subnet == "" {
		c.Subnet = "10.213.0"
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	return c
}

// Lab is a set of network namespaces joined by a bridge.
type Lab struct {
	cfg NetConfig
	// Netem says whether this kernel has tc's netem qdisc (probed by
	// NewLab); without it, Impair falls back on iptables and tbf.
	Netem bool
}

// Available reports why network namespaces cannot be used here, or nil.
func Available(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: not root", ErrNoNetns)
	}
	for _, tool := range []string{"ip", "iptables", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%w: %s not installed", ErrNoNetns, tool)
		}
	}
	name := fmt.Sprintf("cgfprobe-%d", os.Getpid())
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("%w: ip netns add: %v: %s", ErrNoNetns, err, bytes.TrimSpace(out))
	}
	_ = exec.CommandContext(ctx, "ip", "netns", "del", name).Run()
	return nil
}

// NewLab removes the leftovers of an earlier lab of the same prefix, then
// makes the bridge namespace and the hosts' namespaces, each host with
// loopback up and eth0 on the bridge at its address.
func NewLab(ctx context.Context, cfg NetConfig) (*Lab, error) {
	cfg = cfg.withDefaults()
	if err := Available(ctx); err != nil {
		return nil, err
	}
	l := &Lab{cfg: cfg}
	if err := l.Cleanup(ctx); err != nil {
		return nil, err
	}
	br := l.bridgeNS()
	cmds := [][]string{
		{"ip", "netns", "add", br},
		{"ip", "-n", br, "link", "set", "lo", "up"},
		{"ip", "-n", br, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", br, "link", "set", "br0", "up"},
	}
	for i := 0; i < cfg.Hosts; i++ {
		ns, port := l.NS(i), l.bridgePort(i)
		cmds = append(cmds,
			[]string{"ip", "netns", "add", ns},
			[]string{"ip", "-n", ns, "link", "set", "lo", "up"},
			[]string{"ip", "link", "add", port, "netns", br, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"ip", "-n", br, "link", "set", port, "master", "br0", "up"},
			[]string{"ip", "-n", ns, "addr", "add", l.IP(i) + "/24", "dev", "eth0"},
			[]string{"ip", "-n", ns, "link", "set", "eth0", "up"},
		)
	}
	for _, c := range cmds {
		if err := l.run(ctx, c...); err != nil {
			_ = l.Cleanup(context.WithoutCancel(ctx))
			return nil, err
		}
	}
	// Two chains the faults fill and flush: partitions, and impairments
	// (loss), on eth0 both ways.
	for i := 0; i < cfg.Hosts; i++ {
		if err := l.restore(ctx, i, ":CGF-PART - [0:0]\n:CGF-IMP - [0:0]\n"+
			"-A INPUT -i eth0 -j CGF-PART\n-A OUTPUT -o eth0 -j CGF-PART\n"+
			"-A INPUT -i eth0 -j CGF-IMP\n-A OUTPUT -o eth0 -j CGF-IMP\n"); err != nil {
			_ = l.Cleanup(context.WithoutCancel(ctx))
			return nil, err
		}
		// And one in the mangle table, for the delay without netem.
		if err := l.restoreTable(ctx, i, "mangle", ":CGF-DELAY - [0:0]\n-A POSTROUTING -o eth0 -j CGF-DELAY\n"); err != nil {
			_ = l.Cleanup(context.WithoutCancel(ctx))
			return nil, err
		}
	}
	// Probe netem on a throwaway qdisc of host 0's loopback.
	if l.run(ctx, "tc", "-n", l.NS(0), "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms") == nil {
		l.Netem = true
		_ = l.run(ctx, "tc", "-n", l.NS(0), "qdisc", "del", "dev", "lo", "root")
	}
	return l, nil
}

// Hosts returns the number of hosts.
func (l *Lab) Hosts() int { return l.cfg.Hosts }

// NS returns host i's namespace name.
func (l *Lab) NS(i int) string { return fmt.Sprintf("%s-n%d", l.cfg.Prefix, i) }

// IP returns host i's address on the bridge.
func (l *Lab) IP(i int) string { return fmt.Sprintf("%s.%d", l.cfg.Subnet, 10+i) }

func (l *Lab) bridgeNS() string        { return l.cfg.Prefix + "-br" }
func (l *Lab) bridgePort(i int) string { return fmt.Sprintf("p%d", i) }

// MountPrefix is the path prefix of the lab's tmpfs mounts: Cleanup
// unmounts whatever is mounted under a path starting with it.
func (l *Lab) MountPrefix() string {
	return fmt.Sprintf("%s/%s-disk-", os.TempDir(), l.cfg.Prefix)
}

// run runs a command with the lab's timeout and returns its output in the
// error when it fails.
func (l *Lab) run(ctx context.Context, argv ...string) error {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.Timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("faults: %s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// restore applies iptables rules (iptables-restore's format, filter
// table, without flushing other chains) in host i's namespace, at once.
func (l *Lab) restore(ctx context.Context, i int, rules string) error {
	return l.restoreTable(ctx, i, "filter", rules)
}

// restoreTable is restore for another table.
func (l *Lab) restoreTable(ctx context.Context, i int, table, rules string) error {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", l.NS(i), "iptables-restore", "--noflush")
	cmd.Stdin = strings.NewReader("*" + table + "\n" + rules + "COMMIT\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("faults: iptables-restore in %s: %w: %s", l.NS(i), err, bytes.TrimSpace(out))
	}
	return nil
}

// Command returns a command that runs argv inside host i's namespace
// (through `ip netns exec`, which execs it: the process is argv itself).
func (l *Lab) Command(i int, argv ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", l.NS(i)}, argv...)...)
}

// Cleanup removes every namespace, bridge port and tmpfs mount of the
// lab's prefix, those of an earlier crashed run included. It is safe to
// call more than once.
func (l *Lab) Cleanup(ctx context.Context) error {
	var errs []error
	if mounts, err := os.ReadFile("/proc/self/mounts"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(mounts))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) > 1 && strings.HasPrefix(f[1], l.MountPrefix()) {
				if err := unix.Unmount(f[1], unix.MNT_DETACH); err != nil {
					errs = append(errs, fmt.Errorf("faults: umount %s: %w", f[1], err))
				}
			}
		}
	}
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return fmt.Errorf("faults: ip netns list: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], l.cfg.Prefix+"-") {
			continue
		}
		// Deleting a namespace deletes its veth ends, and so their peers.
		if err := l.run(ctx, "ip", "netns", "del", f[0]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Leftovers lists the lab's namespaces and mounts that exist now.
func (l *Lab) Leftovers(ctx context.Context) ([]string, error) {
	var left []string
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return nil, fmt.Errorf("faults: ip netns list: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], l.cfg.Prefix+"-") {
			left = append(left, f[0])
		}
	}
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return nil, fmt.Errorf("faults: %w", err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], l.MountPrefix()) {
			left = append(left, f[1])
		}
	}
	return left, nil
}

// CutLink takes host i's bridge port down: its link is cut (the host's
// own eth0 stays up, with no carrier).
func (l *Lab) CutLink(ctx context.Context, i int) error {
	return l.run(ctx, "ip", "-n", l.bridgeNS(), "link", "set", l.bridgePort(i), "down")
}

// RestoreLink brings host i's bridge port back up.
func (l *Lab) RestoreLink(ctx context.Context, i int) error {
	return l.run(ctx, "ip", "-n", l.bridgeNS(), "link", "set", l.bridgePort(i), "up")
}

// Partition splits the hosts into groups: each host drops, silently
// (iptables DROP in both directions), every packet to or from a host of
// another group. A host in no group is cut from all. It replaces any
// earlier partition.
func (l *Lab) Partition(ctx context.Context, groups ...[]int) error {
	group := make(map[int]int)
	for g, hosts := range groups {
		for _, h := range hosts {
			group[h] = g + 1
		}
	}
	for i := 0; i < l.cfg.Hosts; i++ {
		var rules strings.Builder
		rules.WriteString("-F CGF-PART\n")
		for j := 0; j < l.cfg.Hosts; j++ {
			if i == j || (group[i] != 0 && group[i] == group[j]) {
				continue
			}
			fmt.Fprintf(&rules, "-A CGF-PART -s %s -j DROP\n-A CGF-PART -d %s -j DROP\n", l.IP(j), l.IP(j))
		}
		if err := l.restore(ctx, i, rules.String()); err != nil {
			return err
		}
	}
	return nil
}

// Heal removes every partition rule.
func (l *Lab) Heal(ctx context.Context) error {
	for i := 0; i < l.cfg.Hosts; i++ {
		if err := l.restore(ctx, i, "-F CGF-PART\n"); err != nil {
			return err
		}
	}
	return nil
}

// Impairment is what Impair does to one host's uplink.
type Impairment struct {
	// Loss is the probability a packet is dropped, each way (0 to 1).
	Loss float64
	// Delay and Jitter delay packets leaving the host: with netem, Delay ±
	// Jitter each (which reorders them); without netem, a random share
	// Jitter/(Delay+Jitter) of the packets (half if Jitter is 0) goes
	// through a slow htb class where a full packet waits about Delay,
	// and the others overtake them.
	Delay, Jitter time.Duration
}

// Impair applies imp to host i's uplink and returns a sentence saying how
// (netem, or iptables and tbf).
func (l *Lab) Impair(ctx context.Context, i int, imp Impairment) (string, error) {
	ns := l.NS(i)
	var how []string
	if l.Netem {
		args := []string{"tc", "-n", ns, "qdisc", "replace", "dev", "eth0", "root", "netem"}
		if imp.Delay > 0 {
			args = append(args, "delay", fmt.Sprintf("%dms", imp.Delay.Milliseconds()), fmt.Sprintf("%dms", imp.Jitter.Milliseconds()))
		}
		if imp.Loss > 0 {
			args = append(args, "loss", fmt.Sprintf("%.2f%%", imp.Loss*100))
		}
		if err := l.run(ctx, args...); err != nil {
			return "", err
		}
		return fmt.Sprintf("tc netem: loss %.0f%%, delay %s ± %s (reordering)", imp.Loss*100, imp.Delay, imp.Jitter), nil
	}
	if imp.Loss > 0 {
		p := fmt.Sprintf("%.4f", imp.Loss)
		if err := l.restore(ctx, i, "-A CGF-IMP -m statistic --mode random --probability "+p+" -j DROP\n"); err != nil {
			return "", err
		}
		how = append(how, fmt.Sprintf("iptables statistic DROP p=%s each way", p))
	}
	if imp.Delay > 0 {
		// Without netem: an htb qdisc with a fast default class and a slow
		// one, and iptables CLASSIFY sending each packet, at random with
		// probability Jitter/(Delay+Jitter), to the slow class. A full
		// packet waits about Delay there (its rate sends 1500 bytes in
		// Delay), more when it queues; the packets that skip it overtake
		// it: a random delay and reordering.
		p := 0.5
		if imp.Delay+imp.Jitter > 0 && imp.Jitter > 0 {
			p = float64(imp.Jitter) / float64(imp.Delay+imp.Jitter)
		}
		rate := max(8, int(1500*8/imp.Delay.Seconds()/1000)) // kbit/s
		cmds := [][]string{
			{"tc", "-n", ns, "qdisc", "replace", "dev", "eth0", "root", "handle", "1:", "htb", "default", "10"},
			{"tc", "-n", ns, "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:10", "htb", "rate", "1gbit"},
			{"tc", "-n", ns, "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:20", "htb",
				"rate", fmt.Sprintf("%dkbit", rate), "ceil", fmt.Sprintf("%dkbit", rate), "burst", "1600", "cburst", "1600"},
		}
		for _, c := range cmds {
			if err := l.run(ctx, c...); err != nil {
				return "", err
			}
		}
		if err := l.restoreTable(ctx, i, "mangle", fmt.Sprintf("-A CGF-DELAY -m statistic --mode random --probability %.4f -j CLASSIFY --set-class 1:20\n", p)); err != nil {
			return "", err
		}
		how = append(how, fmt.Sprintf("delay without netem (not in this kernel): %.0f%% of the packets at random through an htb class of %d kbit/s (a full packet waits ~%s there, more when it queues), the others straight past them: random delay and reordering", p*100, rate, imp.Delay))
	}
	return strings.Join(how, " + "), nil
}

// ClearImpairments removes what Impair applied to host i.
func (l *Lab) ClearImpairments(ctx context.Context, i int) error {
	ns := l.NS(i)
	if err := l.restore(ctx, i, "-F CGF-IMP\n"); err != nil {
		return err
	}
	if err := l.restoreTable(ctx, i, "mangle", "-F CGF-DELAY\n"); err != nil {
		return err
	}
	// No root qdisc left is fine: only report other failures.
	if err := l.run(ctx, "tc", "-n", ns, "qdisc", "del", "dev", "eth0", "root"); err != nil &&
		!strings.Contains(err.Error(), "No such file") && !strings.Contains(err.Error(), "Cannot delete qdisc with handle of zero") {
		return err
	}
	return nil
}

// MountTmpfs mounts a tmpfs of size bytes at a new directory named after
// the lab's prefix and name, and returns it. Cleanup unmounts it.
func (l *Lab) MountTmpfs(name string, size int64) (string, error) {
	dir := l.MountPrefix() + name
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("faults: %w", err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		return "", fmt.Errorf("faults: mount tmpfs at %s: %w", dir, err)
	}
	return dir, nil
}

// DialContext connects from inside host i's namespace: the socket is
// made on an OS thread switched into the namespace (and switched back
// before the thread is released), so a client in this process reaches
// addresses that exist only in the lab.
func (l *Lab) DialContext(ctx context.Context, i int, network, addr string) (net.Conn, error) {
	var c net.Conn
	var derr error
	err := l.inNS(i, func() {
		var d net.Dialer
		c, derr = d.DialContext(ctx, network, addr)
	})
	if err != nil {
		if c != nil {
			c.Close()
		}
		return nil, err
	}
	return c, derr
}

// ListenIn listens on addr inside host i's namespace.
func (l *Lab) ListenIn(ctx context.Context, i int, network, addr string) (net.Listener, error) {
	var ln net.Listener
	var lerr error
	err := l.inNS(i, func() {
		ln, lerr = (&net.ListenConfig{}).Listen(ctx, network, addr)
	})
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return nil, err
	}
	return ln, lerr
}

// inNS runs fn on an OS thread switched into host i's namespace. Sockets
// fn makes stay in that namespace. The thread is switched back before it
// is released; if that fails, it stays locked and dies with its goroutine.
func (l *Lab) inNS(i int, fn func()) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		back := true
		done <- func() error {
			self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
			orig, err := unix.Open(self, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("faults: open %s: %w", self, err)
			}
			defer unix.Close(orig)
			target, err := unix.Open("/run/netns/"+l.NS(i), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("faults: open namespace %s: %w", l.NS(i), err)
			}
			defer unix.Close(target)
			if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("faults: setns %s: %w", l.NS(i), err)
			}
			fn()
			if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
				back = false
				return fmt.Errorf("faults: setns back: %w", err)
			}
			return nil
		}()
		if back {
			runtime.UnlockOSThread()
		}
	}()
	return <-done
}
