package model

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// partialQuant is a [rows, cols] tensor of random bits-bit values in groups
// of g columns, the last group of a row shorter where g does not divide cols
// (GPTQ tools' layout), with random scales.
func partialQuant(rng *rand.Rand, bits, rows, cols, g int) *checkpoint.QuantTensor {
	q := &checkpoint.QuantTensor{Bits: bits, GroupSize: g, Rows: rows, Cols: cols, Values: make([]int8, rows*cols)}
	top := 8
	if bits == 8 {
		top = 128
	}
	for i := range q.Values {
		q.Values[i] = int8(rng.IntN(2*top-1) - top + 1)
	}
	q.Scales = make([]float32, rows*q.Groups())
	for i := range q.Scales {
		q.Scales[i] = float32(0.01 + 0.05*rng.Float64())
	}
	return q
}

// A weight whose last group is partial (172 columns in groups of 32: five
// and one of 12) runs on the quantized kernels padded to whole groups: its
// products and rows are the dequantized weight's.
func TestQuantPartialLastGroup(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct{ bits, rows, cols, group int }{{4, 5, 172, 32}, {4, 3, 200, 64}, {8, 4, 172, 32}} {
		q := partialQuant(rng, tc.bits, tc.rows, tc.cols, tc.group)
		dq := q.Dequantize()
		const n = 2
		x := make([]float32, n*tc.cols)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		m := newQuantMatrix(q)
		got := make([]float32, n*tc.rows)
		m.mulOn(got, x, n, nil, true)
		for r := range n {
			for o := range tc.rows {
				var want float64
				for i := range tc.cols {
					want += float64(x[r*tc.cols+i]) * float64(dq.Data[o*tc.cols+i])
				}
				if d := math.Abs(float64(got[r*tc.rows+o]) - want); d > 1e-4*(1+math.Abs(want)) {
					t.Errorf("%+v: y[%d][%d] = %v, want %v", tc, r, o, got[r*tc.rows+o], want)
				}
			}
		}
		for o := range tc.rows {
			row := make([]float32, tc.cols)
			m.row(row, o)
			if !slices.Equal(row, dq.Data[o*tc.cols:(o+1)*tc.cols]) {
				t.Errorf("%+v: row %d differs from the dequantized weight", tc, o)
			}
		}
	}
	// The tiny preset with each down_proj so (as loaded from a GPTQ tool's
	// directory) scores as its dequantized float weights do.
	ck := tinyCheckpoint(t)
	qck, _, err := checkpoint.QuantizeCheckpoint(ck, 4, 32)
	if err != nil {
		t.Fatal(err)
	}
	deq := &checkpoint.Checkpoint{Config: ck.Config, Tensors: map[string]*checkpoint.Tensor{}}
	for name, w := range qck.Tensors {
		deq.Tensors[name] = &checkpoint.Tensor{Shape: w.Shape, Data: w.Data}
		if w.Quant != nil {
			deq.Tensors[name].Data = w.Quant.Dequantize().Data
		}
	}
	for l := range ck.Config.NumLayers {
		name := fmt.Sprintf("model.layers.%d.mlp.down_proj.weight", l)
		q := partialQuant(rng, 4, ck.Config.HiddenSize, ck.Config.IntermediateSize, 32)
		qt := q.Dequantize()
		deq.Tensors[name] = &checkpoint.Tensor{Shape: qt.Shape, Data: qt.Data}
		qt.Quant = q
		qck.Tensors[name] = qt
	}
	score := func(c *checkpoint.Checkpoint) float64 {
		m, err := New(c, WithEngine(EngineNative))
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		res, err := m.Score(context.Background(), []ScoreRequest{{PromptIDs: []int{1, 5, 9}, CompletionIDs: []int{3, 7, 11, 2}}})
		if err != nil {
			t.Fatal(err)
		}
		return res[0].SumLogprob
	}
	if a, b := score(qck), score(deq); math.Abs(a-b) > 1e-3*(1+math.Abs(b)) {
		t.Errorf("partial groups score %v, dequantized float %v", a, b)
	}
}

// A directory quantize wrote holds the embedding in float16 for GPTQ
// loaders; loaded here, it is quantized in memory again (quantized_at_load).
func TestQuantizedDirEmbeddingInMemory(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	if err := checkpoint.Init("tiny", 1, src); err != nil {
		t.Fatal(err)
	}
	if _, err := checkpoint.QuantizeDir(src, dst, 4, 32); err != nil {
		t.Fatal(err)
	}
	m, err := Load(dst, WithEngine(EngineNative))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.native.qembed == nil || m.native.qembed.bits != 4 {
		t.Fatalf("the embedding is not quantized in memory: %+v", m.native.qembed)
	}
}
