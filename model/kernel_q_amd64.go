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
