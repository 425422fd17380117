package model

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// The quantized kernels agree with their portable forms and with the
// dequantized weights' float product.
func TestQuantKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct{ bits, rows, cols, group int }{
		{8, 5, 64, 0}, {8, 3, 172, 0}, {8, 4, 40, 0}, {4, 7, 64, 32}, {4, 3, 256, 64}, {4, 2, 128, 128}, {4, 3, 172, 0},
	} {
		w := &checkpoint.Tensor{Shape: []int{tc.rows, tc.cols}, Data: make([]float32, tc.rows*tc.cols)}
		for i := range w.Data {
			w.Data[i] = float32(rng.NormFloat64())
		}
		q, _, err := checkpoint.Quantize(w, tc.bits, tc.group)
		if err != nil {
			t.Fatal(err)
		}
		dq := q.Dequantize()
		const n = 3
		x := make([]float32, n*tc.cols)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		bias := make([]float32, tc.rows)
		for i := range bias {
			bias[i] = float32(i)
		}
		m := newQuantMatrix(q)
		got := make([]float32, n*tc.rows)
		m.mulOn(got, x, n, bias, true)
		for r := range n {
			for o := range tc.rows {
				want := float64(bias[o])
				for i := range tc.cols {
					want += float64(x[r*tc.cols+i]) * float64(dq.Data[o*tc.cols+i])
				}
				if d := math.Abs(float64(got[r*tc.rows+o]) - want); d > 1e-4*(1+math.Abs(want)) {
					t.Errorf("%+v: y[%d][%d] = %v, want %v", tc, r, o, got[r*tc.rows+o], want)
				}
			}
		}
		row := make([]float32, tc.cols)
		m.row(row, tc.rows-1)
		if !slices.Equal(row, dq.Data[(tc.rows-1)*tc.cols:]) {
			t.Errorf("%+v: row differs from the dequantized weight", tc)
		}
	}
}

// quantizedStories is stories260K quantized in memory at bits/group on the
// native engine.
func quantizedStories(t *testing.T, bits, group int) *Model {
	t.Helper()
	ref := loadReference(t)
	ck, err := checkpoint.Load(ref.modelDir)
	if err != nil {
		t.Fatal(err)
	}
	qck, _, err := checkpoint.QuantizeCheckpoint(ck, bits, group)
	if bits == 4 {
		qck, _, err = QuantizeGPTQ(context.Background(), ck, bits, group)
	}
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(qck, WithEngine(EngineNative))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if m.native.qembed == nil || m.native.layers[0].qkv.q == nil {
		t.Fatalf("%d bits: the native engine does not run the quantized kernels", bits)
	}
	return m
}

// referencePerplexity is the perplexity of every reference prompt's greedy
// continuation given its prompt, pooled over the prompts' tokens.
func referencePerplexity(t *testing.T, m *Model, ref *reference) float64 {
	t.Helper()
	var reqs []ScoreRequest
	for _, p := range ref.Prompts {
		reqs = append(reqs, ScoreRequest{PromptIDs: p.PromptIDs, CompletionIDs: p.GreedyIDs})
	}
	res, err := m.Score(context.Background(), reqs)
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	var n int
	for _, r := range res {
		sum += r.SumLogprob
		n += r.Tokens
	}
	return math.Exp(-sum / float64(n))
}

func TestQuantizedStoriesQuality(t *testing.T) {
	base, ref := storiesModelOn(t, EngineNative)
	float := referencePerplexity(t, base, ref)
	for _, tc := range []struct {
		bits, group int
		maxRise     float64
	}{{8, 0, 0.01}, {4, 32, 0.10}} {
		m := quantizedStories(t, tc.bits, tc.group)
		ppl := referencePerplexity(t, m, ref)
		rise := ppl/float - 1
		t.Logf("%d bits (group %d): perplexity %.4f, float %.4f: %+.2f%%", tc.bits, tc.group, ppl, float, 100*rise)
		if rise > tc.maxRise {
			t.Errorf("%d bits: perplexity %.4f is %.2f%% over float's %.4f (limit %.0f%%)", tc.bits, ppl, 100*rise, float, 100*tc.maxRise)
		}
		if tc.bits != 8 {
			continue
		}
		var reqs []GenerateRequest
		for _, p := range ref.Prompts {
			reqs = append(reqs, GenerateRequest{PromptIDs: p.PromptIDs, Params: greedy(32)})
		}
		res, err := m.Generate(context.Background(), reqs)
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range ref.Prompts {
			if want := p.GreedyIDs[:min(32, len(p.GreedyIDs))]; !slices.Equal(res[i].IDs, want) {
				t.Errorf("int8 greedy ids of %q:\n got %v\nwant %v", p.Prompt, res[i].IDs, want)
			}
		}
	}
}

