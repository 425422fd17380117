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
// runs on model.TrainEngine (the CPU kernels) instead of a gradient graph,
// the window's gradients are summed in Go slices and the optimizer step
// (applyHost) updates the trainer's tensors in place; schedulers, clipping
// and checkpoints are the graph engine's. Under LoRA each micro-batch runs
// with the adapted weights merged, W + scale·B·(A∘mask) (mask: the
// micro-batch's lora_dropout mask of A's columns, as the graph engine
// draws it); the engine computes the merged weights' gradients only (the
// rest of the base is frozen: no gradient, no optimizer state), and the
// chain rule takes them to A and B. DPO runs its policy on the engine too,
// seeding the backward pass with its loss's gradient by row
// (nativeDPOMicro), its reference computed once with the same forward pass.

// nativeSFT is a Trainer's native engine and its gradient accumulators.
type nativeSFT struct {
	eng *model.TrainEngine
	acc [][]float32 // the window's summed gradients, in t.names order
	// Under LoRA: each adapted weight's merged value and gradient (one
	// micro-batch's) and the adapter's A∘mask, by adapter.
	merged, mergedGrad, maskedA [][]float32
}

// resolveEngine is the engine a trainer runs: the one asked for, else
// native on the pure Go backend and graph otherwise.
func resolveEngine(asked, backend string) string {
	switch {
	case asked != "":
		return asked
	case strings.HasPrefix(backend, "go"):
		return schemas.TrainEngineNative
	}
	return schemas.TrainEngineGraph
}

// newNative builds the native engine of a trainer whose tensors are set.
func (t *Trainer) newNative() (*nativeSFT, error) {
	eng, err := model.NewTrainEngine(t.mcfg, t.maxLen)
	if err != nil {
		return nil, fmt.Errorf("%w: engine %s: %w", ErrInvalidOption, schemas.TrainEngineNative, err)
	}
	n := &nativeSFT{eng: eng}
	for _, p := range t.params {
		n.acc = append(n.acc, make([]float32, p.Shape().Size()))
	}
	if t.lora != nil {
		frozen := t.frozenIndex()
		for _, a := range t.lora.adapters {
			size := t.frozen[frozen[a.base]].Shape().Size()
			n.merged = append(n.merged, make([]float32, size))
			n.mergedGrad = append(n.mergedGrad, make([]float32, size))
			n.maskedA = append(n.maskedA, make([]float32, t.lora.cfg.R*a.in))
		}
	}
	return n, nil
}

func (t *Trainer) trainedIndex() map[string]int { return indexOf(t.names) }
func (t *Trainer) frozenIndex() map[string]int  { return indexOf(t.frozenNames) }

func indexOf(names []string) map[string]int {
	m := make(map[string]int, len(names))
	for i, n := range names {
		m[n] = i
	}
	return m
}

// nativeBind binds the decoder's weights for one micro-batch from the
// trained tensors' values params and the frozen ones' frozen (t.names and
// t.frozenNames order): under LoRA the adapted weights merged, their A
// scaled by masks (the micro-batch's dropout masks; nil: none). It also
// binds the gradients the micro-batch adds to: the accumulators of the
// trained tensors, under LoRA the merged weights' own (cleared here) and
// the trained biases'; the frozen tensors have none.
func (t *Trainer) nativeBind(params, frozen, masks [][]float32) (w, g *checkpoint.Decoder[[]float32], err error) {
	ns, trained := t.native, t.trainedIndex()
	wByName, gByName := map[string][]float32{}, map[string][]float32{}
	if t.lora == nil {
		for n, i := range trained {
			wByName[n], gByName[n] = params[i], ns.acc[i]
		}
	} else {
		for n, i := range t.frozenIndex() {
			wByName[n] = frozen[i]
		}
		for _, b := range t.lora.biases {
			wByName[b.base], gByName[b.base] = params[trained[b.peft]], ns.acc[trained[b.peft]]
		}
		t.mergeAdapters(params, wByName, masks)
		for i, a := range t.lora.adapters {
			clear(ns.mergedGrad[i])
			wByName[a.base], gByName[a.base] = ns.merged[i], ns.mergedGrad[i]
		}
	}
	if w, err = checkpoint.Bind(t.mcfg, func(x checkpoint.Weight) ([]float32, error) { return wByName[x.Name], nil }); err != nil {
		return nil, nil, err
	}
	g, err = checkpoint.Bind(t.mcfg, func(x checkpoint.Weight) ([]float32, error) { return gByName[x.Name], nil })
	return w, g, err
}

