package infer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/largeforge/largeforge/consumers/infer"
	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/model/train"
	"github.com/largeforge/largeforge/pipeline"
	"github.com/largeforge/largeforge/pipeline/pipelinetest"
	"github.com/largeforge/largeforge/schemas"
)

// loraAdapter trains a LoRA adapter for a few steps on a fresh tiny model
// and returns the base and adapter directories.
func loraAdapter(t *testing.T) (base, adapter string) {
	t.Helper()
	dir := t.TempDir()
	base, adapter = filepath.Join(dir, "base"), filepath.Join(dir, "adapter")
	if err := checkpoint.Init("tiny", 3, base); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "chat.jsonl")
	var rows []byte
	for i := range 8 {
		rows = fmt.Appendf(rows, `{"conversations":[{"from":"human","value":"Colour %d?"},{"from":"gpt","value":"%s"}]}`+"\n", i%4, []string{"red", "blue", "green", "gold"}[i%4])
	}
	if err := os.WriteFile(data, rows, 0o644); err != nil {
		t.Fatal(err)
	}
	rc, err := train.ParseRunConfig(fmt.Appendf(nil, `base_model: %s
data_files: [%s]
max_seq_length: 64
output_dir: %s
num_epochs: 2
per_device_batch_size: 4
gradient_accumulation_steps: 1
learning_rate: 0.05
warmup_ratio: 0
save_steps: 1000
bf16: false
lora:
  r: 4
  lora_alpha: 8
`, base, data, adapter))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := train.Run(context.Background(), rc, pipelinetest.Logger(t)); err != nil {
		t.Fatal(err)
	}
	return base, adapter
}

// TestServeBaseWithAdapter: a worker serving base+adapter under "tuned"
// answers, greedily, exactly as one serving the merged checkpoint (the
// output of `adapters merge`), and unlike the base alone.
func TestServeBaseWithAdapter(t *testing.T) {
	base, adapter := loraAdapter(t)
	merged := filepath.Join(t.TempDir(), "merged")
	if err := train.MergeAdapter(base, adapter, merged); err != nil {
		t.Fatal(err)
	}
	_, bus := pipelinetest.StartBus(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := infer.StartDirsWithAdapters(ctx, bus, map[string]string{"tuned": base, "merged": merged, "base": base},
		map[string]string{"tuned": adapter}, infer.Config{Slots: 2, Fetchers: 1}, pipelinetest.Logger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = w.Wait() }()

	complete := func(name, prompt string) string { return completeRPC(ctx, t, bus, name, prompt) }
	differs := false
	for _, p := range []string{"<|im_start|>user\nColour 1?<|im_end|>\n<|im_start|>assistant\n", "Colour 3?", "Once upon a time"} {
		tuned, want, plain := complete("tuned", p), complete("merged", p), complete("base", p)
		if tuned != want {
			t.Errorf("prompt %q: base+adapter %q, merged checkpoint %q", p, tuned, want)
		}
		differs = differs || tuned != plain
	}
	if !differs {
		t.Error("base+adapter answers as the base alone: the adapter was not applied")
	}

	if _, err := infer.StartDirsWithAdapters(ctx, bus, map[string]string{"a": base}, map[string]string{"b": adapter}, infer.Config{}, pipelinetest.Logger(t), nil); err == nil {
		t.Error("an adapter for a model not served was accepted")
	}
}

// completeRPC asks model name over the RPC for a greedy completion of
// prompt (12 tokens) and returns its text.
func completeRPC(ctx context.Context, t *testing.T, bus *pipeline.Bus, name, prompt string) string {
	t.Helper()
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	body := fmt.Sprintf(`{"model":%q,"prompt":%q,"max_tokens":12,"temperature":0}`, name, prompt)
	final, err := bus.StreamRPC(rctx, pipeline.RPCCall{Subject: pipeline.RPCSubject(name), Data: []byte(body)}, nil, nil)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var resp schemas.CompletionResponse
	if err := json.Unmarshal(final, &resp); err != nil {
		t.Fatal(err)
	}
	return resp.Choices[0].Text
}
