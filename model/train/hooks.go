package train

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Progress is what a WithProgress callback receives after each optimizer
// step of Train, TrainEval or TrainDPO.
type Progress struct {
	Step         int     // global step just taken (1-based)
	MaxSteps     int     // steps of the whole run
	Loss         float64 // this step's training loss
	LearningRate float64 // the learning rate the step used
	Epoch        float64 // fractional epoch reached
	GradNorm     float64 // gradient norm before clipping
	// SamplesPerSecond is the training throughput of this run so far
	// (per_device_batch_size × gradient_accumulation_steps a step); 0
	// until two steps have been timed.
	SamplesPerSecond float64
	// ETA is the estimated time left, from the mean step time of this run
	// so far; 0 until two steps have been timed.
	ETA time.Duration
	// Eval is the evaluation this step ran (every eval_steps and at the
	// last step, when there is an eval split), else nil.
	Eval *EvalResult
}

// progressHook holds a WithProgress callback and its timing baseline.
type progressHook struct {
	f         func(Progress)
	t0        time.Time
	step0     int
	baselined bool
}

// WithProgress calls f after every optimizer step, before that step's
// checkpoint (if any) is saved; f runs on the training goroutine and should
// return quickly. Whether or not f is given, training stops before the next
// step, and saves nothing more, once its ctx is done.
func WithProgress(f func(Progress)) Option {
	return func(o *options) error {
		if f == nil {
			return fmt.Errorf("%w: nil progress callback", ErrInvalidOption)
		}
		o.progress = &progressHook{f: f}
		return nil
	}
}

// WithCheckpoint calls f with the directory and step of every checkpoint
// once it is complete (its optimizer state written, the oldest beyond
// save_total_limit removed), on the training goroutine, before the next
// step: a caller can copy it elsewhere before training goes on. An error
// from f ends the run with that error.
func WithCheckpoint(f func(dir string, step int) error) Option {
	return func(o *options) error {
		if f == nil {
			return fmt.Errorf("%w: nil checkpoint callback", ErrInvalidOption)
		}
		o.checkpoint = f
		return nil
	}
}

// checkpointSaved calls the WithCheckpoint callback, if any.
func (t *Trainer) checkpointSaved(dir string) error {
	if t.opts.checkpoint == nil {
		return nil
	}
	if err := t.opts.checkpoint(dir, t.step); err != nil {
		return fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	return nil
}

// afterStep reports the step just taken to the progress callback and
// returns ctx's error, so that a cancelled run ends before saving.
func (t *Trainer) afterStep(ctx context.Context, plan Plan, loss, lr, epoch, gradNorm float64) error {
	if h := t.opts.progress; h != nil {
		now := time.Now()
		p := Progress{Step: t.step, MaxSteps: plan.TotalSteps, Loss: loss, LearningRate: lr, Epoch: epoch, GradNorm: gradNorm, Eval: t.stepEval}
		if !h.baselined {
			h.t0, h.step0, h.baselined = now, t.step, true
		} else if done := t.step - h.step0; done > 0 {
			per := now.Sub(h.t0) / time.Duration(done)
			p.ETA = per * time.Duration(max(0, plan.TotalSteps-t.step))
			samples := done * t.cfg.PerDeviceBatchSize * max(1, t.cfg.GradientAccumulationSteps)
			p.SamplesPerSecond = float64(samples) / max(now.Sub(h.t0).Seconds(), 1e-9)
		}
		h.f(p)
	}
	t.stepEval = nil
	return ctx.Err()
}

// CompleteCheckpoints is ListCheckpoints without the checkpoints whose
// writing was cut short (a process killed mid-save): a checkpoint is
// complete once its optimizer state, the last file written, is there.
func CompleteCheckpoints(dir string) ([]string, error) {
	cks, err := ListCheckpoints(dir)
	if err != nil {
		return nil, err
	}
	out := cks[:0]
	for _, c := range cks {
		if _, err := os.Stat(filepath.Join(c, OptimizerFile)); err == nil {
			out = append(out, c)
		}
	}
	return out, nil
}
