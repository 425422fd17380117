//go:build !amd64 || purego

package model

// haveSIMDKernel is false where no assembly kernel is built.
var haveSIMDKernel = false

func block4x16(k int, x []float32, ldx int, w []float32, ldw int, y []float32, ldy int, add bool) {
	block4x16Go(k, x, ldx, w, ldw, y, ldy, add)
}

func logSumExpParts(x []float32) (float32, float64) { return logSumExpPartsGo(x) }

func siluMul(a, g, u []float32) { siluMulGo(a, g, u) }
