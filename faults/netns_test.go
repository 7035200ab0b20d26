package faults

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// needNetns skips the test when network namespaces are unavailable and CI
// is not set; under CI (which runs as root) it fails instead.
func needNetns(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Available(ctx); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %v (.ci/run runs as root and installs iptables)", err)
		}
		t.Skipf("skipping the fault suite: %v (run as root with iproute2 and iptables; CI does)", err)
	}
}

// newTestLab makes a lab and removes it at the end of the test.
func newTestLab(t *testing.T, cfg NetConfig) *Lab {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lab, err := NewLab(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := lab.Cleanup(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return lab
}

// reach says whether host from can open a TCP connection to host to's
// echo listener and get its byte back within d.
func reach(lab *Lab, from int, addr string, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	c, err := lab.DialContext(ctx, from, "tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte{42}); err != nil {
		return false
	}
	b := make([]byte, 1)
	_, err = io.ReadFull(c, b)
	return err == nil && b[0] == 42
}

// echo serves one-byte echoes on ln until it is closed.
func echo(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.Copy(c, c)
		}()
	}
}

// TestLabPlumbing checks the namespaces and each fault the lab makes: a
// cut link, a partition, loss, a tmpfs, and that Cleanup leaves nothing.
func TestLabPlumbing(t *testing.T) {
	needNetns(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lab := newTestLab(t, NetConfig{Prefix: "cgfp", Hosts: 3, Subnet: "10.213.9"})
	var addrs []string
	for i := 0; i < 3; i++ {
		ln, err := lab.ListenIn(ctx, i, "tcp", lab.IP(i)+":7000")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go echo(ln)
		addrs = append(addrs, ln.Addr().String())
	}
	quick := 300 * time.Millisecond
	steps := []struct {
		name  string
		fault func() error
		heal  func() error
		want  [3][3]bool // want[from][to] while the fault holds
	}{
		{"none", func() error { return nil }, func() error { return nil },
			[3][3]bool{{true, true, true}, {true, true, true}, {true, true, true}}},
		{"link cut", func() error { return lab.CutLink(ctx, 2) }, func() error { return lab.RestoreLink(ctx, 2) },
			[3][3]bool{{true, true, false}, {true, true, false}, {false, false, true}}},
		{"partition 0,1 | 2", func() error { return lab.Partition(ctx, []int{0, 1}, []int{2}) }, func() error { return lab.Heal(ctx) },
			[3][3]bool{{true, true, false}, {true, true, false}, {false, false, true}}},
		{"partition 0 | 1 | 2", func() error { return lab.Partition(ctx, []int{0}, []int{1}, []int{2}) }, func() error { return lab.Heal(ctx) },
			[3][3]bool{{true, false, false}, {false, true, false}, {false, false, true}}},
		{"loss 100%", func() error { _, err := lab.Impair(ctx, 1, Impairment{Loss: 1}); return err }, func() error { return lab.ClearImpairments(ctx, 1) },
			[3][3]bool{{true, false, true}, {false, true, false}, {true, false, true}}},
	}
	for _, s := range steps {
		if err := s.fault(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		for from := 0; from < 3; from++ {
			for to := 0; to < 3; to++ {
				d := quick // a packet that is dropped: a short wait tells
				if s.want[from][to] {
					d = 5 * time.Second // a loaded machine may be slow to answer
				}
				if got := reach(lab, from, addrs[to], d); got != s.want[from][to] {
					t.Errorf("%s: host %d reaches host %d: %v, want %v", s.name, from, to, got, s.want[from][to])
				}
			}
		}
		if err := s.heal(); err != nil {
			t.Fatalf("%s: heal: %v", s.name, err)
		}
		for from := 0; from < 3; from++ {
			for to := 0; to < 3; to++ {
				if !reach(lab, from, addrs[to], 2*time.Second) {
					t.Errorf("after %s healed: host %d does not reach host %d", s.name, from, to)
				}
			}
		}
	}
	how, err := lab.Impair(ctx, 0, Impairment{Loss: 0.05, Delay: 50 * time.Millisecond, Jitter: 30 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("impairment: %s", how)
	if !reach(lab, 0, addrs[1], 5*time.Second) && !reach(lab, 0, addrs[1], 5*time.Second) {
		t.Errorf("5%% loss and delay: host 0 does not reach host 1")
	}
	if err := lab.ClearImpairments(ctx, 0); err != nil {
		t.Fatal(err)
	}

	// Delay without netem reorders: UDP datagrams numbered in order arrive
	// out of order, none lost.
	how, err = lab.Impair(ctx, 0, Impairment{Delay: 100 * time.Millisecond, Jitter: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var pc net.PacketConn
	if err := lab.inNS(1, func() { pc, err = (&net.ListenConfig{}).ListenPacket(ctx, "udp", lab.IP(1)+":7001") }); err != nil || pc == nil {
		t.Fatalf("udp listen: %v", err)
	}
	defer pc.Close()
	c, err := lab.DialContext(ctx, 0, "udp", lab.IP(1)+":7001")
	if err != nil {
		t.Fatal(err)
	}
	const n = 60
	for k := 0; k < n; k++ {
		b := make([]byte, 200)
		b[0] = byte(k)
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	got, reordered, last := 0, 0, -1
	buf := make([]byte, 2048)
	for got < n {
		_ = pc.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, _, err := pc.ReadFrom(buf); err != nil {
			break
		}
		got++
		if int(buf[0]) < last {
			reordered++
		}
		last = max(last, int(buf[0]))
	}
	t.Logf("delay: %s; %d of %d datagrams arrived, %d out of order", how, got, n, reordered)
	if got != n || reordered == 0 {
		t.Errorf("delay without loss: %d of %d datagrams arrived, %d out of order; want all, some out of order", got, n, reordered)
	}
	if err := lab.ClearImpairments(ctx, 0); err != nil {
		t.Fatal(err)
	}

	dir, err := lab.MountTmpfs("plumbing", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(dir + "/fill")
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Write(make([]byte, 2<<20))
	f.Close()
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("2 MiB on a 1 MiB tmpfs: %v, want ENOSPC", err)
	}

	if err := lab.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	left, err := lab.Leftovers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Fatalf("left after cleanup: %v", left)
	}
}
