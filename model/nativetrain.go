package model

import (
	"context"
	"fmt"
	"math"
	"sync"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// The native training engine: the forward pass of the decoder (llama.go's
// definition, as the native decoder of native.go computes it) over a
// right-padded batch of token rows with every activation the backward pass
// needs saved once, a softmax cross-entropy fused into the LM head, and
// the backward pass of every op on the blocked kernels (kernel.go,
// kernel_grad.go). Weights and gradients are checkpoint.Decoder values of
// float32 slices in the Hugging Face layout (projections [out, in]), so
// the trainer binds them by name as it binds its graph parameters.

// TrainBatch is a right-padded batch of token rows for the training
// engine: Targets[i] is the token that position i predicts and Weights[i]
// its weight in the loss (0 where it is not a target: prompt and padding).
type TrainBatch struct {
	Rows, Len int
	Tokens    []int32   // [Rows*Len]
	Targets   []int32   // [Rows*Len]
	Weights   []float32 // [Rows*Len]
	// Segments, when set, gives each position the id of the packed
	// sequence it belongs to [Rows*Len]: a position attends only to the
	// earlier positions of its own segment, and positions (RoPE) restart
	// at each segment's first token. Nil: each row is one sequence.
	Segments []int32
}

// TrainEngine runs forward and backward passes of one decoder config on
// the native kernels. It holds no weights; it is safe for concurrent use.
type TrainEngine struct {
	cfg      checkpoint.Config
	maxLen   int
	cos, sin []float32 // [maxLen, headDim/2]
	bufs     bufPool   // activation buffers passes gave back, for the next
	packs    sync.Pool // *packBuf: the products' packing space
}

// bufPool keeps float32 buffers by length for the next pass: each pass
// takes the same sizes again, and fresh memory from the system costs a
// page fault per 4 KiB and the zeroing the next pass does not need.
type bufPool struct {
	mu   sync.Mutex
	free map[int][][]float32
}

// get returns a buffer of n values, not cleared.
func (bp *bufPool) get(n int) []float32 {
	bp.mu.Lock()
	defer bp.mu.Unlock()
	if l := bp.free[n]; len(l) > 0 {
		b := l[len(l)-1]
		bp.free[n] = l[:len(l)-1]
		return b
	}
	return make([]float32, n)
}

func (bp *bufPool) put(bufs [][]float32) {
	bp.mu.Lock()
	defer bp.mu.Unlock()
	if bp.free == nil {
		bp.free = map[int][][]float32{}
	}
	for _, b := range bufs {
		bp.free[len(b)] = append(bp.free[len(b)], b)
	}
}

// NewTrainEngine returns the engine for batches of at most maxLen
// positions per row under cfg.
func NewTrainEngine(cfg checkpoint.Config, maxLen int) (*TrainEngine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new train engine: %w", err)
	}
	if maxLen < 1 {
		return nil, fmt.Errorf("%w: train engine maximum length %d", ErrInvalidOption, maxLen)
	}
	if cfg.HeadDim%2 != 0 || cfg.NumHeads%cfg.NumKVHeads != 0 {
		return nil, fmt.Errorf("%w: train engine: head_dim %d and %d heads over %d KV heads", ErrInvalidOption, cfg.HeadDim, cfg.NumHeads, cfg.NumKVHeads)
	}
	cos, sin := RopeTables(cfg, maxLen)
	return &TrainEngine{cfg: cfg, maxLen: maxLen, cos: cos, sin: sin}, nil
}

// Config is the decoder config the engine runs.
func (e *TrainEngine) Config() checkpoint.Config { return e.cfg }

// NewGrads returns zero gradients for every tensor of the decoder (Layout),
// a tied head sharing the embedding's.
func (e *TrainEngine) NewGrads() *checkpoint.Decoder[[]float32] {
	d, _ := checkpoint.Bind(e.cfg, func(w checkpoint.Weight) ([]float32, error) {
		n := 1
		for _, s := range w.Shape {
			n *= s
		}
		return make([]float32, n), nil
	})
	return d
}

