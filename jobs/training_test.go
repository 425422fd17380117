package jobs_test

import (
	"context"
	"strings"
	"testing"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// TestCancelTraining: cancelling a training job only moves it to
// cancelling; no control marker goes to the results sink, which would
// otherwise finalise it as a batch job.
func TestCancelTraining(t *testing.T) {
	ctx := context.Background()
	_, bus := pipelinetest.StartBus(t)
	s, err := jobs.Open(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	id := jobs.NewTrainingID()
	if !strings.HasPrefix(id, "train_") || jobs.ValidID(id) != nil {
		t.Fatalf("training id %q", id)
	}
	if _, err := s.Create(ctx, jobs.Spec{ID: id, Kind: jobs.KindTraining, Model: "tuned"}); err != nil {
		t.Fatal(err)
	}
	j, purged, err := jobs.Cancel(ctx, bus, s, id)
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != jobs.StatusCancelling || purged != 0 {
		t.Errorf("status %s, purged %d; want cancelling, 0", j.Status, purged)
	}
	st, err := bus.JetStream().Stream(ctx, pipeline.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Errorf("%d messages on LF_RESULTS, want none for a training job", info.State.Msgs)
	}
}
