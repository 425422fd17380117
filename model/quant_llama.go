package model

import (
	"math"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// llama.cpp's CPU products for its block formats round the activations
// too: each row of x to Q8_0 blocks (a float16 scale max|x|/127 and 32
// int8, rounded to nearest even), then per block an integer dot product
// times the two scales, summed in eight float32 lanes (lane k takes
// elements 4k..4k+3 of every block) by fused multiply-adds, the lanes
// added pairwise at the end. A quantMatrix imported from GGUF (llamaQ8)
// computes the same, so that its greedy tokens are llama.cpp's.

// q8Row is one row of activations in Q8_0 blocks.
type q8Row struct {
	q []int8
	d []float32 // per block, float16-rounded
}

// quantizeQ8Row rounds x (a multiple of 32 long) to Q8_0 blocks as
// llama.cpp's quantize_row_q8_0 does.
func quantizeQ8Row(x []float32) q8Row {
	r := q8Row{q: make([]int8, len(x)), d: make([]float32, len(x)/32)}
	for b := range r.d {
		blk := x[b*32 : (b+1)*32]
		var amax float32
		for _, v := range blk {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		d := amax / 127
		var id float32
		if amax != 0 {
			id = 127 / amax
		}
		r.d[b] = checkpoint.F16Round(d)
		for j, v := range blk {
			r.q[b*32+j] = int8(math.RoundToEven(float64(v * id)))
		}
	}
	return r
}

// dotQ8BlocksGo is the portable dotQ8Blocks.
func dotQ8BlocksGo(q []int8, scales []float32, x q8Row) float32 {
	var acc [8]float32
	for b, dw := range scales {
		d := dw * x.d[b]
		qw, qx := q[b*32:(b+1)*32], x.q[b*32:(b+1)*32]
		for k := range 8 {
			var s int32
			for j := 4 * k; j < 4*k+4; j++ {
				s += int32(qw[j]) * int32(qx[j])
			}
			acc[k] = float32(math.FMA(float64(d), float64(s), float64(acc[k])))
		}
	}
	r := [4]float32{acc[4] + acc[0], acc[5] + acc[1], acc[6] + acc[2], acc[7] + acc[3]}
	return (r[0] + r[2]) + (r[1] + r[3])
}

// mulLlama is mulOn for llamaQ8: the values of q8 (newQuantMatrix keeps
// them unpacked), x rounded to Q8_0.
func (m *quantMatrix) mulLlama(y, x []float32, rows int, bias []float32, parallel bool) {
	xs := make([]q8Row, rows)
	for r := range rows {
		xs[r] = quantizeQ8Row(x[r*m.in : (r+1)*m.in])
	}
	parallelRows(parallel, m.out, rows*m.in*m.out, func(lo, hi int) {
		for o := lo; o < hi; o++ {
			sc := m.scales[o*m.groups : (o+1)*m.groups]
			for r := range rows {
				v := dotQ8Blocks(m.q8[o*m.in:(o+1)*m.in], sc, xs[r])
				if bias != nil {
					v += bias[o]
				}
				y[r*m.out+o] = v
			}
		}
	})
}
