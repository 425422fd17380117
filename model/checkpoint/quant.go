package checkpoint

import (
	"errors"
	"fmt"
	"math"
)

// Weight-only quantization (DATA_DICTIONARY.md §4.3): every weight matrix
// (the embedding and the LM head included) held as small integers times a
// float scale, symmetric (no zero point): 8-bit per output channel (one
// scale per row) or 4-bit per group of GroupSize columns of a row. Norms
// and biases stay float. The values here are unpacked, one int8 each; the
// files (quant_files.go) hold them packed in GPTQ's layout and the native
// engine packs them again for its kernels.

// Quantization methods and the GPTQ-compatible format they are written in.
const (
	// QuantMethodRTN is symmetric round-to-nearest: scale = max|w| / qmax.
	QuantMethodRTN = "rtn"
	// QuantMethodGPTQ names a directory made by GPTQ tools (AutoGPTQ,
	// GPTQModel): the same packed layout, loaded as it is.
	QuantMethodGPTQ = "gptq"
	// QuantMethodGGUF names weights imported from llama.cpp's block formats.
	QuantMethodGGUF = "gguf"
	// QuantConfigFile is the quantization config of §4.3.
	QuantConfigFile = "quant_config.json"
)

// ErrQuant: a quantization request or a quantized tensor is invalid (bits,
// group size, method, truncated or inconsistent data).
var ErrQuant = errors.New("invalid quantization")

// QuantTensor is a weight [Rows, Cols] quantized symmetrically: element
// (r, c) is Values[r*Cols+c] · Scales[r*Groups()+c/GroupSize].
type QuantTensor struct {
	Bits      int       // 8 or 4: Values lie in [-127, 127] or [-8, 7]
	GroupSize int       // columns per scale; Cols for one scale per row
	Rows      int       // output channels
	Cols      int       // input features
	Values    []int8    // [Rows, Cols]
	Scales    []float32 // [Rows, Groups()]
	// LlamaQ8: products round the activations to Q8_0 blocks, as llama.cpp
	// computes its Q8_0 and Q4_0 tensors (weights imported from GGUF).
	LlamaQ8 bool
	// float16 is, for a weight the files hold in float (quantized_at_load:
	// the embedding), the float16 values it was rounded from, [Rows, Cols].
	float16 []float32
}

// Groups is the number of scales per row.
func (q *QuantTensor) Groups() int { return (q.Cols + q.GroupSize - 1) / q.GroupSize }

// qmax is the largest magnitude a value of bits may take (symmetric).
func qmax(bits int) float64 {
	if bits == 4 {
		return 7
	}
	return 127
}

// Check verifies q's fields agree: bits, group size, and the lengths of
// values and scales.
func (q *QuantTensor) Check() error {
	switch {
	case q.Bits != 4 && q.Bits != 8:
		return fmt.Errorf("%w: %d bits (want 4 or 8)", ErrQuant, q.Bits)
	case q.Rows <= 0 || q.Cols <= 0 || q.GroupSize <= 0 || q.GroupSize > q.Cols:
		return fmt.Errorf("%w: shape [%d, %d] with group size %d", ErrQuant, q.Rows, q.Cols, q.GroupSize)
	case q.Cols%q.GroupSize != 0:
		return fmt.Errorf("%w: group size %d does not divide a row of %d", ErrQuant, q.GroupSize, q.Cols)
	case len(q.Values) != q.Rows*q.Cols:
		return fmt.Errorf("%w: %d values for [%d, %d]", ErrTruncated, len(q.Values), q.Rows, q.Cols)
	case len(q.Scales) != q.Rows*q.Groups():
		return fmt.Errorf("%w: %d scales for %d rows of %d groups", ErrTruncated, len(q.Scales), q.Rows, q.Groups())
	}
	hi := int8(qmax(q.Bits))
	for i, v := range q.Values {
		if v < -hi-1 || v > hi {
			return fmt.Errorf("%w: value %d at %d outside %d bits", ErrQuant, v, i, q.Bits)
		}
	}
	return nil
}

// CheckQuantRequest validates bits and a requested group size (0: the
// default for the bits): 8 bits take per-channel scales only (group size
// 0), 4 bits groups of 32, 64 or 128.
func CheckQuantRequest(bits, groupSize int) (int, error) {
	switch bits {
	case 8:
		if groupSize != 0 {
			return 0, fmt.Errorf("%w: 8 bits use one scale per output channel; group size %d is not taken", ErrQuant, groupSize)
		}
		return 0, nil
	case 4:
		switch groupSize {
		case 0:
			return 32, nil
		case 32, 64, 128:
			return groupSize, nil
		}
		return 0, fmt.Errorf("%w: group size %d (want 32, 64 or 128)", ErrQuant, groupSize)
	}
	return 0, fmt.Errorf("%w: %d bits (want 8 or 4)", ErrQuant, bits)
}

