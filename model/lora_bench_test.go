package model_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/largeforge/largeforge/internal/benchenv"
	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/model/loratest"
)

// BenchmarkAdapterBatch times one batch of 64 requests (16-token prompts,
// 32 tokens generated each) on the 15m preset: all on the base, then spread
// over 8 LoRA adapters served unmerged (r 16 on q, k, v and o_proj), and
// prints both tokens/s and their ratio, measured in the same run (each the
// best of two turns, alternated). Issue 18's target: a ratio of at least 0.7.
func BenchmarkAdapterBatch(b *testing.B) {
	const (
		rows, adapters, prompt, steps = 64, 8, 16, 32
	)
	dir := b.TempDir()
	base := filepath.Join(dir, "base")
	if err := checkpoint.Init("15m", 1, base); err != nil {
		b.Fatal(err)
	}
	cfg, err := checkpoint.LoadConfig(base)
	if err != nil {
		b.Fatal(err)
	}
	m, err := model.Load(base, model.WithEngine(model.EngineNative))
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ads := make([]*model.Adapter, adapters)
	for i := range ads {
		d := filepath.Join(dir, fmt.Sprint("adapter", i))
		spec := loratest.Spec{R: 16, Alpha: 32, Modules: []string{"q_proj", "k_proj", "v_proj", "o_proj"}, Seed: uint64(i + 1), Scale: 0.02}
		if err := loratest.Write(cfg, d, spec); err != nil {
			b.Fatal(err)
		}
		if ads[i], err = m.LoadAdapter(d); err != nil {
			b.Fatal(err)
		}
	}
	batch := func(adapted bool) []model.GenerateRequest {
		reqs := make([]model.GenerateRequest, rows)
		for i := range reqs {
			p := make([]int, prompt)
			for j := range p {
				p[j] = 1 + (i*31+j*7)%(cfg.VocabSize-1)
			}
			reqs[i] = model.GenerateRequest{PromptIDs: p, Params: model.SamplingParams{MaxTokens: steps, EOS: []int{}}}
			if adapted {
				reqs[i].Adapter = ads[i%adapters]
			}
		}
		return reqs
	}
	run := func(reqs []model.GenerateRequest) float64 {
		t0 := time.Now()
		res, err := m.Generate(context.Background(), reqs)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for _, r := range res {
			n += r.CompletionTokens
		}
		return float64(n) / time.Since(t0).Seconds()
	}
	plain, mixed := batch(false), batch(true)
	var baseTPS, mixedTPS float64
	for range max(b.N, 2) {
		baseTPS = max(baseTPS, run(plain))
		mixedTPS = max(mixedTPS, run(mixed))
	}
	b.ReportMetric(baseTPS, "base-tokens/s")
	b.ReportMetric(mixedTPS, "8-adapters-tokens/s")
	b.ReportMetric(mixedTPS/baseTPS, "ratio")
	b.Logf("15m batch of %d (prompt %d, %d tokens each): base only %.0f tokens/s, over %d adapters (r 16, q/k/v/o, %d KiB each) %.0f tokens/s, ratio %.2f (target >= 0.7); %s",
		rows, prompt, steps, baseTPS, adapters, ads[0].Bytes()/1024, mixedTPS, mixedTPS/baseTPS, benchenv.Machine())
}
