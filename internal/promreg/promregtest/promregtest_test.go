package promregtest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestValue(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c_total", Help: "c"}, []string{"model"})
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "g", Help: "g"}, []string{"model"})
	reg.MustRegister(c, g)
	c.WithLabelValues("a").Add(2)
	c.WithLabelValues("b").Add(3)
	g.WithLabelValues("a").Set(7)
	for _, tc := range []struct {
		name, label, value string
		want               float64
	}{
		{"c_total", "model", "a", 2},
		{"c_total", "", "", 5},
		{"g", "model", "a", 7},
		{"g", "model", "b", 0},
		{"absent", "", "", 0},
	} {
		if got := Value(t, reg, tc.name, tc.label, tc.value); got != tc.want {
			t.Errorf("Value(%s, %s=%s) = %v, want %v", tc.name, tc.label, tc.value, got, tc.want)
		}
	}
}