// layerActs are the activations of one layer the backward pass reads.
type layerActs struct {
	xIn, h1    []float32 // [T, e]: the layer's input, its attention norm
	inv1, inv2 []float32 // [T]: the norms' 1/rms
	q, k, v    []float32 // [T, qd], [T, kvd], [T, kvd]; q and k rotated
	probs      []float32 // [rows, heads, S, S]
	att        []float32 // [T, qd]: attention output, before o_proj
	xMid, h2   []float32 // [T, e]: after attention, its MLP norm
	gate, up   []float32 // [T, inter]
	act        []float32 // [T, inter]: silu(gate)·up
}

// TrainPass is one forward pass with its saved activations, ready for
// Backward. It holds the weights it ran with; they must not change before
// Backward.
type TrainPass struct {
	e      *TrainEngine
	owned  [][]float32 // the buffers taken from e.bufs, given back by Release
	w      *checkpoint.Decoder[[]float32]
	b      TrainBatch
	pos    []int32 // [T]: RoPE position
	first  []int32 // [T]: first position (in the row) the token attends to
	layers []layerActs
	xFin   []float32 // [T, e]: the last layer's output
	invF   []float32 // [T]
	hf     []float32 // [T, e]: the final norm's output
	sel    []int     // the positions with a non-zero weight, in order
	hs     []float32 // [len(sel), e]: their final norm's output
	probs  []float32 // [len(sel), vocab]: softmax of their logits
	logp   []float64 // [len(sel)]: log p(target)
	hits   []bool    // [len(sel)]: argmax is the target
}

// checkBatch validates b against the engine's config and w's presence.
func (e *TrainEngine) checkBatch(w *checkpoint.Decoder[[]float32], b TrainBatch) error {
	if w == nil || len(w.Layers) != e.cfg.NumLayers {
		return fmt.Errorf("%w: train engine: weights of %d layers, config has %d", ErrWeights, layersOf(w), e.cfg.NumLayers)
	}
	t := b.Rows * b.Len
	switch {
	case b.Rows < 1 || b.Len < 1:
		return fmt.Errorf("%w: batch of %dx%d", ErrInvalidOption, b.Rows, b.Len)
	case b.Len > e.maxLen:
		return fmt.Errorf("%w: batch length %d, engine maximum %d", ErrTooLong, b.Len, e.maxLen)
	case len(b.Tokens) != t || len(b.Targets) != t || len(b.Weights) != t:
		return fmt.Errorf("%w: batch of %dx%d with %d tokens, %d targets, %d weights", ErrInvalidOption, b.Rows, b.Len, len(b.Tokens), len(b.Targets), len(b.Weights))
	case b.Segments != nil && len(b.Segments) != t:
		return fmt.Errorf("%w: batch of %dx%d with %d segment ids", ErrInvalidOption, b.Rows, b.Len, len(b.Segments))
	}
	v := int32(e.cfg.VocabSize)
	for i := range t {
		if b.Tokens[i] < 0 || b.Tokens[i] >= v || b.Targets[i] < 0 || b.Targets[i] >= v {
			return fmt.Errorf("%w: token %d or target %d outside the vocabulary of %d", ErrInvalidOption, b.Tokens[i], b.Targets[i], v)
		}
	}
	return nil
}

// alloc returns a buffer of n values from the engine's pool, not cleared.
func (p *TrainPass) alloc(n int) []float32 {
	b := p.e.bufs.get(n)
	p.owned = append(p.owned, b)
	return b
}

// allocZero is alloc, cleared.
func (p *TrainPass) allocZero(n int) []float32 {
	b := p.alloc(n)
	clear(b)
	return b
}

// Release gives the pass's activations back to the engine for the next
// pass; Backward does it. Loss and Logprobs stay valid; Backward does not.
func (p *TrainPass) Release() {
	p.e.bufs.put(p.owned)
	p.owned, p.probs, p.layers = nil, nil, nil
}

// packBuf takes a packing space from the engine's pool; putPackBuf gives it back.
func (e *TrainEngine) packBuf() *packBuf {
	if pb, ok := e.packs.Get().(*packBuf); ok {
		return pb
	}
	return &packBuf{}
}

