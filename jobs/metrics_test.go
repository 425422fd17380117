package jobs_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// TestAgeCollector: jobs per status, and the age of the oldest job of each
// unfinished status measured from when it entered that status (0 when
// none is in it).
func TestAgeCollector(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := jobs.Open(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"job-a", "job-b", "job-c"} {
		if _, err := s.Create(ctx, jobs.Spec{ID: id, Model: "m", InputFile: "in.jsonl"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Transition(ctx, "job-a", jobs.StatusInProgress, nil); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	c, err := jobs.NewAgeCollector(s, func() time.Time { return later }, pipelinetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	count := func(metric, status string) float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != metric {
				continue
			}
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == status {
					return m.GetGauge().GetValue()
				}
			}
		}
		t.Fatalf("%s{status=%q} not exported", metric, status)
		return 0
	}
	if n := count(jobs.MetricJobs, "validating"); n != 2 {
		t.Errorf("validating jobs %v, want 2", n)
	}
	if n := count(jobs.MetricJobs, "in_progress"); n != 1 {
		t.Errorf("in_progress jobs %v, want 1", n)
	}
	for _, st := range []string{"validating", "in_progress"} {
		if age := count(jobs.MetricJobAge, st); age < 3600 || age > 3700 {
			t.Errorf("%s age %v, want about an hour", st, age)
		}
	}
	if age := count(jobs.MetricJobAge, "finalizing"); age != 0 {
		t.Errorf("finalizing age %v with no such job, want 0", age)
	}
	if age := count(jobs.MetricJobAge, "cancelling"); age != 0 {
		t.Errorf("cancelling age %v with no such job, want 0", age)
	}
	if _, err := jobs.NewAgeCollector(nil, nil, pipelinetest.Logger(t)); !errors.Is(err, jobs.ErrInvalidOption) {
		t.Errorf("nil store: %v", err)
	}
}
