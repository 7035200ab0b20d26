package node

import (
	"math"
	"sync"
	"time"
)

// failureLimiter counts failures (a wrong staff token, a wrong card holder
// token) per client in token buckets: each client may fail burst times in
// a row, then once per every; a client whose bucket is empty is refused
// (429) until it refills. Only failures take from the bucket, so a till
// that always presents its valid token is never slowed down. It tracks at
// most max clients: when full it forgets the ones whose buckets are full
// again (they are as good as new), then the oldest.
type failureLimiter struct {
	mu      sync.Mutex
	burst   float64
	every   time.Duration
	max     int
	now     func() time.Time
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newFailureLimiter(burst int, every time.Duration, max int, now func() time.Time) *failureLimiter {
	return &failureLimiter{burst: float64(burst), every: every, max: max, now: now, buckets: map[string]*bucket{}}
}

// refill brings b up to date. Caller holds mu.
func (l *failureLimiter) refill(b *bucket, now time.Time) {
	if el := now.Sub(b.last); el > 0 {
		b.tokens = math.Min(l.burst, b.tokens+float64(el)/float64(l.every))
		b.last = now
	}
}

// wait returns how long client must wait before its next try, 0 if it may
// try now.
func (l *failureLimiter) wait(client string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[client]
	if b == nil {
		return 0
	}
	now := l.now()
	l.refill(b, now)
	if b.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - b.tokens) * float64(l.every))
}

// fail records a failure of client.
func (l *failureLimiter) fail(client string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.buckets[client]
	if b == nil {
		if len(l.buckets) >= l.max {
			l.evict(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[client] = b
	}
	l.refill(b, now)
	b.tokens = math.Max(0, b.tokens-1)
}

// evict makes room for one client. Caller holds mu.
func (l *failureLimiter) evict(now time.Time) {
	var oldest string
	var oldestAt time.Time
	for c, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= l.burst {
			delete(l.buckets, c)
			continue
		}
		if oldest == "" || b.last.Before(oldestAt) {
			oldest, oldestAt = c, b.last
		}
	}
	if len(l.buckets) >= l.max && oldest != "" {
		delete(l.buckets, oldest)
	}
}
