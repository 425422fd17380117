package checkpoint

import (
	"encoding/binary"
	"fmt"
	"io"
	"sort"
)

// llama.cpp's quantized block formats, read by ImportGGUF: Q8_0 (blocks of
// 32: a float16 scale, 32 int8), Q4_0 (blocks of 32: a float16 scale, 16
// bytes of 4-bit values plus 8, value j in the low nibble of byte j and
// j+16 in the high), Q6_K (super-blocks of 256: 6-bit values less 32, an
// int8 scale per 16 times a float16 one) and Q4_K (super-blocks of 256:
// 4-bit values times a 6-bit scale per 32, less a 6-bit min times a
// float16 one). Q8_0, Q4_0 and Q6_K are symmetric and map exactly onto a
// QuantTensor (8 bits, groups of 32; 4 bits, groups of 32; 8-bit values
// within ±32, groups of 16); Q4_K has a min (a zero point), so kept
// quantized it is requantized to 8 bits in groups of 32 (an error of at
// most 1/254 of a group's largest weight).

// GGML quantized types.
const (
	ggmlQ4_0 uint32 = 2
	ggmlQ8_0 uint32 = 8
	ggmlQ4_K uint32 = 12
	ggmlQ6_K uint32 = 14
)

// ggmlBlock gives the elements and bytes of one block of a quantized type.
func ggmlBlock(t uint32) (elems, bytes int, ok bool) {
	switch t {
	case ggmlQ8_0:
		return 32, 34, true
	case ggmlQ4_0:
		return 32, 18, true
	case ggmlQ4_K:
		return 256, 144, true
	case ggmlQ6_K:
		return 256, 210, true
	}
	return 0, 0, false
}

// ggufTensorBytes is the size of ti's data in the file; ok is false for a
// type this package does not read, or rows its blocks do not divide.
func ggufTensorBytes(ti ggufTensorInfo, limit uint64) (n uint64, ok bool, err error) {
	count := uint64(1)
	elemLimit := 2*limit + 1 // no type this package reads holds two values in under a byte
	for _, d := range ti.Dims {
		if d != 0 && count > elemLimit/d {
			return 0, true, fmt.Errorf("%w: dims %v need more bytes than the file holds", ErrTruncated, ti.Dims)
		}
		count *= d
	}
	if width, _, ok := ggufTypeSize(ti.Type); ok {
		if count > limit/uint64(width) {
			return 0, true, fmt.Errorf("%w: dims %v need more bytes than the file holds", ErrTruncated, ti.Dims)
		}
		return count * uint64(width), true, nil
	}
	elems, bytes, ok := ggmlBlock(ti.Type)
	if !ok {
		return 0, false, nil
	}
	if len(ti.Dims) == 0 || ti.Dims[0]%uint64(elems) != 0 {
		return 0, true, fmt.Errorf("%w: %s rows of %v are not whole blocks of %d", ErrShape, ggmlTypeName(ti.Type), ti.Dims, elems)
	}
	n = count / uint64(elems) * uint64(bytes)
	if n > limit {
		return 0, true, fmt.Errorf("%w: dims %v need more bytes than the file holds", ErrTruncated, ti.Dims)
	}
	return n, true, nil
}

