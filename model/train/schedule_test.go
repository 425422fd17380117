package train

import (
	"errors"
	"math"
	"testing"

	"github.com/largeforge/largeforge/schemas"
)

// TestSchedules holds every lr_scheduler_type to values worked out by hand
// from the formulas of transformers' optimization.py: learning_rate 1e-3,
// 10 warmup steps of 100.
func TestSchedules(t *testing.T) {
	type kw = map[string]any
	tests := []struct {
		kind string
		kw   kw
		step int
		want float64
	}{
		{"linear", nil, 5, 5e-4},
		{"linear", nil, 55, 5e-4},
		{"cosine", nil, 55, 5e-4},
		{"cosine", kw{"num_cycles": 1}, 55, 0},
		{"cosine_with_restarts", kw{"num_cycles": 2}, 55, 1e-3},
		{"cosine_with_restarts", kw{"num_cycles": 2}, 32, 1e-3 * 0.5174497483512506},
		{"cosine_with_restarts", nil, 100, 0},
		{"polynomial", kw{"lr_end": 1e-5, "power": 2}, 55, (1e-3-1e-5)*0.25 + 1e-5},
		{"polynomial", nil, 100, 1e-7},
		{"polynomial", nil, 120, 1e-7},
		{"constant", nil, 0, 1e-3},
		{"constant_with_warmup", nil, 2, 2e-4},
		{"inverse_sqrt", nil, 40, 5e-4},
		{"inverse_sqrt", kw{"timescale": 20}, 40, 1e-3 * 0.6324555320336759},
		{"cosine_with_min_lr", kw{"min_lr_rate": 0.1}, 100, 1e-4},
		{"cosine_with_min_lr", kw{"min_lr": 2e-4}, 55, 6e-4},
		{"warmup_stable_decay", kw{"num_decay_steps": 20}, 5, 5e-4},
		{"warmup_stable_decay", kw{"num_decay_steps": 20}, 50, 1e-3},
		{"warmup_stable_decay", kw{"num_decay_steps": 20}, 90, 5e-4},
		{"warmup_stable_decay", kw{"num_decay_steps": 20, "decay_type": "linear"}, 85, 7.5e-4},
		{"warmup_stable_decay", kw{"num_decay_steps": 20}, 100, 0},
		{"warmup_stable_decay", kw{"num_decay_steps": 20, "min_lr_ratio": 0.1, "decay_type": "1-sqrt"}, 95, 1e-3 * 0.22057713659400527},
		{"warmup_stable_decay", kw{"num_decay_steps": 20, "warmup_type": "cosine"}, 2, 1e-3 * 0.09549150281252627},
		{"warmup_stable_decay", kw{"num_decay_steps": 20, "num_stable_steps": 10}, 30, 5e-4},
		{"warmup_stable_decay", kw{"num_decay_steps": 20, "num_stable_steps": 10}, 40, 0},
		{"reduce_lr_on_plateau", nil, 0, 1e-3},
	}
	for _, tc := range tests {
		cfg := schemas.DefaultTrainingConfig()
		cfg.LearningRate, cfg.LRSchedulerType, cfg.LRSchedulerKwargs = 1e-3, tc.kind, tc.kw
		s, err := NewSchedule(cfg, 10, 100)
		if err != nil {
			t.Fatalf("%s %v: %v", tc.kind, tc.kw, err)
		}
		if got := s.At(tc.step); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("%s %v step %d: lr %.12g, want %.12g", tc.kind, tc.kw, tc.step, got, tc.want)
		}
	}
}

// TestPlateau: reduce_lr_on_plateau lowers the rate by factor once the
// evaluation loss has not improved (relative threshold 1e-4) for more than
// patience evaluations, then waits cooldown evaluations, as PyTorch's
// ReduceLROnPlateau does.
func TestPlateau(t *testing.T) {
	cfg := schemas.DefaultTrainingConfig()
	cfg.LearningRate, cfg.LRSchedulerType = 1e-3, "reduce_lr_on_plateau"
	cfg.LRSchedulerKwargs = map[string]any{"patience": 1, "factor": 0.5, "cooldown": 1, "min_lr": 2e-4}
	s, err := NewSchedule(cfg, 10, 100)
	if err != nil {
		t.Fatal(err)
	}
	if !s.NeedsEvaluation() {
		t.Fatal("reduce_lr_on_plateau must need evaluation")
	}
	losses := []float64{1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95}
	want := []float64{1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 2.5e-4, 2e-4}
	for i, l := range losses {
		s.Observe(l)
		if got := s.At(100); math.Abs(got-want[i]) > 1e-15 {
			t.Fatalf("after loss %d (%v): lr %g, want %g", i, l, got, want[i])
		}
	}
}

func TestScheduleRefusals(t *testing.T) {
	cfg := schemas.DefaultTrainingConfig()
	cfg.LearningRate, cfg.LRSchedulerType = 1e-8, "polynomial"
	if _, err := NewSchedule(cfg, 0, 10); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("polynomial with learning_rate under lr_end: err %v", err)
	}
}
