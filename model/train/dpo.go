package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive,staticcheck // the GoMLX convention for graph code
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/schemas"
)

// DefaultDPOBeta is the DPO sigmoid loss's beta (schemas.DefaultDPOBeta).
const DefaultDPOBeta = schemas.DefaultDPOBeta

// DPOPair is a preference pair: the prompt followed by the chosen and by
// the rejected response (loss weight 1 on the response tokens).
type DPOPair struct {
	Chosen, Rejected Example
}

// RenderDPO tokenizes a DPO record: the prompt as written, then each
// response and EOS. truncated reports that either side was cut.
func (r *Renderer) RenderDPO(rec schemas.Record) (p DPOPair, truncated bool, err error) {
	if rec.Format != schemas.FormatDPO {
		return DPOPair{}, false, fmt.Errorf("%w: format %q is not dpo", ErrUnsupportedRecord, rec.Format)
	}
	side := func(resp string) (Example, bool) {
		var ex Example
		add := func(ids []int, w float32) {
			for _, id := range ids {
				ex.Tokens, ex.Weights = append(ex.Tokens, int32(id)), append(ex.Weights, w)
			}
		}
		if bos, ok := r.tok.BOS(); ok {
			add([]int{bos}, 0)
		}
		add(r.tok.Encode(rec.DPO.Prompt, false), 0)
		add(r.tok.Encode(resp, false), 1)
		if eos, ok := r.tok.EOS(); ok {
			add([]int{eos}, 1)
		}
		if len(ex.Tokens) > r.maxLen {
			ex.Tokens, ex.Weights = ex.Tokens[:r.maxLen], ex.Weights[:r.maxLen]
			return ex, true
		}
		return ex, false
	}
	var c1, c2 bool
	p.Chosen, c1 = side(rec.DPO.Chosen)
	p.Rejected, c2 = side(rec.DPO.Rejected)
	return p, c1 || c2, nil
}

// DPOStats are the DPO metrics of a logging window.
type DPOStats struct {
	Loss            float64 `json:"loss"`
	RewardsChosen   float64 `json:"rewards/chosen"`
	RewardsRejected float64 `json:"rewards/rejected"`
	RewardsAccuracy float64 `json:"rewards/accuracies"`
	RewardsMargin   float64 `json:"rewards/margins"`
}

// seqLogpGraph returns each row's summed weighted log-probability.
func (t *Trainer) seqLogpGraph(rows, cols int) (*Graph, error) {
	return t.graph(graphKey{"seq_logp", rows, cols}, func(g *Graph) []*Node {
		mw, _ := t.modelNodes(g)
		tok, tgt, w := batchInputs(g, rows, cols)
		lp := tokenLogprobs(model.Forward(t.mcfg, mw, tok), tgt)
		return []*Node{ReduceSum(Mul(lp, w), 1)}
	})
}

// dpoGraph is the forward and backward pass of the DPO sigmoid loss over
// pairs rows (chosen rows first, then rejected), given the reference
// log-probabilities [2*pairs] and a pair mask [pairs].
func (t *Trainer) dpoGraph(pairs, cols int, beta float64, first bool) (*Graph, error) {
	kind := "dpo_acc"
	if first {
		kind = "dpo"
	}
	return t.graph(graphKey{kind, pairs, cols}, func(g *Graph) []*Node {
		mw, ps := t.modelNodes(g)
		var acc []*Node
		if !first {
			_, acc = t.weightNodes(g, "acc.")
		}
		tok, tgt, w := batchInputs(g, 2*pairs, cols)
		ref := Parameter(g, "ref_logp", shapes.Make(dtypes.Float32, 2*pairs))
		mask := Parameter(g, "pair_mask", shapes.Make(dtypes.Float32, pairs))
		lp := tokenLogprobs(model.Forward(t.mcfg, mw, tok), tgt)
		ratio := Reshape(Sub(ReduceSum(Mul(lp, w), 1), ref), 2, pairs) // [2, pairs]
		pick := func(row int) *Node {
			m := [][]float32{make([]float32, pairs), make([]float32, pairs)}
			for i := range pairs {
				m[row][i] = 1
			}
			return ReduceSum(Mul(ratio, Const(g, m)), 0)
		}
		rc, rr := MulScalar(pick(0), beta), MulScalar(pick(1), beta) // rewards [pairs]
		z := Sub(rc, rr)
		loss := Log(OnePlus(Exp(Neg(z)))) // -log sigmoid(z)
		lossSum := ReduceAllSum(Mul(loss, mask))
		grads := Gradient(lossSum, ps...)
		if !first {
			for i := range grads {
				grads[i] = Add(acc[i], grads[i])
			}
		}
		correct := ConvertDType(GreaterThan(rc, rr), dtypes.Float32)
		sg := func(x *Node) *Node { return StopGradient(ReduceAllSum(Mul(x, mask))) }
		return append(grads, lossSum, sg(rc), sg(rr), sg(correct))
	})
}

