package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	trainjobs "github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/consumers/train/traintest"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/storage"
	"github.com/largeforge/largeforge/storage/modelstore"
)

// startTrainWorker runs a train worker on the stack's bus until the test ends.
func startTrainWorker(t *testing.T, s *stack) {
	t.Helper()
	wctx, stop := context.WithCancel(context.Background())
	w, err := trainjobs.Start(wctx, s.bus, trainjobs.Config{WorkerID: "trainer", ModelCache: t.TempDir(), OutputRoot: t.TempDir(),
		ProgressEvery: 5 * time.Millisecond, MaxWait: 200 * time.Millisecond}, pipelinetest.Logger(t), nil)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop()
		if err := w.Wait(); err != nil {
			t.Errorf("train worker: %v", err)
		}
	})
}

// pushBase pushes the 2-layer fixture to lf_models as name.
func pushBase(t *testing.T, ctx context.Context, s *stack, name string) {
	t.Helper()
	ms, err := modelstore.New(ctx, s.bus)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ms.Push(ctx, name, traintest.New(t, 2).Base); err != nil {
		t.Fatal(err)
	}
}

// waitFineTuning polls a job until it succeeded (failing the test if it fails).
func waitFineTuning(t *testing.T, ctx context.Context, s *stack, id string) *openai.FineTuningJob {
	t.Helper()
	var job *openai.FineTuningJob
	pipelinetest.CheckFor(t, 90*time.Second, 100*time.Millisecond, func() error {
		var err error
		if job, err = s.oai.FineTuning.Jobs.Get(ctx, id); err != nil {
			return err
		}
		if job.Status == "failed" {
			t.Fatalf("job failed: %+v", job.Error)
		}
		if job.Status != "succeeded" {
			return fmt.Errorf("job %s", job.Status)
		}
		return nil
	})
	return job
}

func chatLines(n int, format string) []string {
	var lines []string
	for i := range n {
		lines = append(lines, fmt.Sprintf(`{"messages":[{"role":"user","content":"`+format+`?"},{"role":"assistant","content":"`+format+`"}]}`, i, i))
	}
	return lines
}

