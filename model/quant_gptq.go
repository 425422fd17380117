package model

import (
	"context"
	"fmt"
	"math"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// GPTQ (Frantar et al., 2022): each weight matrix quantized one input
// column at a time, the rounding error of a column spread onto the columns
// not yet quantized in proportion to the inverse Hessian of the layer's
// squared output error, H = Σ xᵀx over calibration inputs x of that
// matrix. The calibration text is the float model's own: samples from BOS
// at temperature 1 (no data set needed). The Hessians all come from one
// float forward (not layer after layer on the quantized prefix). The
// embedding has no input to weigh and is rounded to nearest; so is a head
// tied to it.

// Quantization methods QuantizeDir takes.
const (
	MethodRTN  = checkpoint.QuantMethodRTN
	MethodGPTQ = checkpoint.QuantMethodGPTQ
)

// GPTQ calibration: samples of the float model from BOS.
const (
	gptqSamples   = 32
	gptqSampleLen = 128
	gptqDamp      = 0.01 // of the Hessian's mean diagonal, added to it
)

// QuantizeDir quantizes the float checkpoint in src into dst (§4.3) with
// method MethodRTN or MethodGPTQ ("" : GPTQ for 4 bits, RTN for 8).
func QuantizeDir(ctx context.Context, src, dst string, bits, groupSize int, method string) (checkpoint.QuantConfig, error) {
	if method == "" {
		method = MethodRTN
		if bits == 4 {
			method = MethodGPTQ
		}
	}
	switch method {
	case MethodRTN:
		return checkpoint.QuantizeDir(src, dst, bits, groupSize)
	case MethodGPTQ:
	default:
		return checkpoint.QuantConfig{}, fmt.Errorf("%w: method %q (want %s or %s)", checkpoint.ErrQuant, method, MethodRTN, MethodGPTQ)
	}
	if q, err := checkpoint.IsQuantized(src); err != nil || q {
		if err == nil {
			err = fmt.Errorf("%s: %w: already quantized", src, checkpoint.ErrQuant)
		}
		return checkpoint.QuantConfig{}, err
	}
	ck, err := checkpoint.Load(src)
	if err != nil {
		return checkpoint.QuantConfig{}, err
	}
	qck, qc, err := QuantizeGPTQ(ctx, ck, bits, groupSize)
	if err != nil {
		return qc, fmt.Errorf("%s: %w", src, err)
	}
	if err := checkpoint.SaveQuantized(dst, qck, qc); err != nil {
		return qc, err
	}
	_, err = checkpoint.CopyTokenizer(src, dst)
	return qc, err
}

// QuantizeGPTQ is checkpoint.QuantizeCheckpoint with GPTQ's rounding,
// calibrated on the float model's own samples.
func QuantizeGPTQ(ctx context.Context, ck *checkpoint.Checkpoint, bits, groupSize int) (*checkpoint.Checkpoint, checkpoint.QuantConfig, error) {
	out, qc, err := checkpoint.QuantizeCheckpoint(ck, bits, groupSize) // RTN: the layout, the embedding
	if err != nil {
		return nil, qc, err
	}
	m, err := New(ck, WithEngine(EngineNative), WithMaxSeqLen(gptqSampleLen+2))
	if err != nil {
		return nil, qc, err
	}
	defer m.Close()
	cfg := ck.Config
	reqs := make([]GenerateRequest, gptqSamples)
	for i := range reqs {
		reqs[i] = GenerateRequest{PromptIDs: []int{cfg.BOSTokenID}, Params: SamplingParams{MaxTokens: gptqSampleLen, Temperature: 1, Seed: int64(i + 1)}}
	}
	res, err := m.Generate(ctx, reqs)
	if err != nil {
		return nil, qc, fmt.Errorf("gptq calibration: %w", err)
	}
	dec, err := checkpoint.BindTensors(cfg, ck.Tensors)
	if err != nil {
		return nil, qc, err
	}
	hs := newHessians(cfg)
	for _, r := range res {
		hs.observe(m, dec, append([]int{cfg.BOSTokenID}, r.IDs...))
	}
	g := qc.GroupSize
	if g < 0 {
		g = 0
	}
	for _, w := range checkpoint.Layout(cfg) {
		h := hs.of(w)
		if h == nil || len(w.Shape) != 2 {
			continue
		}
		t := ck.Tensors[w.Name]
		q := gptq(t, h, bits, g)
		dq := q.Dequantize()
		dq.Quant = q
		out.Tensors[w.Name] = dq
	}
	qc.Method = MethodGPTQ
	qc.Calibration = fmt.Sprintf("%d samples of up to %d tokens from BOS of the float model at temperature 1, seeds 1-%d; damping %.2f", gptqSamples, gptqSampleLen, gptqSamples, gptqDamp)
	return out, qc, nil
}

// hessians accumulates Σ xᵀx of each matrix's inputs.
type hessians struct {
	cfg                     checkpoint.Config
	attn, o, mlp, down      [][]float64 // per layer, [in*in]
	head                    []float64
	attnIn, oIn, mlpIn, dIn int
}

func newHessians(cfg checkpoint.Config) *hessians {
	e, qd, inter := cfg.HiddenSize, cfg.NumHeads*cfg.HeadDim, cfg.IntermediateSize
	h := &hessians{cfg: cfg, attnIn: e, oIn: qd, mlpIn: e, dIn: inter, head: make([]float64, e*e)}
	for range cfg.NumLayers {
		h.attn = append(h.attn, make([]float64, e*e))
		h.o = append(h.o, make([]float64, qd*qd))
		h.mlp = append(h.mlp, make([]float64, e*e))
		h.down = append(h.down, make([]float64, inter*inter))
	}
	return h
}

// of is the Hessian of weight w's inputs (nil for the embedding or a tied head).
func (h *hessians) of(w checkpoint.Weight) []float64 {
	switch w.Module {
	case "q_proj", "k_proj", "v_proj":
		return h.attn[w.Layer]
	case "o_proj":
		return h.o[w.Layer]
	case "gate_proj", "up_proj":
		return h.mlp[w.Layer]
	case "down_proj":
		return h.down[w.Layer]
	case "lm_head":
		return h.head
	}
	return nil
}

// accumulate adds xᵀx of x [n, in] to dst [in, in].
func accumulate(dst []float64, x []float32, n, in int) {
	for r := range n {
		row := x[r*in : (r+1)*in]
		for i, a := range row {
			if a == 0 {
				continue
			}
			d := dst[i*in : (i+1)*in]
			for j, b := range row {
				d[j] += float64(a) * float64(b)
			}
		}
	}
}

// observe runs one sequence through the float decoder (llama.go's
// computation, in plain loops) and adds each matrix's inputs to its Hessian.
func (h *hessians) observe(m *Model, dec *checkpoint.Decoder[*checkpoint.Tensor], ids []int) {
	cfg := h.cfg
	n, e, inter := len(ids), cfg.HiddenSize, cfg.IntermediateSize
	nh, nkv, hd := cfg.NumHeads, cfg.NumKVHeads, cfg.HeadDim
	qd, kvd, grp := nh*hd, nkv*hd, nh/nkv
	eps := float32(cfg.RMSNormEps)
	cos, sin := RopeTables(cfg, n)
	lin := func(w *checkpoint.Tensor, bias *checkpoint.Tensor, x []float32, out int) []float32 {
		y := make([]float32, n*out)
		packMatrix(w.Data, out, len(w.Data)/out).mul(y, x, n, values(bias))
		return y
	}
	x := make([]float32, n*e)
	for i, id := range ids {
		copy(x[i*e:(i+1)*e], dec.Embed.Data[id*e:(id+1)*e])
	}
	hbuf := make([]float32, n*e)
	for l, lw := range dec.Layers {
		rmsNormRows(hbuf, x, lw.AttnNorm.Data, n, e, eps)
		accumulate(h.attn[l], hbuf, n, e)
		q, k, v := lin(lw.Q, lw.QBias, hbuf, qd), lin(lw.K, lw.KBias, hbuf, kvd), lin(lw.V, lw.VBias, hbuf, kvd)
		for p := range n {
			c, s := cos[p*hd/2:(p+1)*hd/2], sin[p*hd/2:(p+1)*hd/2]
			for hh := range nh {
				ropeRow(q[p*qd+hh*hd:p*qd+(hh+1)*hd], c, s)
			}
			for hh := range nkv {
				ropeRow(k[p*kvd+hh*hd:p*kvd+(hh+1)*hd], c, s)
			}
		}
		att := make([]float32, n*qd)
		scale := float32(1 / math.Sqrt(float64(hd)))
		scores := make([]float32, n)
		for p := range n {
			first := 0
			if cfg.SlidingWindow > 0 {
				first = max(0, p-cfg.SlidingWindow+1)
			}
			for hh := range nh {
				kh := hh / grp
				row := scores[:p+1-first]
				for j := range row {
					row[j] = dotf(q[p*qd+hh*hd:p*qd+(hh+1)*hd], k[(first+j)*kvd+kh*hd:(first+j)*kvd+(kh+1)*hd]) * scale
				}
				softmaxRow(row)
				weightedSum(att[p*qd+hh*hd:p*qd+(hh+1)*hd], row, v[first*kvd+kh*hd:], kvd)
			}
		}
		accumulate(h.o[l], att, n, qd)
		addTo(x, lin(lw.O, lw.OBias, att, e))
		rmsNormRows(hbuf, x, lw.MLPNorm.Data, n, e, eps)
		accumulate(h.mlp[l], hbuf, n, e)
		gt, up := lin(lw.Gate, nil, hbuf, inter), lin(lw.Up, nil, hbuf, inter)
		act := make([]float32, n*inter)
		siluMul(act, gt, up)
		accumulate(h.down[l], act, n, inter)
		addTo(x, lin(lw.Down, nil, act, e))
	}
	if !cfg.TieWordEmbeddings {
		rmsNormRows(hbuf, x, dec.FinalNorm.Data, n, e, eps)
		accumulate(h.head, hbuf, n, e)
	}
}

// gptq quantizes w [rows, cols] (bits, groups of g columns, 0 or a g that
// does not divide a row: per row) against the input Hessian h [cols, cols].
func gptq(w *checkpoint.Tensor, h []float64, bits, g int) *checkpoint.QuantTensor {
	rows, cols := w.Shape[0], w.Shape[1]
	if g <= 0 || g >= cols || cols%g != 0 {
		g = cols
	}
	H := append([]float64(nil), h...)
	W := make([]float64, len(w.Data))
	for i, v := range w.Data {
		W[i] = float64(v)
	}
	var mean float64
	for i := range cols {
		if H[i*cols+i] == 0 { // an input never seen: its weights do not matter
			H[i*cols+i] = 1
			for r := range rows {
				W[r*cols+i] = 0
			}
		}
		mean += H[i*cols+i]
	}
	damp := gptqDamp * mean / float64(cols)
	for i := range cols {
		H[i*cols+i] += damp
	}
	U := upperCholeskyOfInverse(H, cols)
	q := &checkpoint.QuantTensor{Bits: bits, GroupSize: g, Rows: rows, Cols: cols, Values: make([]int8, rows*cols), Scales: make([]float32, rows*(cols/g))}
	groups := cols / g
	top := float64(int(1)<<(bits-1) - 1)
	vals := make([]float32, g)
	for c := range cols {
		if c%g == 0 { // the group's scales, from the weights as updated so far
			for r := range rows {
				for i := range g {
					vals[i] = float32(W[r*cols+c+i])
				}
				q.Scales[r*groups+c/g] = checkpoint.GroupScale(vals, bits)
			}
		}
		d := U[c*cols+c]
		for r := range rows {
			s := float64(q.Scales[r*groups+c/g])
			wv := W[r*cols+c]
			var v float64
			if s != 0 {
				v = max(-top-1, min(top, math.RoundToEven(wv/s)))
			}
			q.Values[r*cols+c] = int8(v)
			err := (wv - v*s) / d
			row := W[r*cols : (r+1)*cols]
			urow := U[c*cols : (c+1)*cols]
			for j := c + 1; j < cols; j++ {
				row[j] -= err * urow[j]
			}
		}
	}
	return q
}

// upperCholeskyOfInverse returns the upper triangular U with UᵀU = H⁻¹,
// H [n, n] symmetric positive definite: GPTQ's
// cholesky(cholesky_inverse(cholesky(H)), upper=True).
func upperCholeskyOfInverse(H []float64, n int) []float64 {
	L := cholesky(H, n) // H = L Lᵀ
	// H⁻¹ = L⁻ᵀ L⁻¹: invert L (lower triangular) by forward substitution.
	Li := make([]float64, n*n)
	for c := range n {
		for i := c; i < n; i++ {
			s := 0.0
			if i == c {
				s = 1
			}
			for k := c; k < i; k++ {
				s -= L[i*n+k] * Li[k*n+c]
			}
			Li[i*n+c] = s / L[i*n+i]
		}
	}
	inv := make([]float64, n*n)
	for i := range n {
		for j := range n {
			var s float64
			for k := max(i, j); k < n; k++ {
				s += Li[k*n+i] * Li[k*n+j]
			}
			inv[i*n+j] = s
		}
	}
	Lt := cholesky(inv, n) // inv = Lt Ltᵀ: U = Ltᵀ
	U := make([]float64, n*n)
	for i := range n {
		for j := i; j < n; j++ {
			U[i*n+j] = Lt[j*n+i]
		}
	}
	return U
}

// cholesky returns the lower triangular L with L Lᵀ = A.
func cholesky(A []float64, n int) []float64 {
	L := make([]float64, n*n)
	for i := range n {
		for j := 0; j <= i; j++ {
			s := A[i*n+j]
			for k := range j {
				s -= L[i*n+k] * L[j*n+k]
			}
			if i == j {
				L[i*n+i] = math.Sqrt(max(s, 1e-12))
			} else {
				L[i*n+j] = s / L[j*n+j]
			}
		}
	}
	return L
}
