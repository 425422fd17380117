package train

import (
	"testing"

	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/schemas"
)

// benchTrain runs optimizer steps of 4 rows x 128 tokens (full or LoRA)
// and reports training tokens/s.
func benchTrain(b *testing.B, preset string, lora bool) {
	c, err := checkpoint.PresetConfig(preset)
	if err != nil {
		b.Fatal(err)
	}
	tensors, err := checkpoint.InitTensors(c, 1)
	if err != nil {
		b.Fatal(err)
	}
	cfg := schemas.DefaultTrainingConfig()
	cfg.ModelName, cfg.BF16 = preset, false
	cfg.GradientAccumulationSteps, cfg.NumEpochs, cfg.LearningRate = 1, 1, 1e-3
	var opts []Option
	if lora {
		opts = append(opts, WithLoRA(schemas.DefaultLoraConfig()))
	}
	tr, err := New(cfg, &checkpoint.Checkpoint{Config: c, Tensors: tensors}, append(opts, WithMaxSeqLen(128))...)
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	exs := make([]Example, 4)
	for i := range exs {
		exs[i] = Example{Tokens: make([]int32, 128), Weights: make([]float32, 128)}
		for j := range exs[i].Tokens {
			exs[i].Tokens[j] = int32((i*131 + j*7) % 256)
			exs[i].Weights[j] = 1
		}
	}
	batch := tr.makeBatch(exs, 4)
	step := func() {
		acc, _, ws, err := tr.microStep(batch, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tr.apply(acc, ws, 1e-3); err != nil {
			b.Fatal(err)
		}
	}
	step() // compile
	b.ResetTimer()
	for range b.N {
		step()
	}
	b.ReportMetric(float64(b.N*4*128)/b.Elapsed().Seconds(), "tokens/s")
}

func BenchmarkTrainTinyFull(b *testing.B) { benchTrain(b, "tiny", false) }
func BenchmarkTrainTinyLoRA(b *testing.B) { benchTrain(b, "tiny", true) }
func BenchmarkTrain15mFull(b *testing.B)  { benchTrain(b, "15m", false) }
func BenchmarkTrain15mLoRA(b *testing.B)  { benchTrain(b, "15m", true) }
