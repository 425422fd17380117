package gateway

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/internal/promreg"
	"github.com/largeforge/largeforge/schemas"
)

// Metrics are the gateway's HTTP metrics. The inference metrics (§5.3) are
// the workers'; these count what the gateway itself answered.
type Metrics struct {
	Requests *prometheus.CounterVec   // gateway_requests_total{path,code}
	Duration *prometheus.HistogramVec // gateway_request_duration_seconds{path}: time to the last byte
	Active   prometheus.Gauge         // gateway_active_requests

	RoutingDecisions   *prometheus.CounterVec   // routing_decisions_total{expert} (§5.4)
	RoutingLatency     *prometheus.HistogramVec // routing_latency_seconds{classifier} (§5.4)
	ExpertAvailability *prometheus.GaugeVec     // expert_availability{expert} (§5.4): 1 with a live worker, else 0
}

// NewMetrics registers the gateway metrics with reg (nil: unregistered).
// Registering twice with one registry reuses the collectors already there.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_requests_total", Help: "HTTP requests answered by the gateway."}, []string{"path", "code"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "gateway_request_duration_seconds", Help: "HTTP request duration to the last byte.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}, []string{"path"}),
		Active:           prometheus.NewGauge(prometheus.GaugeOpts{Name: "gateway_active_requests", Help: "HTTP requests in progress."}),
		RoutingDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: schemas.MetricRoutingDecisionsTotal, Help: "Routing decisions."}, []string{schemas.LabelExpert}),
		RoutingLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: schemas.MetricRoutingLatencySeconds, Help: "Classification time.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12)}, []string{schemas.LabelClassifier}),
		ExpertAvailability: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: schemas.MetricExpertAvailability, Help: "Expert health status."}, []string{schemas.LabelExpert}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.Requests, err = promreg.Register(reg, m.Requests); err != nil {
		return nil, err
	}
	if m.Duration, err = promreg.Register(reg, m.Duration); err != nil {
		return nil, err
	}
	if m.Active, err = promreg.Register(reg, m.Active); err != nil {
		return nil, err
	}
	if m.RoutingDecisions, err = promreg.Register(reg, m.RoutingDecisions); err != nil {
		return nil, err
	}
	if m.RoutingLatency, err = promreg.Register(reg, m.RoutingLatency); err != nil {
		return nil, err
	}
	if m.ExpertAvailability, err = promreg.Register(reg, m.ExpertAvailability); err != nil {
		return nil, err
	}
	return m, nil
}