// TrainDPO runs num_epochs of DPO (sigmoid loss with beta, 0 for
// DefaultDPOBeta) over pairs against a frozen reference: the weights the
// trainer holds when TrainDPO starts (the base, or the base without its
// adapters under LoRA). It logs loss, rewards/chosen, rewards/rejected,
// rewards/accuracies and rewards/margins every logging_steps and saves
// checkpoints as Train does. The returned stats are the last window's.
func (t *Trainer) TrainDPO(ctx context.Context, pairs []DPOPair, beta float64) (Result, DPOStats, error) {
	if beta == 0 {
		beta = DefaultDPOBeta
	}
	if len(pairs) == 0 {
		return Result{}, DPOStats{}, ErrNoExamples
	}
	if !(beta > 0) || math.IsInf(beta, 0) {
		return Result{}, DPOStats{}, fmt.Errorf("%w: beta %v", ErrInvalidOption, beta)
	}
	rows := t.cfg.PerDeviceBatchSize
	// Reference log-probabilities, once, under the starting weights.
	ref := make([][2]float32, len(pairs))
	for lo := 0; lo < len(pairs); lo += rows {
		hi := min(lo+rows, len(pairs))
		v, err := t.seqLogps(ctx, t.pairBatch(pairs[lo:hi], rows))
		if err != nil {
			return Result{}, DPOStats{}, err
		}
		for i := range hi - lo {
			ref[lo+i] = [2]float32{float32(v[i]), float32(v[rows+i])}
		}
	}
	plan := t.PlanFor(len(pairs))
	t.epochTokens = 0
	for _, p := range pairs {
		t.epochTokens += len(p.Chosen.Tokens) + len(p.Rejected.Tokens)
	}
	sched, err := NewSchedule(t.cfg, plan.WarmupSteps, plan.TotalSteps)
	if err != nil {
		return Result{}, DPOStats{}, err
	}
	if sched.NeedsEvaluation() {
		return Result{}, DPOStats{}, fmt.Errorf("%w: lr_scheduler_type reduce_lr_on_plateau needs evaluation, which DPO does not run", ErrInvalidOption)
	}
	accum := t.cfg.GradientAccumulationSteps
	start := time.Now()
	var (
		frozen [][]float32
		res    Result
		st     DPOStats
		win    [5]float64 // loss, chosen, rejected, correct, pairs
		total  float64
	)
	for epoch := range t.cfg.NumEpochs {
		order := EpochOrder(t.opts.seed, epoch, len(pairs))
		for w := 0; w < plan.StepsPerEpoch; w++ {
			if epoch*plan.StepsPerEpoch+w < t.step {
				continue
			}
			if err := ctx.Err(); err != nil {
				return res, st, err
			}
			var (
				acc         []*tensors.Tensor
				params      [][]float32
				n, stepLoss float64
			)
			if t.native != nil {
				if params, frozen, err = t.nativeValues(); err != nil {
					return res, st, err
				}
			}
			for m := w * accum; m < min((w+1)*accum, plan.MicroBatchesPerEpoch); m++ {
				idx := order[m*rows : min((m+1)*rows, len(pairs))]
				batch := make([]DPOPair, len(idx))
				refv := make([]float32, 2*rows)
				mask := make([]float32, rows)
				for i, k := range idx {
					batch[i] = pairs[k]
					refv[i], refv[rows+i] = ref[k][0], ref[k][1]
					mask[i] = 1
				}
				b := t.pairBatch(batch, rows)
				var sums [4]float64 // loss, chosen, rejected, correct
				if t.native != nil {
					sums, err = t.nativeDPOMicro(ctx, params, frozen, b, refv, mask, beta, m-w*accum)
				} else {
					acc, sums, err = t.graphDPOMicro(b, refv, mask, beta, acc)
				}
				if err != nil {
					return res, st, err
				}
				for k, v := range sums {
					win[k] += v
				}
				win[4] += float64(len(idx))
				stepLoss += sums[0]
				n += float64(len(idx))
			}
			lr := sched.At(t.step)
			var gn float64
			if t.native != nil {
				gn, err = t.nativeApply(params, n, lr)
			} else {
				gn, err = t.apply(acc, n, lr)
			}
			if err != nil {
				return res, st, err
			}
			if err := t.checkFinite(stepLoss/n, gn); err != nil {
				return res, st, err
			}
			total += stepLoss / n
			epochF := float64(epoch) + float64(w+1)/float64(plan.StepsPerEpoch)
			if t.step%t.cfg.LoggingSteps == 0 || t.step == plan.TotalSteps {
				p := math.Max(win[4], 1)
				st = DPOStats{Loss: win[0] / p, RewardsChosen: win[1] / p, RewardsRejected: win[2] / p, RewardsAccuracy: win[3] / p}
				st.RewardsMargin = st.RewardsChosen - st.RewardsRejected
				entry := map[string]any{
					"loss": round(st.Loss), "rewards/chosen": round(st.RewardsChosen), "rewards/rejected": round(st.RewardsRejected),
					"rewards/accuracies": round(st.RewardsAccuracy), "rewards/margins": round(st.RewardsMargin),
					"learning_rate": lr, "epoch": round(epochF), "global_step": t.step, "step": t.step, "grad_norm": round(gn),
				}
				t.history = append(t.history, entry)
				t.metrics.set(entry)
				t.log.Info().Float64("loss", st.Loss).Float64("rewards/chosen", st.RewardsChosen).
					Float64("rewards/rejected", st.RewardsRejected).Float64("rewards/accuracies", st.RewardsAccuracy).
					Float64("rewards/margins", st.RewardsMargin).Float64("learning_rate", lr).Float64("epoch", epochF).
					Int("global_step", t.step).Float64("grad_norm", gn).Msg("dpo step")
				win = [5]float64{}
			}
			if err := t.afterStep(ctx, plan, stepLoss/n, lr, epochF, gn); err != nil {
				return res, st, err
			}
			if t.cfg.OutputDir != "" && t.step%t.cfg.SaveSteps == 0 {
				if _, err := t.saveCheckpoint(plan, epochF); err != nil {
					return res, st, err
				}
			}
		}
	}
	res.GlobalStep = t.step
	res.Epoch = float64(t.cfg.NumEpochs)
	res.TrainLoss = total / float64(max(1, plan.TotalSteps))
	res.Runtime = time.Since(start)
	res.SamplesPerSecond = float64(len(pairs)*t.cfg.NumEpochs) / math.Max(res.Runtime.Seconds(), 1e-9)
	if t.cfg.OutputDir != "" {
		if err := t.saveFinal(plan); err != nil {
			return res, st, err
		}
	}
	return res, st, nil
}

