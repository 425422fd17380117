package train

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/schemas"
)

// biasBase is the tiny model with attention biases (random, so that they
// are not all zero), saved with its tokenizer.
func biasBase(t *testing.T) (string, *checkpoint.Checkpoint) {
	t.Helper()
	dir, ck, _ := tinyBase(t)
	ck.Config.AttentionBias = true
	tens, err := checkpoint.InitTensors(ck.Config, 3)
	if err != nil {
		t.Fatal(err)
	}
	for n, x := range tens {
		if strings.HasSuffix(n, ".bias") {
			for i := range x.Data {
				x.Data[i] = float32(i%5) * 0.01
			}
		}
	}
	ck.Tensors = tens
	if err := checkpoint.Save(dir, ck); err != nil {
		t.Fatal(err)
	}
	return dir, ck
}

func TestLoRABias(t *testing.T) {
	tests := []struct {
		name    string
		bias    string
		targets []string
		// which base tensors may change: adapted weights and trained biases
		changes func(name string) bool
		biases  int // bias tensors in the adapter file
	}{
		{name: "none", bias: schemas.LoraBiasNone, targets: []string{"q_proj", "v_proj"},
			changes: func(n string) bool {
				return strings.HasSuffix(n, "q_proj.weight") || strings.HasSuffix(n, "v_proj.weight")
			}},
		{name: "all", bias: schemas.LoraBiasAll, targets: []string{"q_proj"}, biases: 5 * 4,
			changes: func(n string) bool { return strings.HasSuffix(n, "q_proj.weight") || strings.HasSuffix(n, ".bias") }},
		{name: "lora_only", bias: schemas.LoraBiasLoraOnly, targets: []string{"q_proj", "o_proj"}, biases: 5 * 2,
			changes: func(n string) bool {
				return strings.Contains(n, "q_proj.") || strings.Contains(n, "o_proj.")
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			baseDir, ck := biasBase(t)
			_, _, tok := tinyBase(t)
			out := filepath.Join(t.TempDir(), "out")
			cfg := testConfig(out)
			cfg.NumEpochs, cfg.PerDeviceBatchSize, cfg.GradientAccumulationSteps, cfg.LearningRate = 1, 4, 1, 1e-2
			lc := schemas.DefaultLoraConfig()
			lc.Bias, lc.TargetModules = tc.bias, tc.targets
			tr, err := New(cfg, ck, WithMaxSeqLen(32), WithLoRA(lc))
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			if _, err := tr.Train(context.Background(), shortTask(t, tok, 8)); err != nil {
				t.Fatal(err)
			}
			merged, err := tr.Checkpoint()
			if err != nil {
				t.Fatal(err)
			}
			for n, w := range ck.Tensors {
				changed := !slices.Equal(w.Data, merged.Tensors[n].Data)
				if changed != tc.changes(n) {
					t.Errorf("%s: changed %v, want %v", n, changed, tc.changes(n))
				}
			}
			ad, _, err := checkpoint.ReadSafetensors(filepath.Join(out, AdapterWeightsFile))
			if err != nil {
				t.Fatal(err)
			}
			nb := 0
			for n := range ad {
				if strings.HasSuffix(n, ".bias") {
					nb++
					if !strings.HasPrefix(n, "base_model.model.model.layers.") {
						t.Errorf("bias %s lacks the PEFT prefix", n)
					}
				}
			}
			if nb != tc.biases || len(ad) != 5*len(tc.targets)*2+tc.biases {
				t.Errorf("%d adapter tensors, %d biases; want %d biases", len(ad), nb, tc.biases)
			}
			// adapters merge gives the trainer's merged model, biases included.
			mergedDir := filepath.Join(t.TempDir(), "merged")
			if err := MergeAdapter(baseDir, out, mergedDir); err != nil {
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
		})
	}
}

// lora_dropout changes training, deterministically from the seed, and is
// off in evaluation.
func TestLoRADropout(t *testing.T) {
	_, ck, tok := tinyBase(t)
	exs := shortTask(t, tok, 8)
	cfg := testConfig("")
	cfg.NumEpochs, cfg.PerDeviceBatchSize, cfg.GradientAccumulationSteps, cfg.LearningRate = 2, 4, 1, 2e-2
	train := func(dropout float64, seed int64) (*Trainer, EvalResult) {
		t.Helper()
		lc := schemas.DefaultLoraConfig()
		lc.LoraDropout = dropout
		tr, err := New(cfg, ck, WithMaxSeqLen(32), WithLoRA(lc), WithSeed(seed))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		if _, err := tr.Train(context.Background(), exs); err != nil {
			t.Fatal(err)
		}
		ev, err := tr.Evaluate(context.Background(), exs)
		if err != nil {
			t.Fatal(err)
		}
		return tr, ev
	}
	tr, a := train(0.5, 1)
	_, b := train(0.5, 1)
	_, c := train(0, 1)
	if a.Loss != b.Loss {
		t.Errorf("same seed, eval loss %v vs %v: dropout is not deterministic", a.Loss, b.Loss)
	}
	if a.Loss == c.Loss {
		t.Errorf("dropout 0.5 and 0 trained to the same eval loss %v", a.Loss)
	}
	again, err := tr.Evaluate(context.Background(), exs)
	if err != nil || again.Loss != a.Loss {
		t.Errorf("evaluation repeated: %v (err %v), want %v (no dropout in eval)", again.Loss, err, a.Loss)
	}
	m0, m1 := tr.dropMaskArgs(0, 0), tr.dropMaskArgs(1, 0)
	if len(m0) != len(tr.lora.adapters) {
		t.Fatalf("%d masks for %d adapters", len(m0), len(tr.lora.adapters))
	}
	if slices.Equal(flatMask(t, m0), flatMask(t, m1)) {
		t.Error("steps 0 and 1 drew the same dropout masks")
	}
	zeros := 0
	v := flatMask(t, m0)
	for _, x := range v {
		switch x {
		case 0:
			zeros++
		case 2:
		default:
			t.Fatalf("mask value %v, want 0 or 1/(1-p) = 2", x)
		}
	}
	if frac := float64(zeros) / float64(len(v)); frac < 0.35 || frac > 0.65 {
		t.Errorf("%.2f of the mask dropped, want about 0.5", frac)
	}
}

func flatMask(t *testing.T, ms []any) []float32 {
	t.Helper()
	var out []float32
	for _, m := range ms {
		x, ok := m.(*tensors.Tensor)
		if !ok {
			t.Fatalf("mask %T", m)
		}
		v, err := tensors.CopyFlatData[float32](x)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v...)
	}
	return out
}
