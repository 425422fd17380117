package model

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/largeforge/largeforge/schemas"
)

func greedy(n int) SamplingParams {
	return SamplingParams{MaxTokens: n, EOS: []int{}}
}

func TestGenerateGreedyMatchesReference(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) { testGreedyMatchesReference(t, engine) })
	}
}

func testGreedyMatchesReference(t *testing.T, engine string) {
	m, ref := storiesModelOn(t, engine)
	if m.Engine() != engine {
		t.Fatalf("engine %q, want %q", m.Engine(), engine)
	}
	ctx := context.Background()
	var batch []GenerateRequest
	for _, p := range ref.Prompts {
		req := GenerateRequest{PromptIDs: p.PromptIDs, Params: greedy(len(p.GreedyIDs))}
		batch = append(batch, req)
		res, err := m.Generate(ctx, []GenerateRequest{req})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res[0].IDs, p.GreedyIDs) {
			t.Errorf("alone, prompt %q:\n got %v\nwant %v", p.Prompt, res[0].IDs, p.GreedyIDs)
		}
		if res[0].FinishReason != FinishLength || res[0].PromptTokens != len(p.PromptIDs) || res[0].CompletionTokens != len(p.GreedyIDs) {
			t.Errorf("alone, prompt %q: finish %q usage %d+%d", p.Prompt, res[0].FinishReason, res[0].PromptTokens, res[0].CompletionTokens)
		}
	}
	// All in one batch, with the 200-token run from BOS alone of a different length.
	batch = append(batch, GenerateRequest{PromptIDs: []int{1}, Params: greedy(len(ref.FromBOS.IDs))})
	res, err := m.Generate(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range ref.Prompts {
		if !slices.Equal(res[i].IDs, p.GreedyIDs) {
			t.Errorf("batched, prompt %q:\n got %v\nwant %v", p.Prompt, res[i].IDs, p.GreedyIDs)
		}
	}
	if got := res[len(res)-1].IDs; !slices.Equal(got, ref.FromBOS.IDs) {
		t.Errorf("batched, from BOS:\n got %v\nwant %v", got, ref.FromBOS.IDs)
	}
}

// TestKVCacheMatchesRecompute checks that decoding with the cache gives the
// logits of a full recomputation of the same prefix.
func TestKVCacheMatchesRecompute(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) { testKVCacheMatchesRecompute(t, engine) })
	}
}

func testKVCacheMatchesRecompute(t *testing.T, engine string) {
	m, ref := storiesModelOn(t, engine)
	ctx := context.Background()
	p := ref.Prompts[0]
	full := append(append([]int{}, p.PromptIDs...), p.GreedyIDs[:20]...)
	want, err := m.Logits(ctx, [][]int{full})
	if err != nil {
		t.Fatal(err)
	}
	st := m.newKVState(2, 32)
	defer st.release()
	// Row 1 holds another prompt, so rows at different positions share steps.
	logits, err := st.prefill(ctx, []int{0, 1}, [][]int{p.PromptIDs, ref.Prompts[1].PromptIDs})
	if err != nil {
		t.Fatal(err)
	}
	worst := maxDiff(logits[0], want[0][len(p.PromptIDs)-1])
	for j := len(p.PromptIDs); j < len(full)-1; j++ {
		rows, err := st.step(ctx, []int{full[j], 5}, []int{j, j - len(p.PromptIDs) + len(ref.Prompts[1].PromptIDs)})
		if err != nil {
			t.Fatal(err)
		}
		worst = max(worst, maxDiff(rows[0], want[0][j]))
	}
	if worst > 1e-4 {
		t.Errorf("KV-cache decode differs from recomputation by %g, want <= 1e-4", worst)
	}
}

func maxDiff(a, b []float32) float64 {
	w := 0.0
	for i := range a {
		w = max(w, math.Abs(float64(a[i]-b[i])))
	}
	return w
}

