package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/schemas"
)

// TestNonFiniteLossStops trains the tiny model on each engine with a
// checkpoint every step until the loss turns NaN: from a poisoned batch (a
// NaN loss weight in one example) or a huge learning rate. The run stops
// with ErrNonFinite naming the step; every checkpoint before it is
// complete and finite, none of that step or later is written, and the
// final model is not.
func TestNonFiniteLossStops(t *testing.T) {
	_, ck, tok := tinyBase(t)
	const n, rows = 24, 4
	poisoned := 13
	tests := []struct {
		name, engine, optim string
		lr                  float64
		poison              bool
		saveSteps           int
	}{
		{name: "poisoned batch native", engine: schemas.TrainEngineNative, optim: "adamw_torch", lr: 1e-3, poison: true, saveSteps: 1},
		{name: "poisoned batch graph", engine: schemas.TrainEngineGraph, optim: "adamw_torch", lr: 1e-3, poison: true, saveSteps: 1},
		// No checkpoint is due at the poisoned step: the run stops there all the same.
		{name: "poisoned batch between checkpoints native", engine: schemas.TrainEngineNative, optim: "adamw_torch", lr: 1e-3, poison: true, saveSteps: 3},
		{name: "poisoned batch between checkpoints graph", engine: schemas.TrainEngineGraph, optim: "adamw_torch", lr: 1e-3, poison: true, saveSteps: 3},
		{name: "huge learning rate native", engine: schemas.TrainEngineNative, optim: "sgd", lr: 1e36, saveSteps: 1},
		{name: "huge learning rate graph", engine: schemas.TrainEngineGraph, optim: "sgd", lr: 1e36, saveSteps: 1},
	}
	order := EpochOrder(DefaultSeed, 0, n)
	poisonStep := slices.Index(order, poisoned)/rows + 1
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exs := shortTask(t, tok, n)
			if tt.poison {
				w := slices.Clone(exs[poisoned].Weights)
				w[len(w)-1] = float32(math.NaN())
				exs[poisoned].Weights = w
			}
			out := t.TempDir()
			cfg := testConfig(out)
			cfg.PerDeviceBatchSize, cfg.GradientAccumulationSteps, cfg.NumEpochs = rows, 1, 1
			cfg.Optim, cfg.LearningRate, cfg.MaxGradNorm, cfg.WarmupRatio = tt.optim, tt.lr, 0, 0
			cfg.LRSchedulerType, cfg.SaveSteps, cfg.SaveTotalLimit, cfg.LoggingSteps = "constant", tt.saveSteps, 0, 1
			tr, err := New(cfg, ck, WithEngine(tt.engine), WithMaxSeqLen(32))
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			_, err = tr.Train(context.Background(), exs)
			if !errors.Is(err, ErrNonFinite) {
				t.Fatalf("Train: %v, want %v", err, ErrNonFinite)
			}
			step := tr.GlobalStep()
			if !strings.Contains(err.Error(), fmt.Sprintf("step %d:", step)) {
				t.Fatalf("error %q does not name step %d", err, step)
			}
			if tt.poison && step != poisonStep {
				t.Fatalf("stopped at step %d, the poisoned batch is step %d", step, poisonStep)
			}
			good := (step - 1) / tt.saveSteps // checkpoints due before the step
			if good < 1 {
				t.Fatalf("stopped at step %d: no good checkpoint before it", step)
			}
			cks, err := ListCheckpoints(out)
			if err != nil {
				t.Fatal(err)
			}
			if len(cks) != good {
				t.Fatalf("checkpoints %v, want %d", cks, good)
			}
			last := filepath.Join(out, CheckpointPrefix+strconv.Itoa(good*tt.saveSteps))
			if cks[len(cks)-1] != last {
				t.Fatalf("last checkpoint %s, want %s", cks[len(cks)-1], last)
			}
			if _, err := os.Stat(filepath.Join(last, OptimizerFile)); err != nil {
				t.Fatalf("last good checkpoint incomplete: %v", err)
			}
			if _, err := os.Stat(filepath.Join(out, "model.safetensors")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("final model written after a non-finite step: %v", err)
			}
			saved, err := checkpoint.Load(last)
			if err != nil {
				t.Fatal(err)
			}
			if err := tr.checkFiniteTensors(saved.Tensors); err != nil {
				t.Fatalf("last good checkpoint: %v", err)
			}
		})
	}
}
