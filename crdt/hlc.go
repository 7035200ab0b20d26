package crdt

import "fmt"

// HLC is a hybrid logical clock timestamp: the high 48 bits are wall-clock
// milliseconds since the Unix epoch, the low 16 bits a logical counter that
// orders events within one millisecond and after a clock that went back.
type HLC uint64

const hlcLogicalBits = 16

// MakeHLC builds a timestamp from milliseconds and a logical counter.
func MakeHLC(ms uint64, logical uint16) HLC { return HLC(ms<<hlcLogicalBits | uint64(logical)) }

// Millis returns the wall-clock part in Unix milliseconds.
func (h HLC) Millis() int64 { return int64(uint64(h) >> hlcLogicalBits) }

// Logical returns the logical counter.
func (h HLC) Logical() uint16 { return uint16(h) }

func (h HLC) String() string { return fmt.Sprintf("%d.%d", h.Millis(), h.Logical()) }

// Clock issues HLC timestamps from an injected wall clock. It is not safe
// for concurrent use; the node serialises access.
type Clock struct {
	wall func() int64 // Unix milliseconds
	last HLC
}

// NewClock returns a clock reading wall, a function returning Unix
// milliseconds (time.Now().UnixMilli in a node, a virtual clock in tests).
func NewClock(wall func() int64) *Clock { return &Clock{wall: wall} }

// Now returns a timestamp greater than every one issued or observed before.
func (c *Clock) Now() HLC {
	ms := c.wall()
	if ms < 0 {
		ms = 0
	}
	t := MakeHLC(uint64(ms), 0)
	if t <= c.last {
		t = c.last + 1
	}
	c.last = t
	return t
}

// Observe moves the clock past a timestamp seen on a remote op, so that ops
// made after seeing it sort after it.
func (c *Clock) Observe(h HLC) {
	if h > c.last {
		c.last = h
	}
}

// Last returns the greatest timestamp issued or observed.
func (c *Clock) Last() HLC { return c.last }
