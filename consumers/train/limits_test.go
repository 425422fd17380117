package train_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/consumers/train/traintest"
	"github.com/largeforge/largeforge/jobs"
	mtrain "github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
)

// TestOversizedTrainingJobsFail: training jobs too large for their limits
// or for the machine's memory fail with the error, from one worker that
// goes on to train the next job. Submit refuses a batch over the limit
// outright; a client publishing one anyway (any NATS client can) gets a
// failed job, and a batch within the limit whose run needs more memory
// than the machine has is refused by the worker before it allocates.
func TestOversizedTrainingJobsFail(t *testing.T) {
	_, bus := pipelinetest.StartBus(t)
	store := jobStore(t, bus)
	fx := traintest.New(t, 8)
	ctx := context.Background()
	startWorker(t, bus, "w1", train.Config{})

	huge := fx.RunConfig(t, filepath.Join(fx.Dir, "huge"), 1, 100)
	huge.Training.PerDeviceBatchSize = 100_000_000
	if _, err := train.Submit(ctx, bus, store, huge, ""); !errors.Is(err, schemas.ErrInvalidConfig) {
		t.Fatalf("Submit of batch 1e8: %v, want Invalid per_device_batch_size", err)
	}

	tests := []struct {
		name    string
		submit  func(t *testing.T) string // the job's id
		wantMsg string
	}{
		{
			name: "batch 1e8 published by hand",
			submit: func(t *testing.T) string {
				id := jobs.NewTrainingID()
				if _, err := store.Create(ctx, jobs.Spec{ID: id, Kind: jobs.KindTraining, Model: "huge", InputFile: fx.Data}); err != nil {
					t.Fatal(err)
				}
				data, err := schemas.TrainJob{Job: id, Run: huge}.Encode()
				if err != nil {
					t.Fatal(err)
				}
				subj, _ := pipeline.TrainSubject(id)
				if _, err := bus.Publish(ctx, subj, data, id, nil); err != nil {
					t.Fatal(err)
				}
				return id
			},
			wantMsg: "Invalid per_device_batch_size: 100000000 is over the limit of 4096",
		},
		{
			name: "batch 4096 of 2048 tokens",
			submit: func(t *testing.T) string {
				rc := fx.RunConfig(t, filepath.Join(fx.Dir, "big"), 1, 100)
				rc.Training.PerDeviceBatchSize, rc.MaxSeqLength = schemas.MaxPerDeviceBatchSize, 2048
				j, err := train.Submit(ctx, bus, store, rc, "")
				if err != nil {
					t.Fatal(err)
				}
				return j.ID
			},
			wantMsg: mtrain.ErrNotEnoughMemory.Error(),
		},
		{
			name: "max_seq_length over the model's",
			submit: func(t *testing.T) string {
				rc := fx.RunConfig(t, filepath.Join(fx.Dir, "long"), 1, 100)
				rc.MaxSeqLength = 4096
				j, err := train.Submit(ctx, bus, store, rc, "")
				if err != nil {
					t.Fatal(err)
				}
				return j.ID
			},
			wantMsg: "Invalid max_seq_length: 4096 is over the limit of 2048",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := tt.submit(t)
			end := watch(t, store, id, 60*time.Second).wait(t)
			if end.Status != jobs.StatusFailed || len(end.Errors) == 0 || !strings.Contains(end.Errors[0].Message, tt.wantMsg) {
				t.Fatalf("job ended %s with %+v, want failed with %q", end.Status, end.Errors, tt.wantMsg)
			}
		})
	}

	// The same worker still trains.
	out := filepath.Join(fx.Dir, "out")
	j, err := train.Submit(ctx, bus, store, fx.RunConfig(t, out, 1, 100), "")
	if err != nil {
		t.Fatal(err)
	}
	if end := watch(t, store, j.ID, 60*time.Second).wait(t); end.Status != jobs.StatusCompleted || end.Training == nil || end.Training.Worker != "w1" {
		t.Fatalf("job after the refused ones ended %s: %+v", end.Status, end.Errors)
	}
}