func (e *TrainEngine) putPackBuf(pb *packBuf) { e.packs.Put(pb) }

func layersOf(w *checkpoint.Decoder[[]float32]) int {
	if w == nil {
		return 0
	}
	return len(w.Layers)
}

// Forward runs b through the decoder with weights w, saving the
// activations Backward needs, and the log-probabilities of the weighted
// targets.
func (e *TrainEngine) Forward(ctx context.Context, w *checkpoint.Decoder[[]float32], b TrainBatch) (*TrainPass, error) {
	if err := e.checkBatch(w, b); err != nil {
		return nil, err
	}
	cfg := e.cfg
	T, S := b.Rows*b.Len, b.Len
	eDim, inter := cfg.HiddenSize, cfg.IntermediateSize
	nh, nkv, hd := cfg.NumHeads, cfg.NumKVHeads, cfg.HeadDim
	qd, kvd := nh*hd, nkv*hd
	eps := float32(cfg.RMSNormEps)
	p := &TrainPass{e: e, w: w, b: b, pos: make([]int32, T), first: make([]int32, T), layers: make([]layerActs, cfg.NumLayers)}
	for r := range b.Rows {
		start := 0
		for i := range S {
			t := r*S + i
			if b.Segments != nil && i > 0 && b.Segments[t] != b.Segments[t-1] {
				start = i
			}
			lo := start
			if cfg.SlidingWindow > 0 {
				lo = max(lo, i-cfg.SlidingWindow+1)
			}
			p.pos[t], p.first[t] = int32(i-start), int32(lo)
		}
	}
	x := p.alloc(T * eDim)
	for t, id := range b.Tokens {
		copy(x[t*eDim:(t+1)*eDim], w.Embed[int(id)*eDim:(int(id)+1)*eDim])
	}
	pb := e.packBuf()
	defer e.putPackBuf(pb)
	for l := range cfg.NumLayers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		lw := &w.Layers[l]
		a := &p.layers[l]
		a.xIn = x
		a.h1, a.inv1 = p.alloc(T*eDim), p.alloc(T)
		rmsNormSave(a.h1, a.inv1, x, lw.AttnNorm, T, eDim, eps)
		a.q, a.k, a.v = p.alloc(T*qd), p.alloc(T*kvd), p.alloc(T*kvd)
		linearFwd(pb, a.q, a.h1, lw.Q, lw.QBias, T, eDim, qd)
		linearFwd(pb, a.k, a.h1, lw.K, lw.KBias, T, eDim, kvd)
		linearFwd(pb, a.v, a.h1, lw.V, lw.VBias, T, eDim, kvd)
		p.rope(a.q, nh, false)
		p.rope(a.k, nkv, false)
		a.probs, a.att = p.alloc(b.Rows*nh*S*S), p.alloc(T*qd)
		p.attendFwd(a)
		xm := p.alloc(T * eDim)
		linearFwd(pb, xm, a.att, lw.O, lw.OBias, T, qd, eDim)
		addTo(xm, x)
		a.xMid = xm
		a.h2, a.inv2 = p.alloc(T*eDim), p.alloc(T)
		rmsNormSave(a.h2, a.inv2, xm, lw.MLPNorm, T, eDim, eps)
		a.gate, a.up, a.act = p.alloc(T*inter), p.alloc(T*inter), p.alloc(T*inter)
		linearFwd(pb, a.gate, a.h2, lw.Gate, nil, T, eDim, inter)
		linearFwd(pb, a.up, a.h2, lw.Up, nil, T, eDim, inter)
		parallelRows(true, T, T*inter*8, func(lo, hi int) {
			g, u, act := a.gate[lo*inter:hi*inter], a.up[lo*inter:hi*inter], a.act[lo*inter:hi*inter]
			for j, gv := range g {
				act[j] = -gv
			}
			expRow(act, act)
			for j, gv := range g {
				act[j] = gv / (1 + act[j]) * u[j]
			}
		})
		x = p.alloc(T * eDim)
		linearFwd(pb, x, a.act, lw.Down, nil, T, inter, eDim)
		addTo(x, xm)
	}
	p.xFin = x
	p.hf, p.invF = p.alloc(T*eDim), p.alloc(T)
	rmsNormSave(p.hf, p.invF, x, w.FinalNorm, T, eDim, eps)
	p.head(pb)
	return p, nil
}

