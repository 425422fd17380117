package train

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the §5.1 training and §5.2 evaluation gauges, under the
// dictionary's names.
type metrics struct {
	g map[string]prometheus.Gauge
}

// MetricNames are the gauges a Trainer given WithRegisterer exports.
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
	m := &metrics{g: map[string]prometheus.Gauge{}}
	for _, n := range MetricNames {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: n, Help: metricHelp[n]})
		if err := reg.Register(g); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("%w: register %s: %w", ErrInvalidOption, n, err)
			}
			existing, ok := are.ExistingCollector.(prometheus.Gauge)
			if !ok {
				return nil, fmt.Errorf("%w: register %s: %w", ErrInvalidOption, n, err)
			}
			g = existing
		}
		m.g[n] = g
	}
	return m, nil
}

func (m *metrics) set(values map[string]any) {
	if m == nil {
		return
	}
	for k, v := range values {
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
