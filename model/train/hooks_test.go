package train

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// TestProgressAndCancel checks that WithProgress sees every step in order,
// and that a ctx cancelled from the callback ends the run at once with no
// checkpoint or final model saved after it.
func TestProgressAndCancel(t *testing.T) {
	_, ck, tok := tinyBase(t)
	exs := shortTask(t, tok, 8)
	tests := []struct {
		name     string
		cancelAt int // 0: never
		wantErr  error
		wantLast int
	}{
		{name: "full run", wantLast: 8},
		{name: "cancelled at step 3", cancelAt: 3, wantErr: context.Canceled, wantLast: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			cfg := testConfig(out)
			cfg.NumEpochs, cfg.PerDeviceBatchSize, cfg.GradientAccumulationSteps = 2, 2, 1
			cfg.SaveSteps, cfg.SaveTotalLimit = 3, 0
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var seen []Progress
			tr, err := New(cfg, ck, WithMaxSeqLen(32), WithProgress(func(p Progress) {
				seen = append(seen, p)
				if p.Step == tc.cancelAt {
					cancel()
				}
			}))
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			_, err = tr.Train(ctx, exs)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Train: %v, want %v", err, tc.wantErr)
			}
			if len(seen) != tc.wantLast {
				t.Fatalf("%d progress calls, want %d", len(seen), tc.wantLast)
			}
			for i, p := range seen {
				if p.Step != i+1 || p.MaxSteps != 8 || !(p.Loss > 0) || !(p.LearningRate >= 0) || p.Epoch <= 0 {
					t.Errorf("progress %d: %+v", i, p)
				}
			}
			if tc.cancelAt == 0 {
				return
			}
			cks, _ := ListCheckpoints(out)
			if len(cks) != 0 {
				t.Errorf("checkpoints saved after the cancel at step 3: %v", cks)
			}
			if _, err := os.Stat(filepath.Join(out, TrainerStateFile)); err == nil {
				t.Errorf("final model saved after a cancel")
			}
		})
	}
}

func TestCompleteCheckpoints(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		opt  bool
	}{{"checkpoint-2", true}, {"checkpoint-4", true}, {"checkpoint-6", false}} {
		if err := os.MkdirAll(filepath.Join(dir, c.name), 0o755); err != nil {
			t.Fatal(err)
		}
		if c.opt {
			if err := os.WriteFile(filepath.Join(dir, c.name, OptimizerFile), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	got, err := CompleteCheckpoints(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || filepath.Base(got[1]) != "checkpoint-4" {
		t.Errorf("complete checkpoints %v, want checkpoint-2 and checkpoint-4", got)
	}
	if _, err := CompleteCheckpoints(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing dir: %v, want os.ErrNotExist", err)
	}
}

// TestCheckpointCallback: WithCheckpoint sees each checkpoint once it is
// complete (optimizer state there, older ones beyond save_total_limit gone),
// before the next step; its error ends the run; Progress carries the
// evaluation of the steps that ran one.
func TestCheckpointCallback(t *testing.T) {
	_, ck, tok := tinyBase(t)
	exs := shortTask(t, tok, 8)
	boom := errors.New("boom")
	tests := []struct {
		name      string
		failAt    int // 0: never
		wantErr   error
		wantSteps []int
	}{
		{name: "every checkpoint", wantSteps: []int{3, 6}},
		{name: "callback fails at step 6", failAt: 6, wantErr: boom, wantSteps: []int{3, 6}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			cfg := testConfig(out)
			cfg.NumEpochs, cfg.PerDeviceBatchSize, cfg.GradientAccumulationSteps = 2, 2, 1
			cfg.SaveSteps, cfg.SaveTotalLimit, cfg.EvalSteps = 3, 1, 2
			var steps []int
			lastStep := 0
			var evals []int
			tr, err := New(cfg, ck, WithMaxSeqLen(32), WithProgress(func(p Progress) {
				lastStep = p.Step
				if p.Eval != nil {
					evals = append(evals, p.Step)
				}
			}), WithCheckpoint(func(dir string, step int) error {
				if filepath.Base(dir) != CheckpointPrefix+strconv.Itoa(step) || step != lastStep {
					t.Errorf("checkpoint %s at step %d, last step reported %d", dir, step, lastStep)
				}
				cks, err := CompleteCheckpoints(out)
				if err != nil || len(cks) != 1 || cks[0] != dir {
					t.Errorf("at the callback of %s the complete checkpoints are %v (%v)", dir, cks, err)
				}
				steps = append(steps, step)
				if step == tc.failAt {
					return boom
				}
				return nil
			}))
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			_, err = tr.TrainEval(context.Background(), exs[:6], exs[6:])
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Train: %v, want %v", err, tc.wantErr)
			}
			if !slices.Equal(steps, tc.wantSteps) {
				t.Errorf("checkpoint callbacks at %v, want %v", steps, tc.wantSteps)
			}
			if tc.failAt == 0 && !slices.Equal(evals, []int{2, 4, 6}) {
				t.Errorf("evaluations reported at steps %v, want 2, 4, 6", evals)
			}
		})
	}
	if _, err := New(testConfig(t.TempDir()), ck, WithCheckpoint(nil)); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("nil callback: %v, want ErrInvalidOption", err)
	}
}
