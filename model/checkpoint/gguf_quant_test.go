package checkpoint

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// quantBlocks encodes random blocks of a type the way ggml's reference
// quantizers lay them out, returning the bytes and the values they stand for.
func quantBlocks(t *testing.T, typ uint32, rows, cols int, rng *rand.Rand) ([]byte, []float32) {
	t.Helper()
	var data []byte
	want := make([]float32, 0, rows*cols)
	h := func(v float32) (uint16, float32) { b := f32ToF16(v); return b, f16ToF32(b) }
	for range rows * cols / map[uint32]int{ggmlQ8_0: 32, ggmlQ4_0: 32, ggmlQ6_K: 256, ggmlQ4_K: 256}[typ] {
		switch typ {
		case ggmlQ8_0, ggmlQ4_0:
			db, d := h(float32(rng.Float64() * 0.01))
			data = binary.LittleEndian.AppendUint16(data, db)
			var vals [32]int
			for j := range vals {
				if typ == ggmlQ8_0 {
					vals[j] = rng.IntN(255) - 127
				} else {
					vals[j] = rng.IntN(16) - 8
				}
			}
			if typ == ggmlQ8_0 {
				for _, v := range vals {
					data = append(data, byte(int8(v)))
				}
			} else {
				for j := range 16 {
					data = append(data, byte(vals[j]+8)|byte(vals[j+16]+8)<<4)
				}
			}
			for _, v := range vals {
				want = append(want, d*float32(v))
			}
		case ggmlQ6_K:
			var L [256]int
			var sc [16]int8
			for i := range L {
				L[i] = rng.IntN(64)
			}
			for i := range sc {
				sc[i] = int8(rng.IntN(255) - 127)
			}
			var ql [128]byte
			var qh [64]byte
			for j := 0; j < 256; j += 128 {
				for l := range 32 {
					q1, q2, q3, q4 := L[j+l], L[j+l+32], L[j+l+64], L[j+l+96]
					ql[j/2+l] = byte(q1&15 | (q3&15)<<4)
					ql[j/2+l+32] = byte(q2&15 | (q4&15)<<4)
					qh[j/4+l] = byte(q1>>4 | (q2>>4)<<2 | (q3>>4)<<4 | (q4>>4)<<6)
				}
			}
			db, d := h(float32(rng.Float64() * 0.001))
			data = append(append(data, ql[:]...), qh[:]...)
			for _, s := range sc {
				data = append(data, byte(s))
			}
			data = binary.LittleEndian.AppendUint16(data, db)
			for e, q := range L {
				want = append(want, d*float32(sc[e/16])*float32(q-32))
			}
		case ggmlQ4_K:
			var L [256]int
			var ls, lm [8]int
			for i := range L {
				L[i] = rng.IntN(16)
			}
			for j := range 8 {
				ls[j], lm[j] = rng.IntN(64), rng.IntN(64)
			}
			var scales [12]byte
			for j := range 8 {
				if j < 4 {
					scales[j], scales[j+4] = byte(ls[j]), byte(lm[j])
				} else {
					scales[j+4] = byte(ls[j]&15 | (lm[j]&15)<<4)
					scales[j-4] |= byte(ls[j]>>4) << 6
					scales[j] |= byte(lm[j]>>4) << 6
				}
			}
			var qs [128]byte
			for j := 0; j < 256; j += 64 {
				for l := range 32 {
					qs[j/2+l] = byte(L[j+l] | L[j+l+32]<<4)
				}
			}
			db, d := h(float32(rng.Float64() * 0.001))
			mb, dmin := h(float32(rng.Float64() * 0.001))
			data = binary.LittleEndian.AppendUint16(binary.LittleEndian.AppendUint16(data, db), mb)
			data = append(append(data, scales[:]...), qs[:]...)
			for e, q := range L {
				want = append(want, d*float32(ls[e/32])*float32(q)-dmin*float32(lm[e/32]))
			}
		}
	}
	return data, want
}

// Each quantized GGML type decodes to the values ggml's layout stands for;
// kept quantized it multiplies out to them (Q4_K within its requantization).
func TestGGUFQuantTypes(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const rows, cols = 3, 512
	for _, typ := range []uint32{ggmlQ8_0, ggmlQ4_0, ggmlQ6_K, ggmlQ4_K} {
		data, want := quantBlocks(t, typ, rows, cols, rng)
		ti := ggufTensorInfo{Name: "w", Dims: []uint64{cols, rows}, Type: typ}
		n, ok, err := ggufTensorBytes(ti, uint64(len(data)))
		if !ok || err != nil || n != uint64(len(data)) {
			t.Fatalf("%s: %d bytes, ok %v, err %v; encoded %d", ggmlTypeName(typ), n, ok, err, len(data))
		}
		got, err := readGGUFQuant(bytes.NewReader(data), &ggufFile{}, ti, n, "x.gguf")
		if err != nil {
			t.Fatalf("%s: %v", ggmlTypeName(typ), err)
		}
		dq := got.Quant.Dequantize()
		var amax float64
		for _, v := range want {
			amax = max(amax, math.Abs(float64(v)))
		}
		for i, w := range want {
			if d := math.Abs(float64(got.Data[i] - w)); d > 1e-6*amax {
				t.Fatalf("%s: value %d = %v, want %v", ggmlTypeName(typ), i, got.Data[i], w)
			}
			tol := 1e-3 * amax // Q6_K's d·sc rounded to float16
			if typ == ggmlQ4_K {
				tol = amax / 127
			}
			if d := math.Abs(float64(dq.Data[i] - w)); d > tol {
				t.Fatalf("%s: quantized value %d = %v, want %v", ggmlTypeName(typ), i, dq.Data[i], w)
			}
		}
		if _, err := readGGUFQuant(bytes.NewReader(data[:len(data)-1]), &ggufFile{}, ti, n, "x.gguf"); err == nil {
			t.Errorf("%s: a truncated tensor read", ggmlTypeName(typ))
		}
	}
}