// upperCholeskyOfInverse gives U with UᵀU·H = I.
func TestUpperCholeskyOfInverse(t *testing.T) {
	const n = 5
	rng := rand.New(rand.NewPCG(3, 4))
	a := make([]float64, n*n)
	for i := range a {
		a[i] = rng.NormFloat64()
	}
	H := make([]float64, n*n) // aᵀa + I
	for i := range n {
		for j := range n {
			for k := range n {
				H[i*n+j] += a[k*n+i] * a[k*n+j]
			}
		}
		H[i*n+i]++
	}
	U := upperCholeskyOfInverse(H, n)
	for i := range n {
		for j := range n {
			var s float64 // (UᵀU·H)[i][j]
			for k := range n {
				var utu float64
				for l := range n {
					utu += U[l*n+i] * U[l*n+k]
				}
				s += utu * H[k*n+j]
			}
			want := 0.0
			if i == j {
				want = 1
			}
			if math.Abs(s-want) > 1e-9 {
				t.Fatalf("(UᵀU·H)[%d][%d] = %v", i, j, s)
			}
			if i > j && U[i*n+j] != 0 {
				t.Fatalf("U[%d][%d] = %v below the diagonal", i, j, U[i*n+j])
			}
		}
	}
}

// A quantized model on the native engine holds no float copy of its
// weights until a graph needs them; then the graphs (Logits) compute with
// the same dequantized weights as the graph engine given the checkpoint.
func TestQuantizedGraphWeightsLate(t *testing.T) {
	base, ref := storiesModelOn(t, EngineNative)
	m := quantizedStories(t, 8, 0)
	if m.weights != nil {
		t.Fatal("float weights uploaded at load")
	}
	if got, float := m.MemoryBytes(), base.MemoryBytes(); got > float*3/10 {
		t.Errorf("int8 model holds %d bytes, float %d: over 30%%", got, float)
	}
	ck, err := checkpoint.Load(ref.modelDir)
	if err != nil {
		t.Fatal(err)
	}
	qck, _, err := checkpoint.QuantizeCheckpoint(ck, 8, 0)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(qck, WithEngine(EngineGraph))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	ids := [][]int{ref.Prompts[0].PromptIDs}
	want, err := g.Logits(context.Background(), ids)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Logits(context.Background(), ids)
	if err != nil {
		t.Fatal(err)
	}
	for p := range want[0] {
		if !slices.Equal(got[0][p], want[0][p]) {
			t.Fatalf("position %d: logits differ from the graph engine's on the dequantized checkpoint", p)
		}
	}
	if m.weights == nil {
		t.Error("no float weights after a graph ran")
	}
}

// The continuous batcher serves a quantized model like any other: prompts
// joining while others decode get int8's greedy ids (float's, for 32).
func TestQuantizedBatcher(t *testing.T) {
	_, ref := storiesModelOn(t, EngineNative)
	m := quantizedStories(t, 8, 0)
	b := startBatcher(t, m, 2)
	var wg sync.WaitGroup
	got := make([][]int, len(ref.Prompts))
	for i, p := range ref.Prompts {
		wg.Go(func() {
			res, err := b.Submit(context.Background(), GenerateRequest{PromptIDs: p.PromptIDs, Params: greedy(32)}, nil)
			if err != nil {
				t.Error(err)
			}
			got[i] = res.IDs
		})
	}
	wg.Wait()
	for i, p := range ref.Prompts {
		if want := p.GreedyIDs[:min(32, len(p.GreedyIDs))]; !slices.Equal(got[i], want) {
			t.Errorf("%q: got %v, want %v", p.Prompt, got[i], want)
		}
	}
}

// llama.cpp's Q8_0 product: the AVX2 kernel gives its portable form's
// value bit for bit (the same lanes, the same order of additions).
func TestDotQ8Blocks(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const n = 7 * 32
	q := make([]int8, n)
	x := make([]float32, n)
	scales := make([]float32, n/32)
	for i := range q {
		q[i] = int8(rng.IntN(255) - 127)
		x[i] = float32(rng.NormFloat64())
	}
	for i := range scales {
		scales[i] = checkpoint.F16Round(float32(rng.Float64() * 0.01))
	}
	xr := quantizeQ8Row(x)
	got, want := dotQ8Blocks(q, scales, xr), dotQ8BlocksGo(q, scales, xr)
	if got != want {
		t.Errorf("dotQ8Blocks = %v, portable %v", got, want)
	}
	var exact float64
	for i := range q {
		exact += float64(q[i]) * float64(scales[i/32]) * float64(x[i])
	}
	if math.Abs(float64(got)-exact) > 0.02*math.Abs(exact)+1e-3 {
		t.Errorf("dotQ8Blocks = %v, the float product %v", got, exact)
	}
}
