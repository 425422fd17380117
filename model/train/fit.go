package train

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// Result summarises a training run.
type Result struct {
	GlobalStep       int           `json:"global_step"`
	Epoch            float64       `json:"epoch"`
	TrainLoss        float64       `json:"train_loss"` // mean over every optimizer step
	Runtime          time.Duration `json:"-"`
	SamplesPerSecond float64       `json:"train_samples_per_second"`
	Checkpoints      []string      `json:"checkpoints"`    // saved checkpoint directories still kept
	Eval             *EvalResult   `json:"eval,omitempty"` // the last evaluation, when there was an eval set
}

// Plan is the shape of a run over n examples.
type Plan struct {
	MicroBatchesPerEpoch int
	StepsPerEpoch        int
	TotalSteps           int
	WarmupSteps          int
}

// PlanFor computes the steps of a run over n examples: one optimizer step
// per gradient_accumulation_steps micro-batches of per_device_batch_size
// (the last window of an epoch may be shorter).
func (t *Trainer) PlanFor(n int) Plan {
	var p Plan
	p.MicroBatchesPerEpoch = (n + t.cfg.PerDeviceBatchSize - 1) / t.cfg.PerDeviceBatchSize
	p.StepsPerEpoch = (p.MicroBatchesPerEpoch + t.cfg.GradientAccumulationSteps - 1) / t.cfg.GradientAccumulationSteps
	p.TotalSteps = p.StepsPerEpoch * t.cfg.NumEpochs
	p.WarmupSteps = WarmupSteps(t.cfg.WarmupRatio, p.TotalSteps)
	return p
}

// Train runs num_epochs of SFT over exs, shuffled per epoch from the seed,
// logging every logging_steps, saving checkpoint-<step>/ under output_dir
// every save_steps (keeping save_total_limit) and the final model into
// output_dir. Examples longer than the maximum length are truncated.
func (t *Trainer) Train(ctx context.Context, exs []Example) (Result, error) {
	return t.TrainEval(ctx, exs, nil)
}

// TrainEval is Train that also evaluates eval (when not empty) every
// eval_steps and at the last step, logging the §5.2 eval_loss, perplexity
// and accuracy (next-token accuracy on response tokens) and adding them to
// log_history; reduce_lr_on_plateau takes its rate from these evaluations
// and needs an eval set. A Trainer resumed (or trained before) continues
// from its GlobalStep. The run is staged: prepare, each epoch's optimizer
// steps (each logged, evaluated and checkpointed on its schedule), finish.
func (t *Trainer) TrainEval(ctx context.Context, exs, eval []Example) (Result, error) {
	r, err := t.prepare(exs, eval)
	if err != nil {
		return Result{}, err
	}
	for epoch := range t.cfg.NumEpochs {
		if err := t.runEpoch(ctx, r, epoch); err != nil {
			return r.res, err
		}
	}
	return t.finish(r)
}

// fitRun is the state of one TrainEval call.
type fitRun struct {
	exs, eval   []Example
	plan        Plan
	sched       *Schedule
	startStep   int
	start       time.Time
	lossTotal   float64
	samplesDone int
	res         Result
	// the logging window since the last "train step" line
	logLoss, logGradNorm float64
	logSteps, logSamples int
	logStart             time.Time
}

