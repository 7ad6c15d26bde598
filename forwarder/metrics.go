package forwarder

import (
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tusgate/tusgate/apivideo"
)

// metrics are the forwarder's Prometheus series. The zero registerer
// (nil) still works: the collectors are then simply not exported.
type metrics struct {
	deadlineMargin prometheus.Histogram
	deadlineMisses prometheus.Counter
	queueDepth     *prometheus.GaugeVec
	inFlight       prometheus.Gauge
	delivered      prometheus.Counter
	deliveredBytes prometheus.Counter
	discardedBytes prometheus.Counter
	failures       *prometheus.CounterVec
	tokensMinted   prometheus.Counter
	partDuration   *prometheus.HistogramVec
	responses      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		deadlineMargin: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tusgate_first_part_deadline_margin_seconds",
			Help:    "Time left before the upload token's deadline when api.video accepted part 1 (uploads with a known deadline).",
			Buckets: []float64{1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600},
		}),
		deadlineMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tusgate_deadline_misses_total",
			Help: "Uploads failed because a token or completion deadline passed first.",
		}),
		queueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tusgate_forwarder_queue_depth",
			Help: "Parts ready to send and waiting for a worker, by class (first: part 1, later: the rest).",
		}, []string{"class"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tusgate_forwarder_parts_in_flight",
			Help: "Parts being sent to api.video.",
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tusgate_parts_delivered_total",
			Help: "Parts api.video accepted.",
		}),
		deliveredBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tusgate_delivered_bytes_total",
			Help: "Bytes api.video accepted.",
		}),
		discardedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tusgate_discarded_bytes_total",
			Help: "Delivered bytes freed from the data store before their upload was complete (disk store: hole punched).",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tusgate_part_failures_total",
			Help: "Failed part sends, by kind (transient: retried; permanent: the upload failed).",
		}, []string{"kind"}),
		tokensMinted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tusgate_tokens_minted_total",
			Help: "Upload tokens minted in managed mode.",
		}),
		partDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tusgate_part_duration_seconds",
			Help:    "Time to send one part to api.video and get its answer, by class (first, later) and outcome (accepted, failed).",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"class", "outcome"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tusgate_apivideo_responses_total",
			Help: "Answers to part uploads from api.video, by HTTP status code (\"network\": no answer: connection error, timeout, cut).",
		}, []string{"status"}),
	}
	if reg != nil {
		reg.MustRegister(m.deadlineMargin, m.deadlineMisses, m.queueDepth, m.inFlight,
			m.delivered, m.deliveredBytes, m.discardedBytes, m.failures, m.tokensMinted, m.partDuration, m.responses)
	}
	return m
}

// partSent observes one part send of part k that ended with err.
func (m *metrics) partSent(k int, took time.Duration, err error) {
	class, outcome, status := "later", "accepted", "201"
	if k == 1 {
		class = "first"
	}
	if err != nil {
		outcome, status = "failed", "network"
		if e, ok := errors.AsType[*apivideo.Error](err); ok && e.StatusCode != 0 {
			status = strconv.Itoa(e.StatusCode)
		}
	}
	m.partDuration.WithLabelValues(class, outcome).Observe(took.Seconds())
	m.responses.WithLabelValues(status).Inc()
}

// firstPartAccepted observes the margin left on a known token deadline.
func (m *metrics) firstPartAccepted(deadline, at time.Time) {
	if !deadline.IsZero() {
		m.deadlineMargin.Observe(deadline.Sub(at).Seconds())
	}
}
