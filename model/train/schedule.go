package train

import (
	"fmt"
	"math"

	"github.com/largeforge/largeforge/schemas"
)

// Schedule is the learning rate of every optimizer step under one of
// Hugging Face's lr_scheduler_type names with its lr_scheduler_kwargs, the
// formulas of transformers' optimization.py (get_scheduler). Steps are
// 0-based: At(0) is the rate of the first optimizer step.
// reduce_lr_on_plateau has no warmup and changes only when Observe is
// given an evaluation loss (PyTorch's ReduceLROnPlateau).
type Schedule struct {
	kind          string
	base          float64
	warmup, total int
	kw            map[string]any
	plateau       *plateau
}

// NewSchedule builds the schedule of cfg (lr_scheduler_type,
// lr_scheduler_kwargs, learning_rate) for a run of total optimizer steps
// with warmup of them warming up. A kwarg the type requires and lacks, or
// one it does not take, is an error wrapping ErrInvalidOption.
func NewSchedule(cfg schemas.TrainingConfig, warmup, total int) (*Schedule, error) {
	if cfg.ModelName == "" {
		cfg.ModelName = "-" // only the schedule's fields are checked here
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	s := &Schedule{kind: cfg.LRSchedulerType, base: cfg.LearningRate, warmup: warmup, total: total, kw: cfg.LRSchedulerKwargs}
	switch s.kind {
	case "polynomial":
		if end := s.num("lr_end", 1e-7); !(s.base > end) {
			return nil, fmt.Errorf("%w: lr_scheduler_kwargs: lr_end (%v) must be smaller than learning_rate (%v)", ErrInvalidOption, end, s.base)
		}
	case "reduce_lr_on_plateau":
		s.plateau = newPlateau(s)
	}
	return s, nil
}

// LearningRate is the rate of step step (0-based) of a schedule of kind
// without kwargs (see NewSchedule); a kind that requires kwargs is an error.
func LearningRate(kind string, base float64, step, warmup, total int) (float64, error) {
	cfg := schemas.DefaultTrainingConfig()
	cfg.LRSchedulerType, cfg.LearningRate = kind, base
	s, err := NewSchedule(cfg, warmup, total)
	if err != nil {
		return 0, err
	}
	return s.At(step), nil
}

// WarmupSteps is ceil(ratio * total), as the Hugging Face Trainer computes it.
func WarmupSteps(ratio float64, total int) int {
	return int(math.Ceil(ratio * float64(total)))
}

// At is the learning rate of step step.
func (s *Schedule) At(step int) float64 {
	if s.plateau != nil {
		return s.plateau.lr
	}
	return s.base * s.factor(step)
}

// Observe hands the schedule an evaluation loss; only reduce_lr_on_plateau
// uses it. It reports whether the rate was reduced.
func (s *Schedule) Observe(evalLoss float64) bool {
	if s.plateau == nil {
		return false
	}
	return s.plateau.step(evalLoss)
}

// NeedsEvaluation reports whether the schedule changes only on evaluations.
func (s *Schedule) NeedsEvaluation() bool { return s.plateau != nil }

// num is kwarg k as a number, def when absent.
func (s *Schedule) num(k string, def float64) float64 {
	if f, ok := schemas.KwargNumber(s.kw[k]); ok {
		return f
	}
	return def
}

// str is kwarg k as a string, def when absent.
func (s *Schedule) str(k, def string) string {
	if v, ok := s.kw[k].(string); ok {
		return v
	}
	return def
}

// factor is the multiplier of the base rate at step (LambdaLR's lambda).
func (s *Schedule) factor(step int) float64 {
	cur, warm, total := float64(step), float64(s.warmup), float64(s.total)
	warming := step < s.warmup
	warmFactor := cur / math.Max(1, warm)
	progress := (cur - warm) / math.Max(1, total-warm)
	switch s.kind {
	case "constant":
		return 1
	case "constant_with_warmup":
		if warming {
			return warmFactor
		}
		return 1
	case "linear":
		if warming {
			return warmFactor
		}
		return math.Max(0, (total-cur)/math.Max(1, total-warm))
	case "cosine":
		if warming {
			return warmFactor
		}
		return math.Max(0, 0.5*(1+math.Cos(math.Pi*s.num("num_cycles", 0.5)*2*progress)))
	case "cosine_with_restarts":
		if warming {
			return warmFactor
		}
		if progress >= 1 {
			return 0
		}
		return math.Max(0, 0.5*(1+math.Cos(math.Pi*math.Mod(s.num("num_cycles", 1)*progress, 1))))
	case "polynomial":
		if warming {
			return warmFactor
		}
		end, power := s.num("lr_end", 1e-7), s.num("power", 1)
		if step > s.total {
			return end / s.base
		}
		remaining := 1 - (cur-warm)/math.Max(1, total-warm)
		return ((s.base-end)*math.Pow(remaining, power) + end) / s.base
	case "inverse_sqrt":
		if warming {
			return warmFactor
		}
		ts := s.num("timescale", 0)
		if ts == 0 {
			ts = warm
			if ts == 0 {
				ts = 10_000
			}
		}
		return 1 / math.Sqrt((cur+ts-warm)/ts)
	case "cosine_with_min_lr":
		if warming {
			return warmFactor
		}
		rate := s.num("min_lr_rate", 0)
		if minLR, ok := schemas.KwargNumber(s.kw["min_lr"]); ok {
			rate = minLR / s.base
		}
		f := 0.5 * (1 + math.Cos(math.Pi*s.num("num_cycles", 0.5)*2*progress))
		return math.Max(0, f*(1-rate)+rate)
	case "warmup_stable_decay":
		return s.wsd(cur)
	}
	return 1
}

// wsd is warmup_stable_decay's factor: warmup (warmup_type), a stable
// stretch at the full rate, then num_decay_steps of decay (decay_type) to
// min_lr_ratio; num_stable_steps defaults to what the other two leave.
func (s *Schedule) wsd(cur float64) float64 {
	warm := float64(s.warmup)
	decay := s.num("num_decay_steps", 0)
	stable := s.num("num_stable_steps", math.Max(0, float64(s.total)-warm-decay))
	minRatio, cycles := s.num("min_lr_ratio", 0), s.num("num_cycles", 0.5)
	scale := func(f float64) float64 { return math.Max(0, f*(1-minRatio)+minRatio) }
	switch {
	case cur < warm:
		p := cur / math.Max(1, warm)
		switch s.str("warmup_type", "linear") {
		case "cosine":
			return scale(0.5 * (1 - math.Cos(math.Pi*p)))
		case "1-sqrt":
			return scale(1 - math.Sqrt(1-p))
		}
		return scale(p)
	case cur < warm+stable:
		return 1
	case cur < warm+stable+decay:
		p := (cur - warm - stable) / math.Max(1, decay)
		switch s.str("decay_type", "cosine") {
		case "linear":
			return scale(1 - p)
		case "1-sqrt":
			return scale(1 - math.Sqrt(p))
		}
		return scale(0.5 * (1 + math.Cos(math.Pi*cycles*2*p)))
	}
	return minRatio
}

// plateau is PyTorch's ReduceLROnPlateau over evaluation losses.
type plateau struct {
	lr, factor, threshold, minLR, eps float64
	patience, cooldown                int
	maxMode, absMode                  bool
	best                              float64
	bad, coolLeft                     int
}

func newPlateau(s *Schedule) *plateau {
	p := &plateau{
		lr: s.base, factor: s.num("factor", 0.1), threshold: s.num("threshold", 1e-4), minLR: s.num("min_lr", 0),
		eps: s.num("eps", 1e-8), patience: int(s.num("patience", 10)), cooldown: int(s.num("cooldown", 0)),
		maxMode: s.str("mode", "min") == "max", absMode: s.str("threshold_mode", "rel") == "abs",
	}
	p.best = math.Inf(1)
	if p.maxMode {
		p.best = math.Inf(-1)
	}
	return p
}

func (p *plateau) better(a float64) bool {
	switch {
	case !p.maxMode && !p.absMode:
		return a < p.best*(1-p.threshold)
	case !p.maxMode:
		return a < p.best-p.threshold
	case !p.absMode:
		return a > p.best*(1+p.threshold)
	}
	return a > p.best+p.threshold
}

// step takes one metric and reports whether the rate was reduced.
func (p *plateau) step(metric float64) bool {
	if p.better(metric) {
		p.best, p.bad = metric, 0
	} else {
		p.bad++
	}
	if p.coolLeft > 0 {
		p.coolLeft--
		p.bad = 0
	}
	if p.bad <= p.patience {
		return false
	}
	p.coolLeft, p.bad = p.cooldown, 0
	next := math.Max(p.lr*p.factor, p.minLR)
	if p.lr-next <= p.eps {
		return false
	}
	p.lr = next
	return true
}
