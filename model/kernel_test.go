package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/largeforge/largeforge/internal/benchenv"
)

// naiveMul is the reference product y = x · wᵀ (+bias) in float64.
func naiveMul(x, w, bias []float32, rows, in, out int) []float32 {
	y := make([]float32, rows*out)
	for r := range rows {
		for o := range out {
			var s float64
			for i := range in {
				s += float64(x[r*in+i]) * float64(w[o*in+i])
			}
			if bias != nil {
				s += float64(bias[o])
			}
			y[r*out+o] = float32(s)
		}
	}
	return y
}

func randSlice(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(rng.NormFloat64())
	}
	return s
}

func TestPackedMatrixMul(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name          string
		rows, in, out int
		bias          bool
	}{
		{name: "one row", rows: 1, in: 64, out: 512},
		{name: "exact blocks", rows: 8, in: 64, out: 128},
		{name: "partial rows and columns", rows: 7, in: 172, out: 344, bias: true},
		{name: "tiny", rows: 3, in: 5, out: 3},
		{name: "parallel by columns", rows: 64, in: 288, out: 768},
		{name: "parallel by rows", rows: 64, in: 64, out: 16, bias: true},
		{name: "k blocks", rows: 9, in: 700, out: 40},
		{name: "row chunks", rows: 101, in: 300, out: 50, bias: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x, w := randSlice(rng, tt.rows*tt.in), randSlice(rng, tt.out*tt.in)
			var bias []float32
			if tt.bias {
				bias = randSlice(rng, tt.out)
			}
			want := naiveMul(x, w, bias, tt.rows, tt.in, tt.out)
			for _, simd := range []bool{false, true} {
				if simd && !haveSIMDKernel {
					continue
				}
				got := make([]float32, tt.rows*tt.out)
				p := packMatrix(w, tt.out, tt.in)
				if simd {
					p.mul(got, x, tt.rows, bias)
				} else {
					withPortableKernel(t, func() { p.mul(got, x, tt.rows, bias) })
				}
				for i := range want {
					if d := math.Abs(float64(got[i] - want[i])); d > 1e-4*math.Sqrt(float64(tt.in)) {
						t.Fatalf("simd=%v y[%d] = %v, want %v", simd, i, got[i], want[i])
					}
				}
			}
		})
	}
}

// BenchmarkKernel reports the native kernels' GFLOP/s on the decoder's shapes.
func BenchmarkKernel(b *testing.B) {
	benchenv.Log(b)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, s := range []struct{ rows, in, out int }{{64, 64, 128}, {64, 64, 344}, {64, 172, 64}, {64, 288, 768}, {64, 288, 32000}, {32, 288, 32000}, {32, 288, 864}, {32, 768, 288}, {32, 288, 1536}, {1024, 1024, 1024}} {
		b.Run(fmt.Sprintf("%dx%dx%d", s.rows, s.in, s.out), func(b *testing.B) {
			x, w := randSlice(rng, s.rows*s.in), randSlice(rng, s.out*s.in)
			y := make([]float32, s.rows*s.out)
			p := packMatrix(w, s.out, s.in)
			start := time.Now()
			for b.Loop() {
				p.mul(y, x, s.rows, nil)
			}
			gf := 2 * float64(s.rows*s.in*s.out) * float64(b.N) / time.Since(start).Seconds() / 1e9
			b.ReportMetric(gf, "GFLOP/s")
		})
	}
}

// withPortableKernel runs f with the portable kernel instead of the assembly one.
func withPortableKernel(t *testing.T, f func()) {
	t.Helper()
	saved := haveSIMDKernel
	haveSIMDKernel = false
	defer func() { haveSIMDKernel = saved }()
	f()
}

// TestLogSumExpParts holds the parts of a log-softmax (AVX2 where the CPU
// has it, and the portable form) to float64's: rows of every length mod 8,
// shorter than 8, with values far below their maximum.
func TestLogSumExpParts(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{1, 3, 7, 8, 9, 15, 16, 17, 100, 32000, 32003} {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64() * 8)
		}
		x[rng.IntN(n)] = -200 // e^(x-max) below float32's range
		wantBest := x[0]
		for _, v := range x {
			wantBest = max(wantBest, v)
		}
		var wantSum float64
		for _, v := range x {
			wantSum += math.Exp(float64(v) - float64(wantBest))
		}
		for name, f := range map[string]func([]float32) (float32, float64){"logSumExpParts": logSumExpParts, "logSumExpPartsGo": logSumExpPartsGo} {
			before := slices.Clone(x)
			best, sum := f(x)
			if best != wantBest || math.Abs(sum-wantSum) > 1e-6*wantSum {
				t.Errorf("%s, %d values: %v, %v; want %v, %v", name, n, best, sum, wantBest, wantSum)
			}
			if !slices.Equal(x, before) {
				t.Errorf("%s changed its input", name)
			}
		}
	}
}

// TestSiluMul holds SwiGLU's SiLU(g)·u (AVX2 where the CPU has it, and the
// portable form) to float64's, gates from -100 to 100 and lengths of every
// remainder mod 8.
func TestSiluMul(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{1, 7, 8, 13, 768, 1003} {
		g, u := make([]float32, n), make([]float32, n)
		for i := range g {
			g[i], u[i] = float32(rng.NormFloat64()*6), float32(rng.NormFloat64())
		}
		g[0], g[n-1] = -100, 100
		for name, f := range map[string]func(a, g, u []float32){"siluMul": siluMul, "siluMulGo": siluMulGo} {
			a := make([]float32, n)
			f(a, g, u)
			for i := range a {
				x := float64(g[i])
				want := x / (1 + math.Exp(-x)) * float64(u[i])
				if d := math.Abs(float64(a[i]) - want); d > 1e-6*(math.Abs(want)+1e-30) && d > 1e-30 {
					t.Fatalf("%s, %d values: a[%d] = %v, want %v (g %v, u %v)", name, n, i, a[i], want, g[i], u[i])
				}
			}
		}
	}
}
