package model_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/model/loratest"
	"github.com/largeforge/largeforge/model/train"
)

// loraFixture is a tiny base model, adapters of it (written by loratest)
// loaded unmerged, and the merged models of the same adapters.
type loraFixture struct {
	base     *model.Model
	adapters []*model.Adapter
	merged   []*model.Model
	dirs     []string
	baseDir  string
}

var loraSpecs = []loratest.Spec{
	{R: 4, Alpha: 8, Modules: []string{"q_proj", "v_proj"}, Seed: 1},
	{R: 8, Alpha: 16, Modules: []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}, Seed: 2},
	{R: 2, Alpha: 2, Modules: []string{"o_proj", "down_proj"}, Seed: 3},
}

func newLoRAFixture(t *testing.T) *loraFixture {
	t.Helper()
	dir := t.TempDir()
	f := &loraFixture{baseDir: filepath.Join(dir, "base")}
	if err := checkpoint.Init("tiny", 5, f.baseDir); err != nil {
		t.Fatal(err)
	}
	cfg, err := checkpoint.LoadConfig(f.baseDir)
	if err != nil {
		t.Fatal(err)
	}
	if f.base, err = model.Load(f.baseDir, model.WithEngine(model.EngineNative)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.base.Close() })
	for i, s := range loraSpecs {
		ad, out := filepath.Join(dir, fmt.Sprint("adapter", i)), filepath.Join(dir, fmt.Sprint("merged", i))
		if err := loratest.Write(cfg, ad, s); err != nil {
			t.Fatal(err)
		}
		if err := train.MergeAdapter(f.baseDir, ad, out); err != nil {
			t.Fatal(err)
		}
		a, err := f.base.LoadAdapter(ad)
		if err != nil {
			t.Fatal(err)
		}
		m, err := model.Load(out, model.WithEngine(model.EngineNative))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close() })
		f.adapters, f.merged, f.dirs = append(f.adapters, a), append(f.merged, m), append(f.dirs, ad)
	}
	return f
}

// TestAdaptersUnmergedInOneBatch: one batch mixing the base and three
// adapters (Generate, and the continuous Batcher with the requests in
// flight together) gives each request the greedy tokens of the model with
// its adapter merged, and scoring gives its log-probabilities within float
// tolerance; the adapters change the output.
func TestAdaptersUnmergedInOneBatch(t *testing.T) {
	f := newLoRAFixture(t)
	ctx := context.Background()
	prompts := [][]int{{1, 72, 101, 108}, {1, 87, 111}, {1, 66, 97, 98, 121, 32}, {1, 84}}
	params := model.SamplingParams{MaxTokens: 12, EOS: []int{}}
	var reqs []model.GenerateRequest
	var want [][]int
	changed := 0
	for i := range 8 { // base, adapter 0, 1, 2, base, ...
		p := prompts[i%len(prompts)]
		k := i%4 - 1
		r := model.GenerateRequest{PromptIDs: p, Params: params}
		ref := f.base
		if k >= 0 {
			r.Adapter, ref = f.adapters[k], f.merged[k]
		}
		res, err := ref.Generate(ctx, []model.GenerateRequest{{PromptIDs: p, Params: params}})
		if err != nil {
			t.Fatal(err)
		}
		reqs, want = append(reqs, r), append(want, res[0].IDs)
		if k >= 0 {
			plain, err := f.base.Generate(ctx, []model.GenerateRequest{{PromptIDs: p, Params: params}})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(plain[0].IDs, res[0].IDs) {
				changed++
			}
		}
	}
	if changed == 0 {
		t.Fatal("no adapter changes the greedy output: the test proves nothing")
	}
	got, err := f.base.Generate(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range reqs {
		if !slices.Equal(got[i].IDs, want[i]) {
			t.Errorf("Generate request %d (adapter %d): %v, merged model %v", i, i%4-1, got[i].IDs, want[i])
		}
	}

	b, err := model.NewBatcher(f.base, len(reqs))
	if err != nil {
		t.Fatal(err)
	}
	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = b.Run(bctx) }()
	var wg sync.WaitGroup
	out := make([]model.GenerateResult, len(reqs))
	errs := make([]error, len(reqs))
	for i, r := range reqs {
		wg.Go(func() { out[i], errs[i] = b.Submit(ctx, r, nil) })
	}
	wg.Wait()
	for i := range reqs {
		if errs[i] != nil || !slices.Equal(out[i].IDs, want[i]) {
			t.Errorf("Batcher request %d (adapter %d): %v %v, merged model %v", i, i%4-1, out[i].IDs, errs[i], want[i])
		}
	}

	rows := []model.ScoreRequest{{PromptIDs: prompts[0], CompletionIDs: []int{32, 116, 104, 101}}, {PromptIDs: prompts[2], CompletionIDs: []int{33, 10}}}
	for k, a := range f.adapters {
		got, err := f.base.ScoreAdapted(ctx, a, rows)
		if err != nil {
			t.Fatal(err)
		}
		want, err := f.merged[k].Score(ctx, rows)
		if err != nil {
			t.Fatal(err)
		}
		for i := range rows {
			for j, lp := range got[i].TokenLogprobs {
				if d := math.Abs(lp - want[i].TokenLogprobs[j]); d > 1e-3 {
					t.Errorf("adapter %d row %d token %d: logprob %g, merged %g", k, i, j, lp, want[i].TokenLogprobs[j])
				}
			}
		}
	}

	// An adapter of another model is refused, not run on the base alone.
	_, err = f.merged[0].Generate(ctx, []model.GenerateRequest{{PromptIDs: prompts[0], Params: params, Adapter: f.adapters[0]}})
	if !errors.Is(err, model.ErrInvalidRequest) {
		t.Errorf("adapter of another model: %v, want ErrInvalidRequest", err)
	}
}

