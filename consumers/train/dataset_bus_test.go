package train_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/consumers/train/traintest"
	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
	"github.com/largeforge/largeforge/storage"
)

// TestTrainingFromDatasetOnBus: a job naming a dataset, with no data_dir,
// on a worker with no data dir, trains on the dataset's parts read from
// lf_artifacts (a short run of the tiny model), as a worker on any
// machine would.
func TestTrainingFromDatasetOnBus(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, bus := pipelinetest.StartBus(t)
	objects, err := storage.OpenObjects(ctx, bus, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	parts, _ := storage.DatasetParts(objects, "colours")
	answers := []string{"red", "blue", "green", "gold"}
	for p := range 2 { // two parts of four rows
		var recs []schemas.Record
		var ids []string
		for i := p * 4; i < p*4+4; i++ {
			r := schemas.Record{Format: schemas.FormatShareGPT, ShareGPT: schemas.ShareGPT{Conversations: []schemas.Turn{
				{From: "human", Value: fmt.Sprintf("Colour %d?", i%4)}, {From: "gpt", Value: answers[i%4]}}}}
			recs, ids = append(recs, r), append(ids, fmt.Sprintf("%064x", i))
		}
		if _, err := dataset.PublishPart(ctx, parts, schemas.FormatShareGPT, recs, ids, nil); err != nil {
			t.Fatal(err)
		}
	}
	store := jobStore(t, bus)
	fx := traintest.New(t, 8)
	out := filepath.Join(fx.Dir, "out")
	startWorker(t, bus, "w-bus", train.Config{}) // no data dir
	rc := fx.RunConfig(t, out, 2, 4)
	rc.DataFiles, rc.Dataset, rc.DataDir = nil, "colours", ""
	j, err := train.Submit(ctx, bus, store, rc, "")
	if err != nil {
		t.Fatal(err)
	}
	end := watch(t, store, j.ID, 90*time.Second).wait(t)
	if end.Status != jobs.StatusCompleted {
		t.Fatalf("job ended %s: %+v", end.Status, end.Errors)
	}
	if tp := end.Training; tp == nil || tp.Step != 8 || tp.Worker != "w-bus" {
		t.Errorf("final progress %+v, want 8 steps (8 rows from the bus, 2 epochs, batch 2)", tp)
	}
	if l := traintest.StepLosses(t, out); len(l) != 8 {
		t.Errorf("logged %d steps, want 8", len(l))
	}
}