// mergeAdapters sets each adapter's merged weight, W + scale·B·(A∘mask),
// from the base weights in base (by name) and the adapters in params.
func (t *Trainer) mergeAdapters(params [][]float32, base map[string][]float32, masks [][]float32) {
	ns, trained, r := t.native, t.trainedIndex(), t.lora.cfg.R
	scale := float32(t.lora.scale)
	eachItem(len(t.lora.adapters), func(k int) {
		a := t.lora.adapters[k]
		la, bm, w, merged := ns.maskedA[k], params[trained[a.b]], base[a.base], ns.merged[k]
		copy(la, params[trained[a.a]])
		if masks != nil {
			for row := range r {
				for i, m := range masks[k] {
					la[row*a.in+i] *= m
				}
			}
		}
		out := len(w) / a.in
		for o := range out {
			for i := range a.in {
				var s float32
				for j := range r {
					s += bm[o*r+j] * la[j*a.in+i]
				}
				merged[o*a.in+i] = w[o*a.in+i] + s*scale
			}
		}
	})
}

// adapterGrads adds to the accumulators of A and B the gradients of the
// micro-batch's merged weights (gW): with G = scale·gW, B gets G·(A∘mask)ᵀ
// and A gets (Bᵀ·G)∘mask.
func (t *Trainer) adapterGrads(params, masks [][]float32) {
	ns, trained, r := t.native, t.trainedIndex(), t.lora.cfg.R
	scale := float32(t.lora.scale)
	eachItem(len(t.lora.adapters), func(k int) {
		a := t.lora.adapters[k]
		la, bm, gw := ns.maskedA[k], params[trained[a.b]], ns.mergedGrad[k]
		dA, dB := ns.acc[trained[a.a]], ns.acc[trained[a.b]]
		out := len(gw) / a.in
		dla := make([]float32, r*a.in)
		for o := range out {
			grow := gw[o*a.in : (o+1)*a.in]
			for j := range r {
				bj := bm[o*r+j]
				var s float32
				lrow, drow := la[j*a.in:(j+1)*a.in], dla[j*a.in:(j+1)*a.in]
				for i, gv := range grow {
					g := gv * scale
					s += g * lrow[i]
					drow[i] += bj * g
				}
				dB[o*r+j] += s
			}
		}
		for j := range r {
			for i := range a.in {
				d := dla[j*a.in+i]
				if masks != nil {
					d *= masks[k][i]
				}
				dA[j*a.in+i] += d
			}
		}
	})
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

// nativeStep sums the gradients of the micro-batches bs (nativeAccumulate)
// and takes the optimizer step at rate lr on the parameters and states in
// place; it returns the window's mean loss and the gradient norm.
func (t *Trainer) nativeStep(ctx context.Context, bs []Batch, lr float64) (loss, gradNorm float64, err error) {
	lossSum, wSum, params, err := t.nativeAccumulate(ctx, bs)
	if err != nil {
		return 0, 0, err
	}
	if gradNorm, err = t.nativeApply(params, wSum, lr); err != nil {
		return 0, 0, err
	}
	return lossSum / max(wSum, 1), gradNorm, nil
}

// nativeApply takes the optimizer step (applyHost) from the accumulators
// over wSum at rate lr, on params (nativeValues') and the states in place.
func (t *Trainer) nativeApply(params [][]float32, wSum, lr float64) (gradNorm float64, err error) {
	ms, err := hostValues(t.mom, true)
	if err != nil {
		return 0, err
	}
	vs, err := hostValues(t.vel, true)
	if err != nil {
		return 0, err
	}
	return t.applyHost(params, ms, vs, t.native.acc, wSum, lr), nil
}

// nativeValues are the trained tensors' values (in place, ready to change)
// and the frozen ones'.
func (t *Trainer) nativeValues() (params, frozen [][]float32, err error) {
	if params, err = hostValues(t.params, true); err != nil {
		return nil, nil, err
	}
	frozen, err = hostValues(t.frozen, false)
	return params, frozen, err
}

// nativeAccumulate sets the accumulators to the summed gradients of the
// SFT loss of the micro-batches bs (the window's, in order) and returns
// their summed loss and weight, and the trained tensors' values.
func (t *Trainer) nativeAccumulate(ctx context.Context, bs []Batch) (lossSum, wSum float64, params [][]float32, err error) {
	params, frozen, err := t.nativeValues()
	if err != nil {
		return 0, 0, nil, err
	}
	for micro, b := range bs {
		p, err := t.nativeMicro(ctx, params, frozen, b, micro, true, func(*model.TrainPass) []float32 {
			seed := make([]float32, len(b.Weights))
			for i, v := range b.Weights {
				seed[i] = -v
			}
			return seed
		})
		if err != nil {
			return 0, 0, nil, err
		}
		l, ws, _ := p.Loss()
		lossSum += l
		wSum += ws
	}
	return lossSum, wSum, params, nil
}

// nativeMicro runs micro-batch b, number micro of its window (the first
// clears the accumulators; with dropout each draws its lora_dropout
// masks), forward and then
// backward from the seed seedOf gives for the pass (the gradient of
// Σ seed·logp), adding to the accumulators; it returns the pass.
func (t *Trainer) nativeMicro(ctx context.Context, params, frozen [][]float32, b Batch, micro int, dropout bool, seedOf func(*model.TrainPass) []float32) (*model.TrainPass, error) {
	ns := t.native
	if micro == 0 {
		for _, g := range ns.acc {
			clear(g)
		}
	}
	var masks [][]float32
	if dropout {
		masks = t.dropMasks(t.step, micro)
	}
	weights, grads, err := t.nativeBind(params, frozen, masks)
	if err != nil {
		return nil, err
	}
	p, err := ns.eng.Forward(ctx, weights, trainBatch(b))
	if err != nil {
		return nil, err
	}
	if err := p.Backward(ctx, seedOf(p), grads); err != nil {
		return nil, err
	}
	if t.lora != nil {
		t.adapterGrads(params, masks)
	}
	return p, nil
}

// nativeSeqLogps returns each row's summed weighted log-probability of b
// under the current weights (no dropout).
func (t *Trainer) nativeSeqLogps(ctx context.Context, b Batch) ([]float64, error) {
	params, frozen, err := t.nativeValues()
	if err != nil {
		return nil, err
	}
	weights, _, err := t.nativeBind(params, frozen, nil)
	if err != nil {
		return nil, err
	}
	p, err := t.native.eng.Forward(ctx, weights, trainBatch(b))
	if err != nil {
		return nil, err
	}
	defer p.Release()
	return rowSums(p.Logprobs(), b), nil
}

// rowSums are the weighted sums of lp [Rows*Len] over each row of b.
func rowSums(lp []float64, b Batch) []float64 {
	out := make([]float64, b.Rows)
	for t, v := range lp {
		out[t/b.Len] += float64(b.Weights[t]) * v
	}
	return out
}

// nativeEvaluate is Evaluate's sums on the native engine.
func (t *Trainer) nativeEvaluate(ctx context.Context, exs []Example) (lossSum, wSum, hits float64, err error) {
	params, err := hostValues(t.params, false)
	if err != nil {
		return 0, 0, 0, err
	}
	frozen, err := hostValues(t.frozen, false)
	if err != nil {
		return 0, 0, 0, err
	}
	weights, _, err := t.nativeBind(params, frozen, nil)
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
		p.Release()
		lossSum, wSum, hits = lossSum+l, wSum+w, hits+h
	}
	return lossSum, wSum, hits, nil
}
