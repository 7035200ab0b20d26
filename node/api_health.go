package node

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/cagnotte/cagnotte/crdt"
)

// handleHealthz answers 200 while the process serves HTTP: a supervisor's
// liveness probe (restart the process when it fails).
func (n *Node) handleHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "alive"})
}

// ReadyCheck is one check of GET /readyz.
type ReadyCheck struct {
	Name    string `json:"name"`
	OK      bool   `json:"ok"`
	Message string `json:"message"`
}

// Ready runs the readiness checks: the store answers reads, the federation
// is loaded and, when networking is on and the federation has other
// venues, at least one other venue is known (connected or heard from).
func (n *Node) Ready() (bool, []ReadyCheck) {
	var checks []ReadyCheck
	add := func(name string, err error, okMsg string) {
		c := ReadyCheck{Name: name, OK: err == nil, Message: okMsg}
		if err != nil {
			c.Message = err.Error()
		}
		checks = append(checks, c)
	}
	// store: a real read, which fails once the store is closed.
	var storeErr error
	switch {
	case n.failed.Load():
		storeErr = fmt.Errorf("a write to storage failed: writes are refused until the node restarts")
	case n.Disk().Full:
		storeErr = fmt.Errorf("the disk is full: writes are refused until space is freed on the node's disk")
	default:
		if _, _, err := n.store.Idempotency("readyz-probe"); err != nil {
			storeErr = fmt.Errorf("the store does not answer: %w", err)
		}
	}
	add("store", storeErr, "open")

	var fedErr error
	var name string
	others := 0
	n.View(func(set *crdt.OpSet) {
		name = set.State.Name
		for k, v := range set.State.Venues {
			if k != n.cfg.Key.Public() && !v.Revoked {
				others++
			}
		}
	})
	if name == "" {
		fedErr = fmt.Errorf("no federation genesis loaded")
	}
	add("federation", fedErr, fmt.Sprintf("%q loaded, %d other venue(s)", name, others))

	switch {
	case n.net == nil:
		add("peers", nil, "networking is off")
	case others == 0:
		add("peers", nil, "the federation has no other venue")
	default:
		known := 0
		for _, p := range n.net.Peers() {
			if p.Member && (p.Connected || !p.LastSeen.IsZero()) {
				known++
			}
		}
		var err error
		if known == 0 {
			err = fmt.Errorf("no other venue known yet (networking on, %d other venue(s) in the federation): check --bootstrap, mDNS and the firewall", others)
		}
		add("peers", err, fmt.Sprintf("%d of %d other venue(s) known", known, others))
	}
	ok := true
	for _, c := range checks {
		ok = ok && c.OK
	}
	return ok, checks
}

// handleReadyz answers 200 when the node is ready to serve (see Ready),
// else 503 not_ready with the failing checks in the message and the list.
func (n *Node) handleReadyz(w http.ResponseWriter, r *http.Request) {
	ok, checks := n.Ready()
	if ok {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "checks": checks})
		return
	}
	var failed []string
	for _, c := range checks {
		if !c.OK {
			failed = append(failed, c.Name+": "+c.Message)
		}
	}
	writeJSON(w, http.StatusServiceUnavailable, map[string]any{
		"error": "not_ready", "message": strings.Join(failed, "; "), "checks": checks,
	})
}
