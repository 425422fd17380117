package train

import (
	"fmt"
	"math"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:revive,staticcheck // the GoMLX convention for graph code
	"github.com/gomlx/gomlx/pkg/core/shapes"

	"github.com/largeforge/largeforge/schemas"
)

// Adafactor constants: Hugging Face's Adafactor as its Trainer builds it
// for optim adafactor (scale_parameter and relative_step off, no first
// moment).
const (
	AdafactorEps1          = 1e-30
	AdafactorClipThreshold = 1.0
	AdafactorDecayRate     = -0.8
)

// optimizer is the update rule of optim (schemas.Optimizers) with its
// optim_args. Every rule keeps two state tensors per trained tensor (moments
// m and v): AdamW its first and second moments, SGD its momentum buffer
// (and a one-value placeholder), Adafactor its factored second moment, the
// row and column means of a matrix (a vector's whole second moment in v).
type optimizer struct {
	name                        string
	momentum, dampening         float64
	nesterov                    bool
	stateKey1, stateKey2, label string
}

func newOptimizer(cfg schemas.TrainingConfig) (optimizer, error) {
	args, err := schemas.ParseOptimArgs(cfg.Optim, cfg.OptimArgs)
	if err != nil {
		return optimizer{}, fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	o := optimizer{name: cfg.Optim, label: cfg.Optim}
	switch cfg.Optim {
	case "adamw_torch", "adamw_torch_fused", "adamw_hf":
		o.stateKey1, o.stateKey2 = "exp_avg.", "exp_avg_sq."
		if cfg.Optim != "adamw_hf" {
			o.label = "adamw" // one rule, and the label checkpoints have always had
		}
	case "sgd":
		o.momentum, o.dampening, o.nesterov = args["momentum"], args["dampening"], args["nesterov"] != 0
		if o.nesterov && (o.momentum <= 0 || o.dampening != 0) {
			return optimizer{}, fmt.Errorf("%w: optim_args: nesterov needs a momentum and zero dampening", ErrInvalidOption)
		}
		o.stateKey1, o.stateKey2 = "momentum_buffer.", "unused."
	case "adafactor":
		o.stateKey1, o.stateKey2 = "exp_avg_sq_row.", "exp_avg_sq_col."
	default:
		return optimizer{}, fmt.Errorf("%w: optim %q", ErrInvalidOption, cfg.Optim)
	}
	return o, nil
}

// stateShapes are the shapes of the two state tensors of a trained tensor
// of shape dims.
func (o optimizer) stateShapes(dims []int) (m, v []int) {
	switch {
	case o.name == "sgd":
		return dims, []int{1}
	case o.name == "adafactor" && len(dims) == 2:
		return dims[:1], dims[1:]
	case o.name == "adafactor":
		return []int{1}, dims
	}
	return dims, dims
}

// stepScalars are the two per-step values the update graph takes (its
// parameters bias_correction1 and bias_correction2) for optimizer step step
// (1-based): AdamW's bias corrections 1-β1^t and 1-β2^t, SGD's weight of
// the new gradient in its buffer (1 on the first step, 1-dampening after),
// Adafactor's β2 of the step, 1-t^-0.8.
func (o optimizer) stepScalars(step float64) (float32, float32) {
	switch o.name {
	case "sgd":
		if step == 1 {
			return 1, 0
		}
		return float32(1 - o.dampening), 0
	case "adafactor":
		return float32(1 - math.Pow(step, AdafactorDecayRate)), 0
	}
	return float32(1 - math.Pow(Beta1, step)), float32(1 - math.Pow(Beta2, step))
}

// optimizerNodes declares the lr and step scalars and returns the update of
// ps from the summed gradients acc over wsum weighted targets (clipped to
// max_grad_norm): new parameters, new states m and v, then the gradient
// norm before clipping.
func (t *Trainer) optimizerNodes(g *Graph, ps, ms, vs, acc []*Node, wsum *Node) []*Node {
	scalar := func(name string) *Node { return Parameter(g, name, shapes.Make(dtypes.Float32)) }
	lr, s1, s2 := scalar("lr"), scalar("bias_correction1"), scalar("bias_correction2")
	inv := Inverse(Max(wsum, OnePlus(ZerosLike(wsum))))
	grads := make([]*Node, len(acc))
	sq := ScalarZero(g, dtypes.Float32)
	for i, a := range acc {
		grads[i] = Mul(a, inv)
		sq = Add(sq, ReduceAllSum(Square(grads[i])))
	}
	norm := Sqrt(sq)
	coef := OnePlus(ZerosLike(norm))
	if t.cfg.MaxGradNorm > 0 {
		coef = Min(coef, Div(Scalar(g, dtypes.Float32, t.cfg.MaxGradNorm), AddScalar(norm, 1e-6)))
	}
	newP := make([]*Node, len(ps))
	newM := make([]*Node, len(ps))
	newV := make([]*Node, len(ps))
	for i, p := range ps {
		gr := Mul(grads[i], coef)
		wd := 0.0
		if t.decay[i] {
			wd = t.cfg.WeightDecay
		}
		switch t.optim.name {
		case "adamw_hf":
			newP[i], newM[i], newV[i] = adamwHF(p, ms[i], vs[i], gr, lr, s1, s2, wd)
		case "sgd":
			newP[i], newM[i], newV[i] = t.optim.sgd(p, ms[i], vs[i], gr, lr, s1, wd)
		case "adafactor":
			newP[i], newM[i], newV[i] = adafactor(p, ms[i], vs[i], gr, lr, s1, wd)
		default:
			newP[i], newM[i], newV[i] = adamwTorch(p, ms[i], vs[i], gr, lr, s1, s2, wd)
		}
	}
	out := make([]*Node, 0, 3*len(ps)+1)
	out = append(out, newP...)
	out = append(out, newM...)
	out = append(out, newV...)
	return append(out, norm)
}

// adamwTorch is torch.optim.AdamW: decoupled decay p(1-lr·wd), then
// p - lr·(m/bc1)/(sqrt(v/bc2)+eps).
func adamwTorch(p, m, v, gr, lr, bc1, bc2 *Node, wd float64) (*Node, *Node, *Node) {
	m = Add(MulScalar(m, Beta1), MulScalar(gr, 1-Beta1))
	v = Add(MulScalar(v, Beta2), MulScalar(Square(gr), 1-Beta2))
	upd := Div(Div(m, bc1), AddScalar(Sqrt(Div(v, bc2)), Epsilon))
	if wd > 0 {
		p = Sub(p, Mul(lr, MulScalar(p, wd)))
	}
	return Sub(p, Mul(lr, upd)), m, v
}

// adamwHF is transformers' AdamW (optim adamw_hf): p - lr·sqrt(bc2)/bc1 ·
// m/(sqrt(v)+eps), then the decay on the updated weights, p - lr·wd·p.
func adamwHF(p, m, v, gr, lr, bc1, bc2 *Node, wd float64) (*Node, *Node, *Node) {
	m = Add(MulScalar(m, Beta1), MulScalar(gr, 1-Beta1))
	v = Add(MulScalar(v, Beta2), MulScalar(Square(gr), 1-Beta2))
	stepSize := Div(Mul(lr, Sqrt(bc2)), bc1)
	p = Sub(p, Mul(stepSize, Div(m, AddScalar(Sqrt(v), Epsilon))))
	if wd > 0 {
		p = Sub(p, Mul(lr, MulScalar(p, wd)))
	}
	return p, m, v
}

// sgd is torch.optim.SGD: d = g + wd·p; with momentum the buffer b =
// momentum·b + w·d (w from stepScalars) and d = b, or d + momentum·b with
// nesterov; p - lr·d.
func (o optimizer) sgd(p, buf, unused, gr, lr, w *Node, wd float64) (*Node, *Node, *Node) {
	d := gr
	if wd > 0 {
		d = Add(d, MulScalar(p, wd))
	}
	if o.momentum > 0 {
		buf = Add(MulScalar(buf, o.momentum), Mul(d, w))
		if o.nesterov {
			d = Add(d, MulScalar(buf, o.momentum))
		} else {
			d = buf
		}
	}
	return Sub(p, Mul(lr, d)), buf, unused
}

// adafactor is transformers' Adafactor with the Trainer's settings: the
// second moment of g²+eps1 (factored into row and column means for a
// matrix) at β2 = 1-t^-0.8, the update g/sqrt(v̂) scaled down to an RMS of
// at most 1, times lr; decay p - wd·lr·p; no first moment.
func adafactor(p, row, col, gr, lr, beta2t *Node, wd float64) (*Node, *Node, *Node) {
	sq := AddScalar(Square(gr), AdafactorEps1)
	keep := OneMinus(beta2t)
	var u *Node
	if p.Rank() == 2 {
		rows, cols := p.Shape().Dim(0), p.Shape().Dim(1)
		row = Add(Mul(row, beta2t), Mul(ReduceMean(sq, -1), keep))
		col = Add(Mul(col, beta2t), Mul(ReduceMean(sq, -2), keep))
		r := BroadcastToDims(ExpandAxes(Rsqrt(Div(row, ReduceAllMean(row))), -1), rows, cols)
		c := BroadcastToDims(ExpandAxes(Rsqrt(col), 0), rows, cols)
		u = Mul(Mul(r, c), gr)
	} else {
		col = Add(Mul(col, beta2t), Mul(sq, keep))
		u = Mul(Rsqrt(col), gr)
	}
	rms := Sqrt(ReduceAllMean(Square(u)))
	u = Div(u, Max(MulScalar(rms, 1/AdafactorClipThreshold), OnePlus(ZerosLike(rms))))
	u = Mul(u, lr)
	if wd > 0 {
		p = Sub(p, Mul(lr, MulScalar(p, wd)))
	}
	return Sub(p, u), row, col
}