// linearFwd sets y [T, out] = x [T, in] · wᵀ + bias (when not empty).
func linearFwd(pb *packBuf, y, x, w, bias []float32, T, in, out int) {
	pb.mulNT(y, out, x, in, w, in, T, in, out, false, true)
	if len(bias) > 0 {
		for t := range T {
			addTo(y[t*out:(t+1)*out], bias)
		}
	}
}

// rmsNormSave is rmsNormRows that also saves each row's 1/rms in inv
// (when not nil).
func rmsNormSave(dst, inv, src, w []float32, n, e int, eps float32) {
	for r := range n {
		row := src[r*e : (r+1)*e]
		var ss float32
		for _, v := range row {
			ss += v * v
		}
		iv := 1 / float32(math.Sqrt(float64(ss/float32(e)+eps)))
		if inv != nil {
			inv[r] = iv
		}
		out := dst[r*e : (r+1)*e]
		for i, v := range row {
			out[i] = v * iv * w[i]
		}
	}
}

// rmsNormBack adds to dx the gradient through y = x·inv·w of dy, and to dw
// (when not nil) the weight's.
func rmsNormBack(dx, dw, dy, x, inv, w []float32, n, e int) {
	for r := range n {
		xr, dyr, dxr := x[r*e:(r+1)*e], dy[r*e:(r+1)*e], dx[r*e:(r+1)*e]
		iv := inv[r]
		var dot float32 // Σ dy·w·x
		for i, xv := range xr {
			dot += dyr[i] * w[i] * xv
		}
		c := dot * iv * iv * iv / float32(e)
		for i, xv := range xr {
			dxr[i] += dyr[i]*w[i]*iv - xv*c
		}
		if dw != nil {
			for i, xv := range xr {
				dw[i] += dyr[i] * xv * iv
			}
		}
	}
}

// rope rotates (or, inverse, rotates back: the gradient) the heads of x
// [T, heads*headDim] by each token's position.
func (p *TrainPass) rope(x []float32, heads int, inverse bool) {
	hd := p.e.cfg.HeadDim
	half := hd / 2
	for t, pos := range p.pos {
		cos := p.e.cos[int(pos)*half : (int(pos)+1)*half]
		sin := p.e.sin[int(pos)*half : (int(pos)+1)*half]
		row := x[t*heads*hd : (t+1)*heads*hd]
		for h := range heads {
			v := row[h*hd : (h+1)*hd]
			if !inverse {
				ropeRow(v, cos, sin)
				continue
			}
			for i := range half {
				a, b := v[i], v[i+half]
				v[i] = a*cos[i] + b*sin[i]
				v[i+half] = b*cos[i] - a*sin[i]
			}
		}
	}
}

// attnDims are the shapes of a pass's attention.
type attnDims struct {
	rows, S, nh, nkv, hd, qd, kvd, grp int
	scale                              float32
}

func (p *TrainPass) attnDims() attnDims {
	cfg := p.e.cfg
	nh, nkv, hd := cfg.NumHeads, cfg.NumKVHeads, cfg.HeadDim
	return attnDims{rows: p.b.Rows, S: p.b.Len, nh: nh, nkv: nkv, hd: hd, qd: nh * hd, kvd: nkv * hd, grp: nh / nkv,
		scale: float32(1 / math.Sqrt(float64(hd)))}
}

