package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/largeforge/largeforge/consumers/infer"
	trainjobs "github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/storage/modelstore"
)

// From upload to a chat completion against the fine-tuned model, with
// openai-go/v3: a chat file in OpenAI's format (one assistant message of
// weight 0) uploaded with purpose fine-tune, a supervised job on a model
// pushed to lf_models, trained by a train worker on the bus, succeeded with
// fine_tuned_model (pushed to lf_models as the job id, with the suffix), its
// step events listed; an infer worker serving every pushed model, started
// before the job, serves it without a restart and answers a chat completion
// through the gateway. Bad requests create nothing.
func TestFineTuningUploadToChat(t *testing.T) {
	s := newStack(t, gateway.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	pushBase(t, ctx, s, "tinybase")
	var lines []string
	for i, c := range []string{"red", "blue", "green", "gold"} {
		lines = append(lines, fmt.Sprintf(`{"messages":[{"role":"developer","content":"Answer in one word."},{"role":"user","content":"Colour %d?"},{"role":"assistant","content":"%s"}]}`, i, c))
	}
	lines = append(lines, `{"messages":[{"role":"user","content":"Colour?"},{"role":"assistant","content":"no","weight":0},{"role":"user","content":"Colour 0?"},{"role":"assistant","content":"red"}]}`)
	f, err := s.oai.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader(strings.Join(lines, "\n")+"\n"), "chat.jsonl", "application/jsonl"), Purpose: openai.FilePurposeFineTune})
	if err != nil {
		t.Fatal(err)
	}
	params := openai.FineTuningJobNewParams{Model: "tinybase", TrainingFile: f.ID, Suffix: openai.String("demo"),
		Method: openai.FineTuningJobNewParamsMethod{Type: "supervised", Supervised: openai.SupervisedMethodParam{Hyperparameters: openai.SupervisedHyperparameters{
			NEpochs: openai.SupervisedHyperparametersNEpochsUnion{OfInt: openai.Int(2)}, BatchSize: openai.SupervisedHyperparametersBatchSizeUnion{OfInt: openai.Int(2)}}}}}

	// Bad requests: an unknown model, a dpo job on chat data; nothing is created.
	var oe *openai.Error
	bad := params
	bad.Model = "nope"
	if _, err := s.oai.FineTuning.Jobs.New(ctx, bad); !errors.As(err, &oe) || oe.StatusCode != http.StatusBadRequest || oe.Param != "model" {
		t.Errorf("unknown model: %v", err)
	}
	bad = params
	bad.Method = openai.FineTuningJobNewParamsMethod{Type: "dpo"}
	if _, err := s.oai.FineTuning.Jobs.New(ctx, bad); !errors.As(err, &oe) || oe.StatusCode != http.StatusBadRequest || oe.Param != "training_file" {
		t.Errorf("dpo on chat data: %v", err)
	}
	if list, err := s.oai.FineTuning.Jobs.List(ctx, openai.FineTuningJobListParams{}); err != nil || len(list.Data) != 0 {
		t.Fatalf("bad requests created jobs: %+v, %v", list, err)
	}

	job, err := s.oai.FineTuning.Jobs.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(job.ID, "ftjob-demo-") || job.Status != "queued" || job.TrainingFile != f.ID {
		t.Fatalf("created %+v", job)
	}
	pctx, stopPushed := context.WithCancel(context.Background())
	pushed, err := infer.ServePushed(pctx, s.bus, infer.PushedConfig{All: true, Cache: t.TempDir(), Every: 50 * time.Millisecond},
		infer.Config{Slots: 1, HeartbeatEvery: time.Second, MaxWait: 100 * time.Millisecond, WorkerID: "pushed"}, pipelinetest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		stopPushed()
		if err := pushed.Wait(); err != nil {
			t.Errorf("pushed models: %v", err)
		}
	}()
	startTrainWorker(t, s)
	job = waitFineTuning(t, ctx, s, job.ID)
	if job.FineTunedModel != job.ID {
		t.Fatalf("fine_tuned_model %q, want the job id %s", job.FineTunedModel, job.ID)
	}
	evs, err := s.oai.FineTuning.Jobs.ListEvents(ctx, job.ID, openai.FineTuningJobListEventsParams{})
	if err != nil || len(evs.Data) == 0 || !strings.HasPrefix(evs.Data[0].Message, "Step ") {
		t.Errorf("events %+v, %v", evs, err)
	}
	// A checkpoint at the end of each epoch: 4 training records (one of
	// the 5 held out), batch 2, 2 epochs: steps 4 and 2, newest first.
	cps, err := s.oai.FineTuning.Jobs.Checkpoints.List(ctx, job.ID, openai.FineTuningJobCheckpointListParams{})
	if err != nil || len(cps.Data) != 2 || cps.Data[0].StepNumber != 4 || cps.Data[1].StepNumber != 2 {
		t.Fatalf("checkpoints %+v, %v; want steps 4 and 2, one per epoch", cps, err)
	}
	// Each checkpoint is a model pushed to lf_models: <job>-ckpt-step-<n>.
	ckpt := cps.Data[1].FineTunedModelCheckpoint
	if ckpt != job.ID+"-ckpt-step-2" || ckpt != trainjobs.CheckpointModel(job.ID, 2) {
		t.Errorf("fine_tuned_model_checkpoint %q, want %s-ckpt-step-2", ckpt, job.ID)
	}
	// result_files: the step metrics of the run, one row a step.
	if len(job.ResultFiles) != 1 {
		t.Fatalf("result_files %v", job.ResultFiles)
	}
	if body, err := s.oai.Files.Content(ctx, job.ResultFiles[0]); err != nil {
		t.Error(err)
	} else {
		csv, _ := io.ReadAll(body.Body)
		body.Body.Close()
		if rows := strings.Split(strings.TrimSpace(string(csv)), "\n"); len(rows) != 5 || rows[0] != "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy" || !strings.HasPrefix(rows[4], "4,") {
			t.Errorf("result file %q: want the header and steps 1 to 4", csv)
		}
	}

	// The worker serving every pushed model (started before the job) serves
	// the fine-tuned one and its first epoch's checkpoint without a
	// restart; chat with each.
	for _, name := range []string{job.FineTunedModel, ckpt} {
		pipelinetest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
			page, err := s.oai.Models.List(ctx)
			if err != nil {
				return err
			}
			for _, m := range page.Data {
				if m.ID == name {
					return nil
				}
			}
			return fmt.Errorf("%s not live yet", name)
		})
		resp, err := s.oai.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: name, MaxCompletionTokens: openai.Int(4), Temperature: openai.Float(0),
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Colour 1?")}})
		if err != nil || len(resp.Choices) != 1 || resp.Model != name || resp.Usage.CompletionTokens == 0 {
			t.Fatalf("chat with %s: %+v, %v", name, resp, err)
		}
	}
}

