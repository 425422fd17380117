package model

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
)

// The logprobs a generation reports are the model's: the same as scoring the
// generated tokens after the prompt, the chosen token first among the
// alternatives under greedy decoding, one per kept token (a stop string cuts
// them with the ids), from Generate and from a Batcher alike.
func TestTextLogprobs(t *testing.T) {
	g, ref := storiesText(t)
	b := startBatcher(t, g.m, 2)
	p := ref.Prompts[0]
	withLP := func(n int) SamplingParams {
		s := greedy(n)
		s.Logprobs, s.TopLogprobs = true, 3
		return s
	}
	run := map[string]func(TextRequest) (TextResult, error){
		"generate": func(r TextRequest) (TextResult, error) {
			res, err := g.Generate(context.Background(), []TextRequest{r})
			if err != nil {
				return TextResult{}, err
			}
			return res[0], nil
		},
		"batcher": func(r TextRequest) (TextResult, error) { return g.Submit(context.Background(), b, r, nil) },
	}
	for name, gen := range run {
		for _, req := range []TextRequest{
			{Prompt: p.Prompt, Params: withLP(12)},
			{Prompt: p.Prompt, Stop: []string{" girl"}, Params: withLP(64)},
		} {
			res, err := gen(req)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Logprobs) != len(res.IDs) || len(res.IDs) == 0 {
				t.Fatalf("%s: %d logprobs for %d ids", name, len(res.Logprobs), len(res.IDs))
			}
			var text strings.Builder
			sum := 0.0
			for i, lp := range res.Logprobs {
				if lp.ID != res.IDs[i] || len(lp.Top) != 3 || lp.Top[0].ID != lp.ID || lp.Top[0].Logprob != lp.Logprob ||
					lp.Top[1].Logprob > lp.Top[0].Logprob || lp.Top[2].Logprob > lp.Top[1].Logprob || lp.Logprob > 0 {
					t.Fatalf("%s: token %d: %+v", name, i, lp)
				}
				text.WriteString(lp.Token)
				sum += lp.Logprob
			}
			if !strings.HasPrefix(text.String(), res.Text) {
				t.Errorf("%s: tokens read %q, text %q", name, text.String(), res.Text)
			}
			sc, err := g.m.Score(context.Background(), []ScoreRequest{{PromptIDs: g.tok.Encode(p.Prompt, true), CompletionIDs: res.IDs}})
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(sc[0].SumLogprob-sum) > 1e-3*math.Max(1, math.Abs(sum)) {
				t.Errorf("%s: logprobs sum %g, scoring the same tokens %g", name, sum, sc[0].SumLogprob)
			}
		}
	}
	plain, err := g.Generate(context.Background(), []TextRequest{{Prompt: p.Prompt, Params: greedy(4)}})
	if err != nil || plain[0].Logprobs != nil {
		t.Errorf("without logprobs: %v, %v", plain[0].Logprobs, err)
	}
	for _, bad := range []SamplingParams{{TopLogprobs: 2}, {Logprobs: true, TopLogprobs: MaxTopLogprobs + 1}} {
		if err := bad.Validate(); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("%+v: %v, want ErrInvalidRequest", bad, err)
		}
	}
}