// A validation_file is checked as the training file is (a missing file, one
// of another purpose, a bad line, a dpo job's: a 400 naming
// validation_file, nothing created), stored as the job's eval dataset, and
// the trainer evaluates on it: every training record is trained on (3
// records, batch 1: 3 steps, none held out) and the job's events hold the
// validation loss of its last step.
func TestFineTuningValidationFile(t *testing.T) {
	s := newStack(t, gateway.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	pushBase(t, ctx, s, "tinybase")
	trainFile := s.upload(t, ctx, chatLines(3, "Colour %d"), openai.FilePurposeFineTune)
	valid := s.upload(t, ctx, chatLines(2, "Shade %d"), openai.FilePurposeFineTune)
	batchFile := s.upload(t, ctx, []string{`{"custom_id":"a","method":"POST","url":"/v1/completions","body":{"model":"m","prompt":"x"}}`}, openai.FilePurposeBatch)
	badLine := s.upload(t, ctx, []string{`{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Yo"}]}`, `{"nope":1}`}, openai.FilePurposeFineTune)
	params := func(validation string, method string) openai.FineTuningJobNewParams {
		return openai.FineTuningJobNewParams{Model: "tinybase", TrainingFile: trainFile.ID, ValidationFile: openai.String(validation),
			Method: openai.FineTuningJobNewParamsMethod{Type: method, Supervised: openai.SupervisedMethodParam{Hyperparameters: openai.SupervisedHyperparameters{
				NEpochs: openai.SupervisedHyperparametersNEpochsUnion{OfInt: openai.Int(1)}, BatchSize: openai.SupervisedHyperparametersBatchSizeUnion{OfInt: openai.Int(1)}}}}}
	}
	for _, c := range []struct {
		name string
		p    openai.FineTuningJobNewParams
	}{
		{"missing", params("file-nope", "supervised")},
		{"purpose batch", params(batchFile.ID, "supervised")},
		{"bad line", params(badLine.ID, "supervised")},
		{"dpo", openai.FineTuningJobNewParams{Model: "tinybase", TrainingFile: trainFile.ID, ValidationFile: openai.String(valid.ID), Method: openai.FineTuningJobNewParamsMethod{Type: "dpo"}}},
	} {
		var oe *openai.Error
		if _, err := s.oai.FineTuning.Jobs.New(ctx, c.p); !errors.As(err, &oe) || oe.StatusCode != http.StatusBadRequest || oe.Param != "validation_file" {
			t.Errorf("%s: %v, want a 400 naming validation_file", c.name, err)
		}
	}
	if list, err := s.oai.FineTuning.Jobs.List(ctx, openai.FineTuningJobListParams{}); err != nil || len(list.Data) != 0 {
		t.Fatalf("bad requests created jobs: %+v, %v", list, err)
	}
	arts, err := s.bus.Objects(ctx, pipeline.BucketArtifacts)
	if err != nil {
		t.Fatal(err)
	}
	if infos, err := arts.List(ctx); err != nil {
		t.Fatal(err)
	} else {
		for _, in := range infos {
			if strings.HasPrefix(in.Name, storage.KindDatasets+"/") {
				t.Errorf("a bad request stored %s", in.Name)
			}
		}
	}

	p := params(valid.ID, "supervised")
	p.Metadata = map[string]string{"team": "colours"}
	job, err := s.oai.FineTuning.Jobs.New(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	// The job echoes what it runs with: "auto" resolved, the default seed.
	hp := job.Method.Supervised.Hyperparameters
	if job.ValidationFile != valid.ID || job.Method.Type != "supervised" || hp.NEpochs.OfInt != 1 || hp.BatchSize.OfInt != 1 ||
		hp.LearningRateMultiplier.OfFloat != 1 || job.Hyperparameters.NEpochs.OfInt != 1 || job.Seed != 42 || job.Metadata["team"] != "colours" {
		t.Errorf("created job does not echo its request: %s", job.RawJSON())
	}
	dpo := s.upload(t, ctx, []string{`{"prompt":"Colour?","chosen":"red","rejected":"no"}`}, openai.FilePurposeFineTune)
	dj, err := s.oai.FineTuning.Jobs.New(ctx, openai.FineTuningJobNewParams{Model: "tinybase", TrainingFile: dpo.ID, Seed: openai.Int(7),
		Method: openai.FineTuningJobNewParamsMethod{Type: "dpo", Dpo: openai.DpoMethodParam{Hyperparameters: openai.DpoHyperparameters{
			Beta: openai.DpoHyperparametersBetaUnion{OfFloat: openai.Float(0.25)}, LearningRateMultiplier: openai.DpoHyperparametersLearningRateMultiplierUnion{OfFloat: openai.Float(2)}}}}})
	if err != nil {
		t.Fatal(err)
	}
	dhp := dj.Method.Dpo.Hyperparameters
	if dj.Method.Type != "dpo" || dhp.Beta.OfFloat != 0.25 || dhp.LearningRateMultiplier.OfFloat != 2 || dhp.NEpochs.OfInt != 3 || dhp.BatchSize.OfInt < 1 || dj.Seed != 7 {
		t.Errorf("dpo job does not echo its request: %s", dj.RawJSON())
	}
	if _, err := s.oai.FineTuning.Jobs.Cancel(ctx, dj.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := arts.Info(ctx, storage.Dataset(job.ID+gateway.ValidationSuffix)+storage.DatasetPartName(0)); err != nil {
		t.Errorf("the eval dataset's part: %v", err)
	}
	startTrainWorker(t, s)
	job = waitFineTuning(t, ctx, s, job.ID)
	if job.FinishedAt == 0 || job.Error.Code != "" || job.TrainedTokens <= 0 {
		t.Errorf("succeeded job: %s", job.RawJSON())
	}
	pipelinetest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if dj, err = s.oai.FineTuning.Jobs.Get(ctx, dj.ID); err != nil || dj.Status != "cancelled" || dj.FinishedAt == 0 {
			return fmt.Errorf("cancelled dpo job: %v %s", err, dj.RawJSON())
		}
		return nil
	})
	evs, err := s.oai.FineTuning.Jobs.ListEvents(ctx, job.ID, openai.FineTuningJobListEventsParams{Limit: openai.Int(100)})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, e := range evs.Data {
		msgs = append(msgs, e.Message)
	}
	got := strings.Join(msgs, "\n")
	if !strings.Contains(got, "Step 3/3: validation loss=") || !strings.Contains(got, "Step 3/3: training loss=") {
		t.Errorf("events, want 3 steps (no record held out) and the validation loss of step 3:\n%s", got)
	}
}
