//go:build !purego

package model

import (
	"math"
	"unsafe"

	"golang.org/x/sys/cpu"
)

// gemm4x16 is the AVX2/FMA micro-kernel of kernel_amd64.s.
//
//go:noescape
func gemm4x16(k int, x *float32, ldx int, w *float32, ldw int, y *float32, ldy int, add int)

// haveSIMDKernel says whether gemm4x16 can run on this CPU.
var haveSIMDKernel = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// block4x16 computes y[r][0:16] = Σ_i x[r*ldx+i]·w[i*ldw+0:16] for r < 4,
// added to y's values when add is set.
func block4x16(k int, x []float32, ldx int, w []float32, ldw int, y []float32, ldy int, add bool) {
	if !haveSIMDKernel {
		block4x16Go(k, x, ldx, w, ldw, y, ldy, add)
		return
	}
	// The kernel reads 4 rows of x, k rows of 16 w values and writes 4 rows
	// of 16 y values: check the slices hold them before handing pointers out.
	_ = x[3*ldx+k-1]
	_ = w[(k-1)*ldw+15]
	_ = y[3*ldy+15]
	a := 0
	if add {
		a = 1
	}
	gemm4x16(k, unsafe.SliceData(x), ldx, unsafe.SliceData(w), ldw, unsafe.SliceData(y), ldy, a)
}

// expSum8 and max8 are the AVX2/FMA loops of kernel_exp_amd64.s, over n
// values (a positive multiple of 8).
//
//go:noescape
func expSum8(x *float32, n int, shift float32) float64

//go:noescape
func max8(x *float32, n int) float32

//go:noescape
func siluMul8(a, gate, up *float32, n int)

// siluMul sets a[i] = SiLU(g[i])·u[i] = g[i] / (1 + e^-g[i]) · u[i], eight
// values at a time where the CPU has AVX2.
func siluMul(a, g, u []float32) {
	n8 := len(a) &^ 7
	if haveSIMDKernel && n8 > 0 {
		_, _ = g[len(a)-1], u[len(a)-1]
		siluMul8(unsafe.SliceData(a), unsafe.SliceData(g), unsafe.SliceData(u), n8)
	}
	siluMulGo(a[n8:], g[n8:], u[n8:])
}

// logSumExpParts returns max(x) and Σ e^(x[i] - max(x)), x unchanged: the
// parts of a log-softmax. Eight values at a time where the CPU has AVX2
// (exp's relative error about 1e-7, summed in float64).
func logSumExpParts(x []float32) (best float32, sum float64) {
	n8 := len(x) &^ 7
	if !haveSIMDKernel || n8 == 0 {
		return logSumExpPartsGo(x)
	}
	best = max8(unsafe.SliceData(x), n8)
	for _, v := range x[n8:] {
		best = max(best, v)
	}
	sum = expSum8(unsafe.SliceData(x), n8, best)
	for _, v := range x[n8:] {
		sum += math.Exp(float64(v - best))
	}
	return best, sum
}
