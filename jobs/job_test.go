package jobs

import (
	"errors"
	"testing"
	"time"
)

func TestSetStatus(t *testing.T) {
	now := time.Unix(1700000000, 0)
	tests := []struct {
		name     string
		from, to Status
		wantErr  bool
	}{
		{"validating to in_progress", StatusValidating, StatusInProgress, false},
		{"validating to failed", StatusValidating, StatusFailed, false},
		{"validating to cancelling", StatusValidating, StatusCancelling, false},
		{"in_progress to finalizing", StatusInProgress, StatusFinalizing, false},
		{"in_progress to expired", StatusInProgress, StatusExpired, false},
		{"finalizing to completed", StatusFinalizing, StatusCompleted, false},
		{"finalizing back to in_progress (rows missing)", StatusFinalizing, StatusInProgress, false},
		{"cancelling to cancelled", StatusCancelling, StatusCancelled, false},
		{"validating to completed skips", StatusValidating, StatusCompleted, true},
		{"in_progress to completed skips finalizing", StatusInProgress, StatusCompleted, true},
		{"completed is final", StatusCompleted, StatusInProgress, true},
		{"failed is final", StatusFailed, StatusCompleted, true},
		{"cancelled is final", StatusCancelled, StatusInProgress, true},
		{"expired is final", StatusExpired, StatusFailed, true},
		{"finalizing cannot be cancelled", StatusFinalizing, StatusCancelling, true},
		{"no going back", StatusInProgress, StatusValidating, true},
		{"unknown status", Status("paused"), StatusInProgress, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := Job{ID: "batch_x", Status: tt.from}
			err := j.SetStatus(tt.to, now)
			if (err != nil) != tt.wantErr {
				t.Fatalf("SetStatus(%s→%s) err = %v, wantErr %v", tt.from, tt.to, err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrIllegalTransition) {
					t.Errorf("err %v does not wrap ErrIllegalTransition", err)
				}
				if j.Status != tt.from {
					t.Errorf("status changed to %s on a rejected transition", j.Status)
				}
				return
			}
			if j.Status != tt.to {
				t.Errorf("status %s, want %s", j.Status, tt.to)
			}
		})
	}
}

func TestSetStatusStamps(t *testing.T) {
	now := time.Unix(1700000000, 0)
	j := Job{ID: "batch_x", Status: StatusValidating}
	for _, s := range []Status{StatusInProgress, StatusFinalizing, StatusCompleted} {
		if err := j.SetStatus(s, now); err != nil {
			t.Fatal(err)
		}
	}
	if j.InProgressAt != now.Unix() || j.FinalizingAt != now.Unix() || j.CompletedAt != now.Unix() {
		t.Errorf("timestamps not stamped: %+v", j)
	}
	if !j.Status.Terminal() {
		t.Error("completed is not terminal")
	}
}

func TestSpecValidate(t *testing.T) {
	tests := []struct {
		name    string
		spec    Spec
		wantErr bool
	}{
		{"minimal", Spec{Model: "stories"}, false},
		{"score", Spec{Model: "m-1_x", Kind: KindScore, ID: "job-1"}, false},
		{"no model", Spec{}, true},
		{"model with dot", Spec{Model: "a.b"}, true},
		{"model with wildcard", Spec{Model: "a*"}, true},
		{"bad kind", Spec{Model: "m", Kind: "train"}, true},
		{"bad id", Spec{Model: "m", ID: "a b"}, true},
		{"negative window", Spec{Model: "m", CompletionWindow: -time.Second}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.spec.Validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidOption) {
				t.Errorf("err %v does not wrap ErrInvalidOption", err)
			}
		})
	}
}

func TestNewJobDefaults(t *testing.T) {
	now := time.Unix(1700000000, 0)
	j, err := NewJob(Spec{Model: "stories"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidID(j.ID); err != nil {
		t.Errorf("NewID gave an invalid id: %v", err)
	}
	if j.Kind != KindCompletion || j.Status != StatusValidating || j.ExpiresAt != now.Add(DefaultCompletionWindow).Unix() || j.CompletionWindow != "24h0m0s" {
		t.Errorf("defaults not applied: %+v", j)
	}
}

// A job record's object is OpenAI's name for its kind: training jobs are
// not batches.
func TestNewJobObject(t *testing.T) {
	tests := []struct {
		name, kind, want string
	}{
		{"completion by default", "", "batch"},
		{"completion", KindCompletion, "batch"},
		{"score", KindScore, "batch"},
		{"training", KindTraining, "fine_tuning.job"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, err := NewJob(Spec{Kind: tt.kind, Model: "m"}, time.Unix(1700000000, 0))
			if err != nil {
				t.Fatal(err)
			}
			if j.Object != tt.want {
				t.Errorf("object %q, want %q", j.Object, tt.want)
			}
		})
	}
}
