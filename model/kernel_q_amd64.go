//go:build !purego

package model

import "unsafe"

// dotQ8 and dotQ4 are the AVX2/FMA quantized dot products of kernel_q_amd64.s.
//
//go:noescape
func dotQ8(x *float32, q *int8, scales *float32, groups, glen int) float32

//go:noescape
func dotQ4(x *float32, q *byte, scales *float32, xsum *float32, groups, glen int) float32

// dot8 is Σ_g scales[g] · Σ_i x[g*glen+i]·q[g*glen+i] over len(scales)
// groups of glen values.
func dot8(x []float32, q []int8, scales []float32, glen int) float32 {
	if !haveSIMDKernel || glen%8 != 0 {
		return dot8Go(x, q, scales, glen)
	}
	n := len(scales) * glen
	_, _ = x[n-1], q[n-1]
	return dotQ8(unsafe.SliceData(x), unsafe.SliceData(q), unsafe.SliceData(scales), len(scales), glen)
}

// dot4 is dot8 for the nibbles of q (quantMatrix's layout, glen a multiple
// of 32); xsum[g] is the sum of x over group g.
func dot4(x []float32, q []byte, scales, xsum []float32, glen int) float32 {
	if !haveSIMDKernel {
		return dot4Go(x, q, scales, glen)
	}
	n := len(scales) * glen
	_, _, _ = x[n-1], q[n/2-1], xsum[len(scales)-1]
	return dotQ4(unsafe.SliceData(x), unsafe.SliceData(q), unsafe.SliceData(scales), unsafe.SliceData(xsum), len(scales), glen)
}

//go:noescape
func dotQ8Q8(q *int8, scales *float32, xq *int8, xd *float32, blocks int) float32

// dotQ8Blocks is llama.cpp's vec_dot of weights (values q, one scale per
// block of 32) with a Q8_0 row (quant_llama.go).
func dotQ8Blocks(q []int8, scales []float32, x q8Row) float32 {
	if !haveSIMDKernel {
		return dotQ8BlocksGo(q, scales, x)
	}
	n := len(scales)
	_, _, _ = q[32*n-1], x.q[32*n-1], x.d[n-1]
	return dotQ8Q8(unsafe.SliceData(q), unsafe.SliceData(scales), unsafe.SliceData(x.q), unsafe.SliceData(x.d), n)
}
