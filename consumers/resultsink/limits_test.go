package resultsink_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// TestResultsAgeLimitKeepsUnfinishedJobs: LF_RESULTS's max age (here 1s)
// drops results of a job still in progress, and the job still completes
// with every row, because the sink stored each one in the job's parts in
// lf_artifacts before it acked it: what the limit drops is a copy
// (pipeline.AgeLimited).
func TestResultsAgeLimitKeepsUnfinishedJobs(t *testing.T) {
	const total = 20
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newObjectsEnv(t)
	limits := pipeline.DefaultLimits()
	if err := limits.Set("LF_RESULTS=1s"); err != nil {
		t.Fatal(err)
	}
	topo, err := pipeline.DefaultTopology(1).WithLimits(limits)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.bus.ApplyTopology(ctx, topo); err != nil {
		t.Fatal(err)
	}
	ids := e.createJob(t, "aged", total)
	e.startSink(t, "sink", 2*time.Second)
	e.publish(t, "aged", ids[:total/2])
	pipelinetest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		j, err := e.store.Get(ctx, "aged")
		if err == nil && j.RequestCounts.Done() < total/2 {
			err = fmt.Errorf("counts %+v", j.RequestCounts)
		}
		return err
	})
	pipelinetest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		s, err := e.bus.JetStream().Stream(ctx, pipeline.StreamResults)
		if err == nil && s.CachedInfo().State.Msgs != 0 {
			err = fmt.Errorf("LF_RESULTS still holds %d results", s.CachedInfo().State.Msgs)
		}
		return err
	})
	if j, err := e.store.Get(ctx, "aged"); err != nil || j.Status.Terminal() {
		t.Fatalf("job %+v (%v): want it unfinished when its results aged out", j, err)
	}
	e.publish(t, "aged", ids[total/2:])
	e.checkOutput(t, e.waitStatus(t, "aged", jobs.StatusCompleted, 60*time.Second), ids)
}
