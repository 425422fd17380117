package jobs_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

// Reopen is a compare-and-set: of two replays that read the same failed
// record, one reopens it and the other gets ErrConflict; an open job is not
// reopened.
func TestReopenCompareAndSet(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := jobs.Open(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	j, err := store.Create(ctx, jobs.Spec{Model: "m", Kind: jobs.KindTraining})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Reopen(ctx, j.ID, j.Revision, jobs.StatusValidating, nil); !errors.Is(err, jobs.ErrIllegalTransition) {
		t.Fatalf("reopen of an open job: %v", err)
	}
	failed, err := store.Fail(ctx, j.ID, jobs.ErrorReport{Code: "dead_letter", Message: "x"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := store.Reopen(ctx, j.ID, failed.Revision, jobs.StatusValidating, nil)
	if err != nil || got.Status != jobs.StatusValidating || got.FailedAt != 0 {
		t.Fatalf("reopen = %+v, %v", got, err)
	}
	if _, err := store.Reopen(ctx, j.ID, failed.Revision, jobs.StatusValidating, nil); !errors.Is(err, jobs.ErrConflict) {
		t.Fatalf("second reopen at the old revision: %v", err)
	}
	if _, err := store.Reopen(ctx, "nope", 1, jobs.StatusValidating, nil); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("reopen of no job: %v", err)
	}
}
