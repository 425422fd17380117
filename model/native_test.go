package model

import (
	"context"
	"math"
	"slices"
	"testing"

	"github.com/largeforge/largeforge/model/checkpoint"
)

// TestNativeMatchesGraph holds the native engine to the graph engine's
// logits on configurations the reference model does not cover.
func TestNativeMatchesGraph(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *checkpoint.Config)
	}{
		{name: "tiny preset"},
		{name: "attention bias", edit: func(c *checkpoint.Config) { c.AttentionBias = true }},
		{name: "qwen2 biases", edit: func(c *checkpoint.Config) { c.Architecture, c.ModelType = checkpoint.ArchQwen2, "qwen2" }},
		{name: "sliding window", edit: func(c *checkpoint.Config) { c.SlidingWindow = 4 }},
		{name: "separate lm_head", edit: func(c *checkpoint.Config) { c.TieWordEmbeddings = false }},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ck := tinyCheckpoint(t)
			if tt.edit != nil {
				tt.edit(&ck.Config)
				ck.Tensors = randomTensors(ck.Config, 2)
			}
			var (
				logits [2][][]float32
				scores [2][]ScoreResult
			)
			for e, engine := range engines {
				m, err := New(ck, WithEngine(engine))
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				scores[e], err = m.Score(ctx, []ScoreRequest{
					{PromptIDs: []int{1, 4, 4}, CompletionIDs: []int{9, 2, 7}},
					{CompletionIDs: []int{1, 3, 5, 7, 9, 11, 13, 15, 17, 19}},
				})
				if err != nil {
					t.Fatal(err)
				}
				st := m.newKVState(4, 16)
				prompts := [][]int{{1, 5, 9}, {1, 7, 3, 3, 8, 2, 4}, {1}}
				rows, err := st.prefill(ctx, []int{0, 2, 3}, prompts)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range rows { // valid until the next call
					logits[e] = append(logits[e], slices.Clone(r))
				}
				pos := []int{3, 0, 7, 1}
				for step := range 6 {
					rows, err := st.step(ctx, []int{step + 2, 0, 40 - step, 11}, pos)
					if err != nil {
						t.Fatal(err)
					}
					logits[e] = append(logits[e], slices.Clone(rows[0]), slices.Clone(rows[2]), slices.Clone(rows[3]))
					for _, i := range []int{0, 2, 3} {
						pos[i]++
					}
				}
				st.release()
			}
			worst := 0.0
			for i := range logits[0] {
				worst = max(worst, maxDiff(logits[0][i], logits[1][i]))
			}
			if worst > 1e-4 {
				t.Errorf("native and graph logits differ by %g, want <= 1e-4", worst)
			}
			for i := range scores[0] {
				n, g := scores[0][i], scores[1][i]
				if n.Tokens != g.Tokens || math.Abs(n.SumLogprob-g.SumLogprob) > 1e-4 {
					t.Errorf("score row %d: native %d tokens sum %v, graph %d tokens sum %v", i, n.Tokens, n.SumLogprob, g.Tokens, g.SumLogprob)
				}
			}
		})
	}
}

func TestExpRow(t *testing.T) {
	var xs []float32
	for x := float32(-90); x <= 90; x += 0.0137 {
		xs = append(xs, x)
	}
	got32 := make([]float32, len(xs))
	expRow(got32, xs)
	for i, x := range xs {
		want := math.Exp(float64(x))
		got := float64(got32[i])
		if want < 1e-37 {
			if got > 1e-37 {
				t.Fatalf("expRow(%v) = %v, want ~0", x, got)
			}
			continue
		}
		if math.IsInf(want, 1) || want > math.MaxFloat32 {
			if !math.IsInf(got, 1) && got < math.MaxFloat32/2 {
				t.Fatalf("expRow(%v) = %v, want +Inf", x, got)
			}
			continue
		}
		if rel := math.Abs(got-want) / want; rel > 2e-7 {
			t.Fatalf("expRow(%v) = %v, want %v (relative error %g)", x, got, want, rel)
		}
	}
}

// TestNativeAttentionRuns holds the matrix attention of long runs
// (kernel_attend.go) to the per-query path and to the graph engine: prompts
// longer than a chunk of queries, several slots, grouped KV heads, sliding
// windows, and a run that continues a slot's cache from position 23.
func TestNativeAttentionRuns(t *testing.T) {
	tests := []struct {
		name   string
		window int
		bias   bool
	}{
		{name: "causal"},
		{name: "window 5", window: 5},
		{name: "window 40", window: 40},
		{name: "attention bias", bias: true},
	}
	ctx := context.Background()
	prompts := [][]int{make([]int, 150), make([]int, 9), make([]int, 70), {1, 2, 3}}
	for i, p := range prompts {
		for j := range p {
			p[j] = (i*37 + j*11 + 1) % 250
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ck := tinyCheckpoint(t)
			ck.Config.SlidingWindow, ck.Config.AttentionBias = tt.window, tt.bias
			ck.Tensors = randomTensors(ck.Config, 3)
			m, err := New(ck, WithEngine(EngineNative))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			full, err := m.Logits(ctx, prompts) // the graph engine
			if err != nil {
				t.Fatal(err)
			}
			prefill := func() [][]float32 {
				st := m.native.newState(len(prompts), 256)
				defer st.release()
				rows, err := st.prefill(ctx, []int{0, 1, 2, 3}, prompts)
				if err != nil {
					t.Fatal(err)
				}
				var out [][]float32
				for _, r := range rows {
					out = append(out, slices.Clone(r))
				}
				return out
			}
			matrix := prefill()
			attnMinRun = 1 << 30
			perQuery := prefill()
			attnMinRun = attnMinRunDefault
			for i, p := range prompts {
				if d := maxDiff(matrix[i], perQuery[i]); d > 1e-5 {
					t.Errorf("prompt %d: matrix and per-query attention differ by %g", i, d)
				}
				if d := maxDiff(matrix[i], full[i][len(p)-1]); d > 1e-4 {
					t.Errorf("prompt %d: native and graph logits differ by %g", i, d)
				}
			}

			// A run continuing slot 0's cache: positions 23..149 after 0..22.
			st := m.native.newState(1, 256)
			defer st.release()
			if _, err := st.prefill(ctx, []int{0}, [][]int{prompts[0][:23]}); err != nil {
				t.Fatal(err)
			}
			var items []nativeItem
			for j := 23; j < len(prompts[0]); j++ {
				items = append(items, nativeItem{slot: 0, pos: j, token: prompts[0][j], logits: true})
			}
			rows, err := st.forward(ctx, items)
			if err != nil {
				t.Fatal(err)
			}
			for k, r := range rows {
				if d := maxDiff(r, full[0][23+k]); d > 1e-4 {
					t.Fatalf("continued run, position %d: native and graph logits differ by %g", 23+k, d)
				}
			}
		})
	}
}
