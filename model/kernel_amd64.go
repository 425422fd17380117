//go:build !purego

package model

import (
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
