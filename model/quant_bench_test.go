package model

import (
	"context"
	"testing"
	"time"

	"github.com/largeforge/largeforge/internal/benchenv"
	"github.com/largeforge/largeforge/model/checkpoint"
)

// BenchmarkQuantDecode decodes `15m` (random weights, as model init makes
// them) at batch 1 on the native engine in float, int8 (per channel) and
// int4 (groups of 32), the three in turn in each round of the same run,
// and prints each quantized model's decode rate over float's (issue 18:
// targets 1.8x for int8, 2.5x for int4) and the bytes of its weights in
// memory over float's (targets at most 30% and 18%). Float's bytes are 4
// per parameter, the tied head counted once; a quantized model's are its
// packed values and float32 scales plus its float norms.
func BenchmarkQuantDecode(b *testing.B) {
	cfg, err := checkpoint.PresetConfig("15m")
	if err != nil {
		b.Fatal(err)
	}
	ck := &checkpoint.Checkpoint{Config: cfg, Tensors: randomTensors(cfg, 1)}
	variants := []struct {
		name        string
		bits, group int
	}{{"float", 0, 0}, {"int8", 8, 0}, {"int4-g32", 4, 32}}
	models := make([]*Model, len(variants))
	weightBytes := make([]int64, len(variants))
	for i, v := range variants {
		src := ck
		if v.bits != 0 {
			if src, _, err = checkpoint.QuantizeCheckpoint(ck, v.bits, v.group); err != nil {
				b.Fatal(err)
			}
		}
		m, err := New(src, WithEngine(EngineNative))
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		models[i] = m
		for _, w := range checkpoint.Layout(cfg) {
			t := src.Tensors[w.Name]
			if v.bits == 0 || t.Quant == nil {
				weightBytes[i] += 4 * int64(len(t.Data))
			}
		}
		weightBytes[i] += m.native.quantBytes()
	}
	ctx := context.Background()
	const rounds = 3
	best := make([]time.Duration, len(variants))
	decode := func(m *Model) time.Duration {
		prompt := benchPrompts(m, 1)
		st := m.newStateOn(EngineNative, 1, bucketLen(benchPrompt+benchSteps+1, m.maxSeq))
		defer st.release()
		logits, err := st.prefill(ctx, []int{0}, prompt)
		if err != nil {
			b.Fatal(err)
		}
		tokens, pos := []int{argmax(logits[0])}, []int{benchPrompt}
		t0 := time.Now()
		for range benchSteps {
			rows, err := st.step(ctx, tokens, pos)
			if err != nil {
				b.Fatal(err)
			}
			tokens[0] = argmax(rows[0])
			pos[0]++
		}
		return time.Since(t0)
	}
	for _, m := range models {
		decode(m) // warm up
	}
	b.ResetTimer()
	for range b.N {
		for range rounds {
			for i, m := range models {
				if d := decode(m); best[i] == 0 || d < best[i] {
					best[i] = d
				}
			}
		}
	}
	b.StopTimer()
	tps := func(i int) float64 { return float64(benchSteps) / best[i].Seconds() }
	for i, v := range variants {
		speed, mem := tps(i)/tps(0), float64(weightBytes[i])/float64(weightBytes[0])
		b.ReportMetric(tps(i), v.name+"-tokens/s")
		if i > 0 {
			b.ReportMetric(speed, v.name+"-speedup")
			b.ReportMetric(100*mem, v.name+"-weights-%")
		}
		b.Logf("15m decode batch 1, %s: %.0f tokens/s (%.2fx float), weights %.1f MiB (%.1f%% of float); best of %d rounds; %s",
			v.name, tps(i), speed, float64(weightBytes[i])/(1<<20), 100*mem, rounds*b.N, benchenv.Machine())
	}
}
