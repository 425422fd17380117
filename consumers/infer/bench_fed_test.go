package infer_test

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/internal/benchenv"
	"github.com/largeforge/largeforge/schemas"
)

// fedSampler samples a worker's active_requests (requests handed to its
// Batcher: generating or queued for a slot) while a benchmark job runs. The
// fraction of samples with every slot taken says whether the bus keeps the
// Batcher fed, a figure that, unlike req/s, does not move with the load of
// a shared machine; in-process it is 1.
type fedSampler struct {
	stop func()
	mu   sync.Mutex
	n    int     // samples taken while the job ran (active > 0 once)
	fed  int     // samples with active ≥ slots
	sum  float64 // of active
}

// fedSampleEvery is how often sampleFed samples active_requests.
const fedSampleEvery = 50 * time.Millisecond

func sampleFed(b *testing.B, reg prometheus.Gatherer, slots int) *fedSampler {
	b.Helper()
	s := &fedSampler{}
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		// A sample gathers the whole registry: every 50 ms it costs the
		// bus phase about 0.1% of its CPU (every 10 ms it was 0.7%, which
		// the in-process phase, not sampled, did not pay).
		t := time.NewTicker(fedSampleEvery)
		defer t.Stop()
		started := false
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			active := gaugeValue(reg, schemas.MetricActiveRequests)
			if started = started || active > 0; !started {
				continue
			}
			s.mu.Lock()
			s.n++
			s.sum += active
			if active >= float64(slots) {
				s.fed++
			}
			s.mu.Unlock()
		}
	}()
	s.stop = func() { close(done); <-stopped }
	return s
}

// report stops the sampler and adds <prefix>fed (the fraction of samples
// with every slot taken) and <prefix>active (the mean of active_requests)
// to fig.
func (s *fedSampler) report(fig benchenv.Figures, prefix string) {
	s.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == 0 {
		return
	}
	fig.Add(prefix+"fed", float64(s.fed)/float64(s.n))
	fig.Add(prefix+"active", s.sum/float64(s.n))
}

// gaugeValue sums the gauge name's series in reg (0 when absent).
func gaugeValue(reg prometheus.Gatherer, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return 0
	}
	v := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			v += m.GetGauge().GetValue()
		}
	}
	return v
}
