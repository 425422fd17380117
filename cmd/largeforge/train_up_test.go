package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/consumers/resultsink"
	"github.com/largeforge/largeforge/consumers/train/traintest"
	"github.com/largeforge/largeforge/dataset"
	"github.com/largeforge/largeforge/jobs"
	mtrain "github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
)

// TestTrainingJobUnderUp: a training job submitted from another working
// directory names an ingested dataset; up's train worker reads it under
// up's data directory (not ./lf-data of the submitter). A sweep of the
// results sink, driven while the job trains, leaves the job alone; `jobs
// wait` ends with every step done and the model is in output_dir.
func TestTrainingJobUnderUp(t *testing.T) {
	fx := traintest.New(t, 8)
	e, bus := pipelinetest.StartBus(t)
	dataDir := t.TempDir()
	recs, err := mtrain.LoadRecords([]string{fx.Data}, "")
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(recs))
	for i := range ids {
		ids[i] = fmt.Sprintf("r%d", i)
	}
	if err := os.MkdirAll(filepath.Join(dataDir, "datasets", "chat"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := dataset.WritePart(filepath.Join(dataDir, "datasets", "chat", "part-00000.parquet"), schemas.FormatShareGPT, recs, ids, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	jw, err := startJobWorkers(ctx, bus, dataDir, nil, pipelinetest.Logger(t), prometheus.NewRegistry())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := jw.Wait(); err != nil {
			t.Errorf("job workers: %v", err)
		}
	})
	store, err := jobs.Open(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}

	t.Chdir(t.TempDir()) // no lf-data here
	const epochs, steps = 25, 100
	out := filepath.Join(fx.Dir, "out")
	yaml := strings.Replace(fx.YAML(out, epochs, 1000), "data_files: ["+fx.Data+"]", "dataset: chat", 1)
	if !strings.Contains(yaml, "dataset: chat") {
		t.Fatalf("train.yaml without the dataset:\n%s", yaml)
	}
	cfgPath := filepath.Join(fx.Dir, "train.yaml")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	nats := "--nats=" + e.ClientURL()
	tctx, tcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer tcancel()
	o, err := runCLI(t, tctx, nats, "--log-level=error", "train", "--config", cfgPath, "--submit")
	if err != nil {
		t.Fatalf("train --submit: %v\n%s", err, o)
	}
	id := strings.TrimSpace(o)

	// The sweep of every job, while the job trains.
	var running jobs.Job
	pipelinetest.CheckFor(t, time.Minute, 5*time.Millisecond, func() error {
		var err error
		if running, err = store.Get(tctx, id); err != nil {
			return err
		}
		if running.Status.Terminal() {
			return nil
		}
		if running.Training == nil || running.Training.Step == 0 {
			return errors.New("no step yet")
		}
		return nil
	})
	if running.Status != jobs.StatusInProgress {
		t.Fatalf("job %s before the sweep: %+v", running.Status, running.Errors)
	}
	if err := jw.Role(RoleResults).(*resultsink.Workers).Sink.Sweep(tctx, true); err != nil {
		t.Fatal(err)
	}
	if j, err := store.Get(tctx, id); err != nil || (j.Status != jobs.StatusInProgress && j.Training.Step < steps) {
		t.Errorf("after the sweep: job %s at step %d of %d, %v", j.Status, j.Training.Step, steps, err)
	}

	o, err = runCLI(t, tctx, nats, "jobs", "wait", id, "--progress", "off")
	if err != nil {
		t.Fatalf("jobs wait: %v\n%s", err, o)
	}
	if want := fmt.Sprintf("step %d/%d", steps, steps); !strings.Contains(o, want) {
		t.Errorf("jobs wait printed %q, want %q", o, want)
	}
	end, err := store.Get(tctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if end.Status != jobs.StatusCompleted || end.Training.Step != steps || end.Outputs != (jobs.Outputs{}) {
		t.Errorf("job ended %s at step %d with outputs %+v; errors %+v", end.Status, end.Training.Step, end.Outputs, end.Errors)
	}
	if _, err := os.Stat(filepath.Join(out, "model.safetensors")); err != nil {
		t.Errorf("no model in output_dir: %v", err)
	}
}
