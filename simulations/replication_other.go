//go:build !unix

package simulations

import "time"

// processCPU is not measured on this system: the reports show 0.
func processCPU() time.Duration { return 0 }