// eachHead runs f for every row r and query head h (of KV head kh) on the
// cores: the query heads of one (row, KV head) pair run in order on one
// goroutine, with that goroutine's packBuf, so the pairs write disjoint
// parts of the KV heads' gradients. work is the rough count of operations.
func (p *TrainPass) eachHead(work int, f func(pb *packBuf, r, kh, h int)) {
	d := p.attnDims()
	parallelRows(true, d.rows*d.nkv, work, func(lo, hi int) {
		var pb packBuf
		for pair := lo; pair < hi; pair++ {
			r, kh := pair/d.nkv, pair%d.nkv
			for g := range d.grp {
				f(&pb, r, kh, kh*d.grp+g)
			}
		}
	})
}

// attendFwd computes a.att and a.probs from a.q, a.k and a.v: per row and
// head, scores Q·Kᵀ/√d masked to each query's span, softmax, times V.
func (p *TrainPass) attendFwd(a *layerActs) {
	d := p.attnDims()
	S := d.S
	p.eachHead(d.rows*d.nh*S*S*d.hd*2, func(pb *packBuf, r, kh, h int) {
		k, v := a.k[r*S*d.kvd+kh*d.hd:], a.v[r*S*d.kvd+kh*d.hd:]
		q := a.q[r*S*d.qd+h*d.hd:]
		pr := a.probs[(r*d.nh+h)*S*S : (r*d.nh+h+1)*S*S]
		pb.mulNT(pr, S, q, d.qd, k, d.kvd, S, d.hd, S, false, false)
		for i := range S {
			row := pr[i*S : (i+1)*S]
			f := int(p.first[r*S+i])
			span := row[f : i+1]
			for j := range span {
				span[j] *= d.scale
			}
			_, sum := shiftedExp(span, span)
			inv := float32(1 / sum)
			for j := range span {
				span[j] *= inv
			}
			clear(row[:f])
			clear(row[i+1:])
		}
		pb.mulNN(a.att[r*S*d.qd+h*d.hd:], d.qd, pr, S, v, d.kvd, S, S, d.hd, false, false)
	})
}

// headChunk is the most positions whose logits the head computes at once.
const headChunk = 256

// head computes, for the positions with a non-zero weight, the softmax of
// their logits (kept for Backward), the log-probability of their target
// and whether the argmax hits it.
func (p *TrainPass) head(pb *packBuf) {
	cfg := p.e.cfg
	eDim, V := cfg.HiddenSize, cfg.VocabSize
	for t, wt := range p.b.Weights {
		if wt != 0 {
			p.sel = append(p.sel, t)
		}
	}
	n := len(p.sel)
	hs := p.alloc(n * eDim)
	for i, t := range p.sel {
		copy(hs[i*eDim:(i+1)*eDim], p.hf[t*eDim:(t+1)*eDim])
	}
	p.hs = hs
	p.probs, p.logp, p.hits = p.alloc(n*V), make([]float64, n), make([]bool, n)
	if n == 0 {
		return
	}
	pb.mulNT(p.probs, V, hs, eDim, p.w.LMHead, eDim, n, eDim, V, false, true)
	parallelRows(true, n, n*V*8, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			row := p.probs[i*V : (i+1)*V]
			tgt := int(p.b.Targets[p.sel[i]])
			best := 0
			for j, v := range row {
				if v > row[best] {
					best = j
				}
			}
			p.hits[i] = best == tgt
			logit := row[tgt]
			mx, sum := shiftedExp(row, row)
			p.logp[i] = float64(logit-mx) - math.Log(sum)
			inv := float32(1 / sum)
			for j := range row {
				row[j] *= inv
			}
		}
	})
}

// Logprobs returns log p(target) of every position of the batch [Rows*Len]:
// 0 where the weight is 0.
func (p *TrainPass) Logprobs() []float64 {
	out := make([]float64, p.b.Rows*p.b.Len)
	for i, t := range p.sel {
		out[t] = p.logp[i]
	}
	return out
}

// Loss returns the batch's summed weighted negative log-likelihood, its
// summed weight and the summed weight of the targets the argmax predicts.
func (p *TrainPass) Loss() (lossSum, weightSum, hits float64) {
	for i, t := range p.sel {
		w := float64(p.b.Weights[t])
		lossSum -= w * p.logp[i]
		weightSum += w
		if p.hits[i] {
			hits += w
		}
	}
	return lossSum, weightSum, hits
}
