package model

import (
	"sync"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// Quantized weights in the native engine. A checkpoint's quantized matrix
// (checkpoint.QuantTensor: symmetric int8 or int4 values with a scale per
// row or per group of a row) is held as a quantMatrix in place of the
// float panels of packedMatrix, and its products run on the quantized dot
// products of kernel_q_*.go: the integers are widened to float32 in
// registers, multiplied with the activations and scaled per group, so a
// product reads a quarter (int8) or an eighth (int4) of the float bytes.
// The embedding is looked up from the same quantized rows (dequantized one
// row per token); a tied LM head is that same matrix. useQuant is the one
// place where the engine picks, per weight, the float or a quantized
// kernel.

// quantMatrix is a weight [out, in] quantized row by row.
type quantMatrix struct {
	bits, in, out int
	llamaQ8       bool      // products as llama.cpp computes its Q8_0/Q4_0 blocks (quant_llama.go)
	glen          int       // values per scale
	groups        int       // scales per row
	ld            int       // values per row held: in, padded with zeros to whole groups (a partial last group)
	q8            []int8    // [out, ld]: 8-bit values, and 4-bit ones whose groups are not multiples of 32
	q4            []byte    // [out, ld/2]: 4-bit values plus 8, 32 to 16 bytes (dot4's layout)
	scales        []float32 // [out, groups]
}

// newQuantMatrix packs a checkpoint's quantized tensor for the kernels. A
// row whose last group is partial (GPTQ tools' layout where the group size
// does not divide it) is padded with zero values to whole groups; products
// pad the activations alike.
func newQuantMatrix(t *checkpoint.QuantTensor) *quantMatrix {
	m := &quantMatrix{bits: t.Bits, in: t.Cols, out: t.Rows, glen: t.GroupSize, groups: t.Groups(), scales: t.Scales}
	m.ld = m.groups * m.glen
	m.llamaQ8 = t.LlamaQ8 && m.glen == 32 && m.ld == m.in
	values := t.Values
	if m.ld != m.in {
		values = make([]int8, t.Rows*m.ld)
		for o := range t.Rows {
			copy(values[o*m.ld:], t.Values[o*t.Cols:(o+1)*t.Cols])
		}
	}
	if t.Bits == 8 || m.glen%32 != 0 || m.llamaQ8 {
		m.q8 = values
		return m
	}
	m.q4 = make([]byte, t.Rows*m.ld/2)
	for o := range t.Rows {
		row := values[o*m.ld : (o+1)*m.ld]
		dst := m.q4[o*m.ld/2:]
		for b := 0; b < m.ld; b += 32 {
			for j := range 16 {
				dst[b/2+j] = byte(row[b+j]+8) | byte(row[b+j+16]+8)<<4
			}
		}
	}
	return m
}

// bytes is the memory m holds.
func (m *quantMatrix) bytes() int64 {
	if m == nil {
		return 0
	}
	return int64(len(m.q8)+len(m.q4)) + 4*int64(len(m.scales))
}

// padBufs holds mulOn's zero-padded copies of x between calls (weights
// whose last group is partial), so a decode step allocates none.
var padBufs sync.Pool

// mulOn sets y [rows, out] = x [rows, in] · wᵀ, plus bias when not nil,
// the output channels split between the cores when parallel is set and
// the product is large enough. Each weight row is read once for all rows
// of x.
func (m *quantMatrix) mulOn(y, x []float32, rows int, bias []float32, parallel bool) {
	if m.llamaQ8 {
		m.mulLlama(y, x, rows, bias, parallel)
		return
	}
	if m.ld != m.in { // a partial last group: x padded with zeros as the values are
		pb, _ := padBufs.Get().(*[]float32)
		if pb == nil {
			pb = new([]float32)
		}
		defer padBufs.Put(pb)
		*pb = grow(*pb, rows*m.ld)
		xp := *pb
		for r := range rows {
			copy(xp[r*m.ld:], x[r*m.in:(r+1)*m.in])
			clear(xp[r*m.ld+m.in : (r+1)*m.ld])
		}
		x = xp
	}
	var xsum []float32 // per row of x, the sum of each group (dot4)
	if m.q4 != nil {
		xsum = make([]float32, rows*m.groups)
		for r := range rows {
			for g := range m.groups {
				var s float32
				for _, v := range x[r*m.ld+g*m.glen : r*m.ld+(g+1)*m.glen] {
					s += v
				}
				xsum[r*m.groups+g] = s
			}
		}
	}
	parallelRows(parallel, m.out, rows*m.in*m.out, func(lo, hi int) {
		for o := lo; o < hi; o++ {
			sc := m.scales[o*m.groups : (o+1)*m.groups]
			var b float32
			if bias != nil {
				b = bias[o]
			}
			for r := range rows {
				xr := x[r*m.ld : (r+1)*m.ld]
				var v float32
				if m.q4 != nil {
					v = dot4(xr, m.q4[o*m.ld/2:(o+1)*m.ld/2], sc, xsum[r*m.groups:(r+1)*m.groups], m.glen)
				} else {
					v = dot8(xr, m.q8[o*m.ld:(o+1)*m.ld], sc, m.glen)
				}
				y[r*m.out+o] = v + b
			}
		}
	})
}

// row sets dst to row o of the weight, dequantized (an embedding lookup).
func (m *quantMatrix) row(dst []float32, o int) {
	sc := m.scales[o*m.groups : (o+1)*m.groups]
	if m.q8 != nil {
		for i, v := range m.q8[o*m.ld : o*m.ld+m.in] {
			dst[i] = float32(v) * sc[i/m.glen]
		}
		return
	}
	q := m.q4[o*m.ld/2 : (o+1)*m.ld/2]
	for b := 0; b < m.in; b += 32 {
		s := sc[b/m.glen]
		for j := range 16 {
			u := q[b/2+j]
			if b+32 <= m.in { // a whole block
				dst[b+j] = float32(int(u&15)-8) * s
				dst[b+j+16] = float32(int(u>>4)-8) * s
				continue
			}
			if b+j < m.in { // the partial last group's block
				dst[b+j] = float32(int(u&15)-8) * s
			}
			if b+j+16 < m.in {
				dst[b+j+16] = float32(int(u>>4)-8) * s
			}
		}
	}
}

// dot8Go is the portable dot8.
func dot8Go(x []float32, q []int8, scales []float32, glen int) float32 {
	var total float32
	for g, s := range scales {
		var acc float32
		xs := x[g*glen : (g+1)*glen]
		for i, v := range q[g*glen : (g+1)*glen] {
			acc += xs[i] * float32(v)
		}
		total += acc * s
	}
	return total
}

// dot4Go is the portable dot4 (without the group sums).
func dot4Go(x []float32, q []byte, scales []float32, glen int) float32 {
	var total float32
	for g, s := range scales {
		var acc float32
		for b := g * glen; b < (g+1)*glen; b += 32 {
			for j := range 16 {
				u := q[b/2+j]
				acc += x[b+j]*float32(int(u&15)-8) + x[b+j+16]*float32(int(u>>4)-8)
			}
		}
		total += acc * s
	}
	return total
}

// quantPacked is a packedMatrix whose products run on m.
func quantPacked(m *quantMatrix) *packedMatrix {
	return &packedMatrix{in: m.in, out: m.out, ld: m.out, q: m}
}

// useQuant switches every weight the checkpoint holds quantized (h's
// tensors with a Quant) to the quantized kernels, dropping its float
// panels; the embedding lookups then dequantize a row at a time, and a tied
// head shares the embedding's quantized rows.
func (d *nativeDecoder) useQuant(h *held[*checkpoint.Tensor]) {
	pick := func(p **packedMatrix, t *checkpoint.Tensor) {
		if t != nil && t.Quant != nil {
			*p = quantPacked(newQuantMatrix(t.Quant))
		}
	}
	if q := h.dec.Embed.Quant; q != nil {
		d.qembed = newQuantMatrix(q)
		d.embed = nil
		if d.cfg.TieWordEmbeddings {
			d.lmHead = quantPacked(d.qembed)
		}
	}
	if !d.cfg.TieWordEmbeddings {
		pick(&d.lmHead, h.dec.LMHead)
	}
	for l := range d.layers {
		lw, f, src := &d.layers[l], &h.fused[l], &h.dec.Layers[l]
		pick(&lw.qkv, f.QKV)
		pick(&lw.o, src.O)
		pick(&lw.gateUp, f.GateUp)
		pick(&lw.down, src.Down)
	}
}

// embedRow sets dst to the embedding of token.
func (d *nativeDecoder) embedRow(dst []float32, token int) {
	if d.qembed != nil {
		d.qembed.row(dst, token)
		return
	}
	e := d.cfg.HiddenSize
	copy(dst, d.embed[token*e:(token+1)*e])
}

// quantBytes is the memory of the quantized weights (the tied head counted
// once, with the embedding).
func (d *nativeDecoder) quantBytes() int64 {
	n := d.qembed.bytes()
	if d.lmHead.q != d.qembed {
		n += d.lmHead.q.bytes()
	}
	for _, l := range d.layers {
		n += l.qkv.q.bytes() + l.o.q.bytes() + l.gateUp.q.bytes() + l.down.q.bytes()
	}
	return n
}

// dropQuantized releases the float values and quantized forms of h's
// quantized weights (the native engine holds its own packed copy), keeping
// the float ones (norms, biases, matrices left float), and returns h.
func dropQuantized(cfg checkpoint.Config, h *held[*checkpoint.Tensor]) *held[*checkpoint.Tensor] {
	for _, p := range h.fields(cfg) {
		if t := *p; t != nil && t.Quant != nil {
			*p = &checkpoint.Tensor{Shape: t.Shape} // a new one: the caller's checkpoint keeps its own
		}
	}
	if cfg.TieWordEmbeddings {
		h.dec.LMHead = h.dec.Embed
	}
	return h
}

// graphWeights uploads, once, the float weights the graphs take: for a
// quantized model (lazyHost) the weights dequantized from the native
// engine's quantized rows, made only when a graph first runs (Logits,
// training, the graph engine).
func (m *Model) graphWeights() error {
	m.lazyOnce.Do(func() {
		h := m.lazyHost
		if h == nil {
			return
		}
		d := m.native
		fill := func(t *checkpoint.Tensor, q *quantMatrix) {
			if t == nil || t.Data != nil || q == nil {
				return
			}
			t.Data = make([]float32, q.out*q.in)
			for o := range q.out {
				q.row(t.Data[o*q.in:(o+1)*q.in], o)
			}
		}
		fill(h.dec.Embed, d.qembed)
		fill(h.dec.LMHead, d.lmHead.q)
		for l := range h.fused {
			fill(h.fused[l].QKV, d.layers[l].qkv.q)
			fill(h.dec.Layers[l].O, d.layers[l].o.q)
			fill(h.fused[l].GateUp, d.layers[l].gateUp.q)
			fill(h.dec.Layers[l].Down, d.layers[l].down.q)
		}
		m.lazyErr = m.uploadWeights(h)
		m.lazyHost = nil
	})
	return m.lazyErr
}