// Quantize rounds t [rows, cols] to nearest, symmetrically: bits 8 per row,
// bits 4 per group of groupSize columns (0: per row). A row that groupSize
// does not divide falls back to one scale per row; fellBack says so.
func Quantize(t *Tensor, bits, groupSize int) (q *QuantTensor, fellBack bool, err error) {
	if len(t.Shape) != 2 || t.NumElements() != len(t.Data) {
		return nil, false, fmt.Errorf("%w: quantize needs a matrix, got shape %v with %d values", ErrShape, t.Shape, len(t.Data))
	}
	rows, cols := t.Shape[0], t.Shape[1]
	if bits != 4 && bits != 8 {
		return nil, false, fmt.Errorf("%w: %d bits (want 8 or 4)", ErrQuant, bits)
	}
	g := groupSize
	if g <= 0 || g >= cols || cols%g != 0 {
		fellBack = g > 0 && g < cols
		g = cols
	}
	q = &QuantTensor{Bits: bits, GroupSize: g, Rows: rows, Cols: cols, Values: make([]int8, rows*cols)}
	groups := q.Groups()
	q.Scales = make([]float32, rows*groups)
	top := qmax(bits)
	for r := range rows {
		for gi := range groups {
			vals := t.Data[r*cols+gi*g : r*cols+(gi+1)*g]
			scale := bestScale(vals, bits)
			q.Scales[r*groups+gi] = scale
			if scale == 0 {
				continue
			}
			out := q.Values[r*cols+gi*g:]
			for i, v := range vals {
				out[i] = roundQ(v, scale, top)
			}
		}
	}
	return q, fellBack, nil
}

// roundQ is v/scale rounded to nearest within [-top-1, top].
func roundQ(v, scale float32, top float64) int8 {
	return int8(max(-top-1, min(top, math.RoundToEven(float64(v)/float64(scale)))))
}

// bestScale returns the scale of one group of vals: max|v| / qmax for 8
// bits; for 4 bits, whose 16 levels make the choice matter, the candidate
// of least squared error among max|v| / (qmax + δ) for δ in [-1, 1.5]
// (δ > 0 uses the level -8 the symmetric range leaves out, δ < 0 clips the
// largest values). Scales are rounded to float16, as the files hold them,
// so a checkpoint computes the same before and after saving.
func bestScale(vals []float32, bits int) float32 {
	top := qmax(bits)
	var amax float64
	for _, v := range vals {
		amax = max(amax, math.Abs(float64(v)))
	}
	best := f16ToF32(f32ToF16(float32(amax / top)))
	if bits == 8 || best == 0 {
		return best
	}
	bestErr := math.Inf(1)
	for step := -10; step <= 15; step++ {
		s := f16ToF32(f32ToF16(float32(amax / (top + float64(step)/10))))
		var e float64
		for _, v := range vals {
			d := float64(v) - float64(s)*float64(roundQ(v, s, top))
			e += d * d
		}
		if e < bestErr {
			best, bestErr = s, e
		}
	}
	return best
}

// F16Round is v rounded to the nearest float16.
func F16Round(v float32) float32 { return f16ToF32(f32ToF16(v)) }

// GroupScale is the scale Quantize gives one group of values at bits.
func GroupScale(vals []float32, bits int) float32 { return bestScale(vals, bits) }

// Dequantize returns q's values times their scales, [Rows, Cols].
func (q *QuantTensor) Dequantize() *Tensor {
	t := &Tensor{Shape: []int{q.Rows, q.Cols}, Data: make([]float32, q.Rows*q.Cols)}
	groups := q.Groups()
	for r := range q.Rows {
		for c := range q.Cols {
			t.Data[r*q.Cols+c] = float32(q.Values[r*q.Cols+c]) * q.Scales[r*groups+c/q.GroupSize]
		}
	}
	return t
}

// PermuteRows returns q with its rows reordered: row i of the result is
// row from(i) of q (values and scales together).
func (q *QuantTensor) PermuteRows(from func(i int) int) *QuantTensor {
	out := *q
	out.float16 = nil
	groups := q.Groups()
	out.Values = make([]int8, len(q.Values))
	out.Scales = make([]float32, len(q.Scales))
	for i := range q.Rows {
		j := from(i)
		copy(out.Values[i*q.Cols:(i+1)*q.Cols], q.Values[j*q.Cols:(j+1)*q.Cols])
		copy(out.Scales[i*groups:(i+1)*groups], q.Scales[j*groups:(j+1)*groups])
	}
	return &out
}

// StackQuantRows stacks the parts' rows (as the native engine fuses q, k
// and v): nil unless every part is quantized alike (bits, columns, the
// llama.cpp products), their group sizes aside: parts whose group sizes
// differ but all divide the largest (a GGUF's Q4_K q and k, 32, with its
// Q6_K v, 16) are stacked at the smallest, each scale of a coarser group
// repeated for its finer ones (the same values).
func StackQuantRows(parts ...*QuantTensor) *QuantTensor {
	if len(parts) == 0 || parts[0] == nil {
		return nil
	}
	first := parts[0]
	g := first.GroupSize
	for _, p := range parts {
		if p == nil || p.Bits != first.Bits || p.Cols != first.Cols || p.LlamaQ8 != first.LlamaQ8 {
			return nil
		}
		g = min(g, p.GroupSize)
	}
	out := &QuantTensor{Bits: first.Bits, GroupSize: g, Cols: first.Cols, LlamaQ8: first.LlamaQ8}
	for _, p := range parts {
		if p.GroupSize%g != 0 || p.Cols%p.GroupSize != 0 && p.GroupSize != g {
			return nil
		}
		out.Rows += p.Rows
		out.Values = append(out.Values, p.Values...)
		if p.GroupSize == g {
			out.Scales = append(out.Scales, p.Scales...)
			continue
		}
		groups, k := p.Groups(), p.GroupSize/g
		for r := range p.Rows {
			for _, s := range p.Scales[r*groups : (r+1)*groups] {
				for range k {
					out.Scales = append(out.Scales, s)
				}
			}
		}
	}
	return out
}

// Bytes is the size of q as the files pack it: the values at Bits each,
// the scales in float16.
func (q *QuantTensor) Bytes() int64 {
	return int64(q.Rows*q.Cols*q.Bits/8) + 2*int64(len(q.Scales))
}