// readGGUFQuant reads a quantized 2-D tensor: its QuantTensor (Q4_K
// requantized to 8 bits) and dequantized values (Q4_K's exact ones).
func readGGUFQuant(r io.ReaderAt, f *ggufFile, ti ggufTensorInfo, size uint64, name string) (*Tensor, error) {
	if len(ti.Dims) != 2 {
		return nil, fmt.Errorf("gguf %s: tensor %q: %w: a %s tensor of %d dims (only matrices import quantized)", name, ti.Name, ErrUnsupported, ggmlTypeName(ti.Type), len(ti.Dims))
	}
	cols, rows := int(ti.Dims[0]), int(ti.Dims[1])
	data := make([]byte, size)
	if _, err := r.ReadAt(data, f.DataBase+int64(ti.Offset)); err != nil {
		return nil, fmt.Errorf("gguf %s: tensor %q: read %s data: %w", name, ti.Name, ggmlTypeName(ti.Type), ErrTruncated)
	}
	half := func(b []byte) float32 { return f16ToF32(binary.LittleEndian.Uint16(b)) }
	q := &QuantTensor{Rows: rows, Cols: cols, Values: make([]int8, rows*cols)}
	switch ti.Type {
	case ggmlQ8_0, ggmlQ4_0:
		q.Bits, q.GroupSize = 8, 32
		bs := 34
		if ti.Type == ggmlQ4_0 {
			q.Bits, bs = 4, 18
		}
		q.Scales = make([]float32, rows*cols/32)
		for b := range q.Scales {
			blk := data[b*bs : (b+1)*bs]
			q.Scales[b] = half(blk)
			out := q.Values[b*32 : (b+1)*32]
			for j := range 16 {
				if ti.Type == ggmlQ8_0 {
					out[j], out[j+16] = int8(blk[2+j]), int8(blk[18+j])
				} else {
					out[j], out[j+16] = int8(blk[2+j]&15)-8, int8(blk[2+j]>>4)-8
				}
			}
		}
	case ggmlQ6_K:
		q.Bits, q.GroupSize = 8, 16
		q.Scales = make([]float32, rows*cols/16)
		for b := range rows * cols / 256 {
			blk := data[b*210 : (b+1)*210]
			ql, qh, sc, d := blk[:128], blk[128:192], blk[192:208], half(blk[208:])
			out := q.Values[b*256 : (b+1)*256]
			for i := range 16 {
				q.Scales[b*16+i] = d * float32(int8(sc[i]))
			}
			for n := 0; n < 2; n++ {
				l0, h0, o := ql[n*64:], qh[n*32:], out[n*128:]
				for l := range 32 {
					o[l] = int8(l0[l]&15|(h0[l]>>0&3)<<4) - 32
					o[l+32] = int8(l0[l+32]&15|(h0[l]>>2&3)<<4) - 32
					o[l+64] = int8(l0[l]>>4|(h0[l]>>4&3)<<4) - 32
					o[l+96] = int8(l0[l+32]>>4|(h0[l]>>6&3)<<4) - 32
				}
			}
		}
	case ggmlQ4_K:
		t := &Tensor{Shape: []int{rows, cols}, Data: make([]float32, rows*cols)}
		for b := range rows * cols / 256 {
			blk := data[b*144 : (b+1)*144]
			d, dmin, scales, qs := half(blk), half(blk[2:]), blk[4:16], blk[16:]
			y := t.Data[b*256 : (b+1)*256]
			for j := range 4 {
				sc1, m1 := scaleMinK4(2*j, scales)
				sc2, m2 := scaleMinK4(2*j+1, scales)
				q := qs[32*j : 32*j+32]
				for l := range 32 {
					y[64*j+l] = d*float32(sc1)*float32(q[l]&15) - dmin*float32(m1)
					y[64*j+32+l] = d*float32(sc2)*float32(q[l]>>4) - dmin*float32(m2)
				}
			}
		}
		t.Quant = quantizeGroups8(t, 32) // groups of 32, as Q4_K's
		return t, nil
	}
	if err := q.Check(); err != nil {
		return nil, fmt.Errorf("gguf %s: tensor %q: %w", name, ti.Name, err)
	}
	q.LlamaQ8 = ti.Type == ggmlQ8_0 || ti.Type == ggmlQ4_0
	t := q.Dequantize()
	t.Quant = q
	return t, nil
}

// scaleMinK4 is ggml's get_scale_min_k4: sub-block j's 6-bit scale and min.
func scaleMinK4(j int, q []byte) (sc, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return q[j+4]&15 | (q[j-4]>>6)<<4, q[j+4]>>4 | (q[j]>>6)<<4
}

// quantizeGroups8 is 8-bit round-to-nearest with a scale per group of g.
func quantizeGroups8(t *Tensor, g int) *QuantTensor {
	rows, cols := t.Shape[0], t.Shape[1]
	q := &QuantTensor{Bits: 8, GroupSize: g, Rows: rows, Cols: cols, Values: make([]int8, rows*cols), Scales: make([]float32, rows*cols/g)}
	for b := range q.Scales {
		vals := t.Data[b*g : (b+1)*g]
		s := bestScale(vals, 8)
		q.Scales[b] = s
		if s == 0 {
			continue
		}
		for i, v := range vals {
			q.Values[b*g+i] = roundQ(v, s, 127)
		}
	}
	return q
}

// importQuantConfig describes the quantized tensors of an import: all at 8
// bits when any is (a 4-bit value is a valid 8-bit one), the most common
// group size.
func importQuantConfig(tensors map[string]*Tensor) (QuantConfig, bool) {
	qc := QuantConfig{Method: QuantMethodGGUF, Bits: 4, Symmetric: true, Format: "gptq"}
	groups := map[int]int{}
	names := make([]string, 0, len(tensors))
	for n := range tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, w := range names {
		t := tensors[w]
		if t.Quant == nil {
			qc.Float = append(qc.Float, w)
			continue
		}
		qc.Modules = append(qc.Modules, quantModule(w))
		groups[t.Quant.GroupSize]++
		if t.Quant.Bits == 8 {
			qc.Bits = 8
		}
	}
	if len(qc.Modules) == 0 {
		return qc, false
	}
	best := 0
	for g, n := range groups {
		if n > groups[best] || n == groups[best] && g < best {
			best = g
		}
	}
	qc.GroupSize = best
	for _, t := range tensors {
		if t.Quant != nil && t.Quant.LlamaQ8 {
			qc.Activations = ActivationsQ8_0
		}
	}
	for _, t := range tensors {
		if t.Quant != nil {
			t.Quant.Bits = qc.Bits
		}
	}
	return qc, true
}

// dequantizeAll drops the quantized forms (import-gguf --dequantize).
func dequantizeAll(tensors map[string]*Tensor) {
	for _, t := range tensors {
		t.Quant = nil
	}
}
