package main

import (
	"os"
	"runtime/debug"
)

// defaultMemoryLimit is the soft memory limit the binary sets for itself
// when the operator sets none (GOMEMLIMIT): a node must fit a small machine
// (a 1 GB Raspberry Pi runs the OS, the node and its Badger caches), and the
// Go runtime otherwise lets the heap grow to twice its live size between
// collections. It is a soft limit: the node never fails for it, the
// collector just works harder near it.
const defaultMemoryLimit = 320 << 20

// setRuntimeLimits applies the binary's runtime defaults, unless the
// operator chose their own through the environment.
func setRuntimeLimits() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
}
