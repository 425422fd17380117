package train

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/gomlx/gomlx/pkg/core/tensors"
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
// log_history. A Trainer resumed (or trained before) continues from its
// GlobalStep.
func (t *Trainer) TrainEval(ctx context.Context, exs, eval []Example) (Result, error) {
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
		return Result{}, fmt.Errorf("%w: %d examples, none with a response token", ErrNoExamples, len(exs))
	}
	exs = kept
	if t.opts.packing {
		exs = PackExamples(exs, t.maxLen)
	}
	plan := t.PlanFor(len(exs))
	rows, accum := t.cfg.PerDeviceBatchSize, t.cfg.GradientAccumulationSteps
	t.log.Info().Int("examples", len(kept)).Int("truncated", truncated).Bool("packing", t.opts.packing).Int("rows", len(exs)).
		Int("num_epochs", t.cfg.NumEpochs).Int("max_steps", plan.TotalSteps).
		Int("warmup_steps", plan.WarmupSteps).Int("per_device_batch_size", rows).
		Int("gradient_accumulation_steps", accum).Msg("training started")

	if t.step > plan.TotalSteps {
		return Result{}, fmt.Errorf("%w: resumed at step %d but the run has %d steps", ErrInvalidOption, t.step, plan.TotalSteps)
	}
	startStep := t.step
	start := time.Now()
	var (
		res                  Result
		lossTotal            float64
		logLoss, logGradNorm float64
		logSteps, logSamples int
		logStart             = time.Now()
		samplesDone          int
	)
	for epoch := range t.cfg.NumEpochs {
		order := EpochOrder(t.opts.seed, epoch, len(exs))
		for w := 0; w < plan.StepsPerEpoch; w++ {
			if epoch*plan.StepsPerEpoch+w < t.step { // done before a resume
				continue
			}
			if err := ctx.Err(); err != nil {
				return res, err
			}
			lr, err := LearningRate(t.cfg.LRSchedulerType, t.cfg.LearningRate, t.step, plan.WarmupSteps, plan.TotalSteps)
			if err != nil {
				return res, err
			}
			var (
				accT              []*tensors.Tensor
				lossSum, wSum, gn float64
				samples           int
			)
			last := min((w+1)*accum, plan.MicroBatchesPerEpoch) - 1
			for m := w * accum; m <= last; m++ {
				lo, hi := m*rows, min((m+1)*rows, len(exs))
				batch := make([]Example, 0, hi-lo)
				for _, i := range order[lo:hi] {
					batch = append(batch, exs[i])
				}
				b := t.makeBatch(batch, rows)
				var l, ws float64
				if m == last {
					l, ws, gn, err = t.trainStep(b, accT, wSum, lr, m-w*accum)
				} else {
					accT, l, ws, err = t.microStep(b, accT, m-w*accum)
				}
				if err != nil {
					return res, err
				}
				lossSum += l
				wSum += ws
				samples += b.Samples
			}
			stepLoss := lossSum / math.Max(wSum, 1)
			lossTotal += stepLoss
			logLoss += stepLoss
			logGradNorm = gn
			logSteps++
			logSamples += samples
			samplesDone += samples
			epochF := float64(epoch) + float64(w+1)/float64(plan.StepsPerEpoch)
			if t.step%t.cfg.LoggingSteps == 0 || t.step == plan.TotalSteps {
				el := time.Since(logStart).Seconds()
				entry := map[string]any{
					"loss":                     round(logLoss / float64(logSteps)),
					"learning_rate":            lr,
					"epoch":                    round(epochF),
					"global_step":              t.step,
					"step":                     t.step,
					"grad_norm":                round(logGradNorm),
					"train_samples_per_second": round(float64(logSamples) / math.Max(el, 1e-9)),
				}
				t.history = append(t.history, entry)
				t.metrics.set(entry)
				t.log.Info().Float64("loss", entry["loss"].(float64)).Float64("learning_rate", lr).
					Float64("epoch", entry["epoch"].(float64)).Int("global_step", t.step).
					Float64("grad_norm", entry["grad_norm"].(float64)).
					Float64("train_samples_per_second", entry["train_samples_per_second"].(float64)).Msg("train step")
				logLoss, logSteps, logSamples, logStart = 0, 0, 0, time.Now()
			}
			if len(eval) > 0 && (t.step%t.cfg.EvalSteps == 0 || t.step == plan.TotalSteps) {
				er, err := t.Evaluate(ctx, eval)
				if err != nil {
					return res, fmt.Errorf("evaluate: %w", err)
				}
				res.Eval = &er
				evalEntry := map[string]any{
					"eval_loss": round(er.Loss), "perplexity": round(er.Perplexity), "accuracy": round(er.Accuracy),
					"epoch": round(epochF), "step": t.step,
				}
				t.history = append(t.history, evalEntry)
				t.metrics.set(map[string]any{"eval_loss": er.Loss, "perplexity": er.Perplexity, "accuracy": er.Accuracy})
				t.log.Info().Float64("eval_loss", er.Loss).Float64("perplexity", er.Perplexity).
					Float64("accuracy", er.Accuracy).Int("global_step", t.step).Msg("eval")
			}
			if err := t.afterStep(ctx, plan, stepLoss, lr, epochF, gn); err != nil {
				return res, err
			}
			if t.cfg.OutputDir != "" && t.step%t.cfg.SaveSteps == 0 {
				dir, err := t.saveCheckpoint(plan, epochF)
				if err != nil {
					return res, err
				}
				t.log.Info().Str("checkpoint", dir).Int("global_step", t.step).Msg("checkpoint saved")
			}
		}
	}
	res.GlobalStep = t.step
	res.Epoch = float64(t.cfg.NumEpochs)
	res.TrainLoss = lossTotal / float64(max(1, plan.TotalSteps-startStep))
	res.Runtime = time.Since(start)
	res.SamplesPerSecond = float64(samplesDone) / math.Max(res.Runtime.Seconds(), 1e-9)
	t.history = append(t.history, map[string]any{
		"epoch": res.Epoch, "step": t.step, "train_loss": round(res.TrainLoss),
		"train_runtime": round(res.Runtime.Seconds()), "train_samples_per_second": round(res.SamplesPerSecond),
	})
	if t.cfg.OutputDir != "" {
		if err := t.saveFinal(plan); err != nil {
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
