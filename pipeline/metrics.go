package pipeline

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/internal/promreg"
)

// Outcome label values of pipeline_messages_total.
const (
	OutcomeAck        = "ack"
	OutcomeNak        = "nak"
	OutcomeDeadLetter = "dead_letter"
	OutcomeDLQFailed  = "dlq_failed"
)

// Metrics are the consume loop's Prometheus metrics; one Metrics serves any
// number of consumers (labelled by stream and durable).
type Metrics struct {
	Messages    *prometheus.CounterVec   // pipeline_messages_total{stream,durable,outcome}
	Batch       *prometheus.HistogramVec // pipeline_batch_seconds{stream,durable}: one Handle call
	BatchSize   *prometheus.HistogramVec // pipeline_batch_size{stream,durable}
	FetchErrors *prometheus.CounterVec   // pipeline_fetch_errors_total{stream,durable}
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered). Registering twice with one registry returns the metrics
// registered first.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	l := []string{"stream", "durable"}
	m := &Metrics{
		Messages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pipeline_messages_total",
			Help: "Messages settled by the consume loop, by outcome (ack, nak, dead_letter, dlq_failed)."}, append(l, "outcome")),
		Batch: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pipeline_batch_seconds",
			Help: "Time a handler took for one batch.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, l),
		BatchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pipeline_batch_size",
			Help: "Messages per handled batch.", Buckets: prometheus.ExponentialBuckets(1, 2, 10)}, l),
		FetchErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pipeline_fetch_errors_total",
			Help: "Failed fetches (retried)."}, l),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.Messages, err = promreg.Register(reg, m.Messages); err != nil {
		return nil, err
	}
	if m.Batch, err = promreg.Register(reg, m.Batch); err != nil {
		return nil, err
	}
	if m.BatchSize, err = promreg.Register(reg, m.BatchSize); err != nil {
		return nil, err
	}
	if m.FetchErrors, err = promreg.Register(reg, m.FetchErrors); err != nil {
		return nil, err
	}
	return m, nil
}
