package vpcd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cagnotte/cagnotte/nfc"
)

// The pcscd socket of Debian's pcsc-lite (its path is built in: pcscd
// 1.9 has no option to move it, so one pcscd serves the whole machine).
const pcscdSocket = "/run/pcscd/pcscd.comm"

// lockPath serialises the processes that use the vpcd reader (the tests of
// several packages run at once).
var lockPath = filepath.Join(os.TempDir(), "cagnotte-vpcd.lock")

// ErrUnavailable: this machine cannot run the vpcd stack (pcscd or the
// vpcd driver missing, not root); the message says which.
var ErrUnavailable = errors.New("vpcd: unavailable")

// Daemon is a pcscd with the vpcd reader, started for a test or found
// running.
type Daemon struct {
	// Addr is where card emulators connect (vpcd's first slot).
	Addr string
	// Reader is the PC/SC name of that slot's reader.
	Reader string
	// Started is true when this Daemon started pcscd (Stop stops it).
	Started bool

	cmd    *exec.Cmd
	out    *bytes.Buffer
	unlock func()
	dir    string
	wg     sync.WaitGroup
}

// Start takes the machine-wide vpcd lock (waiting for other processes'
// tests to finish with it), then uses the running pcscd if it lists the
// vpcd reader (Debian's /etc/reader.conf.d/vpcd: port 35963), or starts
// `pcscd --foreground` with a private reader.conf.d whose vpcd listens on a
// free port. Stop undoes what Start did.
func Start(ctx context.Context) (*Daemon, error) {
	for _, p := range []string{"pcscd"} {
		if _, err := exec.LookPath(p); err != nil {
			return nil, fmt.Errorf("%w: %s is not installed (apt-get install pcscd vsmartcard-vpcd)", ErrUnavailable, p)
		}
	}
	const driver = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"
	if _, err := os.Stat(driver); err != nil {
		return nil, fmt.Errorf("%w: the vpcd driver %s is not installed (apt-get install vsmartcard-vpcd)", ErrUnavailable, driver)
	}
	unlock, err := lockFile(ctx, lockPath)
	if err != nil {
		return nil, err
	}
	d := &Daemon{unlock: unlock}
	if running() {
		names, err := nfc.ListReaders(ctx)
		if err != nil {
			d.Stop()
			return nil, fmt.Errorf("%w: a pcscd runs but does not answer: %v", ErrUnavailable, err)
		}
		for _, n := range names {
			if strings.HasPrefix(n, "Virtual PCD") {
				d.Addr, d.Reader = fmt.Sprintf("127.0.0.1:%d", DefaultPort), n
				return d, nil
			}
		}
		d.Stop()
		return nil, fmt.Errorf("%w: a pcscd runs without the vpcd reader (readers %q): install vsmartcard-vpcd and restart pcscd", ErrUnavailable, names)
	}
	if os.Geteuid() != 0 {
		d.Stop()
		return nil, fmt.Errorf("%w: no pcscd runs and only root can start one (it needs /run/pcscd)", ErrUnavailable)
	}
	port, err := freePort()
	if err != nil {
		d.Stop()
		return nil, err
	}
	d.dir, err = os.MkdirTemp("", "cagnotte-pcscd-")
	if err != nil {
		d.Stop()
		return nil, err
	}
	conf := fmt.Sprintf("FRIENDLYNAME \"Virtual PCD\"\nDEVICENAME   /dev/null:%d\nLIBPATH      %s\nCHANNELID    %d\n", port, driver, port)
	if err := os.WriteFile(filepath.Join(d.dir, "vpcd"), []byte(conf), 0o644); err != nil {
		d.Stop()
		return nil, err
	}
	d.out = &bytes.Buffer{}
	d.cmd = exec.Command("pcscd", "--foreground", "--config", d.dir)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		d.Stop()
		return nil, fmt.Errorf("%w: start pcscd: %v", ErrUnavailable, err)
	}
	d.Started = true
	exited := make(chan struct{})
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.cmd.Wait()
		close(exited)
	}()
	d.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if names, err := nfc.ListReaders(ctx); err == nil {
			for _, n := range names {
				if strings.HasPrefix(n, "Virtual PCD") {
					d.Reader = n
					return d, nil
				}
			}
		}
		select {
		case <-exited:
			out := d.out.String()
			d.Stop()
			return nil, fmt.Errorf("%w: pcscd exited: %s", ErrUnavailable, out)
		case <-ctx.Done():
			d.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			out := d.out.String()
			d.Stop()
			return nil, fmt.Errorf("%w: pcscd shows no vpcd reader after 10 s: %s", ErrUnavailable, out)
		}
	}
}

// Restart stops and starts the pcscd this Daemon started (to test that a
// reader survives a pcscd restart). The vpcd port stays the same.
func (d *Daemon) Restart(ctx context.Context) error {
	if !d.Started {
		return errors.New("vpcd: pcscd was not started here: not restarting it")
	}
	d.stopPCSCD()
	d.out.Reset()
	d.cmd = exec.Command("pcscd", "--foreground", "--config", d.dir)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("vpcd: restart pcscd: %w", err)
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.cmd.Wait()
	}()
	for !running() {
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// stopPCSCD interrupts pcscd and kills it if it has not exited within
// 3 s (pcscd 1.9 may hang in its exit while a driver thread waits).
func (d *Daemon) stopPCSCD() {
	done := make(chan struct{})
	go func() {
		d.wg.Wait()
		close(done)
	}()
	d.cmd.Process.Signal(os.Interrupt)
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		d.cmd.Process.Kill()
		<-done
	}
}

// Log returns what the pcscd started here printed.
func (d *Daemon) Log() string {
	if d.out == nil {
		return ""
	}
	return d.out.String()
}

// Stop stops the pcscd started here (not one that was running), removes
// its configuration and releases the lock.
func (d *Daemon) Stop() {
	if d.cmd != nil && d.cmd.Process != nil {
		d.stopPCSCD()
		d.cmd = nil
	}
	if d.dir != "" {
		os.RemoveAll(d.dir)
		d.dir = ""
	}
	if d.unlock != nil {
		d.unlock()
		d.unlock = nil
	}
}

// running reports whether a pcscd answers on its socket.
func running() bool {
	c, err := net.DialTimeout("unix", pcscdSocket, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func freePort() (int, error) {
	// vpcd listens on two consecutive ports (its two slots).
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if p >= 65535 {
			continue
		}
		if l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1)); err == nil {
			l2.Close()
			return p, nil
		}
	}
	return 0, errors.New("vpcd: no free port pair")
}
