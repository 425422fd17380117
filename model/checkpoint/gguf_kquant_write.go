package checkpoint

import (
	"encoding/binary"
	"math"
)

// ggml's reference K-quant quantizers (ggml-quants.c quantize_row_q4_K_ref
// and quantize_row_q6_K_ref), in float32 arithmetic as ggml computes them,
// so that the project writes the Q4_K and Q6_K files llama.cpp's own
// reference path would: super-blocks of 256 values.
//
// Q4_K: eight sub-blocks of 32, each fitted with a scale and a min (values
// 0..15, x ≈ scale·q − min) by a weighted search over candidate scales;
// the eight scales and mins are then quantized to 6 bits against the
// super-block's largest (d and dmin, float16), and the values quantized
// again against the rounded scales. Q6_K: sixteen sub-blocks of 16, each
// a symmetric 6-bit fit (−32..31) whose scale is chosen among nineteen
// candidates by weighted error; the scales are quantized to int8 against
// the largest (d, float16), and the values quantized again.

// kBlock is the values of a K-quant super-block.
const kBlock = 256

// groupMaxEps is ggml's GROUP_MAX_EPS: a group whose largest magnitude is
// below it is all zero.
const groupMaxEps = 1e-15

// nearestInt rounds as ggml's nearest_int does (adding 1.5·2²³ in
// float32: half to even, for |f| < 2²²).
func nearestInt(f float32) int {
	v := f + 12582912
	return int(math.Float32bits(v)&0x7fffff) - 0x400000
}

// quantizeQ4KBlock appends the 144 bytes of x's Q4_K super-block (x: 256
// values): d, dmin (float16), 12 bytes of packed 6-bit scales and mins,
// 128 bytes of 4-bit values.
func quantizeQ4KBlock(out []byte, x []float32) []byte {
	var L [kBlock]uint8
	var scales, mins [8]float32
	var maxScale, maxMin float32
	var weights [32]float32
	for j := range 8 {
		xs := x[32*j : 32*j+32]
		var sumX2 float32
		for _, v := range xs {
			sumX2 += v * v
		}
		avX := float32(math.Sqrt(float64(sumX2 / 32)))
		for l, v := range xs {
			weights[l] = avX + abs32(v)
		}
		scales[j], mins[j] = fitScaleMin(15, xs, weights[:], L[32*j:32*j+32], -1, 0.1, 20)
		maxScale = max(maxScale, scales[j])
		maxMin = max(maxMin, mins[j])
	}
	var invScale, invMin float32
	if maxScale > 0 {
		invScale = 63 / maxScale
	}
	if maxMin > 0 {
		invMin = 63 / maxMin
	}
	var packed [12]uint8
	for j := range 8 {
		ls := min(63, uint8(nearestInt(invScale*scales[j])))
		lm := min(63, uint8(nearestInt(invMin*mins[j])))
		if j < 4 {
			packed[j], packed[j+4] = ls, lm
		} else {
			packed[j+4] = ls&15 | (lm&15)<<4
			packed[j-4] |= (ls >> 4) << 6
			packed[j] |= (lm >> 4) << 6
		}
	}
	dh, dminh := f32ToF16(maxScale/63), f32ToF16(maxMin/63)
	d, dmin := f16ToF32(dh), f16ToF32(dminh)
	for j := range 8 {
		sc, m := scaleMinK4(j, packed[:])
		ds := d * float32(sc)
		if ds == 0 {
			continue
		}
		dm := dmin * float32(m)
		for i := range 32 {
			L[32*j+i] = uint8(max(0, min(15, nearestInt((x[32*j+i]+dm)/ds))))
		}
	}
	out = binary.LittleEndian.AppendUint16(out, dh)
	out = binary.LittleEndian.AppendUint16(out, dminh)
	out = append(out, packed[:]...)
	for j := 0; j < kBlock; j += 64 {
		for l := range 32 {
			out = append(out, L[j+l]|L[j+l+32]<<4)
		}
	}
	return out
}

