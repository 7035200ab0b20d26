package node

import (
	"time"

	"github.com/cagnotte/cagnotte/crdt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the node's Prometheus metrics, in a registry of its own (no
// global state: several nodes can run in one process).
type metrics struct {
	reg           *prometheus.Registry
	payments      prometheus.Counter
	topups        prometheus.Counter
	refunds       prometheus.Counter
	refused       prometheus.Counter
	evidence      prometheus.Counter
	requests      *prometheus.CounterVec
	commitSeconds prometheus.Histogram
	batchSize     prometheus.Histogram
	writePhase    *prometheus.HistogramVec
	ops           prometheus.Gauge
	cards         prometheus.Gauge
	conflicts     *prometheus.GaugeVec
	pending       prometheus.Gauge
	isolated      prometheus.Gauge

	isolationChanges prometheus.Counter
	offlinePayments  prometheus.Counter
	autoBlocks       prometheus.Counter
	quorumLost       prometheus.Counter
	future           prometheus.Counter

	detected map[string]time.Time
}

func newMetrics() *metrics {
	m := &metrics{
		reg:      prometheus.NewRegistry(),
		payments: prometheus.NewCounter(prometheus.CounterOpts{Name: "cagnotte_payments_total", Help: "Payments made at this venue since start."}),
		topups:   prometheus.NewCounter(prometheus.CounterOpts{Name: "cagnotte_topups_total", Help: "Top-ups made at this venue since start."}),
		refunds:  prometheus.NewCounter(prometheus.CounterOpts{Name: "cagnotte_refunds_total", Help: "Refunds made at this venue since start."}),
		refused:  prometheus.NewCounter(prometheus.CounterOpts{Name: "cagnotte_ops_refused_total", Help: "Remote ops refused (bad signature, unknown or revoked author, invalid)."}),
		evidence: prometheus.NewCounter(prometheus.CounterOpts{Name: "cagnotte_evidence_ops_total", Help: "Ops kept as evidence of equivocation."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cagnotte_http_requests_total", Help: "API requests by status code."}, []string{"code"}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cagnotte_commit_seconds", Help: "Time to apply and durably commit one group of writes.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cagnotte_commit_batch_writes", Help: "Writes grouped in one durable commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
		writePhase: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "cagnotte_write_phase_seconds",
			Help:    "Time a group of writes spent in each phase: queue (the oldest write's wait for the writer), apply (the decisions and signatures), store_wait (the store's lock and free-space check), fill (building the transaction), durable (Badger's write and fsync), after (auto-blocks, metrics).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, []string{"phase"}),
		ops:              prometheus.NewGauge(prometheus.GaugeOpts{Name: "cagnotte_ops", Help: "Ops in the replica."}),
		cards:            prometheus.NewGauge(prometheus.GaugeOpts{Name: "cagnotte_cards", Help: "Cards known to the replica."}),
		conflicts:        prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "cagnotte_conflicts", Help: "Conflicts known, by kind."}, []string{"kind"}),
		pending:          prometheus.NewGauge(prometheus.GaugeOpts{Name: "cagnotte_pending_ops", Help: "Remote ops waiting for their predecessors."}),
		isolated:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "cagnotte_isolated", Help: "1 while the node is isolated (offline caps apply), else 0."}),
		isolationChanges: prometheus.NewCounter(prometheus.CounterOpts{Name: "cagnotte_isolation_changes_total", Help: "Changes between in sync and isolated."}),
		offlinePayments:  prometheus.NewCounter(prometheus.CounterOpts{Name: "cagnotte_offline_payments_total", Help: "Payments taken while isolated."}),
		autoBlocks:       prometheus.NewCounter(prometheus.CounterOpts{Name: "cagnotte_auto_blocks_total", Help: "Cards this node blocked because money was missing after a merge, or a stale stamp was presented while isolated."}),
		quorumLost:       prometheus.NewCounter(prometheus.CounterOpts{Name: "cagnotte_quorum_lost_total", Help: "Payments taken under the offline caps because no quorum answered a ping, though heartbeats were fresh."}),
		future:           prometheus.NewCounter(prometheus.CounterOpts{Name: "cagnotte_ops_held_future_total", Help: "Remote ops held because their timestamp was beyond the federation's clock skew bound."}),
		detected:         map[string]time.Time{},
	}
	m.reg.MustRegister(m.payments, m.topups, m.refunds, m.refused, m.evidence, m.requests, m.commitSeconds, m.batchSize, m.writePhase,
		m.ops, m.cards, m.conflicts, m.pending, m.isolated, m.isolationChanges, m.offlinePayments, m.autoBlocks, m.quorumLost, m.future,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observeState refreshes the gauges and returns the conflicts seen for the
// first time. Caller holds the node's lock.
func (m *metrics) observeState(set *crdt.OpSet) []*crdt.Conflict {
	var fresh []*crdt.Conflict
	m.ops.Set(float64(set.Len()))
	m.cards.Set(float64(len(set.State.Cards)))
	counts := map[crdt.ConflictKind]int{crdt.ConflictDoubleSpend: 0, crdt.ConflictEquivocation: 0, crdt.ConflictDuplicateRef: 0, crdt.ConflictStaleStamp: 0}
	now := time.Now()
	for k, c := range set.State.Conflicts {
		counts[c.Kind]++
		if _, ok := m.detected[k]; !ok {
			m.detected[k] = now
			fresh = append(fresh, c)
		}
	}
	for k, v := range counts {
		m.conflicts.WithLabelValues(string(k)).Set(float64(v))
	}
	return fresh
}

// detectedAt is when this node first saw a conflict (since it started).
func (n *Node) detectedAt(key string) time.Time {
	return n.metrics.detected[key].UTC()
}
