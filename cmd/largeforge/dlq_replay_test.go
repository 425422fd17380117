package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/largeforge/largeforge/consumers/resultsink"
	"github.com/largeforge/largeforge/internal/testenv"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
)

// A failed request of a completed job replayed with dlq replay: the job is
// reopened by compare-and-set, the request runs again on the model's infer
// worker, and the results sink lets its row replace the error row and
// nothing else: counts 2 completed, 0 failed, errors.jsonl empty, both
// custom_ids once in output.jsonl, the job completed again.
func TestDLQReplayFailedRequest(t *testing.T) {
	dir := filepath.Dir(testenv.SharedFile(t, "models/stories260K/model.safetensors"))
	e, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithCancel(context.Background())
	jw, err := startJobWorkers(ctx, bus, t.TempDir(), map[string]string{"stories": dir}, pipelinetest.Logger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := jw.Wait(); err != nil {
			t.Errorf("job workers: %v", err)
		}
	})
	tctx, tcancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer tcancel()
	store, err := jobs.Open(tctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	j, err := store.Create(tctx, jobs.Spec{Model: "stories"})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.PutIDs(tctx, j.ID, 0, []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Transition(tctx, j.ID, jobs.StatusInProgress, func(jj *jobs.Job) { jj.RequestCounts.Total = 2 }); err != nil {
		t.Fatal(err)
	}
	request := func(id string, line int) []byte {
		c := schemas.DefaultCompletionRequest()
		c.Model, c.Prompt, c.MaxTokens, c.Temperature = "stories", "Once upon a time", 8, 0
		data, err := json.Marshal(schemas.Request{Job: j.ID, CustomID: id, Kind: schemas.KindCompletion, Model: "stories", Line: line, Completion: &c})
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	subj := fmt.Sprintf("lf.req.%s.stories", j.ID)
	if _, err := bus.Publish(tctx, subj, request("a", 1), schemas.MsgID(j.ID, "a"), nil); err != nil {
		t.Fatal(err)
	}
	// b was dead-lettered by its worker (as after its last delivery).
	if err := bus.PublishDLQ(tctx, "infer", j.ID, pipeline.DLQRecord{Reason: "worker died", Subject: subj, Data: request("b", 2), Deliveries: 5}, ""); err != nil {
		t.Fatal(err)
	}
	waitJob := func(completed, failed int) jobs.Job {
		t.Helper()
		var got jobs.Job
		pipelinetest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
			if got, err = store.Get(tctx, j.ID); err != nil {
				return err
			}
			if got.Status != jobs.StatusCompleted || got.RequestCounts.Completed != completed || got.RequestCounts.Failed != failed {
				return fmt.Errorf("job %s %+v", got.Status, got.RequestCounts)
			}
			return nil
		})
		return got
	}
	first := waitJob(1, 1)
	errLines, err := resultsink.ReadOutput(filepath.Join(first.Outputs.LocalDir, resultsink.FileErrors))
	if err != nil || len(errLines) != 1 || errLines[0].CustomID != "b" {
		t.Fatalf("errors.jsonl before the replay: %+v, %v", errLines, err)
	}
	out, err := runCLI(t, tctx, "dlq", "replay", "--stage", "infer", "--nats", e.ClientURL())
	if err != nil || !strings.Contains(out, "replayed (lf.dlq.infer."+j.ID+")") {
		t.Fatalf("replay: %v\n%s", err, out)
	}
	again := waitJob(2, 0)
	if !slices.Equal(again.Replaced, []string{"b"}) || len(again.Replaying) != 0 {
		t.Fatalf("replayed job %+v", again)
	}
	errLines, err = resultsink.ReadOutput(filepath.Join(again.Outputs.LocalDir, resultsink.FileErrors))
	if err != nil || len(errLines) != 0 {
		t.Fatalf("errors.jsonl after the replay: %+v, %v", errLines, err)
	}
	lines, err := resultsink.ReadOutput(filepath.Join(again.Outputs.LocalDir, resultsink.FileOutput))
	if err != nil || len(lines) != 2 || lines[0].CustomID == lines[1].CustomID || lines[0].Error != nil || lines[1].Error != nil {
		t.Fatalf("output.jsonl after the replay: %+v, %v", lines, err)
	}
	if left := pipelinetest.DLQRecords(t, bus, "lf.dlq.infer.>"); len(left) != 0 {
		t.Fatalf("dead letters left: %+v", left)
	}
}