// fitScaleMin is ggml's make_qkx2_quants (squared error): the scale and
// min (returned positive, x ≈ scale·L − min) of values 0..nmax for x under
// weights w, trying nstep+1 scales from (nmax+rmin)/(max−min) up by
// rdelta·nmax/(max−min); L gets the chosen values.
func fitScaleMin(nmax int, x, w []float32, L []uint8, rmin, rdelta float32, nstep int) (float32, float32) {
	n := len(x)
	lo, hi := x[0], x[0]
	sumW := w[0]
	sumX := sumW * x[0]
	for i := 1; i < n; i++ {
		lo, hi = min(lo, x[i]), max(hi, x[i])
		sumW += w[i]
		sumX += w[i] * x[i]
	}
	lo = min(lo, 0)
	if hi == lo {
		clear(L)
		return 0, -lo
	}
	fmax := float32(nmax)
	iscale := fmax / (hi - lo)
	scale := 1 / iscale
	var bestErr float32
	for i, v := range x {
		L[i] = uint8(max(0, min(nmax, nearestInt(iscale*(v-lo)))))
		diff := scale*float32(L[i]) + lo - v
		bestErr += w[i] * diff * diff
	}
	aux := make([]uint8, n)
	for is := 0; is <= nstep; is++ {
		iscale = (rmin + rdelta*float32(is) + fmax) / (hi - lo)
		var sumL, sumL2, sumXL float32
		for i, v := range x {
			l := max(0, min(nmax, nearestInt(iscale*(v-lo))))
			aux[i] = uint8(l)
			fl := float32(l)
			sumL += w[i] * fl
			sumL2 += w[i] * fl * fl
			sumXL += w[i] * fl * v
		}
		det := sumW*sumL2 - sumL*sumL
		if det <= 0 {
			continue
		}
		thisScale := (sumW*sumXL - sumX*sumL) / det
		thisMin := (sumL2*sumX - sumL*sumXL) / det
		if thisMin > 0 {
			thisMin = 0
			thisScale = sumXL / sumL2
		}
		var curErr float32
		for i, v := range x {
			diff := thisScale*float32(aux[i]) + thisMin - v
			curErr += w[i] * diff * diff
		}
		if curErr < bestErr {
			copy(L, aux)
			bestErr, scale, lo = curErr, thisScale, thisMin
		}
	}
	return scale, -lo
}

// quantizeQ6KBlock appends the 210 bytes of x's Q6_K super-block (x: 256
// values): 128 bytes of low 4 bits, 64 of high 2 bits, 16 int8 scales and
// d (float16).
func quantizeQ6KBlock(out []byte, x []float32) []byte {
	var L [kBlock]int8
	var scales [16]float32
	var maxScale, maxAbs float32
	for ib := range 16 {
		s := fitSymmetric(32, x[16*ib:16*ib+16], L[16*ib:16*ib+16])
		scales[ib] = s
		if a := abs32(s); a > maxAbs {
			maxAbs, maxScale = a, s
		}
	}
	if maxAbs < groupMaxEps {
		return append(out, make([]byte, 210)...)
	}
	iscale := -128 / maxScale
	dh := f32ToF16(1 / iscale)
	d := f16ToF32(dh)
	var sc [16]int8
	for ib := range 16 {
		sc[ib] = int8(min(127, nearestInt(iscale*scales[ib])))
	}
	for j := range 16 {
		ds := d * float32(sc[j])
		if ds == 0 {
			continue
		}
		for i := range 16 {
			L[16*j+i] = int8(max(-32, min(31, nearestInt(x[16*j+i]/ds))) + 32)
		}
	}
	var ql [128]byte
	var qh [64]byte
	for j := 0; j < kBlock; j += 128 {
		lo, hi := ql[j/2:], qh[j/4:]
		for l := range 32 {
			q1, q2, q3, q4 := uint8(L[j+l]), uint8(L[j+l+32]), uint8(L[j+l+64]), uint8(L[j+l+96])
			lo[l] = q1&15 | (q3&15)<<4
			lo[l+32] = q2&15 | (q4&15)<<4
			hi[l] = q1>>4 | (q2>>4)<<2 | (q3>>4)<<4 | (q4>>4)<<6
		}
	}
	out = append(out, ql[:]...)
	out = append(out, qh[:]...)
	for _, s := range sc {
		out = append(out, byte(s))
	}
	return binary.LittleEndian.AppendUint16(out, dh)
}

// fitSymmetric is ggml's make_qx_quants with rmse_type 1 (weights x²): the
// scale of x as values −nmax..nmax−1 (L gets them plus nmax), the best of
// nineteen candidate scales around −nmax/max by weighted squared error.
func fitSymmetric(nmax int, x []float32, L []int8) float32 {
	var amax, signed float32
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax, signed = a, v
		}
	}
	if amax < groupMaxEps {
		clear(L)
		return 0
	}
	fmax := float32(nmax)
	level := func(iscale, v float32) int { return max(-nmax, min(nmax-1, nearestInt(iscale*v))) }
	sums := func(iscale float32) (sumLX, sumL2 float32) {
		for _, v := range x {
			l := float32(level(iscale, v))
			w := v * v
			sumLX += w * v * l
			sumL2 += w * l * l
		}
		return sumLX, sumL2
	}
	iscale := -fmax / signed
	for i, v := range x {
		L[i] = int8(level(iscale, v) + nmax)
	}
	sumLX, sumL2 := sums(iscale)
	var scale float32
	if sumL2 != 0 {
		scale = sumLX / sumL2
	}
	best := scale * sumLX
	for is := -9; is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(fmax + 0.1*float32(is)) / signed
		sumLX, sumL2 = sums(iscale)
		if sumL2 > 0 && sumLX*sumLX > best*sumL2 {
			for i, v := range x {
				L[i] = int8(level(iscale, v) + nmax)
			}
			scale = sumLX / sumL2
			best = scale * sumLX
		}
	}
	return scale
}

func abs32(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ (1 << 31)) }
