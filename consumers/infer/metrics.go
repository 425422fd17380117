package infer

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/internal/promreg"
	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/schemas"
)

// Metrics are the §5.3 inference metrics.
type Metrics struct {
	Requests        *prometheus.CounterVec   // inference_requests_total{model,status}
	Latency         *prometheus.HistogramVec // inference_latency_seconds{model}
	TokensGenerated *prometheus.CounterVec   // tokens_generated_total{model}
	TokensPerSecond *prometheus.GaugeVec     // tokens_per_second{model}
	Active          *prometheus.GaugeVec     // active_requests{model}
	// Memory is gpu_memory_used_bytes{device}: the bytes the models of this
	// process's workers hold on their devices (see model.Model.MemoryBytes
	// and Device), read at scrape time: device "cpu" for the native engine
	// and the pure Go backend, the accelerator ("cuda:0") for XLA.
	Memory *MemoryCollector
}

// MemoryDevice is the device label of gpu_memory_used_bytes for the CPU
// engines.
const MemoryDevice = model.DeviceCPU

// MemoryCollector exports gpu_memory_used_bytes{device}, summed per device
// over the sources added to it (the served models, and any accelerator
// runtime's statistics). The "cpu" line is always there, 0 when nothing is
// counted.
type MemoryCollector struct {
	desc    *prometheus.Desc
	mu      sync.Mutex
	sources map[model.MemorySource]int // a model served by several workers counts once
}

func newMemoryCollector() *MemoryCollector {
	return &MemoryCollector{
		desc:    prometheus.NewDesc(schemas.MetricGPUMemoryUsedBytes, "Memory the models hold on their device (weights and KV caches).", []string{schemas.LabelDevice}, nil),
		sources: map[model.MemorySource]int{},
	}
}

// Add counts src until the matching Remove.
func (c *MemoryCollector) Add(src model.MemorySource) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sources[src]++
}

// Remove stops counting src (once per Add).
func (c *MemoryCollector) Remove(src model.MemorySource) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sources[src]--; c.sources[src] <= 0 {
		delete(c.sources, src)
	}
}

// ByDevice is the memory counted now, per device.
func (c *MemoryCollector) ByDevice() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int64{MemoryDevice: 0}
	for src := range c.sources {
		for _, d := range src.DeviceMemory() {
			out[d.Device] += d.Bytes
		}
	}
	return out
}

// Bytes is the memory counted now on the CPU.
func (c *MemoryCollector) Bytes() int64 { return c.ByDevice()[MemoryDevice] }

// Describe implements prometheus.Collector.
func (c *MemoryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *MemoryCollector) Collect(ch chan<- prometheus.Metric) {
	for device, n := range c.ByDevice() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), device)
	}
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
		Memory:          newMemoryCollector(),
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
	if m.Memory, err = promreg.Register(reg, m.Memory); err != nil {
		return nil, err
	}
	return m, nil
}
