package train

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/schemas"
)

// TestLoRATrainsOnlyAdapters: LoRA lowers the loss, the merged model
// differs from the base only in the target modules, and the checkpoint
// holds PEFT-named adapter tensors and adapter_config.json.
func TestLoRATrainsOnlyAdapters(t *testing.T) {
	baseDir, ck, tok := tinyBase(t)
	out := filepath.Join(t.TempDir(), "out")
	cfg := testConfig(out)
	cfg.NumEpochs = 12
	cfg.PerDeviceBatchSize = 4
	cfg.GradientAccumulationSteps = 1
	cfg.LearningRate = 3e-2
	cfg.SaveSteps = 24
	lc := schemas.DefaultLoraConfig()
	tr, err := New(cfg, ck, WithMaxSeqLen(32), WithLoRA(lc))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	exs := shortTask(t, tok, 8)
	ctx := context.Background()
	before, err := tr.Evaluate(ctx, exs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Train(ctx, exs); err != nil {
		t.Fatal(err)
	}
	after, err := tr.Evaluate(ctx, exs)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("LoRA eval loss %.4f -> %.4f (%d adapter values)", before.Loss, after.Loss, tr.NumParameters())
	if after.Loss > 0.9*before.Loss {
		t.Errorf("LoRA eval loss %.4f -> %.4f: fell by less than 10%%", before.Loss, after.Loss)
	}
	merged, err := tr.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	for n, w := range ck.Tensors {
		changed := !slices.Equal(w.Data, merged.Tensors[n].Data)
		target := strings.Contains(n, "self_attn.") && !strings.Contains(n, "norm")
		if changed != target {
			t.Errorf("%s: changed %v, want %v", n, changed, target)
		}
	}
	dir := filepath.Join(out, "checkpoint-24")
	ad, _, err := checkpoint.ReadSafetensors(filepath.Join(dir, AdapterWeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	a := ad["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
	b := ad["base_model.model.model.layers.4.self_attn.o_proj.lora_B.weight"]
	if a == nil || b == nil || !slices.Equal(a.Shape, []int{8, 64}) || !slices.Equal(b.Shape, []int{64, 8}) {
		t.Errorf("adapter tensors: %d names, A %v, B %v", len(ad), a, b)
	}
	if len(ad) != 5*4*2 {
		t.Errorf("%d adapter tensors, want 40", len(ad))
	}
	var pc map[string]any
	data, err := os.ReadFile(filepath.Join(dir, AdapterConfigFile))
	if err == nil {
		err = json.Unmarshal(data, &pc)
	}
	if err != nil || pc["peft_type"] != "LORA" || pc["r"] != float64(8) || pc["lora_alpha"] != float64(16) {
		t.Errorf("adapter_config.json: %v %v", pc, err)
	}
	if _, err := os.Stat(filepath.Join(dir, checkpoint.WeightsFile)); err == nil {
		t.Error("a LoRA checkpoint holds full weights")
	}
	// adapters merge writes the same merged weights as a full checkpoint.
	mergedDir := filepath.Join(t.TempDir(), "merged")
	if err := MergeAdapter(baseDir, dir, mergedDir); err != nil {
		t.Fatal(err)
	}
	full, err := checkpoint.Load(mergedDir)
	if err != nil {
		t.Fatal(err)
	}
	for n, w := range merged.Tensors {
		if !slices.Equal(w.Data, full.Tensors[n].Data) {
			t.Errorf("merged checkpoint: %s differs from the trainer's merge", n)
		}
	}
	if _, err := os.Stat(filepath.Join(mergedDir, "tokenizer.json")); err != nil {
		t.Error(err)
	}
	// Resuming the adapter checkpoint restores the same merged model.
	tr2, err := New(cfg, ck, WithMaxSeqLen(32), WithLoRA(lc))
	if err != nil {
		t.Fatal(err)
	}
	defer tr2.Close()
	if err := tr2.Resume(dir); err != nil {
		t.Fatal(err)
	}
	again, err := tr2.Evaluate(ctx, exs)
	if err != nil || again.Loss != after.Loss {
		t.Errorf("resumed adapter loss %v (err %v), want %v", again.Loss, err, after.Loss)
	}
}

func TestWithLoRARejects(t *testing.T) {
	tests := []struct {
		name string
		edit func(*schemas.LoraConfig)
	}{
		{name: "unknown bias", edit: func(c *schemas.LoraConfig) { c.Bias = "some" }},
		{name: "rank zero", edit: func(c *schemas.LoraConfig) { c.R = 0 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := schemas.DefaultLoraConfig()
			tc.edit(&c)
			var o options
			if err := WithLoRA(c)(&o); !errors.Is(err, ErrInvalidOption) {
				t.Errorf("err = %v, want ErrInvalidOption", err)
			}
		})
	}
}
