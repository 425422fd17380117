package model_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/model/loratest"
	"github.com/largeforge/largeforge/model/train"
)

// TestAdapterBiasesUnmerged: no preset has biases, so the tiny preset with
// attention_bias (q, k, v and o biases, random in the base) takes an
// adapter that also carries q_proj and o_proj biases (PEFT bias "all"):
// unmerged, its greedy tokens and log-probabilities equal the merged
// model's (whose q and o biases are the adapter's, k and v the base's),
// and differ from those of the same adapter without its biases.
func TestAdapterBiasesUnmerged(t *testing.T) {
	dir := t.TempDir()
	baseDir := filepath.Join(dir, "base")
	if err := checkpoint.Init("tiny", 9, baseDir); err != nil {
		t.Fatal(err)
	}
	ck, err := checkpoint.Load(baseDir)
	if err != nil {
		t.Fatal(err)
	}
	ck.Config.AttentionBias = true
	if ck.Tensors, err = checkpoint.InitTensors(ck.Config, 9); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	randomize := func(tt *checkpoint.Tensor) *checkpoint.Tensor {
		for i := range tt.Data {
			tt.Data[i] = float32(rng.Float64() - 0.5)
		}
		return tt
	}
	for name, tt := range ck.Tensors {
		if strings.HasSuffix(name, ".bias") {
			randomize(tt)
		}
	}
	if err := checkpoint.Save(baseDir, ck); err != nil {
		t.Fatal(err)
	}
	plainDir, biasDir := filepath.Join(dir, "plain"), filepath.Join(dir, "biased")
	for _, d := range []string{plainDir, biasDir} {
		if err := loratest.Write(ck.Config, d, loratest.Spec{R: 4, Alpha: 8, Modules: []string{"q_proj", "v_proj", "o_proj"}, Seed: 5, Scale: 0.1}); err != nil {
			t.Fatal(err)
		}
	}
	weights := filepath.Join(biasDir, model.AdapterWeightsFile)
	ts, meta, err := checkpoint.ReadSafetensors(weights)
	if err != nil {
		t.Fatal(err)
	}
	for l := range ck.Config.NumLayers {
		for _, mod := range []string{"q_proj", "o_proj"} {
			name := fmt.Sprintf("model.layers.%d.self_attn.%s.bias", l, mod)
			b := ck.Tensors[name]
			ts["base_model.model."+name] = randomize(&checkpoint.Tensor{Shape: slices.Clone(b.Shape), Data: make([]float32, len(b.Data))})
		}
	}
	if err := checkpoint.WriteSafetensors(weights, ts, meta); err != nil {
		t.Fatal(err)
	}
	mergedDir := filepath.Join(dir, "merged")
	if err := train.MergeAdapter(baseDir, biasDir, mergedDir); err != nil {
		t.Fatal(err)
	}
	load := func(d string) *model.Model {
		m, err := model.Load(d, model.WithEngine(model.EngineNative))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close() })
		return m
	}
	base, merged := load(baseDir), load(mergedDir)
	biased, err := base.LoadAdapter(biasDir)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := base.LoadAdapter(plainDir)
	if err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	prompts := [][]int{{1, 72, 101, 108}, {1, 87, 111, 32, 97}}
	params := model.SamplingParams{MaxTokens: 10, EOS: []int{}}
	var reqs []model.GenerateRequest
	for _, p := range prompts {
		reqs = append(reqs, model.GenerateRequest{PromptIDs: p, Params: params, Adapter: biased},
			model.GenerateRequest{PromptIDs: p, Params: params, Adapter: plain})
	}
	got, err := base.Generate(ctx, reqs) // one batch: the biased and the plain adapter's rows mixed
	if err != nil {
		t.Fatal(err)
	}
	differs := 0
	for i, p := range prompts {
		want, err := merged.Generate(ctx, []model.GenerateRequest{{PromptIDs: p, Params: params}})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got[2*i].IDs, want[0].IDs) {
			t.Errorf("prompt %d: unmerged with biases %v, merged %v", i, got[2*i].IDs, want[0].IDs)
		}
		if !slices.Equal(got[2*i+1].IDs, want[0].IDs) {
			differs++
		}
	}
	rows := make([]model.ScoreRequest, len(prompts))
	for i, p := range prompts {
		rows[i] = model.ScoreRequest{PromptIDs: p[:2], CompletionIDs: p[2:]}
	}
	gs, err := biased.Score(ctx, rows)
	if err != nil {
		t.Fatal(err)
	}
	ws, err := merged.Score(ctx, rows)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := plain.Score(ctx, rows)
	if err != nil {
		t.Fatal(err)
	}
	for i := range rows {
		if math.Abs(gs[i].SumLogprob-ws[i].SumLogprob) > 1e-4*max(1, math.Abs(ws[i].SumLogprob)) {
			t.Errorf("score row %d: unmerged with biases %v, merged %v", i, gs[i].SumLogprob, ws[i].SumLogprob)
		}
		if math.Abs(ps[i].SumLogprob-ws[i].SumLogprob) > 1e-3 {
			differs++
		}
	}
	if differs == 0 {
		t.Error("the adapter's biases change nothing: the test proves nothing")
	}
}
