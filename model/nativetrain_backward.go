package model

import (
	"context"
	"fmt"
	"math"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// Backward adds to grads (NewGrads' shape) the gradient of Σ seed[t]·logp[t]
// over the batch's positions [Rows*Len], where logp[t] is log p(target) of
// a position with a non-zero weight (the seed of the others is ignored).
// A nil tensor of grads is frozen: its gradient is not computed (LoRA's
// base weights), only the gradient flowing through it.
// The summed negative log-likelihood of SFT has seed −Weights; DPO's
// seeds weigh each row by its preference term. A pass runs Backward once:
// it consumes the saved activations and gives them back to the engine
// (Release).
func (p *TrainPass) Backward(ctx context.Context, seed []float32, grads *checkpoint.Decoder[[]float32]) error {
	cfg := p.e.cfg
	T := p.b.Rows * p.b.Len
	if len(seed) != T {
		return fmt.Errorf("%w: backward seed of %d values for a %dx%d batch", ErrInvalidOption, len(seed), p.b.Rows, p.b.Len)
	}
	if grads == nil || len(grads.Layers) != cfg.NumLayers {
		return fmt.Errorf("%w: backward gradients of %d layers, config has %d", ErrWeights, layersOf(grads), cfg.NumLayers)
	}
	if p.probs == nil {
		return fmt.Errorf("%w: backward ran already on this pass", ErrInvalidOption)
	}
	defer p.Release()
	w := p.w
	eDim, inter := cfg.HiddenSize, cfg.IntermediateSize
	nh, nkv, hd := cfg.NumHeads, cfg.NumKVHeads, cfg.HeadDim
	qd, kvd := nh*hd, nkv*hd
	pb := p.e.packBuf()
	defer p.e.putPackBuf(pb)
	dhf := p.headBack(pb, seed, grads.LMHead)
	dx := p.allocZero(T * eDim)
	rmsNormBack(dx, grads.FinalNorm, dhf, p.xFin, p.invF, w.FinalNorm, T, eDim)
	var (
		dact, dgate, dup = p.alloc(T * inter), p.alloc(T * inter), p.alloc(T * inter)
		dh               = p.alloc(T * eDim)
		datt, dq         = p.alloc(T * qd), p.alloc(T * qd)
		dk, dv           = p.alloc(T * kvd), p.alloc(T * kvd)
	)
	for l := cfg.NumLayers - 1; l >= 0; l-- {
		if err := ctx.Err(); err != nil {
			return err
		}
		lw, gw, a := &w.Layers[l], &grads.Layers[l], &p.layers[l]
		// The MLP: x = xMid + down(silu(gate(h2))·up(h2)).
		linearBack(pb, dact, gw.Down, nil, dx, a.act, lw.Down, T, inter, eDim, false)
		parallelRows(true, T, T*inter*8, func(lo, hi int) {
			for j := lo * inter; j < hi*inter; j++ {
				g, u, d := a.gate[j], a.up[j], dact[j]
				s := 1 / (1 + float32(math.Exp(float64(-g))))
				dup[j] = d * g * s
				dgate[j] = d * u * s * (1 + g*(1-s))
			}
		})
		linearBack(pb, dh, gw.Gate, nil, dgate, a.h2, lw.Gate, T, eDim, inter, false)
		linearBack(pb, dh, gw.Up, nil, dup, a.h2, lw.Up, T, eDim, inter, true)
		rmsNormBack(dx, gw.MLPNorm, dh, a.xMid, a.inv2, lw.MLPNorm, T, eDim)
		// Attention: xMid = xIn + o(attend(rope(q(h1)), rope(k(h1)), v(h1))).
		linearBack(pb, datt, gw.O, gw.OBias, dx, a.att, lw.O, T, qd, eDim, false)
		clear(dk)
		clear(dv)
		p.attendBack(a, datt, dq, dk, dv)
		p.rope(dq, nh, true)
		p.rope(dk, nkv, true)
		linearBack(pb, dh, gw.Q, gw.QBias, dq, a.h1, lw.Q, T, eDim, qd, false)
		linearBack(pb, dh, gw.K, gw.KBias, dk, a.h1, lw.K, T, eDim, kvd, true)
		linearBack(pb, dh, gw.V, gw.VBias, dv, a.h1, lw.V, T, eDim, kvd, true)
		rmsNormBack(dx, gw.AttnNorm, dh, a.xIn, a.inv1, lw.AttnNorm, T, eDim)
	}
	if grads.Embed == nil {
		return nil
	}
	for t, id := range p.b.Tokens {
		addTo(grads.Embed[int(id)*eDim:(int(id)+1)*eDim], dx[t*eDim:(t+1)*eDim])
	}
	return nil
}

// linearBack is the backward pass of y [T, out] = x [T, in] · wᵀ + bias:
// dx = dy·w (added to dx's values when addX), dw += dyᵀ·x (when not nil:
// a frozen weight has none), dbias += Σ dy (when not empty).
func linearBack(pb *packBuf, dx, dw, dbias, dy, x, w []float32, T, in, out int, addX bool) {
	pb.mulNN(dx, in, dy, out, w, in, T, out, in, addX, true)
	if dw != nil {
		pb.mulTN(dw, in, dy, out, x, in, out, T, in, true, true)
	}
	if len(dbias) > 0 {
		for t := range T {
			addTo(dbias, dy[t*out:(t+1)*out])
		}
	}
}

// headBack is the backward pass of the LM head and the softmax
// cross-entropy: d logit = seed·(onehot(target) − p) for each weighted
// position. It adds the head's gradient to dHead and returns the gradient
// of the final norm's output [T, hidden].
func (p *TrainPass) headBack(pb *packBuf, seed, dHead []float32) []float32 {
	cfg := p.e.cfg
	eDim, V := cfg.HiddenSize, cfg.VocabSize
	T, n := p.b.Rows*p.b.Len, len(p.sel)
	dhf := p.allocZero(T * eDim)
	dl := p.probs
	p.probs = nil
	if n == 0 {
		return dhf
	}
	parallelRows(true, n, n*V, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			t := p.sel[i]
			s := seed[t]
			row := dl[i*V : (i+1)*V]
			for j := range row {
				row[j] *= -s
			}
			row[p.b.Targets[t]] += s
		}
	})
	dhs := p.alloc(n * eDim)
	linearBack(pb, dhs, dHead, nil, dl, p.hs, p.w.LMHead, n, eDim, V, false)
	for i, t := range p.sel {
		copy(dhf[t*eDim:(t+1)*eDim], dhs[i*eDim:(i+1)*eDim])
	}
	return dhf
}

