package train

import (
	"context"
	"fmt"
	"strings"

	"github.com/largeforge/largeforge/model"
	"github.com/largeforge/largeforge/model/checkpoint"
	"github.com/largeforge/largeforge/schemas"
)

// The native engine of SFT: each micro-batch's forward and backward pass
// runs on model.TrainEngine (the CPU kernels) instead of a gradient graph;
// the window's gradients, summed in Go slices, feed the same optimizer
// graph (applyGraph) as the graph engine's, so every optimizer, scheduler,
// clipping and the checkpoints are shared. DPO runs on graphs.

// nativeSFT is a Trainer's native engine and its gradient accumulators.
type nativeSFT struct {
	eng    *model.TrainEngine
	grads  *checkpoint.Decoder[[]float32] // the window's summed gradients
	byName map[string][]float32           // the same slices by tensor name
}

// resolveEngine is the engine a trainer runs: the one asked for, else
// native for full fine-tuning on the pure Go backend and graph otherwise.
// Native with LoRA is refused, naming the field.
func resolveEngine(asked, backend string, lora bool) (string, error) {
	switch {
	case asked == schemas.TrainEngineNative && lora:
		return "", fmt.Errorf("%w: engine %s: the native engine does not train LoRA adapters yet (engine: %s does)", ErrInvalidOption, asked, schemas.TrainEngineGraph)
	case asked != "":
		return asked, nil
	case !lora && strings.HasPrefix(backend, "go"):
		return schemas.TrainEngineNative, nil
	}
	return schemas.TrainEngineGraph, nil
}

func newNativeSFT(cfg checkpoint.Config, maxLen int) (*nativeSFT, error) {
	eng, err := model.NewTrainEngine(cfg, maxLen)
	if err != nil {
		return nil, fmt.Errorf("%w: engine %s: %w", ErrInvalidOption, schemas.TrainEngineNative, err)
	}
	n := &nativeSFT{eng: eng, byName: map[string][]float32{}}
	n.grads, err = checkpoint.Bind(cfg, func(w checkpoint.Weight) ([]float32, error) {
		size := 1
		for _, d := range w.Shape {
			size *= d
		}
		n.byName[w.Name] = make([]float32, size)
		return n.byName[w.Name], nil
	})
	if err != nil {
		return nil, err
	}
	return n, nil
}

// nativeWeights binds the trainer's parameters, in place (hostValues), to
// the decoder.
func (t *Trainer) nativeWeights(mutable bool) (*checkpoint.Decoder[[]float32], [][]float32, error) {
	vals, err := hostValues(t.params, mutable)
	if err != nil {
		return nil, nil, err
	}
	byName := make(map[string][]float32, len(t.names))
	for i, n := range t.names {
		byName[n] = vals[i]
	}
	d, err := checkpoint.Bind(t.mcfg, func(w checkpoint.Weight) ([]float32, error) { return byName[w.Name], nil })
	return d, vals, err
}

func trainBatch(b Batch) model.TrainBatch {
	return model.TrainBatch{Rows: b.Rows, Len: b.Len, Tokens: b.Tokens, Targets: b.Targets, Weights: b.Weights}
}

// nativeOptimizerStep is optimizerStep on the native engine.
func (t *Trainer) nativeOptimizerStep(ctx context.Context, r *fitRun, order []int, w int, lr float64) (loss, gradNorm float64, samples int, err error) {
	first, last := t.window(r, w)
	bs := make([]Batch, 0, last-first+1)
	for m := first; m <= last; m++ {
		bs = append(bs, t.microBatch(r, order, m))
		samples += bs[len(bs)-1].Samples
	}
	loss, gradNorm, err = t.nativeStep(ctx, bs, lr)
	return loss, gradNorm, samples, err
}

// nativeStep sums the gradients of the micro-batches bs on the CPU and
// takes the optimizer step at rate lr (applyHost) on the parameters and
// states in place; it returns the window's mean loss and the gradient norm.
func (t *Trainer) nativeStep(ctx context.Context, bs []Batch, lr float64) (loss, gradNorm float64, err error) {
	weights, params, err := t.nativeWeights(true)
	if err != nil {
		return 0, 0, err
	}
	ns := t.native
	for _, g := range ns.byName {
		clear(g)
	}
	var lossSum, wSum float64
	for _, b := range bs {
		p, err := ns.eng.Forward(ctx, weights, trainBatch(b))
		if err != nil {
			return 0, 0, err
		}
		l, ws, _ := p.Loss()
		seed := make([]float32, len(b.Weights))
		for i, v := range b.Weights {
			seed[i] = -v
		}
		if err := p.Backward(ctx, seed, ns.grads); err != nil {
			return 0, 0, err
		}
		lossSum += l
		wSum += ws
	}
	ms, err := hostValues(t.mom, true)
	if err != nil {
		return 0, 0, err
	}
	vs, err := hostValues(t.vel, true)
	if err != nil {
		return 0, 0, err
	}
	acc := make([][]float32, len(t.names))
	for i, n := range t.names {
		acc[i] = ns.byName[n]
	}
	gradNorm = t.applyHost(params, ms, vs, acc, wSum, lr)
	return lossSum / max(wSum, 1), gradNorm, nil
}

// nativeEvaluate is Evaluate's sums on the native engine.
func (t *Trainer) nativeEvaluate(ctx context.Context, exs []Example) (lossSum, wSum, hits float64, err error) {
	weights, _, err := t.nativeWeights(false)
	if err != nil {
		return 0, 0, 0, err
	}
	rows := t.cfg.PerDeviceBatchSize
	for lo := 0; lo < len(exs); lo += rows {
		p, err := t.native.eng.Forward(ctx, weights, trainBatch(t.makeBatch(exs[lo:min(lo+rows, len(exs))], rows)))
		if err != nil {
			return 0, 0, 0, err
		}
		l, w, h := p.Loss()
		lossSum, wSum, hits = lossSum+l, wSum+w, hits+h
	}
	return lossSum, wSum, hits, nil
}