func TestGenerateSampling(t *testing.T) {
	m, ref := storiesModel(t)
	ctx := context.Background()
	prompt := ref.Prompts[0].PromptIDs
	want := ref.Prompts[0].GreedyIDs
	run := func(t *testing.T, reqs ...GenerateRequest) []GenerateResult {
		t.Helper()
		res, err := m.Generate(ctx, reqs)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	t.Run("seed determinism", func(t *testing.T) {
		p := SamplingParams{MaxTokens: 24, Temperature: 1, TopP: 0.9, TopK: 40, Seed: 7, EOS: []int{}}
		q := p
		q.Seed = 8
		res := run(t, GenerateRequest{PromptIDs: prompt, Params: p}, GenerateRequest{PromptIDs: prompt, Params: q}, GenerateRequest{PromptIDs: prompt, Params: p})
		if !slices.Equal(res[0].IDs, res[2].IDs) {
			t.Errorf("same seed, different outputs:\n%v\n%v", res[0].IDs, res[2].IDs)
		}
		if slices.Equal(res[0].IDs, res[1].IDs) {
			t.Errorf("seeds 7 and 8 gave the same 24 tokens %v", res[0].IDs)
		}
		again := run(t, GenerateRequest{PromptIDs: prompt, Params: p})
		if !slices.Equal(again[0].IDs, res[0].IDs) {
			t.Errorf("same seed alone and in a batch differ:\n%v\n%v", again[0].IDs, res[0].IDs)
		}
	})
	t.Run("top_k 1 is greedy", func(t *testing.T) {
		res := run(t, GenerateRequest{PromptIDs: prompt, Params: SamplingParams{MaxTokens: 16, Temperature: 1.5, TopK: 1, Seed: 3, EOS: []int{}}})
		if !slices.Equal(res[0].IDs, want[:16]) {
			t.Errorf("got %v, want %v", res[0].IDs, want[:16])
		}
	})
	t.Run("stop token sequence", func(t *testing.T) {
		stop := want[5:7]
		res := run(t, GenerateRequest{PromptIDs: prompt, Params: SamplingParams{MaxTokens: 30, StopTokenSeqs: [][]int{{9999}, stop}, EOS: []int{}}})
		if !slices.Equal(res[0].IDs, want[:5]) || res[0].FinishReason != FinishStop || res[0].CompletionTokens != 7 {
			t.Errorf("got %v finish %q completion %d, want %v stop 7", res[0].IDs, res[0].FinishReason, res[0].CompletionTokens, want[:5])
		}
	})
	t.Run("eos", func(t *testing.T) {
		res := run(t, GenerateRequest{PromptIDs: prompt, Params: SamplingParams{MaxTokens: 30, EOS: []int{want[3]}}})
		if !slices.Equal(res[0].IDs, want[:3]) || res[0].FinishReason != FinishStop || res[0].CompletionTokens != 4 {
			t.Errorf("got %v finish %q completion %d", res[0].IDs, res[0].FinishReason, res[0].CompletionTokens)
		}
	})
	t.Run("max tokens", func(t *testing.T) {
		res := run(t, GenerateRequest{PromptIDs: prompt, Params: SamplingParams{MaxTokens: 3, EOS: []int{}}}, GenerateRequest{PromptIDs: prompt, Params: SamplingParams{MaxTokens: 1, EOS: []int{}}})
		if !slices.Equal(res[0].IDs, want[:3]) || res[0].FinishReason != FinishLength {
			t.Errorf("got %v finish %q", res[0].IDs, res[0].FinishReason)
		}
		if !slices.Equal(res[1].IDs, want[:1]) || res[1].FinishReason != FinishLength {
			t.Errorf("got %v finish %q", res[1].IDs, res[1].FinishReason)
		}
	})
}

// TestGenerateContextLimit: a prompt plus max_tokens over the context is
// refused (Generate and the Batcher alike) with the field over its limit,
// not cut short at the end of the context.
func TestGenerateContextLimit(t *testing.T) {
	m, _ := storiesModel(t)
	ctxLen := m.MaxSeqLen()
	b, err := NewBatcher(m, 2) // Submit refuses before queuing: no Run needed
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		req       GenerateRequest
		wantParam string
		wantLimit int
	}{
		{"max_tokens one over", GenerateRequest{PromptIDs: make([]int, 10), Params: greedy(ctxLen - 9)}, "max_tokens", ctxLen - 10},
		{"default max_tokens over", GenerateRequest{PromptIDs: make([]int, ctxLen-100)}, "max_tokens", 100},
		{"prompt fills the context", GenerateRequest{PromptIDs: make([]int, ctxLen), Params: greedy(1)}, "prompt", ctxLen - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, gerr := m.Generate(context.Background(), []GenerateRequest{tt.req})
			_, berr := b.Submit(context.Background(), tt.req, nil)
			for _, err := range []error{gerr, berr} {
				var le *schemas.LimitError
				if !errors.Is(err, ErrTooLong) || !errors.As(err, &le) || le.Param != tt.wantParam || le.Limit != tt.wantLimit {
					t.Fatalf("err = %v, want Invalid %s with limit %d", err, tt.wantParam, tt.wantLimit)
				}
			}
		})
	}
}

func TestGenerateInvalid(t *testing.T) {
	m, _ := storiesModel(t)
	tests := []struct {
		name    string
		req     GenerateRequest
		wantErr error
	}{
		{"empty prompt", GenerateRequest{}, ErrInvalidRequest},
		{"id outside vocab", GenerateRequest{PromptIDs: []int{1, 512}}, ErrInvalidRequest},
		{"negative id", GenerateRequest{PromptIDs: []int{-1}}, ErrInvalidRequest},
		{"temperature", GenerateRequest{PromptIDs: []int{1}, Params: SamplingParams{Temperature: 2.5}}, ErrInvalidRequest},
		{"max tokens", GenerateRequest{PromptIDs: []int{1}, Params: SamplingParams{MaxTokens: 5000}}, ErrInvalidRequest},
		{"top_p", GenerateRequest{PromptIDs: []int{1}, Params: SamplingParams{TopP: 1.5}}, ErrInvalidRequest},
		{"top_k", GenerateRequest{PromptIDs: []int{1}, Params: SamplingParams{TopK: -1}}, ErrInvalidRequest},
		{"too long", GenerateRequest{PromptIDs: make([]int, 3000)}, ErrTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.Generate(context.Background(), []GenerateRequest{tt.req})
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}
