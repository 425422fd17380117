package train

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/model/train"
)

// dropRunGauges unregisters the training gauges a run registered on reg
// (model/train's MetricNames) when its job ends, however it ended: a
// worker waiting for its next job exports no loss, so the last run's value
// (a NaN among them) does not hold an alert on for the process's lifetime.
// The next run registers them again.
func dropRunGauges(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	for _, n := range train.MetricNames {
		// A collector is unregistered by its descriptors, which name and help
		// do not change: a new gauge of the same name stands for it.
		reg.Unregister(prometheus.NewGauge(prometheus.GaugeOpts{Name: n, Help: n}))
	}
}