// seqLogps returns each row's summed weighted log-probability of b under
// the current weights, on the trainer's engine.
func (t *Trainer) seqLogps(ctx context.Context, b Batch) ([]float64, error) {
	if t.native != nil {
		return t.nativeSeqLogps(ctx, b)
	}
	g, err := t.seqLogpGraph(b.Rows, b.Len)
	if err != nil {
		return nil, err
	}
	out, err := run(g, append(t.modelArgs(), t.batchArgs(b)...)...)
	if err != nil {
		return nil, err
	}
	v, err := tensors.CopyFlatData[float32](out[0])
	_ = out[0].FinalizeAll()
	if err != nil {
		return nil, errors.Join(ErrBackend, err)
	}
	sums := make([]float64, len(v))
	for i, x := range v {
		sums[i] = float64(x)
	}
	return sums, nil
}

// graphDPOMicro runs one DPO micro-batch b (chosen rows, then rejected;
// refv the reference log-probabilities, mask the real pairs) on the graph
// engine, adding its gradients to acc (nil: the window's first); it
// returns the new accumulators and the summed loss, chosen and rejected
// rewards and pairs ranked right.
func (t *Trainer) graphDPOMicro(b Batch, refv, mask []float32, beta float64, acc []*tensors.Tensor) ([]*tensors.Tensor, [4]float64, error) {
	var sums [4]float64
	g, err := t.dpoGraph(len(mask), b.Len, beta, acc == nil)
	if err != nil {
		return nil, sums, err
	}
	args := t.modelArgs()
	for _, a := range acc {
		args = append(args, a)
	}
	args = append(args, t.batchArgs(b)...)
	args = append(args, tensors.FromFlatDataAndDimensions(refv, len(refv)), tensors.FromFlatDataAndDimensions(mask, len(mask)))
	out, err := run(g, args...)
	if err != nil {
		return nil, sums, err
	}
	for _, a := range acc {
		_ = a.FinalizeAll()
	}
	k := len(t.params)
	for i := range sums {
		sums[i] = scalarOf(out[k+i])
	}
	return out[:k], sums, nil
}