// prepare truncates exs to the maximum length, keeps those with a response
// token (packed when asked), plans the run and builds its schedule (replaying
// the evaluations of a resumed run's history into reduce_lr_on_plateau).
func (t *Trainer) prepare(exs, eval []Example) (*fitRun, error) {
	var kept []Example
	truncated := 0
	for _, e := range exs {
		if len(e.Tokens) > t.maxLen {
			e.Tokens, e.Weights = e.Tokens[:t.maxLen], e.Weights[:t.maxLen]
			truncated++
		}
		if e.ResponseTokens() > 0 {
			kept = append(kept, e)
		}
	}
	if len(kept) == 0 {
		return nil, fmt.Errorf("%w: %d examples, none with a response token", ErrNoExamples, len(exs))
	}
	rows := kept
	if t.opts.packing {
		rows = PackExamples(kept, t.maxLen)
	}
	plan := t.PlanFor(len(rows))
	t.epochTokens = 0
	for _, e := range rows {
		t.epochTokens += len(e.Tokens)
	}
	t.log.Info().Int("examples", len(kept)).Int("truncated", truncated).Bool("packing", t.opts.packing).Int("rows", len(rows)).
		Int("num_epochs", t.cfg.NumEpochs).Int("max_steps", plan.TotalSteps).
		Int("warmup_steps", plan.WarmupSteps).Int("per_device_batch_size", t.cfg.PerDeviceBatchSize).
		Int("gradient_accumulation_steps", t.cfg.GradientAccumulationSteps).Int("eval_examples", len(eval)).
		Str("optim", t.cfg.Optim).Str("lr_scheduler_type", t.cfg.LRSchedulerType).Msg("training started")
	if t.step > plan.TotalSteps {
		return nil, fmt.Errorf("%w: resumed at step %d but the run has %d steps", ErrInvalidOption, t.step, plan.TotalSteps)
	}
	sched, err := NewSchedule(t.cfg, plan.WarmupSteps, plan.TotalSteps)
	if err != nil {
		return nil, err
	}
	if sched.NeedsEvaluation() && len(eval) == 0 {
		return nil, fmt.Errorf("%w: lr_scheduler_type reduce_lr_on_plateau needs evaluation (an eval set, eval_split > 0)", ErrInvalidOption)
	}
	for _, h := range t.history {
		if l, ok := h["eval_loss"].(float64); ok {
			sched.Observe(l)
		}
	}
	now := time.Now()
	return &fitRun{exs: rows, eval: eval, plan: plan, sched: sched, startStep: t.step, start: now, logStart: now}, nil
}