// TestLoadAdapterRefusesMismatch: an adapter that does not fit the base
// (another hidden size, a layer the base lacks, a missing lora_B) or whose
// rank is over the trainer's limit is refused at load with an error naming
// the file and the tensor.
func TestLoadAdapterRefusesMismatch(t *testing.T) {
	dir := t.TempDir()
	baseDir := filepath.Join(dir, "base")
	if err := checkpoint.Init("tiny", 5, baseDir); err != nil {
		t.Fatal(err)
	}
	cfg, err := checkpoint.LoadConfig(baseDir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(baseDir, model.WithEngine(model.EngineNative))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	weights := func(d string) string { return filepath.Join(d, model.AdapterWeightsFile) }
	tests := []struct {
		name  string
		make  func(d string) error
		wants []string // in the error
	}{
		{"hidden size", func(d string) error {
			c := cfg
			c.HiddenSize, c.NumHeads, c.NumKVHeads = 32, 4, 2
			return loratest.Write(c, d, loratest.Spec{R: 4, Alpha: 8, Modules: []string{"q_proj"}})
		}, []string{"model.layers.0.self_attn.q_proj.lora_A.weight", "hidden size 64", "adapter_model.safetensors"}},
		{"layer names", func(d string) error {
			c := cfg
			c.NumLayers = 7
			return loratest.Write(c, d, loratest.Spec{R: 4, Alpha: 8, Modules: []string{"v_proj"}})
		}, []string{"model.layers.5.self_attn.v_proj.lora_A.weight", "5 layers"}},
		{"rank in config", func(d string) error {
			if err := loratest.Write(cfg, d, loratest.Spec{R: 4, Alpha: 8, Modules: []string{"q_proj"}}); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(d, model.AdapterConfigFile), []byte(`{"peft_type":"LORA","r":300,"lora_alpha":8}`), 0o644)
		}, []string{"lora.r", "300", "256", model.AdapterConfigFile}},
		{"rank of a tensor", func(d string) error {
			if err := loratest.Write(cfg, d, loratest.Spec{R: 257, Alpha: 8, Modules: []string{"up_proj"}}); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(d, model.AdapterConfigFile), []byte(`{"peft_type":"LORA","r":8,"lora_alpha":8}`), 0o644)
		}, []string{"model.layers.0.mlp.up_proj.lora_A.weight", "257", "256"}},
		{"missing lora_B", func(d string) error {
			if err := loratest.Write(cfg, d, loratest.Spec{R: 4, Alpha: 8, Modules: []string{"o_proj"}}); err != nil {
				return err
			}
			ts, _, err := checkpoint.ReadSafetensors(weights(d))
			if err != nil {
				return err
			}
			delete(ts, "base_model.model.model.layers.2.self_attn.o_proj.lora_B.weight")
			return checkpoint.WriteSafetensors(weights(d), ts, nil)
		}, []string{"model.layers.2.self_attn.o_proj.lora_A.weight", "lora_B"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			if err := tt.make(d); err != nil {
				t.Fatal(err)
			}
			_, err := m.LoadAdapter(d)
			if !errors.Is(err, model.ErrAdapter) {
				t.Fatalf("got %v, want ErrAdapter", err)
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), d) {
				t.Errorf("error %q does not name the file in %s", err, d)
			}
		})
	}
}
