package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	ctrain "github.com/largeforge/largeforge/consumers/train"
	"github.com/largeforge/largeforge/consumers/train/traintest"
	"github.com/largeforge/largeforge/jobs"
	"github.com/largeforge/largeforge/model/checkpoint"
	mtrain "github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/producers/gateway"
	"github.com/largeforge/largeforge/storage/modelstore"
)

// TestLoRAJobServedByName: a LoRA training job, submitted as submit (train
// --submit) and run by a train worker on the train credential, pushes the
// base with its adapter merged in under the job id and the PEFT adapter
// under <job>-adapter; the job record names both. An infer worker started
// on the infer credential with `worker --model <job id>` serves it through
// the gateway, the pushed model equals `adapters merge` of the pulled
// adapter into the base, and the pulled adapter has its adapter_config.json,
// weights and README.md model card.
func TestLoRAJobServedByName(t *testing.T) {
	if testing.Short() {
		t.Skip("trains, then serves the trained model")
	}
	_, e, admin, ctx := tinyOnRoles(t)
	log := pipelinetest.Logger(t)
	fx := traintest.New(t, 8)
	cfgPath := filepath.Join(fx.Dir, "lora.yaml")
	yaml := fx.YAML(filepath.Join(fx.Dir, "submitted"), 2, 1000) + "lora:\n  r: 4\n  lora_alpha: 8\n  target_modules: [q_proj, v_proj]\n"
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	as := func(ctx context.Context, role string, args ...string) (string, error) {
		return runCLIAs(t, ctx, e, role, args...)
	}

	trainBus := pipelinetest.ConnectRole(t, e, "train", log)
	wctx, wstop := context.WithCancel(ctx)
	tw, err := ctrain.Start(wctx, trainBus, ctrain.Config{WorkerID: "t", OutputRoot: filepath.Join(fx.Dir, "worker"),
		DataDir: filepath.Join(fx.Dir, "worker-data")}, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wstop(); _ = tw.Wait() })
	out, err := as(ctx, "submit", "train", "--config", cfgPath, "--submit")
	if err != nil {
		t.Fatalf("train --submit: %v\n%s", err, out)
	}
	id := strings.TrimSpace(out)
	store, err := jobs.Open(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	j := waitJobEnd(t, ctx, store, id, 90*time.Second, nil)
	if j.Status != jobs.StatusCompleted {
		t.Fatalf("job %s ended %s: %+v", id, j.Status, j.Errors)
	}
	tp := j.Training
	if tp.FineTunedModel != id || tp.FineTunedAdapter != id+ctrain.AdapterSuffix || tp.FineTunedDigest == "" {
		t.Fatalf("progress %+v: want the merged model as %s, the adapter as %s-adapter", tp, id, id)
	}

	// The adapter, pulled on another machine, is the PEFT adapter with its
	// model card.
	ms, err := modelstore.New(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	adapter := filepath.Join(t.TempDir(), "adapter")
	if _, err := ms.Pull(ctx, tp.FineTunedAdapter, adapter); err != nil {
		t.Fatalf("pull %s: %v", tp.FineTunedAdapter, err)
	}
	for _, f := range []string{mtrain.AdapterConfigFile, mtrain.AdapterWeightsFile, "README.md"} {
		if _, err := os.Stat(filepath.Join(adapter, f)); err != nil {
			t.Errorf("the pulled adapter has no %s: %v", f, err)
		}
	}
	var peft map[string]any
	if data, err := os.ReadFile(filepath.Join(adapter, mtrain.AdapterConfigFile)); err != nil || json.Unmarshal(data, &peft) != nil || peft["peft_type"] != "LORA" {
		t.Errorf("adapter_config.json: %v %v", peft, err)
	}
	if _, err := os.Stat(filepath.Join(adapter, checkpoint.ConfigFile)); err == nil {
		t.Errorf("the adapter holds a full model's %s", checkpoint.ConfigFile)
	}

	// The model pushed as the job id is adapters merge of that adapter.
	pulled := filepath.Join(t.TempDir(), "merged")
	if digest, err := ms.Pull(ctx, id, pulled); err != nil || digest != tp.FineTunedDigest {
		t.Fatalf("pull %s: %s %v, want %s", id, digest, err, tp.FineTunedDigest)
	}
	local := filepath.Join(t.TempDir(), "local")
	if out, err := runCLI(t, ctx, "adapters", "merge", "--base", fx.Base, "--adapter", adapter, "--output", local); err != nil {
		t.Fatalf("adapters merge: %v\n%s", err, out)
	}
	traintest.SameWeights(t, local, pulled, 0)

	// An infer worker serves it by name.
	ictx, istop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := as(ictx, "infer", "worker", "--model", id, "--model-cache", t.TempDir())
		done <- err
	}()
	t.Cleanup(func() {
		istop()
		if err := <-done; err != nil {
			t.Errorf("infer worker: %v", err)
		}
	})
	waitLive(t, admin, id, 60*time.Second)
	reg := prometheus.NewRegistry()
	g, err := gateway.New(ctx, admin, gateway.Config{}, log, reg, reg)
	if err != nil {
		t.Fatal(err)
	}
	url := serveGateway(t, ctx, g)
	status, resp, bad := completion(t, url, map[string]any{"model": id, "prompt": "Colour 1?", "max_tokens": 4, "temperature": 0})
	if status != 200 || len(resp.Choices) != 1 || resp.Model != id {
		t.Fatalf("completion of %s: %d %+v %+v", id, status, resp, bad)
	}
}
