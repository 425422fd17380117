package main

import (
	"testing"
	"time"

	"github.com/largeforge/largeforge/jobs"
)

// `jobs wait` shows a training job's steps, loss and ETA, and another
// job's requests.
func TestWaitProgress(t *testing.T) {
	tests := []struct {
		name              string
		job               jobs.Job
		wantDone, wantMax int
		wantDesc          string
	}{
		{"training queued", jobs.Job{ID: "train_1", Kind: jobs.KindTraining, Status: jobs.StatusValidating},
			0, 0, "train_1 validating: no step yet"},
		{"training running", jobs.Job{ID: "train_1", Kind: jobs.KindTraining, Status: jobs.StatusInProgress,
			Training: &jobs.TrainingProgress{Step: 45, MaxSteps: 192, Loss: 2.31456, ETASeconds: 61.6}},
			45, 192, "train_1 in_progress: step 45/192 loss 2.3146 eta 1m2s"},
		{"training ETA not known yet", jobs.Job{ID: "train_1", Kind: jobs.KindTraining, Status: jobs.StatusInProgress,
			Training: &jobs.TrainingProgress{Step: 1, MaxSteps: 192, Loss: 5}},
			1, 192, "train_1 in_progress: step 1/192 loss 5.0000 eta -"},
		{"training done", jobs.Job{ID: "train_1", Kind: jobs.KindTraining, Status: jobs.StatusCompleted,
			Training: &jobs.TrainingProgress{Step: 192, MaxSteps: 192, Loss: 0.5}},
			192, 192, "train_1 completed: step 192/192 loss 0.5000 eta -"},
		{"batch", jobs.Job{ID: "batch_1", Kind: jobs.KindCompletion, Status: jobs.StatusInProgress,
			RequestCounts: jobs.Counts{Total: 150, Completed: 18, Failed: 2}},
			20, 150, "batch_1 in_progress: 18 completed, 2 failed (10/s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done, max, desc := waitProgress(tt.job, 2*time.Second)
			if done != tt.wantDone || max != tt.wantMax || desc != tt.wantDesc {
				t.Errorf("waitProgress = %d, %d, %q; want %d, %d, %q", done, max, desc, tt.wantDone, tt.wantMax, tt.wantDesc)
			}
		})
	}
}
