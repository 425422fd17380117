package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/schemas"
)

// The Fine-tuning API reads the bus training jobs, driven with openai-go/v3:
// a job's fine_tuning.job with OpenAI's statuses, the list, its events from
// LF_EVENTS (newest first), its stored checkpoints, cancel, and
// fine_tuned_model once it succeeded; an unknown or non-training id is 404.
func TestFineTuningJobsAPI(t *testing.T) {
	s := newStack(t, gateway.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	store, err := jobs.Open(ctx, s.bus)
	if err != nil {
		t.Fatal(err)
	}
	create := func() string {
		id := jobs.NewTrainingID()
		if _, err := store.Create(ctx, jobs.Spec{ID: id, Kind: jobs.KindTraining, Model: "out", InputFile: "file-abc"}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	done, running := create(), create()

	j, err := s.oai.FineTuning.Jobs.Get(ctx, done)
	if err != nil || j.Status != "queued" || j.TrainingFile != "file-abc" || j.Object != "fine_tuning.job" || j.FineTunedModel != "" {
		t.Fatalf("queued job: %+v, %v", j, err)
	}
	subj, _ := pipeline.TrainEventSubject(done)
	for step := 1; step <= 3; step++ {
		data, _ := json.Marshal(schemas.TrainEvent{Job: done, Kind: schemas.TrainEventStep, GlobalStep: step, MaxSteps: 3, Loss: 2.0 / float64(step), Time: time.Now().UnixMilli()})
		if _, err := s.bus.Publish(ctx, subj, data, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	evalLoss, acc := 0.75, 0.5
	data, _ := json.Marshal(schemas.TrainEvent{Job: done, Kind: schemas.TrainEventEval, GlobalStep: 2, MaxSteps: 3, EvalLoss: &evalLoss, Accuracy: &acc, Time: time.Now().UnixMilli()})
	if _, err := s.bus.Publish(ctx, subj, data, "", nil); err != nil {
		t.Fatal(err)
	}
	arts, err := s.bus.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"train/" + done + "/checkpoint-2.json", "train/" + done + "/checkpoint-2/model.safetensors", "train/" + running + "/checkpoint-9.json"} {
		if _, err := arts.Put(ctx, key, strings.NewReader("{}")); err != nil {
			t.Fatal(err)
		}
	}
	// The final trainer state, whose log_history the result file renders.
	state := `{"num_input_tokens_seen":40,"log_history":[{"step":1,"loss":2},{"step":2,"loss":1},{"step":2,"eval_loss":0.75,"accuracy":0.5},` +
		`{"step":3,"loss":0.6667},{"step":3,"train_loss":1.2,"train_runtime":1}]}`
	if _, err := arts.Put(ctx, "train/"+done+"/final/trainer_state.json", strings.NewReader(state)); err != nil {
		t.Fatal(err)
	}
	for _, st := range []jobs.Status{jobs.StatusInProgress, jobs.StatusFinalizing} {
		if _, err := store.Transition(ctx, done, st, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := store.Transition(ctx, done, jobs.StatusCompleted, func(j *jobs.Job) {
		j.Training = &jobs.TrainingProgress{FineTunedModel: done}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Transition(ctx, running, jobs.StatusInProgress, nil); err != nil {
		t.Fatal(err)
	}

	j, err = s.oai.FineTuning.Jobs.Get(ctx, done)
	if err != nil || j.Status != "succeeded" || j.FineTunedModel != done || j.FinishedAt == 0 {
		t.Errorf("completed job: %+v, %v", j, err)
	}
	// result_files: the step metrics CSV, a file of purpose fine-tune-results.
	if len(j.ResultFiles) != 1 || j.TrainedTokens != 40 {
		t.Fatalf("result_files %v, trained_tokens %d", j.ResultFiles, j.TrainedTokens)
	}
	rf, err := s.oai.Files.Get(ctx, j.ResultFiles[0])
	if err != nil || rf.Purpose != "fine-tune-results" || rf.Filename != "step_metrics.csv" {
		t.Errorf("result file %+v, %v", rf, err)
	}
	if body, err := s.oai.Files.Content(ctx, j.ResultFiles[0]); err != nil {
		t.Error(err)
	} else {
		csv, _ := io.ReadAll(body.Body)
		body.Body.Close()
		if want := "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n1,2,,,\n2,1,,0.75,0.5\n3,0.6667,,,\n"; string(csv) != want {
			t.Errorf("result file content %q, want %q", csv, want)
		}
	}
	if again, err := s.oai.FineTuning.Jobs.Get(ctx, done); err != nil || len(again.ResultFiles) != 1 || again.ResultFiles[0] != j.ResultFiles[0] {
		t.Errorf("result_files read again: %+v, %v", again, err)
	}
	// integrations and metadata are there, null, as OpenAI sends them.
	if raw := j.RawJSON(); !strings.Contains(raw, `"integrations":null`) || !strings.Contains(raw, `"metadata":null`) {
		t.Errorf("job %s, want integrations and metadata null", raw)
	}
	// Event ids are unique across jobs: ftevent-<job hash>-<n>.
	rsubj, _ := pipeline.TrainEventSubject(running)
	rdata, _ := json.Marshal(schemas.TrainEvent{Job: running, Kind: schemas.TrainEventStep, GlobalStep: 1, MaxSteps: 9, Loss: 1, Time: time.Now().UnixMilli()})
	if _, err := s.bus.Publish(ctx, rsubj, rdata, "", nil); err != nil {
		t.Fatal(err)
	}
	revs, err := s.oai.FineTuning.Jobs.ListEvents(ctx, running, openai.FineTuningJobListEventsParams{})
	devs, derr := s.oai.FineTuning.Jobs.ListEvents(ctx, done, openai.FineTuningJobListEventsParams{})
	if err != nil || derr != nil || len(revs.Data) != 1 || len(devs.Data) != 4 {
		t.Fatalf("events %+v %+v: %v %v", revs, devs, err, derr)
	}
	rparts := strings.Split(revs.Data[0].ID, "-")
	for _, e := range devs.Data {
		if p := strings.Split(e.ID, "-"); len(p) != 3 || len(rparts) != 3 || p[0] != "ftevent" || p[1] == rparts[1] {
			t.Errorf("event id %s of %s and %s of %s: want ftevent-<job hash>-<n>, the hashes differing", e.ID, done, revs.Data[0].ID, running)
		}
	}
	evs, err := s.oai.FineTuning.Jobs.ListEvents(ctx, done, openai.FineTuningJobListEventsParams{Limit: openai.Int(2)})
	if err != nil || len(evs.Data) != 2 || !evs.HasMore || evs.Data[0].Message != "Step 2/3: validation loss=0.7500" || evs.Data[1].Message != "Step 3/3: training loss=0.6667" {
		t.Errorf("events: %+v, %v", evs, err)
	}
	cps, err := s.oai.FineTuning.Jobs.Checkpoints.List(ctx, done, openai.FineTuningJobCheckpointListParams{})
	if err != nil || len(cps.Data) != 1 || cps.Data[0].StepNumber != 2 || cps.Data[0].FineTuningJobID != done || cps.Data[0].FineTunedModelCheckpoint != done+"-ckpt-step-2" {
		t.Fatalf("checkpoints: %+v, %v", cps, err)
	}
	// A checkpoint's metrics are its step's events: the step's training
	// loss, the validation loss and accuracy of its evaluation.
	if m := cps.Data[0].Metrics; m.Step != 2 || m.TrainLoss != 1 || m.ValidLoss != 0.75 || m.ValidMeanTokenAccuracy != 0.5 {
		t.Errorf("checkpoint metrics %s", m.RawJSON())
	}
	list, err := s.oai.FineTuning.Jobs.List(ctx, openai.FineTuningJobListParams{})
	if err != nil || len(list.Data) != 2 {
		t.Errorf("list: %+v, %v", list, err)
	}
	c, err := s.oai.FineTuning.Jobs.Cancel(ctx, running)
	if err != nil || c.Status != "running" {
		t.Errorf("cancel: %+v, %v", c, err)
	}
	if rec, _ := store.Get(ctx, running); rec.Status != jobs.StatusCancelling {
		t.Errorf("cancelled job's record is %s, want cancelling", rec.Status)
	}
	failed := create()
	if _, err := store.Fail(ctx, failed, jobs.ErrorReport{Code: "invalid_config", Message: "no records"}); err != nil {
		t.Fatal(err)
	}
	if j, err := s.oai.FineTuning.Jobs.Get(ctx, failed); err != nil || j.Status != "failed" || j.Error.Code != "invalid_config" || j.Error.Message != "no records" || j.FinishedAt == 0 {
		t.Errorf("failed job: %v %s", err, j.RawJSON())
	}
	var oe *openai.Error
	if _, err := s.oai.FineTuning.Jobs.Cancel(ctx, done); !errors.As(err, &oe) || oe.StatusCode != http.StatusBadRequest {
		t.Errorf("cancel a succeeded job: %v, want 400", err)
	}
	if _, err := s.oai.FineTuning.Jobs.Get(ctx, "train_nope"); !errors.As(err, &oe) || oe.StatusCode != http.StatusNotFound {
		t.Errorf("unknown job: %v, want 404", err)
	}
}
