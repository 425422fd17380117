package jobs_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

func newStore(t *testing.T) *jobs.Store {
	t.Helper()
	_, bus := pipelinetest.StartBus(t)
	s, err := jobs.Open(context.Background(), bus)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStoreLifecycle(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	j, err := s.Create(ctx, jobs.Spec{ID: "job-1", Model: "stories", InputFile: "in.jsonl"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, jobs.Spec{ID: "job-1", Model: "stories"}); !errors.Is(err, jobs.ErrExists) {
		t.Errorf("second create: err = %v, want ErrExists", err)
	}
	if _, err := s.Get(ctx, "nope"); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("get missing: err = %v, want ErrNotFound", err)
	}
	if _, err := s.Transition(ctx, j.ID, jobs.StatusCompleted, nil); !errors.Is(err, jobs.ErrIllegalTransition) {
		t.Errorf("validating→completed: err = %v, want ErrIllegalTransition", err)
	}
	j, err = s.Transition(ctx, j.ID, jobs.StatusInProgress, func(j *jobs.Job) { j.RequestCounts.Total = 3 })
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != jobs.StatusInProgress || j.RequestCounts.Total != 3 || j.InProgressAt == 0 {
		t.Errorf("after transition: %+v", j)
	}
	if j, err = s.SetCounts(ctx, j.ID, 2, 1); err != nil || j.RequestCounts.Done() != 3 {
		t.Fatalf("SetCounts: %+v, %v", j.RequestCounts, err)
	}
	// Counts never go down.
	if j, err = s.SetCounts(ctx, j.ID, 1, 0); err != nil || j.RequestCounts.Completed != 2 {
		t.Fatalf("SetCounts lower: %+v, %v", j.RequestCounts, err)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != "job-1" {
		t.Fatalf("List = %v, %v", list, err)
	}
}

// Concurrent writers never lose an increment: every Update is a
// compare-and-set on the revision.
func TestStoreConcurrentCounts(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if _, err := s.Create(ctx, jobs.Spec{ID: "job-c", Model: "m"}); err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 10
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := s.AddCounts(ctx, "job-c", 1-w%2, w%2); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	j, err := s.Get(ctx, "job-c")
	if err != nil {
		t.Fatal(err)
	}
	if got := j.RequestCounts.Done(); got != writers*each {
		t.Errorf("done = %d, want %d (lost updates)", got, writers*each)
	}
	if j.RequestCounts.Completed != writers*each/2 || j.RequestCounts.Failed != writers*each/2 {
		t.Errorf("counts %+v", j.RequestCounts)
	}
}

func TestStoreWatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := newStore(t)
	if _, err := s.Create(ctx, jobs.Spec{ID: "job-w", Model: "m"}); err != nil {
		t.Fatal(err)
	}
	go func() {
		_, _ = s.Transition(ctx, "job-w", jobs.StatusInProgress, nil)
		_, _ = s.Transition(ctx, "job-w", jobs.StatusFinalizing, nil)
		_, _ = s.Transition(ctx, "job-w", jobs.StatusCompleted, nil)
	}()
	var seen []jobs.Status
	last, err := s.Watch(ctx, "job-w", func(j jobs.Job) bool { seen = append(seen, j.Status); return true })
	if err != nil {
		t.Fatal(err)
	}
	if last.Status != jobs.StatusCompleted {
		t.Errorf("last status %s (seen %v)", last.Status, seen)
	}
	if _, err := s.Watch(ctx, "job-missing", func(jobs.Job) bool { return true }); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("watch missing: %v", err)
	}
}