// attendBack is attendFwd's backward pass: from the output's gradient datt
// it sets dq and adds to dk and dv (zeroed by the caller).
func (p *TrainPass) attendBack(a *layerActs, datt, dq, dk, dv []float32) {
	d := p.attnDims()
	S := d.S
	p.eachHead(d.rows*d.nh*S*S*d.hd*4, func(pb *packBuf, r, kh, h int) {
		koff, qoff := r*S*d.kvd+kh*d.hd, r*S*d.qd+h*d.hd
		pr := a.probs[(r*d.nh+h)*S*S : (r*d.nh+h+1)*S*S]
		do := datt[qoff:]
		pb.tmp = grow(pb.tmp, S*S)
		ds := pb.tmp
		pb.mulNT(ds, S, do, d.qd, a.v[koff:], d.kvd, S, d.hd, S, false, false)
		for i := range S {
			f := int(p.first[r*S+i])
			pi, di := pr[i*S+f:i*S+i+1], ds[i*S:(i+1)*S]
			dot := dotf(pi, di[f:i+1])
			clear(di[:f])
			for j, pv := range pi {
				di[f+j] = pv * (di[f+j] - dot) * d.scale
			}
			clear(di[i+1:])
		}
		pb.mulNN(dq[qoff:], d.qd, ds, S, a.k[koff:], d.kvd, S, S, d.hd, false, false)
		pb.mulTN(dk[koff:], d.kvd, ds, S, a.q[qoff:], d.qd, S, S, d.hd, true, false)
		pb.mulTN(dv[koff:], d.kvd, pr, S, do, d.qd, S, S, d.hd, true, false)
	})
}
