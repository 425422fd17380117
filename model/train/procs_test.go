package train

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"testing"

	"github.com/largeforge/largeforge/schemas"
)

// TestNativeIndependentOfGOMAXPROCS trains on the native engine (full and
// LoRA with dropout, clipped, two micro-batches a step) with GOMAXPROCS 1,
// 2 and 3: the products, attention and optimizer split their work by
// cores, yet every step's loss and every trained value end the same.
func TestNativeIndependentOfGOMAXPROCS(t *testing.T) {
	_, ck, tok := tinyBase(t)
	exs := shortTask(t, tok, 96)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, lora := range []bool{false, true} {
		t.Run(fmt.Sprintf("lora %v", lora), func(t *testing.T) {
			var refLoss []float64
			var refParams [][]float32
			for _, procs := range []int{1, 2, 3} {
				runtime.GOMAXPROCS(procs)
				cfg := testConfig("")
				cfg.PerDeviceBatchSize, cfg.GradientAccumulationSteps, cfg.NumEpochs = 8, 2, 1
				cfg.LearningRate, cfg.MaxGradNorm, cfg.LoggingSteps = 3e-3, 0.5, 1
				opts := []Option{WithEngine(schemas.TrainEngineNative), WithMaxSeqLen(32)}
				if lora {
					lc := schemas.DefaultLoraConfig()
					lc.LoraDropout = 0.1
					opts = append(opts, WithLoRA(lc))
				}
				tr, err := New(cfg, ck, opts...)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := tr.Train(context.Background(), exs); err != nil {
					t.Fatal(err)
				}
				var losses []float64
				for _, h := range tr.history {
					if l, ok := h["loss"].(float64); ok {
						losses = append(losses, l)
					}
				}
				params, err := hostValues(tr.params, false)
				if err != nil {
					t.Fatal(err)
				}
				if refLoss == nil {
					refLoss, refParams = losses, params
					tr.Close()
					continue
				}
				for i := range refLoss {
					if math.Abs(losses[i]-refLoss[i]) > 1e-6 {
						t.Fatalf("GOMAXPROCS %d step %d loss %v, with 1: %v", procs, i+1, losses[i], refLoss[i])
					}
				}
				var worst float64
				for i := range refParams {
					d, r := diffNorm(params[i], refParams[i])
					worst = max(worst, d/r)
					if d > 1e-6*r && d > 1e-7 {
						t.Fatalf("GOMAXPROCS %d: %s differs from GOMAXPROCS 1's by %.3g (norm %.3g)", procs, tr.names[i], d, r)
					}
				}
				t.Logf("GOMAXPROCS %d: %d steps, worst relative difference of a trained tensor %.2g", procs, len(losses), worst)
				tr.Close()
			}
		})
	}
}