// runFineTuningAsAPI creates, reads and cancels a fine-tuning job with the
// api role's credential (admin pushes the base model): the job's message is
// on LF_TRAIN and the api connection met no permissions violation.
func runFineTuningAsAPI(t *testing.T, ctx context.Context, s *stack, gw, admin *pipeline.Bus, modelDir string) {
	ms, err := modelstore.New(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ms.Push(ctx, "base", modelDir); err != nil {
		t.Fatal(err)
	}
	code, body := s.rawUpload(t, ctx, `{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"}]}`+"\n", "fine-tune")
	var f gateway.FileObject
	if code != 200 || json.Unmarshal([]byte(body), &f) != nil {
		t.Fatalf("upload %d %s", code, body)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/v1/fine_tuning/jobs", strings.NewReader(`{"training_file":"`+f.ID+`","model":"base"}`))
	code, body = s.do(t, req)
	var j gateway.FineTuningJob
	if code != 200 || json.Unmarshal([]byte(body), &j) != nil {
		t.Fatalf("create %d %s", code, body)
	}
	for _, path := range []string{"", "/events", "/checkpoints"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/v1/fine_tuning/jobs/"+j.ID+path, nil)
		if code, body := s.do(t, req); code != 200 {
			t.Errorf("GET %s: %d %s", path, code, body)
		}
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/v1/fine_tuning/jobs/"+j.ID+"/cancel", nil)
	if code, body := s.do(t, req); code != 200 {
		t.Errorf("cancel: %d %s", code, body)
	}
	st, err := admin.JetStream().Stream(ctx, pipeline.StreamTrain)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetLastMsgForSubject(ctx, "lf.train."+j.ID); err != nil {
		t.Errorf("no LF_TRAIN message for %s: %v", j.ID, err)
	}
	if err := gw.Conn().LastError(); err != nil {
		t.Errorf("the api role's fine-tuning work raised %v", err)
	}
}
