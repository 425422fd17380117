package train

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the §5.1 training and §5.2 evaluation gauges, under the
// dictionary's names. The evaluation gauges are registered at the first
// evaluation: until then they are absent, not 0.
type metrics struct {
	reg     prometheus.Registerer
	g       map[string]prometheus.Gauge
	pending map[string]bool // evaluation gauges not registered yet
}

// evalMetrics are the §5.2 names, registered at the first evaluation.
var evalMetrics = map[string]bool{"eval_loss": true, "perplexity": true, "accuracy": true}

// MetricNames are the gauges a Trainer given WithRegisterer exports (the
// last three from its first evaluation on).
var MetricNames = []string{
	"loss", "learning_rate", "epoch", "global_step", "grad_norm", "train_samples_per_second",
	"eval_loss", "perplexity", "accuracy",
}

var metricHelp = map[string]string{
	"loss": "Training loss", "learning_rate": "Current learning rate", "epoch": "Current epoch",
	"global_step": "Global training step", "grad_norm": "Gradient norm", "train_samples_per_second": "Training throughput",
	"eval_loss": "Validation loss", "perplexity": "Model perplexity", "accuracy": "Token prediction accuracy",
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{reg: reg, g: map[string]prometheus.Gauge{}, pending: map[string]bool{}}
	for _, n := range MetricNames {
		if evalMetrics[n] {
			m.pending[n] = true
			continue
		}
		if err := m.register(n); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// register registers gauge n (or takes the one registered before).
func (m *metrics) register(n string) error {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: n, Help: metricHelp[n]})
	if err := m.reg.Register(g); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return fmt.Errorf("%w: register %s: %w", ErrInvalidOption, n, err)
		}
		existing, ok := are.ExistingCollector.(prometheus.Gauge)
		if !ok {
			return fmt.Errorf("%w: register %s: %w", ErrInvalidOption, n, err)
		}
		g = existing
	}
	m.g[n] = g
	return nil
}

func (m *metrics) set(values map[string]any) {
	if m == nil {
		return
	}
	for k, v := range values {
		if m.pending[k] {
			if m.register(k) != nil {
				continue // a name taken by another collector: checked for the others by newMetrics
			}
			delete(m.pending, k)
		}
		g, ok := m.g[k]
		if !ok {
			continue
		}
		switch x := v.(type) {
		case float64:
			g.Set(x)
		case int:
			g.Set(float64(x))
		}
	}
}