// nativeDPOMicro is graphDPOMicro on the native engine, number micro of
// its window, adding to the native accumulators: the sigmoid loss
// log(1+exp(-z)) of z = β(ratio_chosen − ratio_rejected), each ratio the
// row's summed log-probability less the reference's, seeds the backward
// pass of each row's tokens with the row's dloss/dlogp times the token's
// weight.
func (t *Trainer) nativeDPOMicro(ctx context.Context, params, frozen [][]float32, b Batch, refv, mask []float32, beta float64, micro int) ([4]float64, error) {
	var sums [4]float64
	pairs := len(mask)
	_, err := t.nativeMicro(ctx, params, frozen, b, micro, false, func(p *model.TrainPass) []float32 {
		lp := rowSums(p.Logprobs(), b)
		drow := make([]float64, b.Rows) // dloss/d(row's summed log-probability)
		for i := range pairs {
			if mask[i] == 0 {
				continue
			}
			rc := beta * (lp[i] - float64(refv[i]))
			rr := beta * (lp[pairs+i] - float64(refv[pairs+i]))
			z := rc - rr
			sums[0] += math.Log1p(math.Exp(-z))
			sums[1] += rc
			sums[2] += rr
			if rc > rr {
				sums[3]++
			}
			dz := -1 / (1 + math.Exp(z)) // d log(1+exp(-z)) / dz
			drow[i], drow[pairs+i] = beta*dz, -beta*dz
		}
		seed := make([]float32, len(b.Weights))
		for t, w := range b.Weights {
			seed[t] = float32(drow[t/b.Len]) * w
		}
		return seed
	})
	return sums, err
}

// pairBatch lays out pairs as one batch: chosen rows, then rejected rows,
// each half padded to rows.
func (t *Trainer) pairBatch(pairs []DPOPair, rows int) Batch {
	exs := make([]Example, 2*rows)
	longest := 0
	for i, p := range pairs {
		exs[i], exs[rows+i] = p.Chosen, p.Rejected
		longest = max(longest, len(p.Chosen.Tokens), len(p.Rejected.Tokens))
	}
	b := MakeBatch(exs, 2*rows, t.bucket(longest), t.padID)
	b.Samples = len(pairs)
	return b
}
