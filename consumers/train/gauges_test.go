package train_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/consumers/train/traintest"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// namingRegistry is a registry that remembers what was registered on it.
type namingRegistry struct {
	*prometheus.Registry
	mu    sync.Mutex
	names map[string]bool
}

func (r *namingRegistry) Register(c prometheus.Collector) error {
	if g, ok := c.(prometheus.Gauge); ok {
		r.mu.Lock()
		r.names[g.Desc().String()] = true
		r.mu.Unlock()
	}
	return r.Registry.Register(c)
}

// TestRunGaugesDroppedAtEnd: the training gauges a job's run exports are
// gone once the job ends, so a finished run's loss (a NaN one) does not
// stay exported while the worker waits for its next job.
func TestRunGaugesDroppedAtEnd(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	store := jobStore(t, bus)
	fx := traintest.New(t, 4)
	reg := &namingRegistry{Registry: prometheus.NewRegistry(), names: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := train.Start(ctx, bus, train.Config{WorkerID: "g1", MaxWait: 200 * time.Millisecond}, pipelinetest.Logger(t), reg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = w.Wait() })
	j, err := train.Submit(context.Background(), bus, store, fx.RunConfig(t, filepath.Join(fx.Dir, "out"), 1, 100), "")
	if err != nil {
		t.Fatal(err)
	}
	if end := watch(t, store, j.ID, time.Minute).wait(t); end.Status != jobs.StatusCompleted {
		t.Fatalf("job ended %s: %+v", end.Status, end.Errors)
	}
	reg.mu.Lock()
	registered := len(reg.names)
	reg.mu.Unlock()
	if registered == 0 {
		t.Fatal("the run registered no gauge: nothing to drop")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		t.Errorf("after the job ended, %s is still exported: %v", mf.GetName(), mf.GetMetric())
	}
}
