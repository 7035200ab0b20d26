package crdt

import "sync"

// verifiedCache remembers the ids of ops whose signature verified, so that
// an op checked by a gossip validator (Check) is not verified again when it
// is added a moment later (Add). The id hashes the whole encoding, signature
// included, so a hit is the very bytes that verified. It is bounded and
// safe for concurrent use: validators call Check under a read lock.
type verifiedCache struct {
	mu  sync.Mutex
	ids map[OpID]struct{}
}

const verifiedCacheMax = 8192

func (c *verifiedCache) has(id OpID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.ids[id]
	return ok
}

func (c *verifiedCache) add(id OpID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ids == nil || len(c.ids) >= verifiedCacheMax {
		c.ids = make(map[OpID]struct{}, 256) // dropping all is enough: hits are recent
	}
	c.ids[id] = struct{}{}
}

// verify checks op's signature, once per op id.
func (s *OpSet) verify(op *Op) error {
	id := op.ID()
	if s.verified.has(id) {
		return nil
	}
	if err := op.Verify(); err != nil {
		return err
	}
	s.verified.add(id)
	return nil
}
