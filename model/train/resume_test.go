package train

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// TestResumeMatchesUninterrupted trains 6 steps in one go, then resumes a
// fresh trainer from checkpoint-3 of that run: the final weights agree
// within 1e-5.
func TestResumeMatchesUninterrupted(t *testing.T) {
	_, ck, tok := tinyBase(t)
	out := filepath.Join(t.TempDir(), "out")
	cfg := testConfig(out)
	cfg.NumEpochs = 3
	cfg.PerDeviceBatchSize = 2
	cfg.GradientAccumulationSteps = 2
	cfg.LearningRate = 5e-3
	cfg.SaveSteps = 3
	cfg.SaveTotalLimit = 0
	exs := shortTask(t, tok, 8)
	ctx := context.Background()

	full, err := New(cfg, ck, WithMaxSeqLen(32))
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	if _, err := full.Train(ctx, exs); err != nil {
		t.Fatal(err)
	}
	want, err := full.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}

	cfg.OutputDir = filepath.Join(t.TempDir(), "resumed")
	resumed, err := New(cfg, ck, WithMaxSeqLen(32))
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	if err := resumed.Resume(filepath.Join(out, "checkpoint-3")); err != nil {
		t.Fatal(err)
	}
	if resumed.GlobalStep() != 3 {
		t.Fatalf("resumed at step %d, want 3", resumed.GlobalStep())
	}
	res, err := resumed.Train(ctx, exs)
	if err != nil {
		t.Fatal(err)
	}
	if res.GlobalStep != 6 {
		t.Errorf("global step %d, want 6", res.GlobalStep)
	}
	got, err := resumed.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for n, w := range want.Tensors {
		for i, v := range w.Data {
			worst = math.Max(worst, math.Abs(float64(v-got.Tensors[n].Data[i])))
		}
	}
	if worst > 1e-5 {
		t.Errorf("resumed weights differ from uninterrupted ones by up to %g", worst)
	}
	// Both differ from the base (training happened).
	if d := maxDiff(ck, got); d < 1e-4 {
		t.Errorf("trained weights equal the base (max diff %g)", d)
	}
}

func maxDiff(a, b *checkpoint.Checkpoint) float64 {
	worst := 0.0
	for n, x := range a.Tensors {
		for i, v := range x.Data {
			worst = math.Max(worst, math.Abs(float64(v-b.Tensors[n].Data[i])))
		}
	}
	return worst
}
