package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
)

const dlqTrainJobJSON = `{"job":"JOB","run":{"method":"sft","base_model":"/b","dataset":"","data_dir":"","data_files":["/d"],` +
	`"format":"","max_seq_length":64,"seed":42,"resume":false,"eval_split":0.1,"beta":0.1,"packing":false,"prompt_template":""},` +
	`"training":{"model_name":"/b","output_dir":"/o","num_epochs":1,"per_device_batch_size":1,"gradient_accumulation_steps":1,` +
	`"learning_rate":0.001,"weight_decay":0,"warmup_ratio":0,"max_grad_norm":1,"fp16":false,"bf16":true,"optim":"adamw_torch",` +
	`"lr_scheduler_type":"cosine","save_steps":1,"save_total_limit":0,"logging_steps":1,"eval_steps":1}}`

// dlq ls/show/replay/purge: an ingest reject that passes validation now is
// published to its dataset's raw subject and leaves the DLQ; one still
// invalid and one whose dataset is gone stay; a dead-lettered training job
// is reopened and queued again; purge removes the rest.
func TestDLQCommands(t *testing.T) {
	e, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	kv, err := bus.KV(ctx, pipeline.BucketDatasets)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "ds1", []byte(`{"name":"ds1","format":"alpaca"}`)); err != nil {
		t.Fatal(err)
	}
	reject := func(ds, data string) {
		t.Helper()
		if err := bus.PublishDLQ(ctx, "ingest", ds, pipeline.DLQRecord{Reason: "cannot tell the format", Subject: "lf.data." + ds + ".raw", Data: []byte(data)}, ""); err != nil {
			t.Fatal(err)
		}
	}
	reject("ds1", `{"instruction":"a","output":"b"}`)  // 1: valid as alpaca
	reject("ds1", `{"instruction":""}`)                // 2: still invalid
	reject("gone", `{"instruction":"a","output":"b"}`) // 3: no such dataset
	store, err := jobs.Open(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	j, err := store.Create(ctx, jobs.Spec{Model: "m", Kind: jobs.KindTraining})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Fail(ctx, j.ID, jobs.ErrorReport{Code: "dead_letter", Message: "out of deliveries"}); err != nil {
		t.Fatal(err)
	}
	body := strings.ReplaceAll(dlqTrainJobJSON, "JOB", j.ID)
	if err := bus.PublishDLQ(ctx, "train", j.ID, pipeline.DLQRecord{Reason: "training failed", Subject: "lf.train." + j.ID, Data: []byte(body)}, ""); err != nil {
		t.Fatal(err) // 4
	}
	nats := []string{"--nats", e.ClientURL()}
	out, err := runCLI(t, ctx, append([]string{"dlq", "ls"}, nats...)...)
	if err != nil || !strings.Contains(out, "lf.dlq.ingest.gone") || !strings.Contains(out, "lf.dlq.train."+j.ID) {
		t.Fatalf("ls: %v\n%s", err, out)
	}
	out, err = runCLI(t, ctx, append([]string{"dlq", "show", "2"}, nats...)...)
	if err != nil || !strings.Contains(out, `"data_text": "{\"instruction\":\"\"}"`) {
		t.Fatalf("show: %v\n%s", err, out)
	}
	out, err = runCLI(t, ctx, append([]string{"dlq", "replay", "--stage", "ingest"}, nats...)...)
	if !errors.Is(err, ErrStaysInDLQ) || !strings.Contains(out, "1 replayed") || !strings.Contains(out, "2 stays: still invalid as alpaca") ||
		!strings.Contains(out, "3 stays: dataset gone no longer exists") {
		t.Fatalf("replay ingest: %v\n%s", err, out)
	}
	raw, err := bus.Tail(ctx, pipeline.StreamDatasets, "lf.data.ds1.raw", 10)
	if err != nil || len(raw) != 1 || string(raw[0].Data) != `{"instruction":"a","output":"b"}` {
		t.Fatalf("raw after replay: %+v, %v", raw, err)
	}
	out, err = runCLI(t, ctx, append([]string{"dlq", "replay", "4"}, nats...)...)
	if err != nil || !strings.Contains(out, "4 replayed") {
		t.Fatalf("replay train: %v\n%s", err, out)
	}
	if got, err := store.Get(ctx, j.ID); err != nil || got.Status != jobs.StatusValidating {
		t.Fatalf("training job after replay: %+v, %v", got, err)
	}
	ts, err := bus.JetStream().Stream(ctx, pipeline.StreamTrain)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := ts.Info(ctx, jetstream.WithSubjectFilter("lf.train."+j.ID)); err != nil || info.State.Subjects["lf.train."+j.ID] != 1 {
		t.Fatalf("queued attempts: %+v, %v", info, err)
	}
	// Replayed again (it is gone from the DLQ): nothing happens twice.
	if out, err = runCLI(t, ctx, append([]string{"dlq", "replay", "4"}, nats...)...); !errors.Is(err, ErrStaysInDLQ) {
		t.Fatalf("second replay: %v\n%s", err, out)
	}
	left := pipelinetest.DLQRecords(t, bus, "lf.dlq.>")
	if len(left) != 2 {
		t.Fatalf("%d dead letters left, want the 2 that stayed: %+v", len(left), left)
	}
	out, err = runCLI(t, ctx, append([]string{"dlq", "purge", "--stage", "ingest"}, nats...)...)
	if err != nil || !strings.Contains(out, "purged 2") {
		t.Fatalf("purge: %v\n%s", err, out)
	}
	if left := pipelinetest.DLQRecords(t, bus, "lf.dlq.>"); len(left) != 0 {
		t.Fatalf("after purge: %+v", left)
	}
}
