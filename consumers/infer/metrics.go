package infer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/internal/promreg"
)

// Metrics are the §5.3 inference metrics.
type Metrics struct {
	Requests        *prometheus.CounterVec   // inference_requests_total{model,status}
	Latency         *prometheus.HistogramVec // inference_latency_seconds{model}
	TokensGenerated *prometheus.CounterVec   // tokens_generated_total{model}
	TokensPerSecond *prometheus.GaugeVec     // tokens_per_second{model}
	Active          *prometheus.GaugeVec     // active_requests{model}
}

// Request statuses of inference_requests_total.
const (
	StatusSuccess = "success" // a response or score was published
	StatusError   = "error"   // an error row was published
	StatusRetry   = "retry"   // a transient failure; the request is redelivered
)

// NewMetrics creates the metrics and registers them on reg (nil: not
// registered). Metrics already registered on reg by another worker of the
// process are shared.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "inference_requests_total", Help: "Total requests."}, []string{"model", "status"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "inference_latency_seconds", Help: "Latency distribution.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}, []string{"model"}),
		TokensGenerated: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokens_generated_total", Help: "Total tokens generated."}, []string{"model"}),
		TokensPerSecond: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tokens_per_second", Help: "Generation speed."}, []string{"model"}),
		Active:          prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "active_requests", Help: "Concurrent requests."}, []string{"model"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.Requests, err = promreg.Register(reg, m.Requests)
	if err != nil {
		return nil, err
	}
	if m.Latency, err = promreg.Register(reg, m.Latency); err != nil {
		return nil, err
	}
	if m.TokensGenerated, err = promreg.Register(reg, m.TokensGenerated); err != nil {
		return nil, err
	}
	if m.TokensPerSecond, err = promreg.Register(reg, m.TokensPerSecond); err != nil {
		return nil, err
	}
	if m.Active, err = promreg.Register(reg, m.Active); err != nil {
		return nil, err
	}
	return m, nil
}
