package model

import (
	"math"
	"math/rand/v2"
	"testing"
)

// naiveGemm is c + op(a)·op(b) in float64 (a [m, k] or, when ta, aᵀ of a
// [k, m]; b [k, n] or, when tb, bᵀ of b [n, k]), all with the given strides.
func naiveGemm(c []float32, ldc int, a []float32, lda int, ta bool, b []float32, ldb int, tb bool, m, k, n int, add bool) []float32 {
	out := make([]float32, len(c))
	copy(out, c)
	for i := range m {
		for j := range n {
			var s float64
			if add {
				s = float64(c[i*ldc+j])
			}
			for l := range k {
				ai, bi := i*lda+l, l*ldb+j
				if ta {
					ai = l*lda + i
				}
				if tb {
					bi = j*ldb + l
				}
				av, bv := a[ai], b[bi]
				s += float64(av) * float64(bv)
			}
			out[i*ldc+j] = float32(s)
		}
	}
	return out
}

func TestBackwardProducts(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	tests := []struct {
		name    string
		kind    string // NN: dX = dY·W; NT: y = x·Wᵀ; TN: dW += dYᵀ·X
		m, k, n int
		pad     int // extra values per row of every operand (strided views)
		add     bool
	}{
		{name: "dX exact blocks", kind: "NN", m: 8, k: 64, n: 32},
		{name: "dX partial blocks", kind: "NN", m: 7, k: 172, n: 43},
		{name: "dX parallel", kind: "NN", m: 256, k: 288, n: 768},
		{name: "dX k blocks strided", kind: "NN", m: 13, k: 900, n: 40, pad: 5},
		{name: "dW accumulates", kind: "TN", m: 64, k: 100, n: 48, add: true},
		{name: "dW partial", kind: "TN", m: 5, k: 3, n: 17, add: true},
		{name: "dW parallel long", kind: "TN", m: 288, k: 1024, n: 288, add: true},
		{name: "dW chunked partial strided", kind: "TN", m: 301, k: 67, n: 45, pad: 3, add: true},
		{name: "dW strided", kind: "TN", m: 21, k: 37, n: 19, pad: 3},
		{name: "scores strided", kind: "NT", m: 33, k: 48, n: 33, pad: 7},
		{name: "scores accumulate", kind: "NT", m: 4, k: 8, n: 16, pad: 1, add: true},
		{name: "forward parallel partial panels", kind: "NT", m: 37, k: 300, n: 203, pad: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ta, tb := tt.kind == "TN", tt.kind == "NT"
			ar, ac := tt.m, tt.k
			if ta {
				ar, ac = tt.k, tt.m
			}
			br, bc := tt.k, tt.n
			if tb {
				br, bc = tt.n, tt.k
			}
			lda, ldb, ldc := ac+tt.pad, bc+tt.pad, tt.n+tt.pad
			a, b := randSlice(rng, ar*lda), randSlice(rng, br*ldb)
			c0 := randSlice(rng, tt.m*ldc)
			want := naiveGemm(c0, ldc, a, lda, ta, b, ldb, tb, tt.m, tt.k, tt.n, tt.add)
			for _, simd := range []bool{false, true} {
				if simd && !haveSIMDKernel {
					continue
				}
				for _, parallel := range []bool{false, true} {
					got := append([]float32(nil), c0...)
					var pb packBuf
					f := func() {
						switch tt.kind {
						case "NN":
							pb.mulNN(got, ldc, a, lda, b, ldb, tt.m, tt.k, tt.n, tt.add, parallel)
						case "NT":
							pb.mulNT(got, ldc, a, lda, b, ldb, tt.m, tt.k, tt.n, tt.add, parallel)
						case "TN":
							pb.mulTN(got, ldc, a, lda, b, ldb, tt.m, tt.k, tt.n, tt.add, parallel)
						}
					}
					if simd {
						f()
					} else {
						withPortableKernel(t, f)
					}
					for i := range tt.m {
						for j := range ldc {
							g, w := got[i*ldc+j], want[i*ldc+j]
							if j >= tt.n { // the padding between rows is not written
								w = c0[i*ldc+j]
							}
							if d := math.Abs(float64(g - w)); d > 1e-4*math.Sqrt(float64(tt.k)) {
								t.Fatalf("simd=%v parallel=%v c[%d][%d] = %v, want %v", simd, parallel, i, j, g, w)
							}
						}
					}
				}
			}
		})
	}
}
