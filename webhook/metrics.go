package webhook

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the dispatcher's Prometheus series. With a nil registerer
// they work but are not exported.
type metrics struct {
	deliveries *prometheus.CounterVec
	duration   prometheus.Histogram
}

// newMetrics makes the series; stats gives the queue gauges their values
// at scrape time.
func newMetrics(reg prometheus.Registerer, stats func() (int, time.Duration)) *metrics {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tusgate_webhook_deliveries_total",
			Help: "Webhook delivery attempts by outcome (delivered: 2xx; failed: retried later; dropped: given up after the max age, or webhooks off).",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tusgate_webhook_request_duration_seconds",
			Help:    "Duration of webhook requests, whatever their outcome.",
			Buckets: prometheus.DefBuckets,
		}),
	}
	for _, o := range []string{"delivered", "failed", "dropped"} {
		m.deliveries.WithLabelValues(o)
	}
	if reg != nil {
		reg.MustRegister(m.deliveries, m.duration,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "tusgate_webhook_queue_depth",
				Help: "Webhook events waiting for delivery, in the uploads this instance last looked at.",
			}, func() float64 { n, _ := stats(); return float64(n) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "tusgate_webhook_oldest_event_age_seconds",
				Help: "Age of the oldest webhook event waiting for delivery (0: none).",
			}, func() float64 { _, age := stats(); return age.Seconds() }),
		)
	}
	return m
}