// runEpoch takes the optimizer steps of one epoch not taken before a resume,
// in the epoch's order, each followed by its log line, evaluation, progress
// report and checkpoint when they are due.
func (t *Trainer) runEpoch(ctx context.Context, r *fitRun, epoch int) error {
	order := EpochOrder(t.opts.seed, epoch, len(r.exs))
	for w := 0; w < r.plan.StepsPerEpoch; w++ {
		if epoch*r.plan.StepsPerEpoch+w < t.step { // done before a resume
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		lr := r.sched.At(t.step)
		var (
			loss, gradNorm float64
			samples        int
			err            error
		)
		if t.native != nil {
			loss, gradNorm, samples, err = t.nativeOptimizerStep(ctx, r, order, w, lr)
		} else {
			loss, gradNorm, samples, err = t.optimizerStep(r, order, w, lr)
		}
		if err != nil {
			return err
		}
		if err := t.checkFinite(loss, gradNorm); err != nil {
			return err
		}
		epochF := float64(epoch) + float64(w+1)/float64(r.plan.StepsPerEpoch)
		r.lossTotal += loss
		r.samplesDone += samples
		t.logStep(r, loss, gradNorm, lr, epochF, samples)
		if len(r.eval) > 0 && (t.step%t.cfg.EvalSteps == 0 || t.step == r.plan.TotalSteps) {
			if err := t.evaluateStep(ctx, r, epochF); err != nil {
				return err
			}
		}
		if err := t.afterStep(ctx, r.plan, loss, lr, epochF, gradNorm); err != nil {
			return err
		}
		if t.cfg.OutputDir != "" && t.step%t.cfg.SaveSteps == 0 {
			dir, err := t.saveCheckpoint(r.plan, epochF)
			if err != nil {
				return err
			}
			t.log.Info().Str("checkpoint", dir).Int("global_step", t.step).Msg("checkpoint saved")
		}
	}
	return nil
}

// optimizerStep runs window w of order (gradient_accumulation_steps
// micro-batches) and the optimizer update at rate lr, and returns the
// step's mean loss, the gradient norm and the samples seen.
func (t *Trainer) optimizerStep(r *fitRun, order []int, w int, lr float64) (loss, gradNorm float64, samples int, err error) {
	var (
		acc           []*tensors.Tensor
		lossSum, wSum float64
	)
	first, last := t.window(r, w)
	for m := first; m <= last; m++ {
		b := t.microBatch(r, order, m)
		var l, ws float64
		if m == last {
			l, ws, gradNorm, err = t.trainStep(b, acc, wSum, lr, m-first)
		} else {
			acc, l, ws, err = t.microStep(b, acc, m-first)
		}
		if err != nil {
			return 0, 0, 0, err
		}
		lossSum += l
		wSum += ws
		samples += b.Samples
	}
	return lossSum / math.Max(wSum, 1), gradNorm, samples, nil
}

// checkFinite stops the run at the step just taken when its loss or
// gradient norm is NaN or infinite, before anything of it is logged,
// evaluated or saved: the checkpoints saved before it stay as they were.
func (t *Trainer) checkFinite(loss, gradNorm float64) error {
	if finite(loss) && finite(gradNorm) {
		return nil
	}
	t.log.Error().Int("global_step", t.step).Float64("loss", loss).Float64("grad_norm", gradNorm).
		Msg("loss or gradient not finite: training stopped, no checkpoint of this step is saved")
	return fmt.Errorf("%w: step %d: loss %v, grad_norm %v; training stopped, the checkpoints saved before it are kept as they were",
		ErrNonFinite, t.step, loss, gradNorm)
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// checkFiniteTensors refuses to save weights with a NaN or infinite value.
func (t *Trainer) checkFiniteTensors(ts map[string]*checkpoint.Tensor) error {
	for n, x := range ts {
		for i, v := range x.Data {
			if !finite(float64(v)) {
				return fmt.Errorf("%w: step %d: %s[%d] = %v; nothing of this step is saved", ErrNonFinite, t.step, n, i, v)
			}
		}
	}
	return nil
}

// window is the first and last micro-batch of window w.
func (t *Trainer) window(r *fitRun, w int) (first, last int) {
	accum := t.cfg.GradientAccumulationSteps
	return w * accum, min((w+1)*accum, r.plan.MicroBatchesPerEpoch) - 1
}

// microBatch is micro-batch m of the epoch's order.
func (t *Trainer) microBatch(r *fitRun, order []int, m int) Batch {
	rows := t.cfg.PerDeviceBatchSize
	lo, hi := m*rows, min((m+1)*rows, len(r.exs))
	batch := make([]Example, 0, hi-lo)
	for _, i := range order[lo:hi] {
		batch = append(batch, r.exs[i])
	}
	return t.makeBatch(batch, rows)
}

// logStep adds the step to the logging window and, every logging_steps and
// at the last step, writes the window's §5.1 entry to log_history, the
// gauges and the log.
func (t *Trainer) logStep(r *fitRun, loss, gradNorm, lr, epochF float64, samples int) {
	r.logLoss += loss
	r.logGradNorm = gradNorm
	r.logSteps++
	r.logSamples += samples
	if t.step%t.cfg.LoggingSteps != 0 && t.step != r.plan.TotalSteps {
		return
	}
	el := time.Since(r.logStart).Seconds()
	entry := map[string]any{
		"loss":                     round(r.logLoss / float64(r.logSteps)),
		"learning_rate":            lr,
		"epoch":                    round(epochF),
		"global_step":              t.step,
		"step":                     t.step,
		"grad_norm":                round(r.logGradNorm),
		"train_samples_per_second": round(float64(r.logSamples) / math.Max(el, 1e-9)),
	}
	t.history = append(t.history, entry)
	t.metrics.set(entry)
	t.log.Info().Float64("loss", entry["loss"].(float64)).Float64("learning_rate", lr).
		Float64("epoch", entry["epoch"].(float64)).Int("global_step", t.step).
		Float64("grad_norm", entry["grad_norm"].(float64)).
		Float64("train_samples_per_second", entry["train_samples_per_second"].(float64)).Msg("train step")
	r.logLoss, r.logSteps, r.logSamples, r.logStart = 0, 0, 0, time.Now()
}

// evaluateStep evaluates the eval set: log_history, the §5.2 gauges (set
// from the first evaluation on), the log, and reduce_lr_on_plateau.
func (t *Trainer) evaluateStep(ctx context.Context, r *fitRun, epochF float64) error {
	er, err := t.Evaluate(ctx, r.eval)
	if err != nil {
		return fmt.Errorf("evaluate: %w", err)
	}
	r.res.Eval = &er
	t.stepEval = &er
	t.history = append(t.history, map[string]any{
		"eval_loss": round(er.Loss), "perplexity": round(er.Perplexity), "accuracy": round(er.Accuracy),
		"epoch": round(epochF), "step": t.step,
	})
	t.metrics.set(map[string]any{"eval_loss": er.Loss, "perplexity": er.Perplexity, "accuracy": er.Accuracy})
	t.log.Info().Float64("eval_loss", er.Loss).Float64("perplexity", er.Perplexity).
		Float64("accuracy", er.Accuracy).Int("global_step", t.step).Msg("eval")
	if r.sched.Observe(er.Loss) {
		t.log.Info().Float64("learning_rate", r.sched.At(t.step)).Int("global_step", t.step).Msg("learning rate reduced on plateau")
	}
	return nil
}

// finish fills in the result, adds the run's summary to log_history and
// saves the final model (with the checkpoints still kept) into output_dir.
func (t *Trainer) finish(r *fitRun) (Result, error) {
	res := r.res
	res.GlobalStep = t.step
	res.Epoch = float64(t.cfg.NumEpochs)
	res.TrainLoss = r.lossTotal / float64(max(1, r.plan.TotalSteps-r.startStep))
	res.Runtime = time.Since(r.start)
	res.SamplesPerSecond = float64(r.samplesDone) / math.Max(res.Runtime.Seconds(), 1e-9)
	t.history = append(t.history, map[string]any{
		"epoch": res.Epoch, "step": t.step, "train_loss": round(res.TrainLoss),
		"train_runtime": round(res.Runtime.Seconds()), "train_samples_per_second": round(res.SamplesPerSecond),
	})
	if t.cfg.OutputDir != "" {
		if err := t.saveFinal(r.plan); err != nil {
			return res, err
		}
		cks, err := ListCheckpoints(t.cfg.OutputDir)
		if err != nil {
			return res, err
		}
		res.Checkpoints = cks
	}
	t.log.Info().Int("global_step", t.step).Float64("train_loss", res.TrainLoss).
		Float64("train_samples_per_second", res.SamplesPerSecond).Dur("took", res.Runtime).Msg("training finished")
	return res, nil
}

// PackExamples concatenates exs, in order, into rows of at most maxLen
// tokens: an example goes into the current row when it fits and starts a
// new row otherwise (longer examples are cut to maxLen first). The first
// token of every example carries no loss, so no example is trained to
// follow the one before it. See WithPacking.
func PackExamples(exs []Example, maxLen int) []Example {
	var out []Example
	var cur Example
	for _, e := range exs {
		toks, ws := e.Tokens[:min(len(e.Tokens), maxLen)], e.Weights[:min(len(e.Weights), maxLen)]
		if len(toks) == 0 {
			continue
		}
		if len(cur.Tokens)+len(toks) > maxLen {
			out = append(out, cur)
			cur = Example{}
		}
		cur.Tokens = append(cur.Tokens, toks...)
		cur.Weights = append(cur.Weights, 0)
		cur.Weights = append(cur.Weights, ws[1:]...)
	}
	if len(cur.Tokens) > 0 {
		out = append(out, cur)
	}
	return out
}

func round(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return x
	}
	return math.Round(x*1e6) / 1e6
}
